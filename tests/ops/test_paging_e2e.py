"""End to end paging: drifting predictions -> monitor -> /metrics -> Prometheus rule ->
Alertmanager -> webhook, then recovery -> resolved notification.

Real processes only: Tansu and redis-server (the ``stack`` fixture), a ``driftline
monitor`` subprocess, Debian's ``prometheus`` and ``prometheus-alertmanager``, and a
webhook receiver on ``http.server``. Prometheus scrapes and evaluates every second and
loads a copy of deploy/prometheus/driftline-rules.yml whose ``for:`` durations are all
0s (the production durations are minutes; the rules' unit tests cover them), so the test
checks the expressions, labels and the delivery path, not the waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from opsutil import ROOT

import driftline
from driftline.core.reference import build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.runtime.devstack import free_port, wait_port
from driftline.runtime.store import StateStore
from support import publish
from tool_checks import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = ROOT / "deploy" / "prometheus" / "driftline-rules.yml"


class _Hook:
    """Webhook receiver: keeps every Alertmanager notification it gets."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for p in self.payloads for a in p["alerts"]]


@pytest.fixture
def hook() -> Iterator[_Hook]:
    h = _Hook()
    h.thread.start()
    try:
        yield h
    finally:
        h.server.shutdown()
        h.server.server_close()


def _test_rules(tmp: Path) -> Path:
    """The production rules with every ``for:`` set to 0s."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    out = tmp / "rules.yml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("ab") as fh:
        return subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    wait_port(port, timeout=timeout, proc=proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready on port {port}")


async def _until(pred: Callable[[], Any], timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.25)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


async def test_input_drift_pages_through_alertmanager_and_resolves(settings, hook, tmp_path):
    prometheus, alertmanager = require_tool("prometheus"), require_tool("alertmanager")
    t_start = time.monotonic()
    # 1. A reference for the simulated model, stored where the monitor reads it.
    sim = SimulatedModel(seed=3)
    ref = build_reference(sim.training_data(20_000), "churn", "1", seed=0, created_at=0)
    client = aioredis.Redis.from_url(settings.redis.url)
    store = StateStore(
        client,
        prefix=settings.redis.key_prefix,
        group=settings.monitor.group_id,
        signing_key=settings.redis.state_signing_key.get_secret_value().encode(),
    )
    await store.put_reference("churn", "1", ref.to_bytes())
    await client.aclose()

    # 2. Alertmanager -> webhook; Prometheus scraping the monitor every second.
    am_port, prom_port, metrics_port = free_port(), free_port(), free_port()
    am_cfg = tmp_path / "alertmanager.yml"
    am_cfg.write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": ["alertname", "model"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "hook",
                        "webhook_configs": [
                            {"url": f"http://127.0.0.1:{hook.port}/", "send_resolved": True}
                        ],
                    }
                ],
            }
        )
    )
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(_test_rules(tmp_path))],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "driftline",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    logs = [tmp_path / "alertmanager.log", tmp_path / "prometheus.log", tmp_path / "monitor.log"]
    env = {
        **os.environ,
        # The worker runs the same driftline code as this test process.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(driftline.__file__).parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DRIFTLINE_REDIS__URL": settings.redis.url,
        "DRIFTLINE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "DRIFTLINE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "DRIFTLINE_TOPICS__ALERTS": settings.topics.alerts,
        "DRIFTLINE_MONITOR__GROUP_ID": settings.monitor.group_id,
        "DRIFTLINE_METRICS_PORT": str(metrics_port),
    }
    procs = []
    try:
        am = _spawn(
            [
                alertmanager,
                f"--config.file={am_cfg}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            logs[0],
        )
        procs.append(am)
        prom = _spawn(
            [
                prometheus,
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            logs[1],
        )
        procs.append(prom)
        monitor = _spawn([sys.executable, "-m", "driftline", "monitor"], logs[2], env)
        procs.append(monitor)
        _wait_ready(am_port, am)
        _wait_ready(prom_port, prom)
        wait_port(metrics_port, timeout=30, proc=monitor)

        # 3. Strong drift: feature f03 moves by 2 standard deviations.
        shifted = list(sim.events(4_000, shift=Shift(start=1_000, sigmas=2.0)))
        await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, shifted)

        def input_drift(status: str) -> list[dict[str, Any]]:
            return [
                a
                for a in hook.alerts()
                if a["labels"].get("alertname") == "DriftlineInputDrift"
                and a["labels"].get("model") == "churn"
                and a["status"] == status
            ]

        fired = await _until(lambda: input_drift("firing"), 45, "the firing page", logs)
        page = fired[0]
        # The episode's severity, as its alert events carry it (driftline_drift_active's
        # label): it starts warning and may become critical (tests/unit/test_drift_flags.py).
        assert page["labels"]["severity"] in ("warning", "critical")
        assert page["labels"]["kind"] == "input_drift" and page["labels"]["version"] == "1"
        assert page["annotations"]["runbook_url"].endswith("runbooks.md#driftlineinputdrift")
        assert page["annotations"]["summary"] == "Input drift on model churn version 1"

        # 4. Recovery: the data returns to the reference; the episode resolves after
        # clean windows, the gauge drops to 0, the alert resolves.
        recovered = list(sim.events(6_000, start=4_000))
        await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, recovered)

        def all_resolved() -> bool:
            # An escalation ends the warning alert and starts a critical one: each resolves.
            paged = {a["labels"]["severity"] for a in input_drift("firing")}
            return paged <= {a["labels"]["severity"] for a in input_drift("resolved")}

        await _until(all_resolved, 45, "the resolved notification", logs)
        assert monitor.poll() is None, "the monitor died"
    finally:
        for p in reversed(procs):
            _stop(p)
    assert time.monotonic() - t_start < 90
