"""The label joiner's prediction decoding, and a batch's rows with the fields the join reads."""

from __future__ import annotations

import random
from types import SimpleNamespace

import orjson

from driftline.contract.columnar import ColumnarBatch, pack_events
from driftline.contract.decode import decode_record
from driftline.core.slowloop.columns import join_rows as _join_rows
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
