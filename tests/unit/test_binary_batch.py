"""The binary batch (``prediction_batch.v2``) reads exactly as its ``v1`` JSON twin.

Oracles: the same envelope written as v1 (``orjson.dumps``) and as v2
(:func:`encode_binary_batch`) decodes to the same rows, types and envelope; the monitor's
core gives bit-identical states, windows and alert ids on either; the refusals of v1
examples are the refusals of their v2 encodings; the label joiner reads the same
predictions from both.
"""

from __future__ import annotations

import functools
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator

from driftline.contract.batch import decode_prediction_batch_fast
from driftline.contract.binary_batch import (
    BINARY_MAGIC,
    decode_binary_batch,
    encode_binary_batch,
    is_binary_batch,
)
from driftline.contract.columnar import BatchColumns, CodedColumn, ColumnarBatch, pack_events
from driftline.contract.decode import decode_join_record, decode_record, decode_records
from driftline.contract.events import LIMITS
from driftline.contract.keys import StateKey
from driftline.contract.records import encode_batch, pack_records
from driftline.core.fastloop import process_batch
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.errors import ContractError, DecodeError, UnsupportedVersion, ValidationError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _events(n: int, seed: int, model: str = "churn", **kw: Any) -> list[dict[str, Any]]:
    sim = SimulatedModel(seed=seed, model_id=model)
    return [orjson.loads(orjson.dumps(e)) for e in sim.events(n, **kw)]


def _both(env: dict[str, Any]) -> tuple[ColumnarBatch, ColumnarBatch]:
    # orjson writes contiguous numeric arrays only (the SDK copies a strided view
    # first, and writes text arrays as lists).
    features = {
        k: (c.tolist() if c.dtype.kind in "OU" else np.ascontiguousarray(c))
        if isinstance(c, np.ndarray)
        else c
        for k, c in env["features"].items()
    }
    v1 = decode_record(
        orjson.dumps({**env, "features": features}, option=orjson.OPT_SERIALIZE_NUMPY)
    )
    v2 = decode_record(encode_binary_batch(env))
    assert isinstance(v1, ColumnarBatch) and isinstance(v2, ColumnarBatch)
    return v1, v2


def _envelope(count: int, features: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "format": "driftline.prediction_batch",
        "schema_version": 1,
        "model_id": "m",
        "model_version": "1",
        "count": count,
        "prediction_ids": [f"p{i}" for i in range(count)],
        "timestamps": [1_767_225_600_000 + i for i in range(count)],
        "features": features,
        "predictions": [i % 2 for i in range(count)],
        **extra,
    }


# ---------------------------------------------------------------------- the layout


def test_the_layout_is_magic_length_header_padding_block() -> None:
    env = _envelope(3, {"x": [1.5, None, -2.0], "n": [1, 2, 3], "plan": ["a", "b", "a"]})
    value = encode_binary_batch(env)
    assert value[:8] == BINARY_MAGIC and is_binary_batch(value)
    size = int.from_bytes(value[8:12], "little")
    header = orjson.loads(value[12 : 12 + size])
    assert header["features"] == {"x": "f8", "n": "i8", "plan": ["a", "b", "a"]}
    start = 12 + size + (-(12 + size) % 8)
    assert start % 8 == 0 and value[12 + size : start].strip(b" ") == b""
    block = value[start:]
    x = np.frombuffer(block[:24], "<f8")
    assert x[0] == 1.5 and math.isnan(x[1]) and x[2] == -2.0
    assert np.frombuffer(block[24:], "<i8").tolist() == [1, 2, 3]


# Columns as producers hand them over: which go into the block, and which stay JSON
# because their values would read differently (1 and 1.0 are different categories).
COLUMNS: list[tuple[str, Any, str | None]] = [
    ("floats", [0.5, -1.25, 3.0, 1e300], "f8"),
    ("floats and missing", [0.5, None, None, 2.0], "f8"),
    ("float NaN (written null by v1)", [0.5, math.nan, 1.0, 2.0], "f8"),
    ("float infinity (written null by v1)", [0.5, math.inf, -math.inf, 2.0], "f8"),
    ("integers", [1, -7, 2**53 + 1, 0], "i8"),
    ("integers past int64", [1, 2**63, 3, 4], None),
    ("integers and missing", [1, None, 3, 4], None),
    ("integers and floats", [1, 2.5, 3, 4], None),
    ("booleans", [True, False, True, True], None),
    ("text", ["a", "b", "01234", ""], None),
    ("repeated text (coded)", ["a", "b", "a", "b"], "u1"),
    ("repeated text and missing (coded)", ["a", None, "a", None], "u1"),
    ("numpy str, as pandas gives (coded)", np.array(["a", "b", "b", "b"]), "u1"),
    ("numpy object text (coded)", np.array(["a", None, "a", "a"], dtype=object), "u1"),
    ("repeated text and a boolean", ["a", True, "a", True], None),
    ("repeated text and a number", ["a", 1, "a", 1], None),
    ("all missing", [None, None, None, None], None),
    ("numpy float64", np.array([0.1, np.nan, np.inf, 2.0]), "f8"),
    ("numpy float32 (shortest decimal)", np.array([0.1, 0.2, 0.3, 1.0], np.float32), None),
    ("numpy int32", np.array([1, 2, 3, 4], np.int32), "i8"),
    ("numpy uint64 past int64", np.array([1, 2**63, 3, 4], np.uint64), None),
    ("numpy uint64", np.array([1, 2, 3, 4], np.uint64), "i8"),
    ("numpy bool", np.array([True, False, True, False]), None),
    ("strided view", np.arange(8.0)[::2], "f8"),
]


@pytest.mark.parametrize(("what", "col", "dtype"), COLUMNS, ids=[c[0] for c in COLUMNS])
def test_a_column_reads_as_its_json_twin(what: str, col: Any, dtype: str | None) -> None:
    env = _envelope(4, {"c": col, "other": ["x"] * 4})
    value = encode_binary_batch(env)
    size = int.from_bytes(value[8:12], "little")
    header = orjson.loads(value[12 : 12 + size])
    assert _in_block(header["features"]["c"]) == dtype
    v1, v2 = _both(env)
    assert v2.rows() == v1.rows()
    assert v2.to_envelope() == v1.to_envelope()
    cols1, cols2 = BatchColumns(v1), BatchColumns(v2)
    assert cols2.types("c") == cols1.types("c")
    assert cols2.column("c") == cols1.column("c")
    a, am = cols1.numeric("c")
    b, bm = cols2.numeric("c")
    assert np.array_equal(a, b, equal_nan=True)
    assert (am is None) == (bm is None)
    _same_codes(cols1, cols2, "c")


def _in_block(entry: Any) -> str | None:
    """How a header names a feature column: its block dtype, its codes' width, or None
    (JSON)."""
    if type(entry) is str:
        return entry
    return entry["codes"] if type(entry) is dict else None


def _same_codes(cols1: BatchColumns, cols2: BatchColumns, name: str) -> None:
    """The core's category codes of ``name`` are equal from both versions."""
    lookup: dict[str | None, int] = {"a": 0, "b": 1, "x": 2, "1": 3, "true": 4, None: -1}
    c1, m1 = cols1.codes(name, lookup, 5)
    c2, m2 = cols2.codes(name, lookup, 5)
    assert np.array_equal(c1, c2)
    assert (m1 is None) == (m2 is None) and (m1 is None or np.array_equal(m1, m2))


SCORES: list[tuple[str, Any, bool]] = [
    ("floats", [0.25, 0.5, 1.0, 0.0], True),
    ("floats and nulls", [0.25, None, None, 1.0], True),
    ("numpy float64", np.array([0.1, 0.2, np.nan, 0.9]), True),
    ("integers (0 and 1)", [0, 1, 1, 0], False),
    ("numpy float32", np.array([0.1, 0.2, 0.3, 0.4], np.float32), False),
    ("all null", [None, None, None, None], False),
]


@pytest.mark.parametrize(("what", "col", "in_block"), SCORES, ids=[c[0] for c in SCORES])
def test_a_score_column_reads_as_its_json_twin(what: str, col: Any, in_block: bool) -> None:
    env = _envelope(4, {"x": [1.0, 2.0, 3.0, 4.0]}, scores={"a": col, "b": [0.5] * 4})
    value = encode_binary_batch(env)
    header = orjson.loads(value[12 : 12 + int.from_bytes(value[8:12], "little")])
    assert (header["scores"]["a"] == "f8") is in_block and header["scores"]["b"] == "f8"
    v1, v2 = _both(env)
    assert v2.rows() == v1.rows()
    assert v2.to_envelope() == v1.to_envelope()
    assert np.array_equal(
        BatchColumns(v2).confidence(), BatchColumns(v1).confidence(), equal_nan=True
    )
    joined = decode_join_record(value)
    assert isinstance(joined, ColumnarBatch) and joined.scores is not None
    assert all(type(c) is list for c in joined.scores.values())  # as the joiner reads v1
    assert joined.rows() == decode_join_record(orjson.dumps(v1.to_envelope())).rows()


def test_random_envelopes_read_as_their_json_twins() -> None:
    rng = random.Random(5)
    kinds = [c[1] for c in COLUMNS]
    coded = 0
    for _ in range(300):
        n = rng.randint(1, 40)
        features: dict[str, Any] = {}
        for j in range(rng.randint(0, 6)):
            pick = rng.randrange(6)
            if pick == 0:
                features[f"f{j}"] = [
                    rng.gauss(0, 1) if rng.random() > 0.2 else None for _ in range(n)
                ]
            elif pick == 1:
                features[f"f{j}"] = [rng.randint(-(10**6), 10**6) for _ in range(n)]
            elif pick == 2:
                features[f"f{j}"] = [rng.choice(["a", "b", None, True, 3]) for _ in range(n)]
            elif pick == 3:
                features[f"f{j}"] = np.array([rng.gauss(0, 1) for _ in range(n)])
            elif pick == 4:  # repeated text: coded when it repeats enough
                features[f"f{j}"] = [rng.choice(["a", "b", "x", None]) for _ in range(n)]
            else:
                base = list(rng.choice(kinds))
                features[f"f{j}"] = (base * n)[:n]
        extra: dict[str, Any] = {}
        if rng.random() < 0.5:
            extra["scores"] = {"0": [rng.random() for _ in range(n)], "1": [None] * n}
        if rng.random() < 0.3:
            extra["segment"] = {"country": "fr"}
        env = _envelope(n, features, **extra)
        v1, v2 = _both(env)
        assert v2.rows() == v1.rows()
        assert list(v2.features) == list(v1.features)  # the order, as first seen
        cols1, cols2 = BatchColumns([v1, v1], start=n // 2), BatchColumns([v2, v2], start=n // 2)
        for name in features:
            assert cols2.types(name) == cols1.types(name)
            assert cols2.column(name) == cols1.column(name)
            a, am = cols1.numeric(name)
            b, bm = cols2.numeric(name)
            assert np.array_equal(a, b, equal_nan=True), name
            assert (am is None) == (bm is None) and (am is None or np.array_equal(am, bm))
            _same_codes(cols1, cols2, name)
        coded += sum(type(c) is CodedColumn for c in v2.features.values())
    assert coded > 50  # the coded form was exercised


# ---------------------------------------------------------------------- the core's results


@functools.cache
def _reference(model: str) -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    return build_reference(sim.training_data(20_000), model, "1", seed=0, created_at=0)


def _run(values: list[bytes], fetch: int) -> Any:
    refs = {("churn", "1"): _reference("churn"), ("fraud", "1"): _reference("fraud")}
    states: dict[StateKey, Any] = {}
    alerts: list[Any] = []
    windows: list[Any] = []
    for i in range(0, len(values), fetch):
        frame, bad = decode_records(values[i : i + fetch])
        assert not bad
        res = process_batch(frame, states, lambda m, v: refs.get((m, v)))
        alerts += res.alerts
        windows += res.windows
    return alerts, windows, states


def test_the_monitor_core_gives_bit_identical_results_on_either_version() -> None:
    churn = _events(8_000, seed=11, shift=Shift(start=3_000, sigmas=0.8))
    churn += _events(4_000, seed=12, start=8_000)  # recovery
    fraud = _events(6_000, seed=13, model="fraud", shift=Shift(start=2_000, sigmas=1.0))
    for i, e in enumerate(fraud):
        if i % 50 == 0:
            e["features"]["f04"] = None  # missing: NaN in the block
        if i % 70 == 0:
            e["features"]["plan"] = 7  # a type mismatch: the column stays JSON
        if 1_000 <= i < 3_000:
            e["features"]["visits"] = i % 13  # an unknown integer feature: in the block
    events = [e for pair in zip(churn, fraud, strict=False) for e in pair] + churn[len(fraud) :]
    envelopes = pack_events(events, max_rows=500)
    v1 = [orjson.dumps(env) for env in envelopes]
    v2 = [encode_binary_batch(env) for env in envelopes]
    assert all(map(is_binary_batch, v2))
    a_alerts, a_windows, a_states = _run(v1, 9)
    b_alerts, b_windows, b_states = _run(v2, 9)
    assert a_alerts and [a.alert_id for a in b_alerts] == [a.alert_id for a in a_alerts]
    assert orjson.dumps([a.model_dump() for a in b_alerts]) == orjson.dumps(
        [a.model_dump() for a in a_alerts]
    )
    assert orjson.dumps(b_windows) == orjson.dumps(a_windows)  # bit for bit
    assert {k: s.to_bytes() for k, s in b_states.items()} == {
        k: s.to_bytes() for k, s in a_states.items()
    }


# ---------------------------------------------------------------------- refusals


def _valid() -> bytes:
    features = {"x": [1.0, 2.0, 3.0, 4.0], "plan": list("abcd")}
    return encode_binary_batch(_envelope(4, features, scores={"yes": [0.5, 0.25, 0.75, 1.0]}))


def _coded() -> bytes:
    """A valid batch with a coded text column ("plan", codes after the numeric block)."""
    features = {"x": [1.0, 2.0, 3.0, 4.0], "plan": ["a", None, "a", None]}
    value = encode_binary_batch(_envelope(4, features))
    assert b'"plan":{"codes":"u1","categories":["a",null]}' in value
    return value


def _header_size(value: bytes) -> int:
    return int.from_bytes(value[8:12], "little")


def _with_header(value: bytes, change: Any) -> bytes:
    """``value`` with its header replaced by ``change(header)`` (block kept)."""
    size = _header_size(value)
    start = 12 + size + (-(12 + size) % 8)
    header = change(value[12 : 12 + size])
    pad = -(12 + len(header)) % 8
    return b"".join(
        (BINARY_MAGIC, len(header).to_bytes(4, "little"), header, b" " * pad, value[start:])
    )


def _bad_padding(value: bytes) -> bytes:
    """``value`` with a byte of its padding (made at least one byte long) not a space."""
    size = _header_size(value)
    if (12 + size) % 8 == 0:
        value = _with_header(value, lambda h: h + b" ")  # now 7 bytes of padding
        size += 1
    return value[: 12 + size] + b"!" + value[13 + size :]


def _block_value(value: bytes, index: int, x: float) -> bytes:
    size = _header_size(value)
    start = 12 + size + (-(12 + size) % 8) + 8 * index
    return value[:start] + np.float64(x).tobytes() + value[start + 8 :]


BROKEN: list[tuple[str, Any, type[ContractError], str]] = [
    ("prefix cut", lambda v: v[:10], DecodeError, "shorter than its 12-byte prefix"),
    (
        "header past the end",
        lambda v: v[:8] + (10**6).to_bytes(4, "little") + v[12:],
        DecodeError,
        "runs past the record",
    ),
    (
        "header not JSON",
        lambda v: _with_header(v, lambda h: h[:-1]),
        DecodeError,
        "binary batch header:",
    ),
    (
        "header an array",
        lambda v: _with_header(v, lambda h: b"[" + h + b"]"),
        DecodeError,
        "expected a JSON object",
    ),
    (
        "duplicate key",
        lambda v: _with_header(v, lambda h: h[:-1] + b',"count":4}'),
        DecodeError,
        "duplicate key",
    ),
    (
        "newer schema version",
        lambda v: _with_header(
            v, lambda h: h.replace(b'"schema_version":1', b'"schema_version":9')
        ),
        UnsupportedVersion,
        "schema_version 9",
    ),
    ("padding not spaces", lambda v: _bad_padding(v), DecodeError, "padding"),
    ("block short", lambda v: v[:-8], DecodeError, "the block holds 56 bytes"),
    ("block long", lambda v: v + bytes(8), DecodeError, "the block holds 72 bytes"),
    (
        "unknown column type",
        lambda v: _with_header(v, lambda h: h.replace(b'"x":"f8"', b'"x":"f4"')),
        ValidationError,
        "features.'x': a column of the block must be named 'f8' or 'i8'",
    ),
    (
        "infinite value",
        lambda v: _block_value(v, 2, math.inf),
        ValidationError,
        "features.'x': value is infinite",
    ),
    (
        "a coded column's entry",
        lambda v: _with_header(_coded(), lambda h: h.replace(b'"u1"', b'"u4"')),
        ValidationError,
        "features.'plan': a coded column is",
    ),
    (
        "a key repeated in a coded column's entry",
        lambda v: _with_header(
            _coded(), lambda h: h.replace(b'{"codes":"u1"', b'{"codes":"u2","codes":"u1"')
        ),
        DecodeError,
        "duplicate key 'codes'",
    ),
    (
        "a category that is not text",
        lambda v: _with_header(_coded(), lambda h: h.replace(b'"a",null', b'"a",7')),
        ValidationError,
        "features.'plan': a category must be a string or null, got an integer",
    ),
    (
        "a category too long",
        lambda v: _with_header(
            _coded(), lambda h: h.replace(b'"a",null', b'"' + b"a" * 257 + b'",null')
        ),
        ValidationError,
        "features.'plan': string is longer than 256 characters",
    ),
    (
        "a code past the categories",
        lambda v: _coded()[:-8] + bytes([0, 1, 2, 0]) + bytes(4),
        ValidationError,
        "features.'plan': code 2 is past its 2 categories",
    ),
    (
        "codes' padding not zero",
        lambda v: _coded()[:-1] + b"\x01",
        DecodeError,
        "the padding after its codes is not zero bytes",
    ),
    (
        "codes missing",
        lambda v: _coded()[:-8],
        DecodeError,
        "the block holds 32 bytes, its 2 columns of 4 rows need 40",
    ),
    (
        "a JSON column's length",
        lambda v: _with_header(v, lambda h: h.replace(b'["a","b","c","d"]', b'["a"]')),
        ValidationError,
        "features.'plan': 1 entries, count is 4",
    ),
    (
        "over the size limit",
        lambda v: _with_header(
            v, lambda h: h[:-1] + b',"pad":"' + b"x" * LIMITS.max_batch_bytes + b'"}'
        ),
        ValidationError,
        "bytes, over 1000000",
    ),
    (
        "a score above one",
        lambda v: _block_value(v, 4, 1.5),
        ValidationError,
        "scores.'yes': probability outside 0..1",
    ),
    (
        "a negative score",
        lambda v: _block_value(v, 5, -0.25),
        ValidationError,
        "scores.'yes': probability outside 0..1",
    ),
    (
        "an integer score column",
        lambda v: _with_header(v, lambda h: h.replace(b'"yes":"f8"', b'"yes":"i8"')),
        ValidationError,
        "scores.'yes': a column of the block must be named 'f8', got 'i8'",
    ),
    (
        "a prediction id with a control character",
        lambda v: _with_header(v, lambda h: h.replace(b'"p1"', b'"p\\u00011"')),
        ValidationError,
        "prediction_ids: must not contain a control character",
    ),
]


@pytest.mark.parametrize(("what", "breaks", "error", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_binary_batch_is_refused_with_its_reason(
    what: str, breaks: Any, error: type[ContractError], reason: str
) -> None:
    value = breaks(_valid())
    with pytest.raises(error) as caught:
        decode_record(value)
    assert reason in str(caught.value)
    # Inside a fetch, it alone is refused (to the dead-letter topic, by the worker).
    good = [_valid(), orjson.dumps(_envelope(2, {"x": [1.0, 2.0]})), orjson.dumps(_events(1, 4)[0])]
    frame, bad = decode_records([good[0], value, good[1], good[2]])
    assert [i for i, _ in bad] == [1] and str(bad[0][1]) == str(caught.value)
    assert len(frame) == 3 and sum(getattr(it, "count", 1) for it in frame) == 4 + 2 + 1


def test_the_refusals_of_v1_examples_are_the_refusals_of_their_v2_encodings() -> None:
    """Every invalid example of prediction_batch.v1 that can be laid out as v2 (its
    features an object of arrays) is refused as v2 with v1's reason."""
    compared = 0
    for path in sorted((SCHEMAS / "examples" / "prediction_batch" / "invalid").glob("*.json")):
        obj = orjson.loads(path.read_bytes())
        features = obj.get("features") if type(obj) is dict else None
        if type(features) is not dict or not all(type(c) is list for c in features.values()):
            continue
        with pytest.raises(ContractError) as v1:
            decode_prediction_batch_fast(path.read_bytes())
        with pytest.raises(ContractError) as v2:
            decode_binary_batch(encode_binary_batch(obj))
        assert (type(v2.value), str(v2.value)) == (type(v1.value), str(v1.value)), path.name
        compared += 1
    assert compared >= 10
    for path in sorted((SCHEMAS / "examples" / "prediction_batch" / "valid").glob("*.json")):
        obj = orjson.loads(path.read_bytes())
        assert decode_binary_batch(encode_binary_batch(obj)).rows() == (
            ColumnarBatch.from_dict(decode_prediction_batch_fast(path.read_bytes())).rows()
        )


def test_the_header_follows_its_json_schema() -> None:
    schema = json.loads((SCHEMAS / "prediction_batch.v2.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for env in pack_events(_events(300, seed=8), max_rows=100):
        value = encode_binary_batch(env)
        header = orjson.loads(value[12 : 12 + _header_size(value)])
        assert "f8" in header["features"].values()
        assert not list(validator.iter_errors(header))
    header["features"]["f00"] = "f4"
    assert list(validator.iter_errors(header))


# ---------------------------------------------------------------------- the label joiner


def test_the_joiner_reads_the_same_predictions_from_either_version() -> None:
    events = _events(400, seed=9)
    for env in pack_events(events, max_rows=150):
        env["scores"] = {"stay": [0.25] * env["count"], "churn": [0.75] * env["count"]}
        a = decode_join_record(orjson.dumps(env))
        b = decode_join_record(encode_binary_batch(env))
        assert isinstance(a, ColumnarBatch) and isinstance(b, ColumnarBatch)
        assert b.rows() == a.rows() and not b.features
    # As for v1, a batch refused for its feature values only is joined: its labels are real.
    value = _block_value(encode_binary_batch(pack_events(events[:5])[0]), 1, math.inf)
    with pytest.raises(ValidationError):
        decode_record(value)
    joined = decode_join_record(value)
    assert isinstance(joined, ColumnarBatch) and joined.count == 5
    with pytest.raises(DecodeError):  # a broken layout is refused by both
        decode_join_record(value[:-8])


# ---------------------------------------------------------------------- the SDK's writing


def test_the_sdk_writes_v2_by_default_and_v1_when_asked() -> None:
    events = _events(60, seed=10)
    (binary, rows), *_ = pack_records(events, LIMITS.max_batch_bytes)
    (text, rows_text), *_ = pack_records(events, LIMITS.max_batch_bytes, binary=False)
    assert is_binary_batch(binary) and not is_binary_batch(text) and rows == rows_text == 60
    a, b = decode_record(binary), decode_record(text)
    assert isinstance(a, ColumnarBatch) and isinstance(b, ColumnarBatch)
    assert a.rows() == b.rows()
    assert [r["prediction_id"] for r in a.rows()] == [e["prediction_id"] for e in events]
    assert len(binary) < len(text)
    body = {k: v for k, v in pack_events(events)[0].items() if k not in ("format", "count")}
    _, value, _ = encode_batch(body)
    assert is_binary_batch(value)
    _, value, _ = encode_batch(body, binary=False)
    assert not is_binary_batch(value)


def test_mutated_binary_batches_are_refused_never_raised() -> None:
    """Bad input never crashes a worker: any byte flip, cut or splice of a binary batch
    decodes or is refused with a contract error, by the monitor and by the joiner."""
    rng = random.Random(17)
    base = [
        _valid(),
        encode_binary_batch(pack_events(_events(40, seed=6), max_rows=40)[0]),
        encode_binary_batch(_envelope(3, {"n": [1, 2, 3], "x": [0.5, None, 1.5]})),
        _coded(),
    ]
    outcomes: dict[str, int] = {}
    for trial in range(3000):
        value = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            how = rng.randrange(4)
            at = rng.randrange(len(value))
            if how == 0:
                value[at] = rng.randrange(256)
            elif how == 1:
                del value[at:]
            elif how == 2:
                value[8:12] = rng.randrange(0, 2 * len(value)).to_bytes(4, "little")
            else:
                value[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            if not value:
                value = bytearray(BINARY_MAGIC)
        data = bytes(value)
        for decode in (decode_record, decode_join_record):
            try:
                got = decode(data)
                if isinstance(got, ColumnarBatch):
                    got.rows()  # its columns read (a coded one's codes index its categories)
                outcomes["decoded"] = outcomes.get("decoded", 0) + 1
            except ContractError as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        frame, bad = decode_records([base[0], data, base[2]])
        assert len(frame) + len(bad) == 3 and [i for i, _ in bad] in ([], [1]), trial
    assert outcomes.get("DecodeError", 0) > 500 and outcomes.get("decoded", 0) > 50, outcomes


def test_a_record_written_from_the_documented_layout_decodes() -> None:
    """schemas/README.md's layout, written by hand (struct, not the SDK's encoder), as a
    producer in another language would: the monitor reads the rows it documents."""
    import struct

    header = orjson.dumps(
        {
            "format": "driftline.prediction_batch",
            "model_id": "churn",
            "model_version": "7",
            "count": 2,
            "prediction_ids": ["p1", "p2"],
            "timestamps": [1767225600000, 1767225600010],
            "features": {
                "income": "f8",
                "plan": ["pro", "basic"],
                "channel": {"codes": "u1", "categories": ["web", None]},
            },
            "predictions": ["stay", "leave"],
            "scores": {"stay": "f8", "leave": "f8"},
        }
    )
    pad = b" " * (-(12 + len(header)) % 8)
    block = struct.pack("<6d", 5200.5, math.nan, 0.8, 0.3, 0.2, 0.7)
    block += struct.pack("<2B", 1, 0) + bytes(6)  # channel's codes, zeros to 8 bytes
    value = b"DLPBv2\r\n" + struct.pack("<I", len(header)) + header + pad + block
    assert "`44 4c 50 42 76 32 0d 0a`" in (SCHEMAS / "README.md").read_text()
    batch = decode_record(value)
    assert isinstance(batch, ColumnarBatch)
    assert batch.rows() == [
        {
            "prediction_id": "p1",
            "model_id": "churn",
            "model_version": "7",
            "timestamp": 1767225600000,
            "features": {"income": 5200.5, "plan": "pro", "channel": None},
            "prediction": "stay",
            "scores": {"stay": 0.8, "leave": 0.2},
        },
        {
            "prediction_id": "p2",
            "model_id": "churn",
            "model_version": "7",
            "timestamp": 1767225600010,
            "features": {"income": None, "plan": "basic", "channel": "web"},
            "prediction": "leave",
            "scores": {"stay": 0.3, "leave": 0.7},
        },
    ]


def test_a_text_column_of_many_categories_has_two_byte_codes() -> None:
    n = 1200
    col = [f"c{i % 600}" for i in range(n)]
    env = _envelope(n, {"c": col, "x": [float(i) for i in range(n)]})
    value = encode_binary_batch(env)
    header = orjson.loads(value[12 : 12 + int.from_bytes(value[8:12], "little")])
    assert (
        header["features"]["c"]["codes"] == "u2"
        and len(header["features"]["c"]["categories"]) == 600
    )
    v1, v2 = _both(env)
    assert v2.rows() == v1.rows()
    _same_codes(
        BatchColumns([v1, v2]), BatchColumns([v2, v2]), "c"
    )  # a v1 batch in the run: by values
