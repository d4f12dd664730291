"""Issue 16: the status page under many models and many connections.

* 100 000 models with history: the index pages through them (SSCAN for the names, one
  pipelined round trip per page) and answers; before, it read every model one by one
  and answered 503 "redis unavailable" with Redis up.
* 1 000 idle connections to a real ``driftline serve``: its threads stay bounded (a
  dispatcher and a fixed handler pool) and a normal request still answers; before,
  each connection had a thread of its own.

Timings are printed by ``bench/bench_status.py``, not asserted here.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from driftline.config import Settings
from driftline.offline.replay import Replayer
from driftline.runtime.history import record_history
from driftline.runtime.keyspace import history_models_key
from driftline.runtime.store import open_store
from driftline.views.bounded_http import HANDLER_THREADS
from driftline.views.status import PAGE_SIZE, StatusServer
from report_scenarios import churn_events, churn_reference
from support import ON_BOTH_REDIS, monitor_env

pytestmark = pytest.mark.integration

MODELS = 100_000


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def _seed_many(settings: Settings) -> None:
    """MODELS names in the models set, and one real drifting model among them."""
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        key = history_models_key(settings.redis.key_prefix)
        for start in range(0, MODELS, 10_000):
            await client.sadd(key, *(f"m{i:06d}" for i in range(start, start + 10_000)))
        ref = churn_reference()
        await store.put_reference(ref.model_id, ref.model_version, ref.to_bytes())
        drifting = Replayer({("churn", "1"): ref}).feed(churn_events(18_000)[:11_000])
        await record_history(store, drifting)
    finally:
        await client.aclose()


@ON_BOTH_REDIS
async def test_the_index_pages_through_100k_models(settings: Settings) -> None:
    """On one server and on a cluster: the model list is one set (one slot) read with
    SSCAN; a page's history comes in one pipeline, split per master on a cluster."""
    await _seed_many(settings)
    server = StatusServer(settings, port=0).start()
    try:
        status, body = _get(server.url + "/api/status")
        assert status == 200, body[:200]
        doc = json.loads(body)
        total = MODELS + 1
        pages = -(-total // PAGE_SIZE)
        assert (doc["total"], doc["pages"], doc["page"]) == (total, pages, 1)
        # Sorted by name, problems first within the page: churn (drifting) leads.
        names = [m["model"] for m in doc["models"]]
        assert names == ["churn"] + [f"m{i:06d}" for i in range(PAGE_SIZE - 1)]
        assert doc["models"][0]["state"] == "drifting"

        status, body = _get(server.url + "/")
        assert status == 200
        assert f"{total:,} models; this page" in body.decode()
        assert f"page 1 of {pages}" in body.decode() and 'rel="next"' in body.decode()
        status, body = _get(server.url + f"/api/status?page={pages}")
        last = json.loads(body)["models"]
        assert status == 200 and len(last) == total - (pages - 1) * PAGE_SIZE
        assert _get(server.url + f"/?page={pages + 1}")[0] == 400
        assert _get(server.url + "/?page=0")[0] == 400
    finally:
        server.stop()


async def test_a_few_models_fit_on_one_page_problems_first(settings: Settings) -> None:
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        ref = churn_reference()
        await store.put_reference(ref.model_id, ref.model_version, ref.to_bytes())
        drifting = Replayer({("churn", "1"): ref}).feed(churn_events(18_000)[:11_000])
        await record_history(store, drifting)
        await client.sadd(history_models_key(settings.redis.key_prefix), "aaa-quiet")
    finally:
        await client.aclose()
    server = StatusServer(settings, port=0).start()
    try:
        status, body = _get(server.url + "/api/status")
        doc = json.loads(body)
        assert status == 200 and (doc["page"], doc["pages"], doc["total"]) == (1, 1, 2)
        assert [(m["model"], m["state"]) for m in doc["models"]] == [
            ("churn", "drifting"),
            ("aaa-quiet", "unknown"),
        ]
        assert "page 1 of" not in _get(server.url + "/")[1].decode()
    finally:
        server.stop()


def _threads(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Threads:\s+(\d+)$", text, re.M)
    assert found
    return int(found.group(1))


async def test_idle_connections_do_not_cost_threads(settings: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "serve", "--port", "0"],
            env=monitor_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"status page on (http://\S+)", log_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        url = found.group(1)
        host, port = url.removeprefix("http://").split(":")
        assert _get(url + "/healthz")[0] == 200
        before = _threads(proc.pid)
        for _ in range(1_000):
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
        time.sleep(1.0)  # every connection accepted and waiting
        during = _threads(proc.pid)
        assert during <= before + HANDLER_THREADS, (before, during)
        status, body = _get(url + "/healthz")
        assert (status, body) == (200, b"ok\n")
        assert _get(url + "/api/status")[0] == 200
        assert _threads(proc.pid) <= before + HANDLER_THREADS
        assert proc.poll() is None
    finally:
        for s in sockets:
            s.close()
        proc.terminate()
        proc.wait(20)
