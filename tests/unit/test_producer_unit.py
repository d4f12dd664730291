"""Producer SDK behaviour that needs no broker: drops, accounting, bounded shutdown.

The broker address points at a port where nothing listens, which is also how the
serving app must survive booting while Kafka is down.
"""

from __future__ import annotations

import time

import pytest

from driftline.config import Settings
from driftline.contract.events import LIMITS, PredictionEvent
from driftline.errors import ConfigError
from driftline.producer import AsyncPredictionProducer, PredictionProducer
from driftline.runtime.devstack import free_port
from driftline.runtime.metrics import REGISTRY


def _settings(unique: str) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        topics={"predictions": f"p-{unique}", "labels": f"l-{unique}"},
    )


def _dropped(topic: str, reason: str) -> float:
    v = REGISTRY.get_sample_value(
        "driftline_producer_dropped_total", {"topic": topic, "reason": reason}
    )
    return v or 0.0


def _event(i: int = 0, **extra: object) -> dict[str, object]:
    return {
        "prediction_id": f"p{i}",
        "model_id": "m",
        "model_version": "1",
        "timestamp": 1_767_225_600_000 + i,
        "features": {"x": i},
        "prediction": 1,
        **extra,
    }


async def test_oversize_event_is_dropped_with_reason(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s)
    big = _event(features={"blob": "x" * LIMITS.max_event_bytes})
    assert p.send(big) is False
    assert p.dropped == 1 and p.buffered == 0
    assert _dropped(s.topics.predictions, "oversize") == 1
    await p.stop(timeout=0.1)


async def test_invalid_events_are_dropped_not_raised(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s)
    missing = _event()
    del missing["model_id"]
    assert p.send(missing) is False
    assert p.send({**_event(), "model_id": 7}) is False  # the key must be a string
    assert p.send({**_event(), "features": {"x": object()}}) is False  # not JSON-encodable
    assert p.send("not an event") is False  # type: ignore[arg-type]
    assert p.send_label({"prediction_id": "p", "model_id": "m"}) is False
    assert p.dropped == 5
    assert _dropped(s.topics.predictions, "invalid") == 4
    assert _dropped(s.topics.labels, "invalid") == 1
    await p.stop(timeout=0.1)


async def test_buffer_bound_before_start_and_shutdown_accounting(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s, max_buffer=10)
    results = [p.send(_event(i)) for i in range(15)]
    assert results == [True] * 10 + [False] * 5
    assert (p.buffered, p.dropped) == (10, 5)
    assert _dropped(s.topics.predictions, "buffer_full") == 5
    await p.stop(timeout=0.1)  # never started: everything left is a shutdown drop
    assert (p.sent, p.dropped, p.buffered) == (0, 15, 0)
    assert _dropped(s.topics.predictions, "shutdown") == 10


async def test_start_with_broker_down_does_not_fail_and_stop_is_bounded(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s, request_timeout_ms=500)
    t0 = time.monotonic()
    await p.start()  # nothing listens: must not raise
    assert p.send(_event()) is True
    assert (
        p.send_label({"prediction_id": "p0", "model_id": "m", "label": 1, "timestamp": 1}) is True
    )
    assert await p.flush(timeout=0.3) is False
    assert not p.connected
    await p.stop(timeout=0.5)
    assert time.monotonic() - t0 < 3.0
    assert (p.sent, p.dropped, p.buffered) == (0, 2, 0)
    assert _dropped(s.topics.predictions, "shutdown") == 1
    assert _dropped(s.topics.labels, "shutdown") == 1


async def test_send_after_stop_returns_false_and_counts(unique: str) -> None:
    s = _settings(unique)
    async with AsyncPredictionProducer(s, request_timeout_ms=500) as p:
        pass
    assert p.send(_event()) is False
    label = {"prediction_id": "p", "model_id": "m", "label": 0, "timestamp": 1}
    assert p.send_label(label) is False
    assert p.dropped == 2
    assert _dropped(s.topics.predictions, "closed") == 1
    assert _dropped(s.topics.labels, "closed") == 1
    with pytest.raises(RuntimeError):
        await p.start()


async def test_pydantic_event_encodes_without_nulls(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s)
    ev = PredictionEvent.model_validate(_event())
    assert p.send(ev) is True
    value = p._buf[0][3]
    assert b"null" not in value and b'"model_id":"m"' in value
    await p.stop(timeout=0.1)


def test_sync_facade_with_broker_down_closes_in_bounded_time(unique: str) -> None:
    s = _settings(unique)
    t0 = time.monotonic()
    with PredictionProducer(s, request_timeout_ms=500, flush_at_exit=None) as p:
        assert p.send(_event()) is True
        assert p.flush(timeout=0.2) is False
        p.close(timeout=0.5)  # the context manager's close() is then a no-op
    assert time.monotonic() - t0 < 3.0
    assert p.send(_event(1)) is False
    assert (p.sent, p.dropped, p.buffered) == (0, 2, 0)
    assert _dropped(s.topics.predictions, "closed") == 1


def test_bad_configuration_is_refused_at_construction(unique: str) -> None:
    s = _settings(unique)
    with pytest.raises(ConfigError):
        AsyncPredictionProducer(s, max_buffer=0)
    with pytest.raises(ConfigError):
        AsyncPredictionProducer(s, compression="brotli")  # type: ignore[arg-type]
