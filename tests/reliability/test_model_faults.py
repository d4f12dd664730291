"""Issue 16 rows 6, 7 and 8: one corrupt record or one Redis edit never stops a worker.

Each scenario runs ``driftline monitor`` as a child process against the real broker and
redis-server, breaks one thing, and checks that the process keeps running (exit 0 at
the end, no traceback), that nothing is lost (every record sent is either in the state
or in the dead-letter topic with its reason), that the metrics tell the truth, and that
the stored state equals a clean replay of the events that were not dead-lettered.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_support import clean_replay, references, settings_for

from driftline.demo.simulate import Shift, SimulatedModel
from driftline.runtime.devstack import DevStack, RedisServer
from driftline.runtime.keyspace import reference_index_key, reference_key
from support import (
    MonitorProc,
    _store_for,
    assert_equals_replay,
    metric_value,
    publish,
    put_reference,
    raw_partition_state,
    read_dlq,
    redis_client,
    redis_offsets,
)

pytestmark = pytest.mark.integration

#: Quick rechecks and reference re-reads, so each scenario takes seconds.
FAST = {
    "DRIFTLINE_MONITOR__QUARANTINE_RECHECK_SECONDS": "1",
    "DRIFTLINE_MONITOR__REFERENCE_TTL_SECONDS": "1",
}


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def stopped_counts(log: str) -> tuple[int, int]:
    """(processed, dead letters) from the monitor's last line."""
    found = re.findall(r"monitor stopped after (\d+) events, \d+ alerts, (\d+) dead letters", log)
    assert found, log[-3000:]
    return int(found[-1][0]), int(found[-1][1])


def clean(proc: MonitorProc) -> str:
    log = proc.log()
    assert "Traceback" not in log, log[-3000:]
    return log


def churn(n: int, start: int = 0, shift: Shift | None = None) -> list[dict[str, Any]]:
    return list(SimulatedModel(seed=81).events(n, start=start, shift=shift))


def fraud(n: int, start: int = 0) -> list[dict[str, Any]]:
    return list(SimulatedModel(seed=82, model_id="fraud", model_version="7").events(n, start=start))


def offsets_reach(s: Any, total: int, partitions: int) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return sum(o + 1 for o in (await redis_offsets(s, partitions)).values()) >= total

    return done


# ---------------------------------------------------------------------------- row 6


async def test_corrupt_reference_holds_back_its_model_not_the_partition(
    stack: DevStack, tmp_path: Path
) -> None:
    """One bit flipped in a stored reference: the model's events go to the DLQ
    (``reference_corrupt``), the model that shares its partition is monitored as if
    nothing happened, and once the reference is stored again the model is back."""
    s = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(s, ref)
    client = redis_client(s)
    key = reference_key(s.redis.key_prefix, "churn", "1")
    blob = await client.get(key)
    await client.set(key, blob[:-3] + bytes([blob[-3] ^ 0x04]) + blob[-2:])
    await client.aclose()
    c1, f1 = churn(2_000), fraud(1_000)
    await publish(stack.broker.bootstrap, s.topics.predictions, c1 + f1, partitions=1)

    proc = MonitorProc(s, tmp_path / "m1.log", **FAST)
    assert await proc.wait() == 0, proc.log()[-3000:]
    log = clean(proc)
    assert "held back (reference_corrupt)" in log
    assert stopped_counts(log) == (len(f1), len(c1)), "sent = processed + dead letters"
    dead = await read_dlq(stack.broker.bootstrap, s.topics.dlq(s.topics.predictions))
    assert len(dead) == len(c1)
    assert {h["dl.error.stage"] for _, h in dead} == {"reference_corrupt"}
    assert (await redis_offsets(s, 1))[0] == len(c1) + len(f1) - 1, "the partition flowed"
    await assert_equals_replay(s, clean_replay(refs, f1), partitions=1)

    # The operator stores the reference again: the model is monitored from then on.
    await put_reference(s, refs[0])
    c2 = churn(1_000, start=2_000)
    await publish(stack.broker.bootstrap, s.topics.predictions, c2, partitions=1)
    again = MonitorProc(s, tmp_path / "m2.log", **FAST)
    assert await again.wait() == 0, again.log()[-3000:]
    assert stopped_counts(clean(again)) == (len(c2), 0)
    await assert_equals_replay(s, clean_replay(refs, f1 + c2), partitions=1)


# ---------------------------------------------------------------------------- row 7


async def test_garbage_meta_at_assignment_quarantines_then_recovers_without_restart(
    stack: DevStack, tmp_path: Path
) -> None:
    """Offset ``abc`` in one partition's meta and epoch ``x`` in the other's: both are
    quarantined (metric, not ready, an error log), nothing is written over them, and
    once an operator repairs the fields the running worker takes them back."""
    s = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(s, ref)
    part1, part2 = churn(1_000) + fraud(600), churn(1_000, start=1_000) + fraud(600, start=600)
    await publish(stack.broker.bootstrap, s.topics.predictions, part1)
    first = MonitorProc(s, tmp_path / "first.log")
    assert await first.wait() == 0, first.log()[-3000:]

    client = redis_client(s)
    store = _store_for(s, client)
    metas = [store.keys(s.topics.predictions, p).meta for p in (0, 1)]
    saved = [await client.hmget(k, ["offset", "epoch"]) for k in metas]
    await client.hset(metas[0], "offset", "abc")
    await client.hset(metas[1], "epoch", "x")

    async def stored() -> list[Any]:
        keys = [store.keys(s.topics.predictions, p) for p in (0, 1)]
        return [await client.hgetall(k) for pk in keys for k in (pk.meta, pk.state, pk.side)]

    before = await stored()
    await publish(stack.broker.bootstrap, s.topics.predictions, part2)

    proc = MonitorProc(s, tmp_path / "m.log", idle_exit=None, **FAST)

    async def quarantined(n: int) -> bool:
        text = await proc.scrape()
        return metric_value(text, "driftline_partitions_quarantined") == n and metric_value(
            text, "driftline_ready"
        ) == (0 if n else 1)

    await until(lambda: quarantined(2))
    log = clean(proc)
    assert "meta field offset holds 'abc'" in log and "meta field epoch holds 'x'" in log
    assert await stored() == before, "nothing written over quarantined partitions"

    for k, (offset, epoch) in zip(metas, saved, strict=True):
        await client.hset(k, mapping={"offset": offset, "epoch": epoch})
    await client.aclose()
    await until(lambda: quarantined(0))
    await until(offsets_reach(s, len(part1) + len(part2), 2))
    proc.signal(signal.SIGTERM)
    assert await proc.wait(60) == 0, proc.log()[-3000:]
    assert "is no longer quarantined" in clean(proc)
    await assert_equals_replay(s, clean_replay(refs, part1 + part2))


async def test_garbage_in_the_outbox_is_dead_lettered_not_fatal(
    stack: DevStack, tmp_path: Path
) -> None:
    """A non-JSON and a keyless entry in an outbox: the worker publishes the real
    alerts, sends the two entries to the alert topic's DLQ (stage ``outbox``) and
    trims them; it neither exits nor stalls."""
    s = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(s, ref)
    part1 = churn(1_500) + fraud(500)
    part2 = churn(3_000, start=1_500, shift=Shift(start=1_500, sigmas=1.5)) + fraud(500, 500)
    await publish(stack.broker.bootstrap, s.topics.predictions, part1)
    first = MonitorProc(s, tmp_path / "first.log")
    assert await first.wait() == 0, first.log()[-3000:]

    client = redis_client(s)
    outbox = _store_for(s, client).keys(s.topics.predictions, 0).outbox
    garbage = [b"\xff not json", b'{"kind": "input_drift", "status": "firing"}']
    await client.rpush(outbox, *garbage)
    await client.aclose()
    await publish(stack.broker.bootstrap, s.topics.predictions, part2)
    proc = MonitorProc(s, tmp_path / "m.log")
    assert await proc.wait() == 0, proc.log()[-3000:]
    clean(proc)
    dead = await read_dlq(stack.broker.bootstrap, s.topics.dlq(s.topics.alerts))
    assert {v for v, _ in dead} == set(garbage)
    assert {h["dl.error.stage"] for _, h in dead} == {"outbox"}
    raw = await raw_partition_state(s)
    assert raw["0.outbox"] == raw["1.outbox"] == 0
    alerts = await assert_equals_replay(s, clean_replay(refs, part1 + part2))
    assert alerts, "the real alerts were published"


async def test_redis_out_of_memory_is_backpressure_then_recovery(
    stack: DevStack, own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis full (``maxmemory`` reached, ``noeviction``) at assignment and again under
    a running worker: no exit, no lease or commit until memory is freed (not ready,
    retrying), then the worker resumes by itself and the result equals the replay."""
    s = settings_for(stack.broker.bootstrap, own_redis.url)
    refs = references()
    for ref in refs:
        await put_reference(s, ref)
    part1, part2 = churn(1_500) + fraud(500), churn(1_500, start=1_500) + fraud(500, start=500)
    await publish(stack.broker.bootstrap, s.topics.predictions, part1)
    admin = redis_client(s)
    await admin.config_set("maxmemory", "1")  # every write refused with OOM

    proc = MonitorProc(s, tmp_path / "m.log", idle_exit=None, **FAST)

    async def retrying() -> bool:
        return (
            "cannot take" in proc.log()
            and metric_value(await proc.scrape(), "driftline_ready") == 0
        )

    await until(retrying)
    await asyncio.sleep(2)
    assert (await redis_offsets(s)) == {0: -1, 1: -1}, "nothing taken while Redis is full"
    await admin.config_set("maxmemory", "0")
    await until(offsets_reach(s, len(part1), 2))

    await admin.config_set("maxmemory", "1")
    await publish(stack.broker.bootstrap, s.topics.predictions, part2)
    await until(lambda: _has(proc, "state commit failed (OutOfMemoryError"))
    held = await redis_offsets(s)
    await asyncio.sleep(2)
    assert await redis_offsets(s) == held, "no commit while Redis is full"
    await admin.config_set("maxmemory", "0")
    await admin.aclose()
    await until(offsets_reach(s, len(part1) + len(part2), 2))
    proc.signal(signal.SIGTERM)
    assert await proc.wait(60) == 0, proc.log()[-3000:]
    clean(proc)
    await assert_equals_replay(s, clean_replay(refs, part1 + part2))


async def _has(proc: MonitorProc, text: str) -> bool:
    return text in proc.log()


# ---------------------------------------------------------------------------- row 8


async def test_deleted_reference_is_flagged_never_rebuilt_from_live_data(
    stack: DevStack, tmp_path: Path
) -> None:
    """The reference (and its index entry) deleted while the monitor runs, then a 3 sd
    drift: no warm-up reference is built from the drifted events. The model is flagged
    (metric, log) and its events dead-lettered (``reference_missing``) until the
    reference is stored again; the model sharing the partition is unaffected."""
    s = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(s, ref)
    part1 = churn(1_500) + fraud(500)
    drifted = churn(2_500, start=1_500, shift=Shift(start=0, sigmas=3.0))
    part2 = drifted + fraud(500, start=500)
    part3 = churn(1_000, start=4_000) + fraud(500, start=1_000)
    proc = MonitorProc(s, tmp_path / "m.log", idle_exit=None, **FAST)
    await publish(stack.broker.bootstrap, s.topics.predictions, part1, partitions=1)
    await until(offsets_reach(s, len(part1), 1))

    client = redis_client(s)
    await client.delete(reference_key(s.redis.key_prefix, "churn", "1"))
    await client.srem(reference_index_key(s.redis.key_prefix, "churn"), "1")
    await asyncio.sleep(1.5)  # past the reference TTL
    await publish(stack.broker.bootstrap, s.topics.predictions, part2, partitions=1)
    await until(offsets_reach(s, len(part1) + len(part2), 1))
    text = await proc.scrape()
    assert metric_value(text, "driftline_models_quarantined", reason="reference_missing") == 1
    assert "held back (reference_missing)" in proc.log()
    assert await client.get(reference_key(s.redis.key_prefix, "churn", "1")) is None, (
        "no warm-up reference was built from the drifted events"
    )

    await put_reference(s, refs[0])
    await asyncio.sleep(1.5)
    await publish(stack.broker.bootstrap, s.topics.predictions, part3, partitions=1)
    total = len(part1) + len(part2) + len(part3)
    await until(offsets_reach(s, total, 1))
    text = await proc.scrape()
    assert metric_value(text, "driftline_models_quarantined", reason="reference_missing") == 0
    await client.aclose()
    proc.signal(signal.SIGTERM)
    assert await proc.wait(60) == 0, proc.log()[-3000:]
    processed, dead_letters = stopped_counts(clean(proc))
    assert dead_letters == len(drifted) and processed + dead_letters == total
    dead = await read_dlq(stack.broker.bootstrap, s.topics.dlq(s.topics.predictions))
    assert {h["dl.error.stage"] for _, h in dead} == {"reference_missing"}
    assert len(dead) == len(drifted)
    gone = {e["prediction_id"] for e in drifted}
    kept = [e for e in part1 + part2 + part3 if e["prediction_id"] not in gone]
    await assert_equals_replay(s, clean_replay(refs, kept), partitions=1)


# ---------------------------------------------------------------------------- the joiner


async def test_label_joiner_holds_back_a_model_whose_join_state_does_not_read(
    stack: DevStack,
) -> None:
    """The label joiner runs on the same shell: a flipped bit in one model's join state
    holds that model back (its labels to ``labels.dlq``, stage ``state_corrupt``; its
    predictions skipped and counted), the evidence stays, the other model of the
    partition is joined exactly."""
    from driftline.core.slowloop.join import UnitState
    from driftline.demo.sea import SeaScenario
    from driftline.runtime.labels import LabelJoiner
    from driftline.runtime.store import StateStore

    s = settings_for(stack.broker.bootstrap, stack.redis.url)
    u = s.monitor.group_id
    s = s.model_copy(
        update={
            "topics": s.topics.model_copy(update={"labels": f"labels-{u}"}),
            "labels": s.labels.model_copy(update={"group_id": f"labels-{u}"}),
        }
    )
    a_preds, a_labels = SeaScenario(model_id="sea-a", seed=21).events(2_000)
    b_preds, b_labels = SeaScenario(model_id="sea-b", seed=22).events(2_000)
    for topic, items in (
        (s.topics.predictions, a_preds[:1_000] + b_preds[:1_000]),
        (s.topics.labels, a_labels[:600] + b_labels[:600]),
    ):
        await publish(stack.broker.bootstrap, topic, items, partitions=1)

    async def run(name: str) -> LabelJoiner:
        joiner = LabelJoiner(s, name=name)
        await joiner.start()
        try:
            await joiner.run(idle_exit_s=2.0)
        finally:
            await joiner.close()
        return joiner

    await run("join-before")
    client = redis_client(s)
    store = StateStore.from_settings(client, s.redis, s.labels.group_id)
    state_key = store.keys(s.topics.labels, 0).state
    field = "m\x1fsea-a"
    blob = await client.hget(state_key, field)
    assert blob is not None
    tampered = blob[:-4] + bytes([blob[-4] ^ 0x01]) + blob[-3:]
    await client.hset(state_key, field, tampered)
    for topic, items in (
        (s.topics.predictions, a_preds[1_000:] + b_preds[1_000:]),
        (s.topics.labels, a_labels[600:] + b_labels[600:]),
    ):
        await publish(stack.broker.bootstrap, topic, items, partitions=1)

    joiner = await run("join-after")
    assert joiner.labels_seen == len(a_labels) - 600 + len(b_labels) - 600
    dead = await read_dlq(stack.broker.bootstrap, s.topics.dlq(s.topics.labels))
    assert len(dead) == len(a_labels) - 600, "every later label of the held model"
    assert {h["dl.error.stage"] for _, h in dead} == {"state_corrupt"}
    assert await client.hget(state_key, field) == tampered, "the evidence stays"
    ok, bad = await store.load_fields(await store.acquire(s.topics.labels, 0))
    await client.aclose()
    assert set(bad) == {field}
    unit = UnitState.from_fields({n: b for n, b in ok.items()})
    assert unit.models["sea-b"].labels == {"joined": len(b_labels)}
