"""The typed decoder (``driftline.contract.typed``) against the per-record path.

Two oracles. Per record: :func:`driftline.contract.decode.decode_record` (``orjson``
and the exact contract check) gives every record's verdict, its reason and its values;
the worker's bulk decoder must give the same valid items in order and the same
``(index, error)`` for each refused record, over hostile streams (broken values,
hostile bytes, batches, records without a value, several feature layouts). Per
scenario: every golden fast-loop scenario, sent as JSON records and decoded by the
typed decoder and by the untyped bulk decoder, gives the same alert ids, alerts,
windows and states through the core.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from driftline.contract import typed
from driftline.contract.columnar import ColumnarBatch, group_items, pack_events
from driftline.contract.decode import _decode_untyped, decode_record, decode_records
from driftline.contract.events import (
    LIMITS,
)
from driftline.contract.keys import StateKey
from driftline.core.fastloop import BatchResult, ModelState, process_batch
from driftline.demo.simulate import SimulatedModel
from driftline.errors import ContractError
from golden import scenarios

# ------------------------------------------------------------------ hostile streams

BAD_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1.5,
    -0.0,
    1e300,
    "",
    "x" * 300,
    "é" * 256,
    "é" * 257,
    [1],
    {"a": 1},
    2**63 - 1,
    -(2**63),
    2**64,
]


def _events(n: int, seed: int, model: str = "churn", n_numeric: int = 20) -> list[dict[str, Any]]:
    sim = SimulatedModel(seed=seed, model_id=model, n_numeric=n_numeric)
    return [orjson.loads(orjson.dumps(e)) for e in sim.events(n)]


def _break(rng: random.Random, e: dict[str, Any]) -> None:
    """Break (or not: some changes keep an event valid) one thing in an event."""
    roll = rng.randrange(12)
    if roll == 0:
        e[
            rng.choice(
                [
                    "prediction_id",
                    "model_id",
                    "model_version",
                    "timestamp",
                    "prediction",
                    "features",
                    "scores",
                    "segment",
                    "schema_version",
                ]
            )
        ] = rng.choice(BAD_VALUES)
    elif roll == 1:
        e["features"][rng.choice([*e["features"], "k" * 129, "", "new"])] = rng.choice(BAD_VALUES)
    elif roll == 2:
        e["scores"][rng.choice(list(e["scores"]))] = rng.choice([*BAD_VALUES, 1.01, -0.01, 0, 1])
    elif roll == 3:
        e["schema_version"] = rng.choice([2, 1.0, True, 0, None, 1, -1])
    elif roll == 4:
        e["segment"] = rng.choice([{"c": ""}, {"c": "DE"}, {"c": 1}, [], None, {}, {"c": "é" * 65}])
    elif roll == 5:
        del e[rng.choice(["prediction_id", "features", "prediction", "timestamp", "scores"])]
    elif roll == 6:
        e[rng.choice(["extra", "trace"])] = rng.choice(BAD_VALUES)  # fine for an event
    elif roll == 7:
        e["timestamp"] = rng.choice(
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z\n",
                "2026-02-30T00:00:00Z",
                "2026-01-01 00:00:00",
                "9999-12-31T23:59:59.999Z",
                -5,
                0,
                253_402_300_799_999,  # the last millisecond of year 9999
                253_402_300_800_000,
                2**63 - 1,
                2**63,
                1.0,
            ]
        )
    elif roll == 8:
        e["features"] = {
            f"g{i}": 0.5 for i in range(rng.choice([0, 1, 3, LIMITS.max_features + 1]))
        }
    elif roll == 9:
        e["scores"] = rng.choice([{}, None, {"a": 0.5} | {f"c{i}": 0.1 for i in range(300)}])
    elif roll == 10:
        e[rng.choice(["prediction_id", "model_id", "model_version"])] = rng.choice(
            ["a\u0001b", "{tag}", "ｍ１", "e\u0301", "x" * 128, "x" * 129, "é" * 128]
        )
    else:
        e["prediction"] = rng.choice([True, None, "s" * 257, 3, 0.25, [1]])


#: Records a producer may send that are not a broken event dumped by orjson.
RAW_HOSTILE: list[bytes | None] = [
    None,
    b"",
    b"{not json",
    b"[1, 2]",
    b"null",
    b'"text"',
    b"\xff\xfe{}",
    b'{"prediction_id": "p\xff", "model_id": "m", "model_version": "1", "timestamp": 1,'
    b' "features": {}, "prediction": "a"}',
    b"x" * (LIMITS.max_event_bytes + 1),
    # escaped keys and values: the same event written another way
    b'{"prediction_id": "p\\u0031", "\\u006dodel_id": "churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 1.0}, "prediction": "a"}',
    # repeated keys (orjson keeps the last value)
    b'{"prediction_id": "p", "model_id": "churn", "model_id": "fraud", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 1.0}, "prediction": "a"}',
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 1.0, "f00": 2.0}, "prediction": "a"}',
    b'{"prediction_id" : "p", "model_id" :"churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 1.0}, "prediction": "a:b"}',
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 1.0}, "prediction": "a",'
    b' "scores": {"a": 0.5, "a": 0.25}}',
    # numbers orjson and other parsers read differently
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 123456789012345678901234567890},'
    b' "prediction": "a"}',
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": 1E400}, "prediction": "a"}',
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 1767225600000, "features": {"f00": -0}, "prediction": 1.0}',
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 18446744073709551615, "features": {"f00": 1}, "prediction": "a"}',
    # event times past year 9999, and at its very end
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 253402300800000, "features": {"f00": 1}, "prediction": "a"}',
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 253402300799999, "features": {"f00": 1}, "prediction": "a"}',
    # deep nesting
    b'{"prediction_id": "p", "model_id": "churn", "model_version": "1",'
    b' "timestamp": 1, "features": {"f00": ' + b"[" * 2000 + b"]" * 2000 + b'}, "prediction": "a"}',
]


def _hostile_stream(rng: random.Random, n: int, layouts: int = 1) -> list[bytes | None]:
    """Valid events of ``layouts`` feature layouts (and models), some broken, with raw
    hostile records and a few columnar batches in between."""
    sources = [
        _events(n, seed=rng.randrange(1000), model=f"m{k}", n_numeric=4 + 3 * k)
        for k in range(layouts)
    ]
    out: list[bytes | None] = []
    for i in range(n):
        e = copy.deepcopy(sources[rng.randrange(layouts)][i])
        if rng.random() < 0.15:
            _break(rng, e)
        try:
            out.append(orjson.dumps(e))
        except TypeError:  # an integer beyond 64 bits: orjson cannot write it
            out.append(b'{"broken": ' + str(2**70).encode() + b"}")
        if rng.random() < 0.03:
            out.append(rng.choice(RAW_HOSTILE))
    return out


def _outcome(value: bytes | None) -> Any:
    try:
        return decode_record(value)
    except ContractError as exc:
        return (type(exc), str(exc))


def _plain(item: Any) -> Any:
    if isinstance(item, ColumnarBatch):
        return item.to_envelope()
    return {k: (dict(v.items()) if k == "features" else v) for k, v in item.items()}


def _same_as_per_record(values: Sequence[bytes | None], decoder: Any = decode_records) -> None:
    frame, bad = decoder(list(values))
    want = [_outcome(v) for v in values]
    want_bad = [(i, w) for i, w in enumerate(want) if isinstance(w, tuple)]
    assert [(i, (type(e), str(e))) for i, e in bad] == want_bad
    good = [_plain(w) for w in want if not isinstance(w, tuple)]
    got = [_plain(x) for x in frame]
    assert got == good
    # values of the same type, not only equal (1 and 1.0 and True are equal in Python)
    assert [orjson.dumps(g, option=orjson.OPT_SORT_KEYS) for g in got] == [
        orjson.dumps(g, option=orjson.OPT_SORT_KEYS) for g in good
    ]


@pytest.mark.parametrize("seed", range(6))
def test_hostile_streams_get_the_per_record_verdicts(seed: int) -> None:
    rng = random.Random(seed)
    values = _hostile_stream(rng, 600, layouts=1 + seed % 3)
    if seed % 2:
        batch = orjson.dumps(pack_events(_events(30, seed=6))[0])
        values.insert(rng.randrange(len(values)), batch)
    _same_as_per_record(values)
    _same_as_per_record(values, _decode_untyped)


def test_every_raw_hostile_record_alone_and_among_valid_events() -> None:
    valid = [orjson.dumps(e) for e in _events(50, seed=2)]
    for raw in RAW_HOSTILE:
        _same_as_per_record([raw])
        _same_as_per_record([*valid[:25], raw, *valid[25:]])


def test_one_broken_event_among_valid_ones_is_always_found() -> None:
    # The fast path (one layout, every record typed at once) must notice a single
    # broken record, whatever it is.
    rng = random.Random(11)
    clean = _events(40, seed=16)
    typed_seen = 0
    for trial in range(300):
        e = copy.deepcopy(clean[trial % 40])
        _break(rng, e)
        try:
            broken = orjson.dumps(e)
        except TypeError:
            continue
        values = [orjson.dumps(x) for x in clean]
        values.insert(rng.randrange(len(values)), broken)
        _same_as_per_record(values)
        typed_seen += 1
    assert typed_seen > 250


def test_valid_events_are_typed_and_read_like_dicts() -> None:
    events = _events(200, seed=4)
    for e in events[::7]:
        e["segment"] = {"country": "DE"}
    for e in events[1::9]:
        e["timestamp"] = "2026-01-01T00:00:00.5+01:00"
    for e in events[2::11]:
        del e["scores"]
        e["features"]["f01"] = None
    values = [orjson.dumps(e) for e in events]
    frame, bad = decode_records(values)
    assert not bad
    assert all(not isinstance(x, dict) for x in frame)  # typed, not orjson's dicts
    assert [_plain(x) for x in frame] == events
    assert frame.groups is not None
    parts = [c for cols in frame.groups.values() for c in cols]
    assert all(isinstance(c, typed.TypedColumns) for c in parts)
    assert sum(c.n for c in parts) == len(events)


def test_strict_layout_takes_exactly_what_the_general_one_takes() -> None:
    """After a clean batch a layout learns its strict form (each feature present, numbers
    only or text only), whose columns need no type scan. Its events and columns are the
    general layout's; an event it refuses sends the batch to the general layout (the
    per-record verdicts) and the strict form waits."""
    from driftline.contract.columnar import numeric_column

    events = _events(60, seed=21)
    values = [orjson.dumps(e) for e in events]
    lay = typed.layout_for(tuple(events[0]["features"]))
    lay.strict, lay.strict_wait = None, 0
    _same_as_per_record(values)  # learns the strict layout
    strict = lay.strict
    assert strict is not None and strict.kinds is not None
    frame, bad = decode_records(values)
    assert not bad and frame.groups is not None
    ((cols,),) = frame.groups.values()
    assert isinstance(cols, typed.TypedColumns) and cols.layout is strict
    ((plain,),) = group_items(_decode_untyped(values)[0]).values()
    for name, kind in zip(strict.names, strict.kinds, strict=True):
        got, want = cols.column(name), plain.column(name)
        assert orjson.dumps(list(got)) == orjson.dumps(list(want))
        assert cols.types(name) >= plain.types(name)
        if kind == "number":
            a, b = numeric_column(got, cols.types(name)), numeric_column(want, plain.types(name))
            assert a[0].tobytes() == b[0].tobytes() and a[1] is None and b[1] is None
    assert cols.feature_names == plain.feature_names
    assert cols.feature_keys() == 60 * len(strict.names)
    num = next(n for n, k in zip(strict.names, strict.kinds, strict=True) if k == "number")
    text = next(n for n, k in zip(strict.names, strict.kinds, strict=True) if k == "text")
    changes: list[tuple[str, Any, bool]] = [
        (num, 3, True),  # an int among floats: still a number
        (num, -0.0, True),
        (num, 1e300, True),
        (num, True, False),
        (num, None, False),
        (num, "3.5", False),
        (num, 2**63, False),
        (text, 7, False),
        (text, None, False),
        (text, "", True),
        (num, ..., False),  # missing
    ]
    for name, value, takes in changes:
        changed = copy.deepcopy(events)
        if value is ...:
            del changed[30]["features"][name]
        else:
            changed[30]["features"][name] = value
        lay.strict, lay.strict_wait = strict, 0
        _same_as_per_record([orjson.dumps(e) for e in changed])
        assert (lay.strict is strict) if takes else (lay.strict is None and lay.strict_wait > 0)


# ------------------------------------------------------------ golden scenarios, both ways


def _run(
    scn: scenarios.FastScenario, decoder: Any, size: int
) -> tuple[BatchResult, dict[str, Any]]:
    refs = scenarios._references(scn.references)
    values = [orjson.dumps(e) for e in copy.deepcopy(scn.events())]
    states: dict[StateKey, ModelState] = {}
    total = BatchResult()
    for i in range(0, len(values), size):
        frame, bad = decoder(values[i : i + size])
        assert not bad
        res = process_batch(frame, states, lambda m, v: refs.get((m, v)))
        total.alerts += res.alerts
        total.windows += res.windows
        total.observations += res.observations
        refs.update({(r.model_id, r.model_version): r for r in res.new_references})
    return total, {k.encode(): s.to_bytes() for k, s in states.items()}


@pytest.mark.parametrize("name", [s.name for s in scenarios.FAST])
def test_golden_scenarios_give_the_same_results_through_both_decoders(name: str) -> None:
    scn = scenarios.SCENARIOS[name]
    assert isinstance(scn, scenarios.FastScenario)
    size = scn.feeds[0][1] if scn.feeds[0][0] in ("events", "reload") else 1_000
    a, a_states = _run(scn, decode_records, size)
    b, b_states = _run(scn, _decode_untyped, size)
    assert [x.alert_id for x in a.alerts] == [x.alert_id for x in b.alerts]
    assert [x.model_dump() for x in a.alerts] == [x.model_dump() for x in b.alerts]
    assert scenarios.plain(a.windows) == scenarios.plain(b.windows)
    assert [(o.feature, o.test, o.value) for o in a.observations] == [
        (o.feature, o.test, o.value) for o in b.observations
    ]
    assert a_states == b_states


def test_typed_events_regrouped_by_hand_still_give_plain_rows() -> None:
    # A shell that filters a decoded frame (dropped streams) hands the core a plain
    # list of typed events: warm-up rows must still be plain dicts, as sent.
    events = _events(30, seed=8)
    frame, _ = decode_records([orjson.dumps(e) for e in events])
    (cols,) = group_items(list(frame)).values()
    rows = cols[0].rows(0, 30)
    assert rows == events
    assert all(type(r["features"]) is dict for r in rows)
    assert orjson.dumps(rows) == orjson.dumps(events)


def test_the_names_of_unknown_features_are_the_same_through_both_decoders() -> None:
    """The state keeps the names of unknown features: the typed decoder (its layout's
    columns) and the per-record one give the same names, in the same order, so the
    same state bytes and window summaries."""
    from driftline.core.reference import build_reference

    ref = build_reference(SimulatedModel(seed=3).training_data(5_000), "churn", "1", seed=0)
    events = list(SimulatedModel(seed=9).events(2_000))
    for i, e in enumerate(events[500:]):
        e["features"]["promo_code"] = "X"
        if i % 3 == 0:
            e["features"]["coupon"] = "web"
        if i > 900:
            e["features"][f"tag_{i % 7}"] = 1.0
    values = [orjson.dumps(e) for e in events]
    got = []
    for decoder in (decode_records, _decode_untyped):
        states: dict[StateKey, ModelState] = {}
        windows = []
        for i in range(0, len(values), 400):
            frame, bad = decoder(values[i : i + 400])
            assert not bad
            windows += process_batch(frame, states, lambda m, v: ref).windows
        got.append(
            (scenarios.plain(windows), {k.encode(): s.to_bytes() for k, s in states.items()})
        )
    assert got[0] == got[1]
    (st,) = got[0][1].values()
    assert orjson.loads(st)["unknown_names"][:3] == ["promo_code", "coupon", "tag_5"]
