"""Issue 16, rows 1, 2, 3 and 5: one record never stops a worker.

Each record a later stage could not represent is either refused at the contract (ids
with a control character, a brace or a non-NFKC form; repeated keys; bytes that are
not UTF-8; a label over the size limit) or encoded safely (segment values with ``,``
and ``=``). The workers are real ``driftline monitor`` / ``driftline labels``
processes on the real Tansu and redis-server; each test checks that the worker keeps
running (it exits 0 at idle, and again after a restart), that nothing is lost (sent =
processed + dead-lettered, every refusal with its reason) and that the stored state
and alert ids equal a clean replay of the valid records.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from reliability_support import references, settings_for

from driftline.config import Settings
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer
from driftline.runtime.devstack import DevStack
from driftline.runtime.monitor import ensure_topics
from support import MonitorProc, assert_equals_replay, put_reference, read_records

pytestmark = pytest.mark.integration

#: Segments whose values hold the separators of the old segment text (row 3): three
#: distinct streams, although the first and the last read alike when joined naively.
SEGMENTS = [{"r": "x,q=z"}, {"r": "x,q"}, {"r": "x", "q": "z"}]


def _hostile_predictions(valid: dict[str, Any]) -> list[tuple[bytes, str, str]]:
    """(record, dead-letter stage, reason pattern) of predictions the contract refuses."""

    def with_(**fields: Any) -> bytes:
        return orjson.dumps({**valid, **fields})

    raw = orjson.dumps(valid)
    return [
        # row 1: Redis hash-tag braces and NUL in a model id (a key-name check crashed)
        (with_(model_id="churn{eu}"), "validate", r"model_id: .*control character, '\{'"),
        (with_(model_id="churn}"), "validate", r"model_id: .*'\}'"),
        (with_(model_id="ch\x00urn"), "validate", r"model_id: .*control character"),
        (with_(model_version="{1}"), "validate", r"model_version: .*'\{'"),
        # row 2: the state-key separator U+001F in a model id (undecodable after restart)
        (with_(model_id="churn\x1fx"), "validate", r"model_id: .*control character"),
        (with_(prediction_id="p\x1f1"), "validate", r"prediction_id: .*control character"),
        # degraded: ids that read alike are one model, so the other spellings are refused
        (with_(model_id="ｃｈｕｒｎ"), "validate", r"model_id: must be in Unicode NFKC form"),
        (with_(model_id="cafe\u0301"), "validate", r"model_id: must be in Unicode NFKC form"),
        # degraded: a repeated key (parsers disagree on which value wins)
        (b'{"model_id":"fraud",' + raw[1:], "decode", r"duplicate key 'model_id'"),
        # degraded: bytes that are not UTF-8
        (raw.replace(b'"churn"', b'"ch\xffurn"', 1), "decode", r"^invalid_utf8: byte 0xff"),
    ]


def _headers(rec: Any) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in rec.headers}


async def test_hostile_ids_and_segments_never_stop_the_monitor(
    stack: DevStack, tmp_path: Path
) -> None:
    settings = settings_for(stack.broker.bootstrap, stack.redis.url)
    refs = references()
    for ref in refs:
        await put_reference(settings, ref)
    topic, dlq = settings.topics.predictions, settings.topics.dlq(settings.topics.predictions)
    await ensure_topics(settings, [topic, settings.topics.alerts, dlq], partitions=2)

    # churn drifts by 1.5 sd in every segment; fraud (the other partition) stays quiet.
    churn = list(SimulatedModel(seed=61).events(9_000, shift=Shift(start=3_000, sigmas=1.5)))
    for i, e in enumerate(churn):
        e["segment"] = SEGMENTS[i % 3]
    fraud = list(SimulatedModel(seed=62, model_id="fraud", model_version="7").events(2_000))
    hostile = _hostile_predictions(churn[0])
    prod = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=20)
    await prod.start()
    try:
        # One hostile record first (the crash came on the first batch) and the rest
        # spread through the stream, all on churn's partition.
        futs = [await prod.send(topic, hostile[0][0], key=b"churn")]
        for i, e in enumerate(churn):
            futs.append(await prod.send(topic, orjson.dumps(e), key=b"churn"))
            if i % 800 == 400 and 1 + i // 800 < len(hostile):
                futs.append(await prod.send(topic, hostile[1 + i // 800][0], key=b"churn"))
        futs += [await prod.send(topic, orjson.dumps(e), key=b"fraud") for e in fraud]
        for f in futs:
            await f
    finally:
        await prod.stop()
    sent = len(futs)
    assert sent == len(churn) + len(fraud) + len(hostile)

    first = MonitorProc(settings, tmp_path / "monitor.log")
    assert await first.wait(180) == 0, first.log()[-3000:]
    done = re.search(
        r"monitor stopped after (\d+) events, \d+ alerts, (\d+) dead letters", first.log()
    )
    assert done, first.log()[-3000:]
    processed, dead = int(done.group(1)), int(done.group(2))
    assert (processed, dead) == (len(churn) + len(fraud), len(hostile))
    assert processed + dead == sent, "nothing lost"

    # A restart reads back every stored state (row 2: a U+001F key used to crash here).
    again = MonitorProc(settings, tmp_path / "monitor-again.log")
    assert await again.wait(180) == 0, again.log()[-3000:]
    assert re.search(r"monitor stopped after 0 events, \d+ alerts, 0 dead letters", again.log())

    letters = await read_records(stack.broker.bootstrap, dlq)
    assert sorted(r.value for r in letters) == sorted(v for v, _, _ in hostile)
    for rec in letters:
        (stage, reason) = next((s, r) for v, s, r in hostile if v == rec.value)
        h = _headers(rec)
        assert h["dl.error.stage"] == stage
        assert re.search(reason, h["dl.error.message"]), h["dl.error.message"]

    # Stream equals replay; the alerts carry each segment exactly as it was sent (row 3).
    replay = Replayer({(r.model_id, r.model_version): r for r in refs})
    replay.feed(churn + fraud)
    alerts = await assert_equals_replay(settings, replay)
    fired = {orjson.dumps(a["segment"], option=orjson.OPT_SORT_KEYS) for a in alerts}
    assert fired == {orjson.dumps(s, option=orjson.OPT_SORT_KEYS) for s in SEGMENTS}


def _labels_proc(settings: Settings, log_path: Path) -> MonitorProc:
    """A ``driftline labels`` child on the test's own labels topic and group."""
    return MonitorProc(
        settings,
        log_path,
        name="labels",
        idle_exit=4.0,
        command="labels",
        DRIFTLINE_TOPICS__LABELS=settings.topics.labels,
        DRIFTLINE_LABELS__GROUP_ID=settings.labels.group_id,
    )


async def test_hostile_and_oversized_labels_never_stop_the_joiner(
    stack: DevStack, tmp_path: Path
) -> None:
    base = settings_for(stack.broker.bootstrap, stack.redis.url)
    u = base.redis.key_prefix
    settings = base.model_copy(
        update={
            "topics": base.topics.model_copy(update={"labels": f"labels-{u}"}),
            "labels": base.labels.model_copy(update={"group_id": f"labels-{u}"}),
        }
    )
    for ref in references():
        await put_reference(settings, ref)
    t = settings.topics
    await ensure_topics(settings, [t.predictions, t.labels, t.alerts, t.dlq(t.labels)], 2)

    events = list(SimulatedModel(seed=63).events(1_000))
    labels = [
        {
            "prediction_id": e["prediction_id"],
            "model_id": "churn",
            "label": e["prediction"],
            "timestamp": e["timestamp"] + 1_000,
        }
        for e in events[:600]
    ]
    one = orjson.dumps(labels[0])
    hostile = [
        # row 1: the same ids that stopped the monitor stopped the joiner
        orjson.dumps({**labels[0], "model_id": "churn{eu}"}),
        orjson.dumps({**labels[0], "model_id": "ch\x00urn"}),
        orjson.dumps({**labels[0], "model_id": "churn\x1fx"}),
        # row 5: a label over 1 MiB (its dead letter could not be sent), and one over
        # what the joiner's producer may send at all (its dead letter goes truncated)
        orjson.dumps({**labels[0], "padding": "x" * 1_200_000}),
        orjson.dumps({**labels[0], "padding": "x" * 9_000_000}),
        b'{"model_id":"fraud",' + one[1:],
        one.replace(b'"churn"', b'"ch\xffurn"', 1),
    ]
    prod = AIOKafkaProducer(
        bootstrap_servers=stack.broker.bootstrap, linger_ms=20, max_request_size=16 << 20
    )
    await prod.start()
    try:
        futs = [await prod.send(t.predictions, orjson.dumps(e), key=b"churn") for e in events]
        futs += [await prod.send(t.labels, v, key=b"churn") for v in hostile[:1]]
        for i, lab in enumerate(labels):
            futs.append(await prod.send(t.labels, orjson.dumps(lab), key=b"churn"))
            if i % 100 == 50 and 1 + i // 100 < len(hostile):
                futs.append(await prod.send(t.labels, hostile[1 + i // 100], key=b"churn"))
        for f in futs:
            await f
    finally:
        await prod.stop()

    first = _labels_proc(settings, tmp_path / "labels.log")
    assert await first.wait(180) == 0, first.log()[-3000:]
    done = re.search(
        r"stopped after (\d+) predictions, (\d+) labels, \d+ alerts, (\d+) dead letters",
        first.log(),
    )
    assert done, first.log()[-3000:]
    preds, seen, dead = (int(g) for g in done.groups())
    assert (preds, seen, dead) == (len(events), len(labels) + len(hostile), len(hostile))
    again = _labels_proc(settings, tmp_path / "labels-again.log")
    assert await again.wait(180) == 0, again.log()[-3000:]

    letters = await read_records(stack.broker.bootstrap, t.dlq(t.labels))
    assert len(letters) == len(hostile), "sent = processed + dead-lettered"
    big = [r for r in letters if "dl.error.truncated" in _headers(r)]
    assert len(big) == 1 and _headers(big[0])["dl.error.truncated"] == str(len(hostile[4]))
    assert big[0].value == hostile[4][: 64 * 1024], "the first 64 KiB of the original"
    assert sorted(r.value for r in letters if r is not big[0]) == sorted(
        v for v in hostile if v is not hostile[4]
    ), "the original bytes of every other refused label, the 1.2 MB one included"
    for rec in letters:
        assert _headers(rec)["dl.error.stage"] in ("decode", "validate")
