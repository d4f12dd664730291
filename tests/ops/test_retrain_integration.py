"""The retraining trigger (a faust worker, ``driftline retrain`` in a subprocess) through
the real Tansu broker: alerts in, requests out on the topic and the webhook; a restart
with lost offsets re-requests nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from test_retrain_unit import T0, H, alert

import driftline
from driftline.config import Settings
from driftline.runtime.retrain import RetrainRequest, request_id
from support import read_all, read_records

pytestmark = pytest.mark.integration


def _env(s: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(Path(driftline.__file__).parents[1]),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "DRIFTLINE_TOPICS__ALERTS": s.topics.alerts,
        "DRIFTLINE_TOPICS__RETRAIN_REQUESTS": s.topics.retrain_requests,
    }


def retrain_cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``driftline retrain ARGS`` (a faust worker) against ``s``'s broker and topics."""
    return subprocess.run(
        [sys.executable, "-m", "driftline", "retrain", *args],
        env=_env(s),
        capture_output=True,
        text=True,
        timeout=90,
    )


async def _publish(s: Settings, records: list[tuple[bytes, bytes]], topic: str = "") -> None:
    prod = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers)
    await prod.start()
    try:
        for key, value in records:
            await prod.send_and_wait(topic or s.topics.alerts, value, key=key)
    finally:
        await prod.stop()


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []
    #: The status every POST gets (503: the webhook is down).
    status = 202

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(_Hook.delay)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.status < 300:
            _Hook.received.append((self.headers["Idempotency-Key"], json.loads(body)))
        else:
            _Hook.refused += 1
        self.send_response(_Hook.status)
        self.end_headers()

    refused = 0
    #: Seconds each POST takes to answer (a slow webhook).
    delay = 0.0

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

    _Hook.received, _Hook.status = [], 202
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/requests"
        first = await asyncio.to_thread(
            retrain_cli,
            s,
            "--approval",
            "--from-start",
            "--group",
            f"retrain-{unique}",
            "--webhook",
            url,
            "--idle-exit",
            "3",
            "--no-metrics",
        )
    finally:
        server.shutdown()
        server.server_close()

    assert first.returncode == 0, first.stderr
    assert "after 5 alerts, 2 requests" in first.stderr  # five decisions
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
    # the state table restored from its changelog turns every alert into a no-op.
    res = await asyncio.to_thread(
        retrain_cli,
        s,
        "--approval",
        "--from-start",
        "--group",
        f"retrain2-{unique}",
        "--idle-exit",
        "3",
        "--no-metrics",
    )
    assert res.returncode == 0, res.stderr
    assert "restored 2 earlier requests" in res.stderr
    assert "after 5 alerts, 0 requests" in res.stderr
    again = await read_all(s.kafka.bootstrap_servers, s.topics.retrain_requests, 800)
    assert len(again) == 2


async def test_sigterm_during_delivery_then_restart_delivers_once(settings, unique):
    """The webhook is down: SIGTERM stops the worker cleanly with the alert unacknowledged;
    the restart delivers the request (the old worker restored it from the request topic
    and never POSTed it); an unreadable alert is dead-lettered."""
    s = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"retrain_requests": f"rr-{unique}"})}
    )
    trigger = alert()
    expected = request_id("churn", "3", trigger["alert_id"])
    await _publish(s, [(b"churn", b"{not json"), (b"churn", orjson.dumps(trigger))])
    _Hook.received, _Hook.refused, _Hook.status = [], 0, 503
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/requests"
    args = ["--from-start", "--webhook", url, "--no-metrics"]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline", "retrain", "--group", f"rt-{unique}", *args],
            env=_env(s),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(600):  # the worker joins, then retries the refused POST
                if _Hook.refused >= 2 or proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert _Hook.refused >= 2
            proc.terminate()
            _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "stopped while delivering a request" in err
        assert _Hook.received == []

        _Hook.status = 202
        again = await asyncio.to_thread(
            retrain_cli, s, "--group", f"rt-{unique}", *args, "--idle-exit", "3"
        )
        assert again.returncode == 0, again.stderr
        assert [k for k, _ in _Hook.received] == [expected]
        published = await read_all(s.kafka.bootstrap_servers, s.topics.retrain_requests, 800)
        # Published before the webhook failed, then again on restart: one request id.
        assert {RetrainRequest.model_validate_json(v).request_id for v in published} == {expected}
        # Lost offsets (a new group from the start) in webhook-only mode: the state
        # table, not a request topic, makes every alert a no-op.
        # A new group restores the state table first: on a loaded machine that took
        # longer than 3 s of "idle" time once in three runs (before idle time stopped
        # counting during a restore); 6 s leaves room either way.
        third = await asyncio.to_thread(
            retrain_cli, s, "--group", f"rt2-{unique}", *args, "--no-publish", "--idle-exit", "6"
        )
        assert third.returncode == 0, third.stderr
        assert "restored 1 earlier requests" in third.stderr
        assert "after 1 alerts, 0 requests" in third.stderr
        assert len(_Hook.received) == 1
    finally:
        server.shutdown()
        server.server_close()

    dead = await read_records(s.kafka.bootstrap_servers, s.topics.dlq(s.topics.alerts))
    assert dead and [r.value for r in dead] == [b"{not json"] * len(dead)  # once per read
    headers = dict(dead[0].headers)
    assert headers["dl.error.stage"] == b"decode" and headers["dl.error.topic"] == (
        s.topics.alerts.encode()
    )


async def test_a_delivery_longer_than_the_idle_time_does_not_end_the_run(settings, unique):
    """``--idle-exit`` counts from the last alert handled, not from the last one started:
    a webhook slower than the idle time must not end the run before the alerts fetched
    behind the one in hand are delivered."""
    s = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"retrain_requests": f"rr-{unique}"})}
    )
    trigger = alert()
    other = alert(model="fraud", kind="performance", diagnosis=None)
    await _publish(s, [(b"churn", orjson.dumps(trigger)), (b"fraud", orjson.dumps(other))])
    _Hook.received, _Hook.refused, _Hook.status, _Hook.delay = [], 0, 202, 3.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/requests"
    try:
        res = await asyncio.to_thread(
            retrain_cli,
            s,
            *("--group", f"rt-{unique}", "--from-start", "--webhook", url, "--no-publish"),
            *("--idle-exit", "1", "--no-metrics"),
        )
    finally:
        _Hook.delay = 0.0
        server.shutdown()
        server.server_close()
    assert res.returncode == 0, res.stderr
    assert "after 2 alerts, 2 requests" in res.stderr
    assert sorted(body["model_id"] for _, body in _Hook.received) == ["churn", "fraud"]


async def test_a_tampered_state_record_is_refused(settings, unique):
    s = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"retrain_requests": f"rr-{unique}"})}
    )
    await _publish(s, [(b"churn", orjson.dumps(alert()))])
    args = ["--from-start", "--idle-exit", "3", "--no-metrics"]
    first = await asyncio.to_thread(retrain_cli, s, "--group", f"rt-{unique}", *args)
    assert first.returncode == 0 and "after 1 alerts, 1 requests" in first.stderr, first.stderr

    state = await read_records(s.kafka.bootstrap_servers, s.topics.retrain_state())
    last = [r for r in state if r.key == b"churn"][-1]
    forged = last.value.replace(b'"requests":1', b'"requests":0')
    assert forged != last.value
    prod = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers)
    await prod.start()
    try:
        await prod.send_and_wait(
            s.topics.retrain_state(), forged, key=b"churn", partition=last.partition
        )
    finally:
        await prod.stop()

    res = await asyncio.to_thread(retrain_cli, s, "--group", f"rt2-{unique}", *args)
    assert res.returncode == 1, res.stderr  # a stored-state error (cli: EXIT_FAILURE)
    assert "driftline: error: stored state:" in res.stderr and "signature mismatch" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(await read_all(s.kafka.bootstrap_servers, s.topics.retrain_requests, 800)) == 1


async def test_a_stopped_trigger_leaves_its_group_at_once(settings, unique):
    """Tansu numbers a group's first generation 0, and aiokafka leaves a group only from
    generation 1: a trigger stopped in it stayed a member of its group until its session
    timed out, so a restart joined, waited for the gone member and joined again (the
    monitor and the joiner had the same fix, worker.leave_group_from_generation_zero).
    Oracle: the broker's own description of the group once the worker has exited."""
    from aiokafka.admin import AIOKafkaAdminClient

    s = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"retrain_requests": f"rr-{unique}"})}
    )
    group = f"rt-{unique}"
    await _publish(s, [(b"fraud", orjson.dumps(alert(model="fraud")))])
    res = await asyncio.to_thread(
        retrain_cli, s, "--group", group, "--from-start", "--no-metrics", "--idle-exit", "1"
    )
    assert res.returncode == 0, res.stderr
    assert "after 1 alerts" in res.stderr
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        ((_, _, _, _, _, members),) = response.groups
    finally:
        await admin.close()
    assert members == []
