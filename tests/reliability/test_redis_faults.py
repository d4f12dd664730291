"""Scenarios 5 and 6: Redis crashes, restarts from an older AOF, or loses everything.

Offsets and state are stored together, so Redis going back in time means a replay from
Kafka, never a mix of old and new. A worker whose lease survives a rollback notices it
at its next commit (the stored offset is not the one it last wrote: ``rewound``), a
worker whose lease vanished notices a ``fenced`` commit with no meta; either reloads,
replays, counts ``driftline_state_rewind_total`` and reports not ready until warm.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from reliability_support import Stream, clean_replay, references, settings_for

from driftline.config import Settings
from driftline.demo.simulate import SimulatedModel
from driftline.runtime import metrics as m
from driftline.runtime.devstack import DevStack, RedisServer
from driftline.runtime.keyspace import reference_index_key, reference_key
from driftline.runtime.monitor import MonitorWorker, ensure_topics
from support import (
    MonitorProc,
    assert_equals_replay,
    kafka_committed,
    publish,
    put_reference,
    redis_offsets,
)

pytestmark = pytest.mark.integration


def _phases() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Three slices of a two-model stream; the last touches only one model's state."""
    churn = list(SimulatedModel(seed=61).events(6_000))
    fraud = list(SimulatedModel(seed=62, model_id="fraud", model_version="7").events(3_000))
    return (
        churn[:2_000] + fraud[:1_500],
        churn[2_000:4_000] + fraud[1_500:],
        churn[4_000:],
    )


class Watched:
    """An in-process worker whose readiness is recorded before every batch it handles."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.worker = MonitorWorker(settings, name=name)
        self.name = name
        self.ready_at_batch: list[float] = []
        inner = self.worker._handle

        async def handle(unit: Any, records: Any) -> None:
            self.ready_at_batch.append(m.READY.labels(name)._value.get())
            await inner(unit, records)

        self.worker._handle = handle  # type: ignore[method-assign]

    def ready(self) -> float:
        return m.READY.labels(self.name)._value.get()

    def rewinds(self, topic: str) -> float:
        return m.STATE_REWINDS.labels(self.name, topic)._value.get()


async def _single_partition_setup(stack: DevStack, redis_url: str) -> Settings:
    s = settings_for(stack.broker.bootstrap, redis_url)
    for ref in references():
        await put_reference(s, ref)
    await ensure_topics(s, [s.topics.predictions], partitions=1)
    return s


async def test_redis_rollback_under_a_live_lease_is_detected_and_replayed(
    stack: DevStack, own_redis: RedisServer
) -> None:
    """Redis restarts from an older snapshot while the worker keeps its lease.

    Both models share the one partition; after the rollback only churn gets new events.
    Writing churn's new state under a newer offset would leave fraud's state at the old
    snapshot: the continuity check refuses that commit and the worker replays instead.
    """
    s = await _single_partition_setup(stack, own_redis.url)
    topic = s.topics.predictions
    p1, p2, p3 = _phases()
    client = aioredis.Redis.from_url(own_redis.url)
    w = Watched(s, "rollback")
    await w.worker.start()
    try:
        await publish(stack.broker.bootstrap, topic, p1, partitions=1)
        await w.worker.run(idle_exit_s=1.0)
        keys = w.worker.store.keys(topic, 0).every()  # type: ignore[union-attr]
        snapshot = {k: await client.dump(k) for k in keys}
        old_offset = (await redis_offsets(s, 1))[0]

        await publish(stack.broker.bootstrap, topic, p2, partitions=1)
        await w.worker.run(idle_exit_s=1.0)
        assert (await redis_offsets(s, 1))[0] == len(p1) + len(p2) - 1
        rewinds = w.rewinds(topic)

        # Redis comes back from an older AOF: meta, state and outbox at offset old_offset.
        for k, blob in snapshot.items():
            if blob is not None:
                await client.restore(k, 0, blob, replace=True)
        assert (await redis_offsets(s, 1))[0] == old_offset

        await publish(stack.broker.bootstrap, topic, p3, partitions=1)
        w.ready_at_batch.clear()
        await w.worker.run(idle_exit_s=1.0)
        assert w.rewinds(topic) == rewinds + 1
        assert 0.0 in w.ready_at_batch, "not ready while replaying"
        assert w.ready() == 1.0
    finally:
        await w.worker.close()
        await client.aclose()
    await assert_equals_replay(s, clean_replay(references(), p1 + p2 + p3), partitions=1)


async def test_total_redis_loss_while_running_is_rebuilt_from_kafka(
    stack: DevStack, own_redis: RedisServer
) -> None:
    s = await _single_partition_setup(stack, own_redis.url)
    topic = s.topics.predictions
    p1, p2, p3 = _phases()
    client = aioredis.Redis.from_url(own_redis.url)
    w = Watched(s, "flushed")
    await w.worker.start()
    try:
        await publish(stack.broker.bootstrap, topic, p1 + p2, partitions=1)
        await w.worker.run(idle_exit_s=1.0)
        rewinds = w.rewinds(topic)

        # Everything is lost. The operator's restore of the references (they come from
        # `driftline reference build`, not from the stream) lands in the same instant.
        refs = {}
        for r in references():
            for key in (
                reference_key(s.redis.key_prefix, r.model_id, r.model_version),
                reference_index_key(s.redis.key_prefix, r.model_id),
            ):
                refs[key] = await client.dump(key)
        async with client.pipeline(transaction=True) as pipe:
            pipe.flushall()
            for key, blob in refs.items():
                pipe.restore(key, 0, blob)
            await pipe.execute()

        await publish(stack.broker.bootstrap, topic, p3, partitions=1)
        w.ready_at_batch.clear()
        await w.worker.run(idle_exit_s=1.0)
        assert w.rewinds(topic) == rewinds + 1
        assert w.ready_at_batch[0] == 1.0 and 0.0 in w.ready_at_batch
        assert w.ready() == 1.0
    finally:
        await w.worker.close()
        await client.aclose()
    await assert_equals_replay(s, clean_replay(references(), p1 + p2 + p3), partitions=1)


async def test_total_redis_loss_between_runs_is_detected_at_startup(
    stack: DevStack, stream: Stream, own_redis: RedisServer, tmp_path: Path
) -> None:
    s = settings_for(stack.broker.bootstrap, own_redis.url, stream.topic)
    for ref in stream.references:
        await put_reference(s, ref)
    first = MonitorProc(s, tmp_path / "first.log")
    assert await first.wait() == 0, first.log()[-3000:]
    committed = await kafka_committed(stack.broker.bootstrap, s.monitor.group_id, stream.topic)
    assert all(c > 0 for c in committed.values())

    client = aioredis.Redis.from_url(own_redis.url)
    await client.flushall()
    await client.aclose()
    for ref in stream.references:
        await put_reference(s, ref)

    w = Watched(s, "empty-redis")
    await w.worker.start()
    try:
        await w.worker.run(idle_exit_s=2.0)
        assert w.rewinds(stream.topic) == 2, "both partitions: Kafka shows progress, Redis none"
        assert w.ready_at_batch and w.ready_at_batch[0] == 0.0
        assert w.ready() == 1.0
    finally:
        await w.worker.close()
    await assert_equals_replay(s, stream.replay)


@pytest.mark.slow
async def test_redis_kill_9_and_aof_restart_under_a_running_worker(
    stack: DevStack, stream: Stream, own_redis: RedisServer, tmp_path: Path
) -> None:
    s = settings_for(stack.broker.bootstrap, own_redis.url, stream.topic)
    for ref in stream.references:
        await put_reference(s, ref)
    proc = MonitorProc(s, tmp_path / "monitor.log", DRIFTLINE_MONITOR__MAX_BATCH_EVENTS="50")
    seen = -1
    for _ in range(3_000):
        offsets = await redis_offsets(s)
        seen = sum(o + 1 for o in offsets.values())
        if seen >= 1_500:
            break
        await asyncio.sleep(0.01)
    own_redis.kill()  # SIGKILL: only what the AOF fsynced (every second) survives
    await asyncio.sleep(1.5)
    assert own_redis.data_dir is not None
    own_redis.start(own_redis.data_dir)
    after = sum(o + 1 for o in (await redis_offsets(s)).values())
    assert after < len(stream.events), "the kill should land mid-stream"

    assert await proc.wait() == 0, proc.log()[-3000:]
    log = proc.log()
    assert "retrying" in log, "the worker rode out the outage instead of crashing"
    assert "Traceback" not in log
    await assert_equals_replay(s, stream.replay)


@pytest.mark.slow
async def test_label_joiner_rides_out_redis_kill_9_and_counts_every_label_once(
    stack: DevStack, own_redis: RedisServer, tmp_path: Path
) -> None:
    """The joiner runs on the same worker shell: it retries with backoff through a Redis
    outage (it used to exit), replays what the AOF lost, and counts each label once."""
    import uuid

    from driftline.core.slowloop import UnitState
    from driftline.demo.sea import SeaScenario
    from driftline.runtime.store import StateStore

    u = uuid.uuid4().hex[:8]
    s = settings_for(stack.broker.bootstrap, own_redis.url)
    s = s.model_copy(
        update={
            "topics": s.topics.model_copy(update={"labels": f"labels-{u}"}),
            "labels": s.labels.model_copy(update={"group_id": f"rel-labels-{u}"}),
        }
    )
    n = 6_000
    preds, labels = SeaScenario(model_id="sea-r", seed=17).events(n)
    await publish(stack.broker.bootstrap, s.topics.predictions, preds, partitions=1)
    await publish(stack.broker.bootstrap, s.topics.labels, labels, partitions=1)
    proc = MonitorProc(
        s,
        tmp_path / "labels.log",
        command="labels",
        DRIFTLINE_TOPICS__LABELS=s.topics.labels,
        DRIFTLINE_LABELS__GROUP_ID=s.labels.group_id,
        DRIFTLINE_LABELS__MAX_BATCH_EVENTS="200",
    )
    client = aioredis.Redis.from_url(own_redis.url)
    store = StateStore.from_settings(client, s.redis, s.labels.group_id)
    meta = store.keys(s.topics.labels, 0).meta
    for _ in range(3_000):  # kill once some, not all, batches are committed
        seq = await client.hget(meta, "offset")
        if seq is not None and int(seq) >= 10:
            break
        await asyncio.sleep(0.01)
    await client.aclose()
    own_redis.kill()  # SIGKILL: only what the AOF fsynced (every second) survives
    await asyncio.sleep(1.5)
    assert own_redis.data_dir is not None
    own_redis.start(own_redis.data_dir)

    assert await proc.wait() == 0, proc.log()[-3000:]
    log = proc.log()
    assert "retrying" in log, "the joiner rode out the outage instead of crashing"
    assert "Traceback" not in log
    client = aioredis.Redis.from_url(own_redis.url)
    store = StateStore.from_settings(client, s.redis, s.labels.group_id)
    got = await store.peek(s.topics.labels, 0)
    await client.aclose()
    assert got is not None
    unit = UnitState.from_fields(got[1])
    assert unit.models["sea-r"].labels == {"joined": n}
    assert unit.models["sea-r"].predictions == {"stored": n}
