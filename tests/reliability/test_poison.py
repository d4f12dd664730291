"""Scenario 8: malformed, mistyped, oversized and unknown-version events.

Each goes to ``<topic>.dlq`` with its original bytes and reason headers, is counted in
``driftline_dead_letters_total{stage}``, and the partition keeps flowing past it. A
compatible change (a new optional field) is accepted and processed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from reliability_support import references, settings_for

from driftline import __version__ as APP_VERSION
from driftline.demo.simulate import SimulatedModel
from driftline.offline.replay import Replayer
from driftline.runtime import metrics as m
from driftline.runtime.devstack import DevStack
from driftline.runtime.monitor import MonitorWorker, ensure_topics
from support import (
    assert_equals_replay,
    put_reference,
    read_records,
    redis_offsets,
    run_until,
)

pytestmark = pytest.mark.integration


def _bad_records(valid: dict[str, Any]) -> list[tuple[bytes | None, str]]:
    """(value, expected stage) of records that break the contract."""
    return [
        (b"not json at all", "decode"),
        (b'{"model_id": "churn"', "decode"),  # truncated JSON
        (b"[1, 2, 3]", "decode"),  # JSON, but not an object
        (orjson.dumps({"model_id": "churn"}), "validate"),  # required fields missing
        (orjson.dumps({**valid, "timestamp": "yesterday"}), "validate"),
        (orjson.dumps({**valid, "features": ["f00", 1.0]}), "validate"),
        (orjson.dumps({**valid, "features": {"f00": {"nested": 1}}}), "validate"),
        (orjson.dumps({**valid, "scores": {"stay": 1.7}}), "validate"),  # not a probability
        (orjson.dumps({**valid, "padding": "x" * 70_000}), "validate"),  # over 64 KiB
        (orjson.dumps({**valid, "schema_version": 2}), "version"),  # unknown version
        (None, "decode"),  # a tombstone: no value at all
    ]


async def test_poison_records_go_to_the_dlq_and_the_partition_keeps_flowing(
    stack: DevStack,
) -> None:
    settings = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(settings, ref)
    topic, dlq = settings.topics.predictions, settings.topics.dlq(settings.topics.predictions)
    await ensure_topics(settings, [topic, settings.topics.alerts, dlq], partitions=2)

    valid = list(SimulatedModel(seed=5).events(3_000))
    # A compatible change: a newer producer adds an optional field; still schema v1.
    evolved = {**valid[1_000], "explanation": {"top": "f03"}, "schema_version": 1}
    valid[1_000] = evolved
    bad = _bad_records(valid[0])
    prod = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, max_request_size=1 << 20)
    await prod.start()
    sent: list[tuple[int, bytes | None, str]] = []  # (offset, value, stage) of bad records
    partition = None
    try:
        for i, e in enumerate(valid):
            md = await prod.send(topic, orjson.dumps(e), key=b"churn")
            if i % 250 == 0:  # a poison record every 250 valid ones
                value, stage = bad[(i // 250) % len(bad)]
                meta = await (await prod.send(topic, value, key=b"churn"))
                sent.append((meta.offset, value, stage))
                partition = meta.partition
        await md
        for value, stage in bad[len(sent) % len(bad) :]:
            meta = await prod.send_and_wait(topic, value, key=b"churn")
            sent.append((meta.offset, value, stage))
        last = meta.offset
    finally:
        await prod.stop()
    assert {s for *_, s in sent} == {"decode", "validate", "version"}

    before = {
        st: m.DEAD_LETTERS.labels(topic, st)._value.get()
        for st in ("decode", "validate", "version")
    }
    worker = MonitorWorker(settings, name="poison")
    records = len(valid) + len(sent)
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= records)
    finally:
        await worker.close()
    assert worker.processed == len(valid), "every valid event, the evolved one included"
    assert worker.dead_letters == len(sent)
    for st in before:
        got = m.DEAD_LETTERS.labels(topic, st)._value.get() - before[st]
        assert got == sum(1 for *_, s in sent if s == st), st
    # The partition flowed past every poison record, up to the last one.
    assert (await redis_offsets(settings))[partition] == last

    records = await read_records(stack.broker.bootstrap, dlq)
    assert len(records) == len(sent)
    by_offset = {}
    for r in records:
        h = {k: v.decode() for k, v in r.headers}
        assert r.key == b"churn"
        assert h["dl.error.topic"] == topic and h["dl.error.partition"] == str(partition)
        assert h["dl.app.version"] == APP_VERSION
        assert h["dl.error.class"] in ("DecodeError", "ValidationError", "UnsupportedVersion")
        assert 0 < len(h["dl.error.message"]) <= 512
        by_offset[int(h["dl.error.offset"])] = (r.value, h)
    for offset, value, stage in sent:
        got_value, h = by_offset[offset]
        assert got_value == value, "the original bytes, unchanged"
        assert h["dl.error.stage"] == stage

    replay = Replayer({(r.model_id, r.model_version): r for r in refs})
    replay.feed(valid)
    await assert_equals_replay(settings, replay)
