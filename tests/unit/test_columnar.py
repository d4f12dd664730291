"""Columnar batches and bulk decoding: same verdicts, same drift results."""

from __future__ import annotations

import copy
import functools
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.contract import columnar
from driftline.contract.batch import (
    check_prediction_batch,
    decode_prediction_batch,
    decode_prediction_batch_fast,
)
from driftline.contract.checks import (
    decode_prediction_fast,
)
from driftline.contract.columnar import (
    BatchColumns,
    ColumnarBatch,
    EventColumns,
    EventFrame,
    group_items,
    pack_events,
    row_count,
)
from driftline.contract.decode import decode_record, decode_records
from driftline.contract.events import (
    BATCH_FORMAT,
    LIMITS,
    PredictionBatch,
)
from driftline.contract.keys import StateKey
from driftline.core.fastloop import process_batch
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.errors import ContractError, DecodeError, UnsupportedVersion, ValidationError
from support import assert_close, mixed_items

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "prediction_batch.v1.json"


@functools.cache
def reference(model: str = "churn") -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    return build_reference(sim.training_data(20_000), model, "1", seed=0, created_at=0)


def _events(n: int, seed: int, model: str = "churn", **kw: Any) -> list[dict[str, Any]]:
    sim = SimulatedModel(seed=seed, model_id=model)
    return [orjson.loads(orjson.dumps(e)) for e in sim.events(n, **kw)]


# ---------------------------------------------------------------------- the envelope


def test_batch_schema_limits_match_the_code() -> None:
    schema = json.loads(SCHEMA.read_text())
    props = schema["properties"]
    assert props["count"]["maximum"] == LIMITS.max_batch_rows
    for column in ("prediction_ids", "timestamps", "predictions"):
        assert props[column]["maxItems"] == LIMITS.max_batch_rows
    assert props["features"]["maxProperties"] == LIMITS.max_features
    assert props["scores"]["maxProperties"] == LIMITS.max_classes
    assert props["format"]["const"] == BATCH_FORMAT
    assert str(LIMITS.max_batch_bytes) in schema["description"]


def test_pack_events_round_trips_rows() -> None:
    events = _events(1_200, seed=1)
    events[5]["features"]["f01"] = None
    del events[6]["features"]["f02"]  # absent reads as null, as in the core
    events[7].pop("scores")
    batches = pack_events(events, max_rows=500)
    assert [b["count"] for b in batches] == [500, 500, 200]
    rows = [r for b in batches for r in ColumnarBatch.from_dict(b).rows()]
    for got, want in zip(rows, events, strict=True):
        want = copy.deepcopy(want)
        want["features"] = {k: want["features"].get(k) for k in got["features"]}
        assert got == want
    for b in batches:
        assert check_prediction_batch(b) is None
        PredictionBatch.model_validate(b)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["prediction_ids"].pop(),
        lambda b: b["timestamps"].append(0),
        lambda b: b["features"]["f00"].pop(),
        lambda b: b["predictions"].append("stay"),
        lambda b: b["scores"]["stay"].pop(),
        lambda b: b.update(count=b["count"] + 1),
    ],
)
def test_every_column_has_count_entries(mutate: Any) -> None:
    # The one rule the JSON Schema cannot state; the model and the fast check agree on it.
    batch = pack_events(_events(20, seed=2))[0]
    mutate(batch)
    data = orjson.dumps(batch)
    assert check_prediction_batch(batch) is not None
    with pytest.raises(ValidationError):
        decode_prediction_batch(data)
    with pytest.raises(ValidationError):
        decode_prediction_batch_fast(data)
    with pytest.raises(ValidationError):
        decode_record(data)


def test_random_batch_mutations_agree_with_the_model() -> None:
    rng = random.Random(6)
    base = pack_events(_events(6, seed=3))[0]
    base["segment"] = {"country": "DE"}
    values: list[Any] = [None, True, 0, -1, 1.5, 2, "", "x" * 257, "ok", [], {}, 0.5, 10_001]
    verdicts = {True: 0, False: 0}
    for _ in range(1_500):
        b = copy.deepcopy(base)
        target = rng.choice(["top", "column", "cell"])
        if target == "top":
            b[rng.choice([*b, "extra"])] = rng.choice(values)
        else:
            group = rng.choice(["features", "scores"])
            name = rng.choice(list(b[group]))
            if target == "column":
                b[group][rng.choice([name, "", "k" * 129, "new"])] = rng.choice(
                    [*values, [1.0] * 6, ["a"] * 6, [None] * 6]
                )
            else:
                b[group][name][rng.randrange(6)] = rng.choice(values)
        try:
            PredictionBatch.model_validate(b)
            ok = True
        except Exception:
            ok = False
        verdicts[ok] += 1
        assert (check_prediction_batch(b) is None) is ok, b
    assert verdicts[True] > 100 and verdicts[False] > 500


def test_batch_mapping_view_routes_like_an_event() -> None:
    batch = ColumnarBatch.from_dict(pack_events(_events(10, seed=4))[0])
    assert batch["model_id"] == "churn" and batch["model_version"] == "1"
    assert batch.get("segment") is None and batch["count"] == 10
    assert batch["timestamp"] == max(batch.timestamps)  # type: ignore[type-var]
    assert row_count([batch, {"model_id": "x"}]) == 11


# ---------------------------------------------------------------------- decoding


def _mutated_events(n: int, rng: random.Random) -> list[bytes]:
    """Valid events, a few of them broken in one place (like test_contract's mutations)."""
    events = _events(n, seed=5)
    out = []
    bad: list[Any] = [None, True, -1, 1.5, "", "x" * 300, [1], {"a": 1}, 2**70]
    for e in events:
        roll = rng.random()
        if roll < 0.05:
            e[rng.choice(["prediction_id", "model_id", "timestamp", "prediction", "features"])] = (
                rng.choice(bad)
            )
        elif roll < 0.1:
            e["features"][rng.choice([*e["features"], "k" * 129, ""])] = rng.choice(bad)
        elif roll < 0.13:
            e["scores"][rng.choice(list(e["scores"]))] = rng.choice([*bad, 1.01, -0.01])
        elif roll < 0.15:
            e["schema_version"] = rng.choice([2, 1.0, True, 0, None, 1])
        elif roll < 0.17:
            e["segment"] = rng.choice([{"c": ""}, {"c": "DE"}, {"c": 1}, [], None])
        elif roll < 0.18:
            del e[rng.choice(["prediction_id", "features", "prediction"])]
        elif roll < 0.19:  # ids a later stage cannot represent, or spelt twice (issue 16)
            e[rng.choice(["model_id", "model_version"])] = rng.choice(
                ["churn{x}", "ch\x00urn", "churn\x1f", "ｃｈｕｒｎ", "cafe\u0301", "ok:1"]
            )
        elif roll < 0.2:
            e["prediction_id"] = rng.choice(["p\n1", "p\x851", "{p1}", "p:1"])
        elif roll < 0.21:  # a repeated key, at the top level or inside an object
            data = orjson.dumps(e)
            spot = rng.choice([b'{"', b'"features":{"', b'"scores":{"'])
            extra = rng.choice([b'"model_id":"fraud",', b'"f00":1.0,', b'"stay":0.5,'])
            out.append(data.replace(spot, spot[:-1] + extra + b'"', 1))
            continue
        elif roll < 0.215:  # bytes that are not UTF-8 inside a string
            out.append(orjson.dumps(e).replace(b'"churn"', b'"ch\xffurn"', 1))
            continue
        try:
            out.append(orjson.dumps(e))
        except TypeError:
            out.append(b"{not json")
    out[3] = b"[1, 2]"
    out[4] = b"x" * (LIMITS.max_event_bytes + 1)
    return out


def _outcome(fn: Any, data: Any) -> Any:
    try:
        res = fn(data)
    except ContractError as exc:
        return (type(exc), str(exc))
    return res


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bulk_decoding_gives_the_per_record_verdicts(seed: int) -> None:
    rng = random.Random(seed)
    values: list[Any] = _mutated_events(400, rng)
    values.insert(10, None)
    batch = orjson.dumps(pack_events(_events(30, seed=6))[0])
    if seed == 2:
        values.insert(50, batch)  # a batch amid single events
        values.insert(51, batch.replace(b'"count":30', b'"count":31'))
    frame, bad = decode_records(values)
    want = [_outcome(decode_record, v) for v in values]
    expected_bad = [(i, w) for i, w in enumerate(want) if isinstance(w, tuple)]
    assert [(i, (type(e), str(e))) for i, e in bad] == expected_bad
    good = [w for w in want if not isinstance(w, tuple)]
    assert len(frame) == len(good)
    for got, w in zip(frame, good, strict=True):
        if isinstance(w, ColumnarBatch):
            assert isinstance(got, ColumnarBatch) and got.to_envelope() == w.to_envelope()
        else:
            assert got == w


def test_all_valid_singles_come_with_their_columns() -> None:
    values = [orjson.dumps(e) for e in _events(300, seed=7)]
    frame, bad = decode_records(values)
    assert not bad and isinstance(frame, EventFrame) and frame.groups is not None
    assert group_items(frame) is frame.groups
    (cols,) = frame.groups[("churn", "1", "")]
    assert isinstance(cols, EventColumns) and cols.uniform and cols.n == 300


def test_decode_record_errors() -> None:
    with pytest.raises(DecodeError):
        decode_record(None)
    batch = pack_events(_events(3, seed=8))[0]
    with pytest.raises(UnsupportedVersion):
        decode_record(orjson.dumps({**batch, "schema_version": 3}))
    big = {**batch, "padding": "x" * LIMITS.max_batch_bytes}
    with pytest.raises(ValidationError, match="bytes"):
        decode_record(orjson.dumps(big))
    single = _events(1, seed=8)[0]
    assert decode_record(orjson.dumps(single)) == decode_prediction_fast(orjson.dumps(single))


# ---------------------------------------------------------------------- same drift results


def _run(items: list[Any], batch: int) -> Any:
    refs = {("churn", "1"): reference(), ("fraud", "1"): reference("fraud")}
    states: dict[StateKey, Any] = {}
    alerts: list[Any] = []
    windows: list[Any] = []
    for i in range(0, len(items), batch):
        res = process_batch(items[i : i + batch], states, lambda m, v: refs.get((m, v)))
        alerts += res.alerts
        windows += res.windows
    return alerts, windows, states


@pytest.mark.parametrize("rows", [500, 137])
def test_columnar_batches_give_the_results_of_single_events(rows: int) -> None:
    churn = _events(8_000, seed=11, shift=Shift(start=3_000, sigmas=0.8))
    churn += _events(4_000, seed=12, start=8_000)  # recovery
    fraud = _events(6_000, seed=13, model="fraud")
    for i, e in enumerate(fraud):
        if i % 50 == 0:
            e["features"]["f04"] = None
        if i % 70 == 0:
            e["features"]["plan"] = 7  # a type mismatch
    singles = [e for pair in zip(churn, fraud + fraud[:0], strict=False) for e in pair]
    singles += churn[len(fraud) :]
    batches = [ColumnarBatch.from_dict(b) for b in pack_events(singles, max_rows=rows)]
    # same order per stream; the two models' batches interleave
    a_alerts, a_windows, a_states = _run(singles, 5_000)
    b_alerts, b_windows, b_states = _run(batches, 7)
    assert a_alerts and [a.alert_id for a in b_alerts] == [a.alert_id for a in a_alerts]
    for x, y in zip(b_alerts, a_alerts, strict=True):
        assert_close(x.model_dump(), y.model_dump())
    key = lambda w: (w["model_id"], w["window"])  # noqa: E731
    assert_close(sorted(b_windows, key=key), sorted(a_windows, key=key))
    assert set(b_states) == set(a_states)
    for k, st in a_states.items():
        assert_close(b_states[k].to_bytes(), st.to_bytes())


def test_long_runs_of_batches_are_cut_into_segments_of_whole_batches() -> None:
    def batch(n: int) -> ColumnarBatch:
        return ColumnarBatch.from_dict(pack_events(_events(n, seed=20), max_rows=n)[0])

    sizes = [3_000, 1_500, 500, 6_000, 100, 4_900]
    parts = BatchColumns.runs([batch(n) for n in sizes])
    assert [[b.count for b in p.batches] for p in parts] == [
        [3_000, 1_500, 500],
        [6_000],  # larger than a segment: alone
        [100, 4_900],
    ]
    assert all(p.n <= max(columnar.RUN_ROWS, p.batches[0].count) for p in parts)


def test_cutting_runs_of_batches_changes_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    events = _events(12_000, seed=21, shift=Shift(start=5_000, sigmas=0.8))
    batches = [ColumnarBatch.from_dict(b) for b in pack_events(events, max_rows=500)]
    (cut,) = group_items(batches).values()
    assert [c.n for c in cut] == [5_000, 5_000, 2_000]
    a_alerts, a_windows, a_states = _run(batches, len(batches))
    monkeypatch.setattr(columnar, "RUN_ROWS", 1 << 30)  # one segment of 12 000 rows
    (whole,) = group_items(batches).values()
    assert [c.n for c in whole] == [12_000]
    b_alerts, b_windows, b_states = _run(batches, len(batches))
    assert a_alerts and [a.alert_id for a in a_alerts] == [a.alert_id for a in b_alerts]
    assert orjson.dumps(a_windows) == orjson.dumps(b_windows)  # bit for bit
    assert {k: s.to_bytes() for k, s in a_states.items()} == {
        k: s.to_bytes() for k, s in b_states.items()
    }


def test_mixed_singles_and_batches_keep_partition_order() -> None:
    events = _events(3_000, seed=14, shift=Shift(start=1_200, sigmas=1.0))
    mixed = mixed_items(events)
    a_alerts, a_windows, a_states = _run(events, 1_000)
    b_alerts, b_windows, b_states = _run(mixed, 13)
    assert [a.alert_id for a in b_alerts] == [a.alert_id for a in a_alerts]
    assert_close(b_windows, a_windows)
    for k, st in a_states.items():
        assert_close(b_states[k].to_bytes(), st.to_bytes())


def test_warm_up_from_a_batch() -> None:
    events = _events(3_000, seed=15)
    batches = [ColumnarBatch.from_dict(b) for b in pack_events(events, max_rows=700)]
    a_states: dict[StateKey, Any] = {}
    b_states: dict[StateKey, Any] = {}
    a = process_batch(events, a_states, lambda m, v: None)
    b = process_batch(batches, b_states, lambda m, v: None)
    assert [r.reference_id for r in b.new_references] == [r.reference_id for r in a.new_references]
    key = StateKey("churn", "1")
    assert_close(b_states[key].to_bytes(), a_states[key].to_bytes())


def test_bulk_check_misses_no_single_broken_event() -> None:
    # One broken event among valid ones: the bulk check alone must notice it.
    rng = random.Random(9)
    clean = _events(40, seed=16)
    for e in clean[::3]:
        e["segment"] = {"country": "DE"}
    for e in clean[1::5]:
        e["timestamp"] = "2026-01-01T00:00:00Z"
    seen = 0
    for trial in range(600):
        values = [orjson.dumps(e) for e in clean]
        broken = _mutated_events(60, random.Random(trial))
        candidates = [b for b in broken if _outcome(decode_record, b).__class__ is tuple]
        if not candidates:
            continue
        values.insert(rng.randrange(len(values)), rng.choice(candidates))
        frame, bad = decode_records(values)
        assert len(bad) == 1 and len(frame) == len(clean)
        seen += 1
    assert seen > 500


# ---------------------------------------------------------------------- the SDK's batch mode


@pytest.mark.parametrize("batch_format", ["binary", "json"])
async def test_producer_send_batch_encodes_a_valid_envelope(batch_format: Any) -> None:
    import numpy as np

    from driftline.config import Settings
    from driftline.contract.binary_batch import is_binary_batch
    from driftline.producer import AsyncPredictionProducer
    from driftline.runtime.devstack import free_port

    settings = Settings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    p = AsyncPredictionProducer(settings, batch_format=batch_format)
    env = pack_events(_events(50, seed=17))[0]
    body = {k: v for k, v in env.items() if k not in ("format", "schema_version", "count")}
    body["features"]["f00"] = np.asarray(body["features"]["f00"])  # numpy columns are fine
    body["features"]["f00"][3] = np.nan  # NaN is written as null: missing
    assert p.send_batch(body) is True
    assert p.buffered == 1
    (_, topic, key, value, _event) = p._buf[0]
    assert (topic, key) == (settings.topics.predictions, b"churn")
    assert is_binary_batch(value) is (batch_format == "binary")
    batch = decode_record(value)
    assert isinstance(batch, ColumnarBatch) and batch.count == 50
    assert batch.rows()[3]["features"]["f00"] is None
    assert batch.rows()[4]["features"]["f00"] == body["features"]["f00"][4]
    assert p.send_batch({"model_id": "churn"}) is False  # columns missing: invalid
    big = {**body, "features": {"x": ["y" * 250] * 5_000}, "prediction_ids": ["p"] * 5_000}
    assert p.send_batch(big) is False  # over the batch size limit: oversize
    assert p.dropped == 2 and p.buffered == 1
    await p.stop(timeout=0.1)


def test_a_changed_frame_is_grouped_again() -> None:
    values = [orjson.dumps(e) for e in _events(30, seed=18)]
    frame, _ = decode_records(values)
    assert frame.groups is not None
    frame.pop()  # e.g. a shell that drops an event after decoding
    assert frame.groups is None
    (cols,) = group_items(frame)[("churn", "1", "")]
    assert cols.n == 29


NUMERIC_EDGES: list[list[Any]] = [
    [],
    [1.5],
    [3],
    [0.0, -0.0, 1e300, -1e-300, 5e-324],
    [2**53 + 1, 2**63 - 1, -(2**63), 7, 2.5],
    [float("nan"), 1.0],
    [float("inf"), -float("inf"), 2],
    [1.0, None, 3],
    [True, 1.0, False],
    ["3.5", 1.0, None],
    [None, None],
]


@pytest.mark.parametrize("values", NUMERIC_EDGES, ids=range(len(NUMERIC_EDGES)))
def test_numeric_reads_a_column_as_numeric_column_does(values: list[Any]) -> None:
    """Columns.numeric (numbers straight into the array) gives numeric_column's array
    (bit for bit) and mismatches, for single events, batches joined and cut (tail)."""
    from driftline.contract.columnar import BatchColumns, numeric_column

    n = len(values)

    def batch(vals: list[Any]) -> ColumnarBatch:
        b = ColumnarBatch(
            model_id="m",
            model_version="1",
            prediction_ids=[f"p{i}" for i in range(len(vals))],
            timestamps=[1] * len(vals),
            features={"x": vals},
            predictions=["a"] * len(vals),
        )
        b.feature_types = {"x": frozenset(map(type, vals))}  # as the contract check gives
        return b

    events = [{"features": {"x": v}} for v in values]
    half = n // 2
    cases = [
        EventColumns(events),  # type: ignore[arg-type]
        BatchColumns(batch(values)),
        BatchColumns([batch(values[:half]), batch(values[half:])]),
        BatchColumns([batch(values[:half]), batch(values[half:]), batch(values)]).tail(n),
    ]
    for cols in cases:
        want = numeric_column(cols.column("x"), cols.types("x"))
        fresh = cols.tail(0) if isinstance(cols, BatchColumns) else cols  # nothing cached
        got = fresh.numeric("x")
        assert got[0].tobytes() == want[0].tobytes()
        assert (got[1] is None) == (want[1] is None)
        if want[1] is not None:
            assert got[1] is not None and got[1].tolist() == want[1].tolist()
