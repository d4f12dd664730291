"""Scale-out and batches through real Tansu and redis-server.

Two monitor workers in one consumer group on a 4-partition topic give exactly the alerts
and states of a clean single-pass replay (and so of one worker), and columnar batches
sent by the SDK give the results of the same events sent one by one.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from driftline.contract.columnar import ColumnarBatch, pack_events
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer
from driftline.producer import AsyncPredictionProducer
from driftline.runtime.monitor import MonitorWorker
from driftline.runtime.store import StateStore
from support import assert_close, publish, read_all, run_until, stored_states

pytestmark = pytest.mark.integration

PARTITIONS = 4
MODELS = ("churn", "fraud", "upsell", "credit", "risk", "ltv")


@functools.cache
def _base_reference() -> ReferenceProfile:
    return build_reference(
        SimulatedModel(seed=3).training_data(20_000), "churn", "1", seed=0, created_at=0
    )


def _reference(model: str) -> ReferenceProfile:
    import dataclasses

    base = _base_reference()
    return dataclasses.replace(base, model_id=model, reference_id=f"{model}:1:test")


async def _store_references(settings: Any) -> dict[tuple[str, str], ReferenceProfile]:
    client = aioredis.Redis.from_url(settings.redis.url)
    store = StateStore(
        client,
        prefix=settings.redis.key_prefix,
        group=settings.monitor.group_id,
        signing_key=settings.redis.state_signing_key.get_secret_value().encode(),
    )
    refs = {}
    try:
        for m in MODELS:
            ref = _reference(m)
            await store.put_reference(m, "1", ref.to_bytes())
            refs[(m, "1")] = ref
    finally:
        await client.aclose()
    return refs


def _streams(per_model: int) -> list[dict[str, Any]]:
    """Interleaved events of several models; every other model drifts half-way."""
    streams = []
    for i, m in enumerate(MODELS):
        shift = Shift(start=per_model // 2, sigmas=0.8) if i % 2 else None
        evs = SimulatedModel(seed=40 + i, model_id=m).events(per_model, shift=shift)
        streams.append([orjson.loads(orjson.dumps(e)) for e in evs])
    return [e for row in zip(*streams, strict=True) for e in row]


async def _run(settings: Any, name: str, events: int | None = None) -> MonitorWorker:
    """A monitor in this process: stopped once it handled ``events``, or (two workers
    sharing the partitions) at 5 s idle."""
    worker = MonitorWorker(settings, name=name)
    await worker.start()
    try:
        if events is None:
            await worker.run(idle_exit_s=5.0)
        else:
            await run_until(worker, lambda: worker.processed + worker.dead_letters >= events)
    finally:
        await worker.close()
    return worker


def _replay(refs: dict[tuple[str, str], ReferenceProfile], items: list[Any]) -> Replayer:
    replay = Replayer(refs)
    for i in range(0, len(items), 3_000):
        replay.feed(items[i : i + 3_000])
    return replay


async def _assert_equals_replay(settings: Any, replay: Replayer) -> list[dict[str, Any]]:
    alerts = [
        orjson.loads(v)
        for v in await read_all(settings.kafka.bootstrap_servers, settings.topics.alerts)
    ]
    assert replay.result.alerts, "some model should have drifted"
    assert {a["alert_id"] for a in alerts} == {a.alert_id for a in replay.result.alerts}
    stored = await stored_states(settings, partitions=PARTITIONS)
    assert set(stored) == {k.encode() for k in replay.result.states}
    for key, st in replay.result.states.items():
        assert_close(stored[key.encode()], st.to_bytes())
    return alerts


async def test_two_workers_on_four_partitions_equal_a_single_replay(settings):
    refs = await _store_references(settings)
    events = _streams(3_000)
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events, PARTITIONS)
    a, b = await asyncio.gather(_run(settings, "w1"), _run(settings, "w2"))
    # Effectively once: every event's effect committed exactly once between the two.
    assert a.processed + b.processed == len(events)
    assert a.processed > 0 and b.processed > 0, "both workers should have had partitions"
    await _assert_equals_replay(settings, _replay(refs, events))


async def test_batches_from_the_sdk_equal_single_events(settings):
    refs = await _store_references(settings)
    events = _streams(1_500)
    producer = AsyncPredictionProducer(settings, compression=None, linger_ms=5)
    await producer.start()
    try:
        for env in pack_events(events, max_rows=400):
            body = {k: v for k, v in env.items() if k not in ("format", "schema_version", "count")}
            assert producer.send_batch(body)
        assert await producer.flush(30)
    finally:
        await producer.stop()
    assert producer.sent == len(pack_events(events, max_rows=400))
    worker = await _run(settings, "batches", len(events))
    assert worker.dead_letters == 0
    # The oracle is the replay of the same events one by one.
    replay = _replay(refs, events)
    await _assert_equals_replay(settings, replay)
    # and the replay of the batches themselves agrees
    batches = [ColumnarBatch.from_dict(b) for b in pack_events(events, max_rows=400)]
    again = _replay(refs, batches)  # type: ignore[arg-type]

    def per_model(alerts: list[Any]) -> list[tuple[str, str]]:
        # A batch holds one model's rows, so models interleave differently; each model's
        # alerts keep their order (sorted() is stable).
        return sorted(((a.model_id, a.alert_id) for a in alerts), key=lambda p: p[0])

    assert per_model(again.result.alerts) == per_model(replay.result.alerts)


async def test_send_packs_batches_by_default_with_single_event_results(settings):
    """The SDK's default path (issue 14 item 2): send() one by one, batch records on the
    wire, the monitor's results those of the same events read one by one."""
    refs = await _store_references(settings)
    events = _streams(1_500)
    producer = AsyncPredictionProducer(settings, compression=None, linger_ms=20)
    await producer.start()
    try:
        for i, e in enumerate(events):
            assert producer.send(e), producer.last_refusal
            if i % 500 == 0:
                await asyncio.sleep(0)
        assert await producer.flush(30)
    finally:
        await producer.stop()
    assert (producer.sent, producer.dropped) == (len(events), 0)
    records = await read_all(settings.kafka.bootstrap_servers, settings.topics.predictions)
    assert len(records) < len(events) // 10  # batch records, not one per event
    worker = await _run(settings, "sdk-batches", len(events))
    assert worker.dead_letters == 0 and worker.processed == len(events)
    await _assert_equals_replay(settings, _replay(refs, events))
