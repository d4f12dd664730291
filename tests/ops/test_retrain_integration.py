"""The retraining trigger through the real Tansu broker: alerts in, requests out on the
topic and the webhook; a restart with lost offsets re-requests nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from test_retrain_unit import T0, H, alert

import driftline
from driftline.runtime.retrain import RetrainPolicy, RetrainRequest, RetrainService
from support import read_all

pytestmark = pytest.mark.integration


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def test_alerts_become_requests_on_topic_and_webhook_once(settings, unique):
    s = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"retrain_requests": f"rr-{unique}"})}
    )
    trigger = alert()  # churn concept drift, critical
    alerts = [
        alert(model="fraud", kind="data_quality", severity="warning", diagnosis="data_quality"),
        trigger,
        trigger,  # published twice by an outbox
        alert(kind="input_drift", diagnosis="covariate_shift_harmful", episode=2, at=T0 + H),
        alert(model="fraud", kind="performance", diagnosis=None, at=T0 + 2 * H),
    ]
    prod = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers)
    await prod.start()
    for a in alerts:
        await prod.send_and_wait(s.topics.alerts, orjson.dumps(a), key=a["model_id"].encode())
    await prod.stop()

    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        service = RetrainService(
            s,
            RetrainPolicy(require_approval=True),
            group_id=f"retrain-{unique}",
            webhook_url=f"http://127.0.0.1:{server.server_address[1]}/requests",
            from_start=True,
        )
        await service.start()
        try:
            await service.run(idle_exit_s=3.0)
        finally:
            await service.close()
    finally:
        server.shutdown()
        server.server_close()

    assert service.decisions == 5
    published = [
        RetrainRequest.model_validate_json(v)
        for v in await read_all(s.kafka.bootstrap_servers, s.topics.retrain_requests, 800)
    ]
    assert sorted((r.model_id, r.kind) for r in published) == [
        ("churn", "concept_drift"),
        ("fraud", "performance"),
    ]
    assert all(r.status == "pending_approval" for r in published)
    churn = next(r for r in published if r.model_id == "churn")
    assert churn.trigger_alert_id == trigger["alert_id"]
    assert churn.alerts[0] == trigger and churn.diagnosis == "concept_drift"
    fraud = next(r for r in published if r.model_id == "fraud")
    assert [a["kind"] for a in fraud.alerts] == ["performance", "data_quality"]  # + context
    assert sorted(k for k, _ in _Hook.received) == sorted(r.request_id for r in published)
    assert all(body["request_id"] == key for key, body in _Hook.received)

    # Restart with lost offsets (a new group reading from the start), through the CLI:
    # the state restored from the request topic turns every alert into a no-op.
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(driftline.__file__).parents[1]),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "DRIFTLINE_TOPICS__ALERTS": s.topics.alerts,
        "DRIFTLINE_TOPICS__RETRAIN_REQUESTS": s.topics.retrain_requests,
    }
    res = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "driftline",
            "retrain",
            "--approval",
            "--from-start",
            "--group",
            f"retrain2-{unique}",
            "--idle-exit",
            "3",
            "--no-metrics",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode == 0, res.stderr
    assert "restored 2 earlier requests" in res.stderr
    assert "after 5 alerts, 0 requests" in res.stderr
    again = await read_all(s.kafka.bootstrap_servers, s.topics.retrain_requests, 800)
    assert len(again) == 2
