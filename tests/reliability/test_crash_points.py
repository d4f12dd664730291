"""Scenarios 1-3: crashes around the commits, SIGTERM, rewinds, redelivery, a zombie.

Guarantees checked (docs/reliability.md): effectively-once state and alert creation
whatever the crash point; a clean SIGTERM drains and loses nothing; Kafka's committed
offset is advisory (rewinding it changes nothing); a redelivered batch is a no-op; a
paused worker whose partitions moved is fenced and writes nothing.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from reliability_support import Stream, clean_replay, settings_for

from driftline.config import Settings
from driftline.runtime import metrics as m
from driftline.runtime.devstack import DevStack
from driftline.runtime.monitor import MonitorWorker
from support import (
    MonitorProc,
    assert_equals_replay,
    commit_group_offsets,
    kafka_committed,
    metric_value,
    put_reference,
    raw_partition_state,
    read_all,
    redis_offsets,
)

pytestmark = pytest.mark.integration


async def _until(pred, timeout: float = 60.0, every: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)


CRASH_POINTS = (
    "before_redis_commit",
    "after_redis_commit",
    "before_outbox_ack",
    "after_kafka_commit",
)


@pytest.mark.slow
async def test_sigkill_at_every_commit_point_then_restart_equals_replay(
    stack: DevStack, stream: Stream, tmp_path: Path
) -> None:
    """Crash (exit 137, as SIGKILL) at each point of the 4th batch's commit, restart.

    The four points run side by side, each with its own group and key prefix over the
    shared stream (the group-join delays dominate the time, not the work).
    """
    runs = {}
    for point in CRASH_POINTS:
        s = settings_for(stack.broker.bootstrap, stack.redis.url, stream.topic)
        for ref in stream.references:
            await put_reference(s, ref)
        runs[point] = s
    crashed = {
        p: MonitorProc(s, tmp_path / f"{p}.log", fault=f"crash_{p}:4") for p, s in runs.items()
    }
    for point, proc in crashed.items():
        assert await proc.wait() == 137, proc.log()[-3000:]
        assert f"injected fault: crash at {point}" in proc.log()
        mid = await redis_offsets(runs[point])
        assert 0 < sum(o + 1 for o in mid.values()) < len(stream.events), "crash mid-stream"

    restarted = {p: MonitorProc(s, tmp_path / f"{p}.log") for p, s in runs.items()}
    for point, proc in restarted.items():
        assert await proc.wait() == 0, proc.log()[-3000:]
        alerts = await assert_equals_replay(runs[point], stream.replay)
        ids = Counter(a["alert_id"] for a in alerts)
        if point == "before_outbox_ack":
            # Published, not trimmed, crashed: the next owner publishes the same ids again.
            assert max(ids.values()) == 2, "the crash should have re-published an alert"
        else:
            assert max(ids.values()) == 1, point


async def test_sigterm_drains_and_loses_nothing(
    on_stream: Settings, stream: Stream, tmp_path: Path
) -> None:
    proc = MonitorProc(on_stream, tmp_path / "monitor.log", idle_exit=None)

    async def some_progress() -> bool:
        return sum(o + 1 for o in (await redis_offsets(on_stream)).values()) >= 3_000

    await _until(some_progress)
    proc.signal(signal.SIGTERM)
    assert await proc.wait(30) == 0, proc.log()[-3000:]
    assert "monitor stopped after" in proc.log()

    # Drained: no alert left in an outbox; Kafka's offset is the stored one + 1.
    raw = await raw_partition_state(on_stream)
    assert raw["0.outbox"] == raw["1.outbox"] == 0
    stored = await redis_offsets(on_stream)
    committed = await kafka_committed(
        on_stream.kafka.bootstrap_servers, on_stream.monitor.group_id, stream.topic
    )
    for p, off in stored.items():
        if off >= 0:
            assert committed[p] == off + 1
    assert sum(o + 1 for o in stored.values()) < len(stream.events), "stopped mid-stream"

    # The state at the stop equals a replay of exactly the events stored offsets cover.
    by_model = {"churn": [], "fraud": []}
    for e in stream.events:
        by_model[e["model_id"]].append(e)
    part_of = {}
    for p in (0, 1):
        part_of.update({k: p for k in (raw[f"{p}.state"] or {})})
    prefix: list[dict] = []
    alerts_now = await read_all(on_stream.kafka.bootstrap_servers, on_stream.topics.alerts)
    # Each model sits alone on its partition: offset n covers its first n + 1 events.
    for model, evs in by_model.items():
        key = f"{model}\x1f{'1' if model == 'churn' else '7'}\x1f".encode()
        p = part_of.get(key)
        if p is not None:
            prefix.extend(evs[: stored[p] + 1])
    partial = clean_replay(stream.references, prefix)
    got = {orjson.loads(v)["alert_id"] for v in alerts_now}
    assert got == {a.alert_id for a in partial.result.alerts}

    # A restart finishes the stream; the result equals the uninterrupted replay.
    again = MonitorProc(on_stream, tmp_path / "monitor.log")
    assert await again.wait() == 0, again.log()[-3000:]
    await assert_equals_replay(on_stream, stream.replay)


@pytest.mark.slow
async def test_rewinding_kafka_offsets_changes_nothing(
    on_stream: Settings, stream: Stream, tmp_path: Path
) -> None:
    """Kafka's committed offset is advisory: the worker resumes from Redis's offset."""
    first = MonitorProc(on_stream, tmp_path / "monitor.log")
    assert await first.wait() == 0, first.log()[-3000:]
    before = await raw_partition_state(on_stream)
    alerts_before = await read_all(on_stream.kafka.bootstrap_servers, on_stream.topics.alerts)

    await commit_group_offsets(
        on_stream.kafka.bootstrap_servers,
        on_stream.monitor.group_id,
        {TopicPartition(stream.topic, p): 0 for p in (0, 1)},
    )
    assert set(
        (
            await kafka_committed(
                on_stream.kafka.bootstrap_servers, on_stream.monitor.group_id, stream.topic
            )
        ).values()
    ) == {0}
    second = MonitorProc(on_stream, tmp_path / "monitor.log")
    assert await second.wait() == 0, second.log()[-3000:]
    assert await raw_partition_state(on_stream) == before
    alerts_after = await read_all(on_stream.kafka.bootstrap_servers, on_stream.topics.alerts)
    assert alerts_after == alerts_before
    await assert_equals_replay(on_stream, stream.replay)


async def test_redelivered_batches_are_no_ops(on_stream: Settings, stream: Stream) -> None:
    """Records delivered again (seek back to 0 under the same lease) change nothing."""
    worker = MonitorWorker(on_stream, name="redeliver")
    await worker.start()
    try:
        await worker.run(idle_exit_s=2.0)
        assert worker.processed == len(stream.events)
        before = await raw_partition_state(on_stream)
        dup_before = m.EVENTS.labels("redeliver", "duplicate")._value.get()
        assert worker.consumer is not None
        for p in list(worker.units):
            worker.consumer.seek(TopicPartition(stream.topic, p), 0)
        await worker.run(idle_exit_s=2.0)
        assert worker.processed == len(stream.events), "nothing processed twice"
        dup = m.EVENTS.labels("redeliver", "duplicate")._value.get() - dup_before
        assert dup == len(stream.events)
        assert await raw_partition_state(on_stream) == before

        # The store's offset guard, under the filter: a batch ending at or before the
        # stored offset is refused as a duplicate and writes nothing.
        unit = next(u for u in worker.units.values() if u.stored > 0)
        assert worker.store is not None
        res = await worker.store.commit(unit.lease, unit.stored, {"x": b"zombie"}, [b"a"])
        assert res == "duplicate"
        assert await raw_partition_state(on_stream) == before
    finally:
        await worker.close()
    await assert_equals_replay(on_stream, stream.replay)


@pytest.mark.slow
async def test_paused_worker_is_fenced_after_its_partitions_moved(
    on_stream: Settings, stream: Stream, tmp_path: Path
) -> None:
    """A worker SIGSTOPped before a commit wakes after another worker took over."""
    zombie = MonitorProc(
        on_stream,
        tmp_path / "zombie.log",
        name="zombie",
        idle_exit=6.0,
        fault="stop_before_redis_commit:3",
    )
    zombie_port = await zombie.metrics_port()

    async def is_stopped() -> bool:
        return zombie.stopped()

    await _until(is_stopped)
    at_pause = await raw_partition_state(on_stream)

    # The group evicts the silent member after its session timeout; the new worker
    # takes both partitions (a new fencing epoch each) and finishes the stream.
    taker = MonitorProc(on_stream, tmp_path / "taker.log", name="taker")
    assert await taker.wait(90) == 0, taker.log()[-3000:]
    done = await raw_partition_state(on_stream)
    assert done != at_pause
    assert sum(done[f"{p}.offset"] + 1 for p in (0, 1)) == len(stream.events)

    zombie.signal(signal.SIGCONT)

    async def fenced() -> bool:
        text = await zombie.scrape()
        return metric_value(text, "driftline_state_commits_total", result="fenced") >= 1

    await _until(fenced, timeout=30)
    assert zombie_port
    assert "moved to another worker; this worker stops writing" in zombie.log()
    # The zombie's stale batch wrote nothing.
    assert await raw_partition_state(on_stream) == done
    assert await zombie.wait(60) == 0, zombie.log()[-3000:]
    assert await raw_partition_state(on_stream) == done
    await assert_equals_replay(on_stream, stream.replay)
