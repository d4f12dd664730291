"""Issue 16, row 10: a model's events move to another partition mid-stream.

This happens when a topic's partition count changes or a producer uses another
partitioner. The new partition starts a state of its own for the model (the old one
stays where it is), so its drift episode is numbered from 1 again. Before issue 16 it
was published under the same alert ids as the first partition's episode, and
consumers that deduplicate by id dropped it, with no warning. Now the move is
detected (log line and ``driftline_model_partition_moves_total``), the two episodes
have distinct ids (an alert id includes the stream's first prediction id), and each
partition's state equals a replay of exactly the events that partition carried.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from reliability_support import references, settings_for

from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer
from driftline.runtime.devstack import DevStack
from driftline.runtime.monitor import ensure_topics
from support import (
    MonitorProc,
    _store_for,
    assert_close,
    metric_value,
    put_reference,
    read_all,
    redis_client,
    redis_offsets,
)

pytestmark = pytest.mark.integration

EVENTS = 8_000
MOVE_AT = 4_000  # events [0, MOVE_AT) go to partition 0, the rest to partition 1


async def test_a_model_moved_to_another_partition_keeps_unique_alert_ids(
    stack: DevStack, tmp_path: Path
) -> None:
    settings = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(settings, ref)
    topic = settings.topics.predictions
    await ensure_topics(settings, [topic, settings.topics.alerts, settings.topics.dlq(topic)], 2)

    # churn drifts by 1.5 sd from event 1,500 on, before and after the move.
    events = list(SimulatedModel(seed=71).events(EVENTS, shift=Shift(start=1_500, sigmas=1.5)))
    parts = {0: events[:MOVE_AT], 1: events[MOVE_AT:]}
    prod = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=20)
    await prod.start()
    try:
        for p, chunk in parts.items():
            futs = [
                await prod.send(topic, orjson.dumps(e), key=b"churn", partition=p) for e in chunk
            ]
            for f in futs:
                await f
    finally:
        await prod.stop()

    proc = MonitorProc(settings, tmp_path / "monitor.log", idle_exit=None)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while await redis_offsets(settings) != {0: MOVE_AT - 1, 1: EVENTS - MOVE_AT - 1}:
            assert loop.time() < deadline, proc.log()[-3000:]
            await asyncio.sleep(0.2)
        text = await proc.scrape()
        proc.signal(signal.SIGTERM)
        assert await proc.wait(60) == 0, proc.log()[-3000:]
    finally:
        proc.kill()

    # Detected and reported: one move, the log names the model and both partitions.
    assert metric_value(text, "driftline_model_partition_moves_total", topic=topic) == 1
    assert "model 'churn' arrives on" in proc.log() and "but was carried by" in proc.log()

    # Each partition's state is a replay of exactly the events it carried.
    replays = {p: Replayer({(r.model_id, r.model_version): r for r in refs}) for p in parts}
    for p, chunk in parts.items():
        replays[p].feed(chunk)
    client = redis_client(settings)
    try:
        store = _store_for(settings, client)
        for p, replay in replays.items():
            stored = await store.load(await store.acquire(topic, p))
            assert set(stored) == {k.encode() for k in replay.result.states}
            for key, st in replay.result.states.items():
                assert_close(stored[key.encode()], st.to_bytes(), path=f"{p}:{key.encode()}")
    finally:
        await client.aclose()

    # Two episodes numbered 1, one per partition, with distinct ids; nothing else.
    published = await read_all(stack.broker.bootstrap, settings.topics.alerts)
    alerts = [orjson.loads(v) for v in published]
    want = [a.alert_id for r in replays.values() for a in r.result.alerts]
    assert len(set(want)) == len(want), "the replays themselves give distinct ids"
    assert {a["alert_id"] for a in alerts} == set(want)
    firsts = [
        a
        for a in alerts
        if a["kind"] == "input_drift" and a["status"] == "firing" and a["episode"] == 1
    ]
    assert len(firsts) == 2 and firsts[0]["alert_id"] != firsts[1]["alert_id"]
