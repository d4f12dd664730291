"""A worker whose Kafka broker cannot be reached says so in one line of its own, once per
outage, and once when the broker answers again; it keeps retrying meanwhile.

Against a real Tansu: not started yet when the worker starts (the port refuses), then
stopped and started again on the same port while the worker runs. aiokafka's own lines
(dozens a second, none naming the configured servers) are not what is checked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from driftline.config import Settings
from driftline.core.reference import build_reference
from driftline.demo.simulate import SimulatedModel
from driftline.runtime import metrics as m
from driftline.runtime import resilience
from driftline.runtime.devstack import DevStack, TansuBroker
from driftline.runtime.labels import LabelJoiner
from driftline.runtime.monitor import MonitorWorker
from support import publish, put_reference

pytestmark = pytest.mark.integration

UNREACHABLE = "Kafka broker unreachable at"
BACK = "answers again"


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("driftline") and text in r.getMessage()
    ]


async def _until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture(autouse=True)
def _quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Production checks every 5 s; 1 s keeps the test short (same code path).
    monkeypatch.setattr(resilience, "BROKER_CHECK_SECONDS", 1.0, raising=False)
    monkeypatch.setattr("driftline.runtime.worker.BROKER_CHECK_SECONDS", 1.0, raising=False)


@pytest.mark.parametrize("kind", ["monitor", "labels"])
async def test_worker_says_once_per_outage_that_the_broker_is_unreachable(
    stack: DevStack,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    caplog.set_level(logging.INFO)
    broker = TansuBroker()  # not started yet: its port refuses connections
    # A 3 s group session (the suite's 6 s, production 10 s): each of the two group
    # joins below takes half of it on Tansu; the outages it covers last longer anyway.
    s = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap}),
            "monitor": settings.monitor.model_copy(update={"session_timeout_ms": 3_000}),
            "labels": settings.labels.model_copy(update={"session_timeout_ms": 3_000}),
        }
    )
    worker: MonitorWorker | LabelJoiner = (
        MonitorWorker(s, name="test") if kind == "monitor" else LabelJoiner(s, name="test")
    )
    starting = asyncio.create_task(worker.start())
    try:
        await _until(lambda: bool(_lines(caplog, UNREACHABLE)), 20, "the start's warning")
        (line,) = _lines(caplog, UNREACHABLE)
        assert line.startswith(f"test: {UNREACHABLE} {broker.bootstrap} (")
        assert "nothing is lost" in line
        assert not starting.done(), "the worker must wait for its broker, not exit"
        await asyncio.sleep(2.2)  # two more failed attempts (1 s apart): still one line
        assert len(_lines(caplog, UNREACHABLE)) == 1

        broker.start(tmp_path)
        await asyncio.wait_for(starting, 60)
        (back,) = _lines(caplog, BACK)
        assert back.startswith(f"test: Kafka broker at {broker.bootstrap} {BACK}")
        running = asyncio.create_task(worker.run())

        # An outage while running: one warning, however long it lasts. SIGKILL: a SIGTERM
        # leaves Tansu serving the worker's open connections until its 5 s kill anyway.
        broker.kill()
        await _until(lambda: len(_lines(caplog, UNREACHABLE)) == 2, 30, "the outage's warning")
        await asyncio.sleep(2.2)  # two more failed checks: still two lines
        assert len(_lines(caplog, UNREACHABLE)) == 2
        assert not running.done(), "the worker keeps retrying"
        assert m.READY.labels("test")._value.get() == 0, "not ready while unreachable"

        broker.start(tmp_path)  # same port; memory storage, so the topics are new
        await _until(lambda: len(_lines(caplog, BACK)) == 2, 30, "the broker back")
        assert len(_lines(caplog, UNREACHABLE)) == 2
        assert not any(r.exc_info for r in caplog.records if r.name.startswith("driftline")), (
            "no traceback"
        )

        if kind == "monitor":
            # Still consuming: events published after the outage are processed.
            ref = build_reference(
                SimulatedModel(seed=3).training_data(5_000), "churn", "1", seed=0, created_at=0
            )
            await put_reference(s, ref)
            events = list(SimulatedModel(seed=5).events(300))
            await publish(broker.bootstrap, s.topics.predictions, events)
            await _until(lambda: worker.processed >= len(events), 90, "events processed")
        worker.stop()
        await asyncio.wait_for(running, 30)
    finally:
        worker.stop()
        if not starting.done():
            starting.cancel()
        await worker.close()
        broker.stop()


@pytest.mark.parametrize("kind", ["retrain", "alerts", "dead-letters"])
async def test_the_retrain_worker_and_the_followers_say_once_per_outage_too(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The retraining trigger and ``driftline alerts``/``dead-letters`` following said
    nothing of their own when the broker went away (aiokafka's thinned lines, or
    nothing at all for a broker that hangs). Now each says it once per outage, naming
    HOST:PORT, and once when the broker answers again, as the monitor does."""
    from driftline.runtime.retrain import RetrainPolicy
    from driftline.runtime.retrain_app import RetrainService
    from driftline.runtime.topics import ensure_topics
    from driftline.views.alerts import follow_alerts
    from driftline.views.dead_letters import follow_dead_letters

    caplog.set_level(logging.INFO)
    broker = TansuBroker()
    broker.start(tmp_path)
    s = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap})}
    )
    stop = asyncio.Event()
    service: RetrainService | None = None
    if kind == "retrain":
        service = RetrainService(s, RetrainPolicy(), group_id=f"retrain-{tmp_path.name}")
        await asyncio.wait_for(service.start(), 60)
        running = asyncio.create_task(service.run())
    elif kind == "alerts":
        await ensure_topics(s, [s.topics.alerts])
        running = asyncio.create_task(follow_alerts(s, False, stop, emit=lambda _: None))
    else:
        topics = [s.topics.dlq(s.topics.predictions), s.topics.dlq(s.topics.labels)]
        await ensure_topics(s, topics)
        follow = follow_dead_letters(
            s, [s.topics.predictions, s.topics.labels], stop, emit=lambda _: None
        )
        running = asyncio.create_task(follow)
    try:
        await asyncio.sleep(3)  # following: assigned, fetching
        assert not running.done() and not _lines(caplog, UNREACHABLE)
        broker.stop()
        await _until(lambda: bool(_lines(caplog, UNREACHABLE)), 30, "the outage's warning")
        await asyncio.sleep(3)  # more failed checks: still one line
        (line,) = _lines(caplog, UNREACHABLE)
        assert line.startswith(f"{kind}: {UNREACHABLE} {broker.bootstrap} (")
        assert "nothing is lost" in line and not running.done()
        broker.start(tmp_path)
        await _until(lambda: bool(_lines(caplog, BACK)), 30, "the broker back")
        (back,) = _lines(caplog, BACK)
        assert back.startswith(f"{kind}: Kafka broker at {broker.bootstrap} {BACK}")
        assert len(_lines(caplog, UNREACHABLE)) == 1
    finally:
        stop.set()
        if service is not None:
            service.stop()
        await asyncio.wait_for(running, 30)
        if service is not None:
            await service.close()
        broker.stop()
