"""Issue 16 row 12 (and its degraded items): bounded resources under cardinality.

Many distinct models, one event each: the worker keeps running, refuses the streams
past its per-partition cap to the DLQ (``model_limit``, counted), keeps at most
``max_states_in_memory`` decoded states and ``reference_cache_size`` references, and
exports a bounded number of metric series. A new model with many features warms up
without rewriting its buffer into Redis on every commit. (RSS over a long steady
stream is printed by ``bench/bench_rss.py``, not asserted here.)
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis.asyncio as aioredis
from reliability_support import clean_replay, settings_for

from driftline.config import Settings
from driftline.runtime import metrics as m
from driftline.runtime.devstack import DevStack, RedisServer
from driftline.runtime.monitor import MonitorWorker
from driftline.runtime.topics import ensure_topics
from support import (
    _store_for,
    assert_equals_replay,
    publish,
    read_dlq,
    redis_client,
    run_until,
)

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def one_event(model: str, i: int) -> dict[str, Any]:
    return {
        "prediction_id": f"{model}-{i}",
        "model_id": model,
        "model_version": "1",
        "timestamp": T0 + i,
        "features": {"x": float(i % 97), "y": "ab"[i % 2]},
        "prediction": 0.5,
    }


def capped(s: Settings, **monitor: Any) -> Settings:
    return s.model_copy(update={"monitor": s.monitor.model_copy(update=monitor)})


async def test_many_distinct_models_stay_within_the_worker_bounds(stack: DevStack) -> None:
    n_models = 3_000
    s = capped(
        settings_for(stack.broker.bootstrap, stack.redis.url),
        max_streams_per_partition=600,
        max_states_in_memory=100,
        metrics_max_models=20,
        reference_cache_size=50,
    )
    events = [one_event(f"card-{i}", i) for i in range(n_models)]
    await publish(stack.broker.bootstrap, s.topics.predictions, events)
    worker = MonitorWorker(s, name="cardinality")
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= n_models)
        assert len(worker.loaded) <= 100
        assert len(worker.references) <= 50
    finally:
        await worker.close()

    # Nothing lost: every event is in a state or in the DLQ, refused streams counted.
    assert worker.processed + worker.dead_letters == n_models
    client = redis_client(s)
    store = _store_for(s, client)
    stored = [await client.hlen(store.keys(s.topics.predictions, p).state) for p in (0, 1)]
    await client.aclose()
    assert all(0 < n <= 600 for n in stored)
    assert sum(stored) == worker.processed
    dead = await read_dlq(stack.broker.bootstrap, s.topics.dlq(s.topics.predictions))
    assert len(dead) == worker.dead_letters == n_models - sum(stored)
    assert {h["dl.error.stage"] for _, h in dead} == {"model_limit"}
    refused = m.DEAD_LETTERS.labels(s.topics.predictions, "model_limit")._value.get()
    assert refused == worker.dead_letters

    # Bounded series: at most metrics_max_models models have their own label values.
    samples = [
        smp
        for fam in m.REGISTRY.collect()
        for smp in fam.samples
        if smp.name == "driftline_model_events_total"
    ]
    own = {smp.labels["model"] for smp in samples if smp.labels["model"].startswith("card-")}
    assert len(own) == 20
    other = sum(smp.value for smp in samples if smp.labels["model"] == "other")
    assert other >= worker.processed - 20

    # The admitted streams equal a replay of their events (a warm-up buffer of one).
    admitted_ids = {orjson_id(v) for v, _ in dead}
    kept = [e for e in events if e["prediction_id"] not in admitted_ids]
    await assert_equals_replay(s, clean_replay([], kept))


def orjson_id(value: bytes) -> str:
    import orjson

    return str(orjson.loads(value)["prediction_id"])


async def test_a_wide_new_model_warms_up_without_rewriting_its_buffer(
    stack: DevStack, own_redis: RedisServer
) -> None:
    """200 features, no reference, batches of 100: the warm-up buffer (2,000 events)
    is written to Redis about once, not once per commit (which would be ~10 times)."""
    s = settings_for(stack.broker.bootstrap, own_redis.url)
    s = s.model_copy(update={"monitor": s.monitor.model_copy(update={"max_batch_events": 100})})
    rng = random.Random(7)
    events = [
        {
            "prediction_id": f"wide-{i}",
            "model_id": "wide",
            "model_version": "1",
            "timestamp": T0 + i,
            "features": {f"f{j:03d}": round(rng.gauss(0, 1), 6) for j in range(200)},
            "prediction": 0.5,
        }
        for i in range(2_100)
    ]
    await ensure_topics(s, [s.topics.predictions], partitions=1)
    await publish(stack.broker.bootstrap, s.topics.predictions, events, partitions=1)
    raw_bytes = sum(len(repr(e["features"])) for e in events)
    client = aioredis.Redis.from_url(own_redis.url)
    before = int((await client.info("stats"))["total_net_input_bytes"])
    worker = MonitorWorker(s, name="wide")
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= len(events))
    finally:
        await worker.close()
    written = int((await client.info("stats"))["total_net_input_bytes"]) - before
    store = _store_for(s, client)
    side = await client.hlen(store.keys(s.topics.predictions, 0).side)
    await client.aclose()
    assert worker.processed == len(events)
    assert written < 3 * raw_bytes, f"{written} bytes written for {raw_bytes} of features"
    assert side == 0, "the buffer's side records are deleted once the reference is built"
    replay = clean_replay([], events)
    assert replay.result.states, "the replay warmed up too"
    await assert_equals_replay(s, replay, partitions=1)
