"""The label joiner's prediction decoding, and a batch's rows with the fields the join reads."""

from __future__ import annotations

import copy
import json
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from driftline.contract.columnar import ColumnarBatch, pack_events
from driftline.contract.decode import decode_join_record, decode_record
from driftline.core.slowloop.columns import join_rows as _join_rows
from driftline.errors import ContractError
from driftline.runtime.labels import _decode_predictions


def _events() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(40):
        e: dict[str, object] = {
            "prediction_id": f"p{i}",
            "model_id": "m",
            "model_version": "2",
            "timestamp": 1_767_225_600_000 + i,
            "features": {"x": float(i), "c": "a"},
            "prediction": "yes" if i % 3 else "no",
        }
        if i % 4:
            # a class missing from some rows: null in the batch, left out of the row
            e["scores"] = {"yes": 0.7, "no": 0.3} if i % 5 else {"yes": 0.9}
        if i >= 20:
            e["segment"] = {"region": "eu"}
        out.append(e)
    return out


def test_join_rows_are_the_batch_rows_without_features():
    batches = [decode_record(orjson.dumps(p)) for p in pack_events(_events(), 7)]
    assert all(isinstance(b, ColumnarBatch) for b in batches)
    assert any(b.scores for b in batches) and any(b.segment for b in batches)
    for b in batches:
        assert isinstance(b, ColumnarBatch)
        want = [{k: v for k, v in row.items() if k != "features"} for row in b.rows()]
        assert _join_rows(b) == want


def test_join_rows_of_batches_without_null_scores():
    # Every row scored (the usual batch): the rows are built from whole columns.
    rng = random.Random(7)
    events = _events()
    for i, e in enumerate(events):
        e["scores"] = {"yes": rng.random(), "no": rng.choice([0.0, 1.0, rng.random()])}
        if i % 9 == 0:
            e["scores"] = {"no": 0.25, "yes": 0.75}  # another key order in the same batch
    for size in (1, 7, 40):
        for b in (decode_record(orjson.dumps(p)) for p in pack_events(events, size)):
            assert isinstance(b, ColumnarBatch) and b.scores
            want = [{k: v for k, v in row.items() if k != "features"} for row in b.rows()]
            got = _join_rows(b)
            assert got == want
            assert [list(r["scores"]) for r in got] == [list(r["scores"]) for r in want]


def test_decode_predictions_keeps_record_order_and_counts_refusals():
    events = _events()
    packed = [orjson.dumps(p) for p in pack_events(events[:30], 10)]
    values = [*packed[:2], b"{broken", None, orjson.dumps(events[30]), packed[2]]
    recs = [SimpleNamespace(value=v) for v in values]
    items, refused = _decode_predictions(recs)
    assert refused == 2
    # batches stay whole (the join reads their columns); single events as they are
    assert [type(it) for it in items] == [ColumnarBatch, ColumnarBatch, dict, ColumnarBatch]
    rows = [r for it in items for r in (_join_rows(it) if isinstance(it, ColumnarBatch) else [it])]
    assert [r["prediction_id"] for r in rows] == [
        *(f"p{i}" for i in range(20)),
        "p30",
        *(f"p{i}" for i in range(20, 30)),
    ]


# ------------------------------------------------ the joiner's decoding: no feature values


def _outcome(decode: Any, value: bytes) -> tuple[str, Any]:
    """What a decoder makes of one record: its join rows and routing, or its refusal."""
    try:
        item = decode(value)
    except ContractError as exc:
        return ("refused", (type(exc), str(exc)))
    if isinstance(item, ColumnarBatch):
        return ("batch", (item.key, item.count, _join_rows(item)))
    assert isinstance(item, dict)
    return ("event", {k: v for k, v in item.items() if k != "features"})


def test_join_decode_reads_a_batch_as_the_full_decode_without_its_features() -> None:
    events = _events()
    for i, e in enumerate(events):
        if i % 6 == 0:
            e["timestamp"] = f"2026-01-01T00:00:00.{i:03d}Z"  # RFC 3339 text among epoch ms
    spellings = [
        lambda b: orjson.dumps(b),
        lambda b: json.dumps(b, indent=2).encode(),  # pretty-printed, spaces after colons
        lambda b: json.dumps(b, separators=(",", " : ")).encode(),  # space before the colon
        # a segment key named "features", written before the features
        lambda b: orjson.dumps({"segment": {"features": "x"}, **b} if b.get("segment") else b),
    ]
    for size in (1, 7, 40):
        for packed in pack_events(events, size):
            for spell in spellings:
                value = spell(packed)
                full, join = _outcome(decode_record, value), _outcome(decode_join_record, value)
                assert full[0] == "batch" and join == full
                joined = decode_join_record(value)
                assert isinstance(joined, ColumnarBatch) and not joined.features


def _mutated(rng: random.Random, base: dict[str, Any]) -> dict[str, Any]:
    values: list[Any] = [None, True, 0, -1, 1.5, "", "x" * 257, "ok", [], {}, [1.0], 10_001]
    b = copy.deepcopy(base)
    target = rng.choice(["top", "column", "cell", "features"])
    if target == "top":
        b[rng.choice([*b, "extra"])] = rng.choice(values)
    elif target == "features":
        b["features"] = rng.choice([None, [], "x", 1, {}])
    else:
        group = rng.choice(["features", "scores", "prediction_ids", "timestamps", "predictions"])
        if group in ("features", "scores"):
            name = rng.choice(list(b[group]))
            if target == "column":
                b[group][rng.choice([name, "", "k" * 129, "new"])] = rng.choice(
                    [*values, [1.0] * 6, ["a"] * 6, [None] * 6]
                )
            else:
                b[group][name][rng.randrange(6)] = rng.choice(values)
        else:
            b[group][rng.randrange(6)] = rng.choice(values)
    return b


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _tally_against_the_full_decode(
    tally: dict[str, int],
    value: bytes,
    mutated: dict[str, Any],
    base: dict[str, Any],
    dumps: Any,
    kind: str,
) -> None:
    """One record (``value``, written from ``mutated``) decoded both ways, counted in
    ``tally``: the same outcome (a refusal, or the same ``kind``: batch or event), or
    joined despite its features, as ``mutated`` with ``base``'s valid features decodes."""
    full, join = _outcome(decode_record, value), _outcome(decode_join_record, value)
    if full == join:
        tally["same refusal" if full[0] == "refused" else f"same {kind}"] += 1
        return
    assert full[0] == "refused" and join[0] == kind, (mutated, full, join)
    assert type(mutated["features"]) is dict and mutated["features"] != base["features"], mutated
    fixed = _outcome(decode_record, dumps({**mutated, "features": base["features"]}))
    assert join == fixed, (mutated, full, join)
    tally["joined despite its features"] += 1


def test_join_decode_refuses_what_the_full_decode_refuses_but_feature_values() -> None:
    # Oracle: decode_record. Outside the feature values every verdict and every reason is
    # the same; a batch refused only for its feature values is joined as the same batch
    # with valid features.
    rng = random.Random(11)
    base = pack_events(_events()[:6])[0]
    base["segment"] = {"region": "eu"}
    tally = {"same refusal": 0, "same batch": 0, "joined despite its features": 0}
    for _ in range(2_000):
        b = _mutated(rng, base)
        _tally_against_the_full_decode(tally, orjson.dumps(b), b, base, orjson.dumps, "batch")
    assert min(tally.values()) > 100, tally


def test_join_decode_refuses_features_that_are_not_a_json_object_as_the_full_decode() -> None:
    packed = orjson.dumps(pack_events(_events()[:6])[0])
    at = packed.index(b'"features":') + len(b'"features":')
    end = packed.index(b'},"predictions"') + 1
    for text in (b"null", b"[]", b'"x"', b'{"x":[1,]}', b'{"x":[1', b"{}}"):
        value = packed[:at] + text + packed[end:]
        full, join = _outcome(decode_record, value), _outcome(decode_join_record, value)
        assert full[0] == "refused" and join == full, (text, full, join)
    without = orjson.loads(packed)
    del without["features"]
    value = orjson.dumps(without)
    assert _outcome(decode_join_record, value) == _outcome(decode_record, value)
    assert _outcome(decode_record, value)[0] == "refused"


def test_joiner_keeps_the_predictions_of_a_batch_refused_for_a_feature_value() -> None:
    events = _events()
    packed = pack_events(events, 20)
    bad = copy.deepcopy(packed[0])
    bad["features"]["x"][3] = [1.0]  # a list where a number belongs: the monitor refuses
    with pytest.raises(ContractError):
        decode_record(orjson.dumps(bad))
    items, refused = _decode_predictions([SimpleNamespace(value=orjson.dumps(bad))])
    assert refused == 0
    (item,) = items
    assert isinstance(item, ColumnarBatch)
    assert [r["prediction_id"] for r in _join_rows(item)] == [f"p{i}" for i in range(20)]


def test_join_decode_reads_a_single_event_as_the_full_decode_without_its_features() -> None:
    events = _events()
    events[3]["timestamp"] = "2026-01-01T00:00:00.003Z"
    events[4]["extra"] = {"kept": [1, 2]}  # an unknown top-level field: accepted, kept
    for e in events:
        for value in (
            orjson.dumps(e),
            json.dumps(e, indent=2).encode(),
            json.dumps(e, separators=(",", " : ")).encode(),
            orjson.dumps({"segment": {"features": "x"}, **e} if e.get("segment") else e),
        ):
            full, join = _outcome(decode_record, value), _outcome(decode_join_record, value)
            assert full[0] == "event" and join == full
            item = decode_join_record(value)
            assert isinstance(item, dict) and item["features"] == {}


def test_join_decode_refuses_a_single_event_as_the_full_decode_but_feature_values() -> None:
    # Oracle: decode_record, as for batches.
    rng = random.Random(12)
    base: dict[str, Any] = {**_events()[25], "features": {"x": 1.5, "c": "a", "n": None}}
    values: list[Any] = [None, True, 0, -1, 1.5, "", "x" * 257, "ok", [], {}, [1.0], 2**70]
    tally = {"same refusal": 0, "same event": 0, "joined despite its features": 0}
    for _ in range(2_000):
        e = copy.deepcopy(base)
        target = rng.choice(["top", "features", "feature", "scores"])
        if target == "top":
            e[rng.choice([*e, "extra", "schema_version"])] = rng.choice(values)
        elif target == "features":
            e["features"] = rng.choice([None, [], "x", 1, {}, {"k" * 129: 1.0}])
        else:
            group = "features" if target == "feature" else "scores"
            if type(e.get(group)) is not dict:
                e[group] = {}
            e[group][rng.choice(["x", "c", "yes", "", "new"])] = rng.choice(values)
        text = _json_dumps(e)  # json: integers past 64 bits too
        value = text if rng.random() < 0.9 else text[:-2]
        _tally_against_the_full_decode(tally, value, e, base, _json_dumps, "event")
    assert min(tally.values()) > 100, tally


def test_join_decode_refuses_an_event_over_the_size_limit_whatever_its_features() -> None:
    e = {**_events()[0], "features": {"x": 1.0, "text": "a" * 200_000}}
    value = orjson.dumps(e)
    full = _outcome(decode_record, value)
    assert full[0] == "refused" and "bytes" in full[1][1]
    assert _outcome(decode_join_record, value) == full


def test_joiner_keeps_a_single_prediction_refused_for_a_feature_value() -> None:
    e = {**_events()[0], "features": {"x": [1.0], "c": "a"}}
    with pytest.raises(ContractError):
        decode_record(orjson.dumps(e))
    items, refused = _decode_predictions([SimpleNamespace(value=orjson.dumps(e))])
    assert refused == 0
    assert [(it["prediction_id"], it["prediction"]) for it in items] == [("p0", e["prediction"])]
