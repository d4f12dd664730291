"""Columnar label batches (``label_batch.v1``): decoding, refusals, and the join oracle.

The oracle: the same labels sent one by one and packed into label batches (invalid rows
and duplicates inside, single events mixed in) decode to the same labels and the same
refusals (reasons word for word, the refused row as its single event), and the pure
join core gives the same :class:`JoinResult` for every batch and the same state.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_performance_core import T0, Loop, label, pred

from driftline.config import LabelsSettings
from driftline.contract.checks import decode_label_fast
from driftline.contract.label_batch import (
    LABEL_BATCH_FORMAT,
    check_label_batch,
    decode_label_records,
    pack_label_events,
)
from driftline.errors import ContractError, DecodeError, UnsupportedVersion, ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "label_batch"

#: Values a single label event is refused for, by field.
BAD = {
    "label": [True, None, [1], {"a": 1}, "x" * 257],
    "prediction_id": ["", "p\x00", 5, "q" * 257],
    "timestamp": [-1, "2026-02-30T00:00:00Z", 1.5, None, 253_402_300_800_000, "yesterday"],
}


def _single_reason(event: dict[str, Any]) -> str | None:
    try:
        decode_label_fast(orjson.dumps(event))
    except ContractError as exc:
        return str(exc)
    return None


def _labels(n: int, seed: int) -> list[dict[str, Any]]:
    """Labels of ``pred(i)`` for two models: some invalid, some duplicated, some early."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        model = "m" if (i // 7) % 3 else "n"
        e = label(i, value=rng.choice(["a", "b", 1, 2.5]), model=model)
        if model == "n":
            e["timestamp"] = f"2026-01-01T00:00:{i % 60:02d}.{i % 1000:03d}Z"
        if rng.random() < 0.08:
            fld = rng.choice(sorted(BAD))
            e[fld] = rng.choice(BAD[fld])
        out.append(e)
        if rng.random() < 0.1:
            out.append(dict(e))  # a duplicate label
    return out


def _preds(n: int) -> list[dict[str, Any]]:
    return [pred(i, model="m" if (i // 7) % 3 else "n") for i in range(n)]


def _as_records(labels: list[dict[str, Any]], seed: int) -> list[bytes]:
    """The labels, in order, as a mix of single events and label batches of random
    sizes (a batch holds one model: consecutive labels of one model)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    i = 0
    while i < len(labels):
        size = rng.choice([1, 1, 3, 17, 40])
        model = labels[i]["model_id"]
        chunk = [labels[i]]
        while len(chunk) < size and i + len(chunk) < len(labels):
            if labels[i + len(chunk)]["model_id"] != model:
                break
            chunk.append(labels[i + len(chunk)])
        i += len(chunk)
        if len(chunk) == 1 and rng.random() < 0.5:
            out.append(orjson.dumps(chunk[0]))
        else:
            out.extend(orjson.dumps(b) for b in pack_label_events(chunk, max_rows=size))
    return out


def test_rows_refused_with_the_single_events_reasons() -> None:
    labels = _labels(400, seed=1)
    singles = decode_label_records([orjson.dumps(e) for e in labels])
    batched = decode_label_records(_as_records(labels, seed=2))
    assert singles.refused and batched.batches
    assert batched.labels == singles.labels
    assert batched.count == singles.count == len(labels)
    # Same refusals in the same order, the same words; a row comes back as its event.
    assert [str(exc) for _, _, exc in batched.refused] == [
        str(exc) for _, _, exc in singles.refused
    ]
    refused_events = [e for e in labels if _single_reason(e) is not None]
    assert len(refused_events) == len(singles.refused)
    rows = 0
    for (_, row, exc), event in zip(batched.refused, refused_events, strict=True):
        if row is not None:  # a batch's row: dead-lettered as its own single event
            assert isinstance(exc, ValidationError)
            assert row == event and _single_reason(row) == str(exc)
            rows += 1
    assert rows


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_join_is_bit_for_bit_the_single_labels_join(seed: int) -> None:
    n = 900
    preds = _preds(n)
    labels = _labels(n, seed)
    rng = random.Random(seed)
    rng.shuffle(labels)  # some labels come before their predictions (held, then joined)
    single_values = [orjson.dumps(e) for e in labels]
    batch_values = _as_records(labels, seed + 10)
    settings = LabelsSettings()
    a, b = Loop(settings), Loop(settings)
    # Fetches of different record cuts: the join sees the same labels in the same order
    # in each of the three core batches.
    for k, lo in enumerate(range(0, n, 300)):
        chunk = labels[lo : lo + 300]
        ps = preds[lo : lo + 300]
        sa = decode_label_records([orjson.dumps(e) for e in chunk])
        sb = decode_label_records(_as_records(chunk, seed + k))
        assert sb.labels == sa.labels
        ra = a.batch(ps, sa.labels)
        rb = b.batch(ps, sb.labels)
        assert ra == rb
    assert a.unit.to_fields() == b.unit.to_fields()
    assert a.mem.data == b.mem.data
    assert sum(a.counts("m").values()) > 0 and a.alerts == b.alerts
    assert len(single_values) == len(labels) and len(batch_values) < len(labels)


def test_records_keep_order_and_origin() -> None:
    labels = [label(i) for i in range(6)]
    bad = {**label(9), "label": True}
    values = [
        orjson.dumps(labels[0]),
        orjson.dumps(pack_label_events([labels[1], bad, labels[2]])[0]),
        None,
        b"{broken",
        orjson.dumps(labels[3]),
        orjson.dumps(pack_label_events(labels[4:])[0]),
    ]
    dec = decode_label_records(values)
    assert dec.labels == labels
    assert dec.origin == [0, 1, 1, 4, 5, 5]
    assert dec.batches == {1, 5}
    assert [(ri, row) for ri, row, _ in dec.refused] == [(1, bad), (2, None), (3, None)]
    assert str(dec.refused[0][2]) == _single_reason(bad)
    assert dec.count == 9


def _batch(**kw: Any) -> dict[str, Any]:
    return {
        "format": LABEL_BATCH_FORMAT,
        "model_id": "m",
        "count": 3,
        "prediction_ids": ["p1", "p2", "p3"],
        "labels": ["a", "b", "a"],
        "timestamps": [T0, T0 + 1, T0 + 2],
        **kw,
    }


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        (orjson.dumps(_batch(labels=["a", "b"])), ValidationError, "labels: 2 entries, count is 3"),
        (orjson.dumps(_batch(count=0)), ValidationError, "count: need 1 to 10000"),
        (orjson.dumps(_batch(timestamps=T0)), ValidationError, "timestamps: expected an array"),
        (orjson.dumps(_batch(model_id="a{b}")), ValidationError, "model_id: must not contain"),
        (orjson.dumps(_batch(schema_version=2)), UnsupportedVersion, "schema_version 2"),
        (b'{"format": "driftline.label_batch", "count": 1', DecodeError, "not JSON"),
        (
            orjson.dumps(_batch()).replace(b'"count":3', b'"count":3,"count":2'),
            DecodeError,
            "duplicate key 'count'",
        ),
        (
            orjson.dumps(_batch(padding="x" * 1_000_000)),
            ValidationError,
            "batch is 1000",
        ),
    ],
)
def test_a_malformed_batch_is_refused_whole(value: bytes, error: type, reason: str) -> None:
    """Refused whole, a batch counted one label however many it held: a malformed batch
    of 500 labels was '1 dead letter' and 1 invalid label. Now it counts the labels it
    held (its count, or its longest column), and its dead letter's reason says so;
    bytes that are no JSON object count one."""
    dec = decode_label_records([value])
    [(ri, row, exc)] = dec.refused
    assert (ri, row) == (0, None)
    assert type(exc) is error and str(exc).startswith(reason), str(exc)
    held = 1 if error is DecodeError and "not JSON" in reason else 3
    assert dec.labels == [] and dec.count == dec.refused_labels == held
    said = "(a label batch of 3 labels, refused whole)"
    assert str(exc).endswith(said) if held == 3 else said not in str(exc)


def test_a_refused_batch_counts_the_labels_it_held_beside_the_others() -> None:
    big = _batch(
        count=500,
        prediction_ids=[f"p{i}" for i in range(500)],
        labels=["a"] * 499,  # one short: refused whole
        timestamps=[T0] * 500,
    )
    values = [orjson.dumps(label(1)), orjson.dumps(big), orjson.dumps({**label(2), "label": True})]
    dec = decode_label_records(values)
    assert dec.labels == [label(1)] and dec.refused_labels == 501 and dec.count == 502
    assert str(dec.refused[0][2]) == (
        "labels: 499 entries, count is 500 (a label batch of 500 labels, refused whole)"
    )


def test_a_single_event_naming_the_format_is_a_single_event() -> None:
    e = label(1, value=LABEL_BATCH_FORMAT)
    dec = decode_label_records([orjson.dumps(e), orjson.dumps({**e, "format": "x"})])
    assert dec.labels == [e, {**e, "format": "x"}] and not dec.batches


def test_check_names_the_first_bad_row() -> None:
    assert check_label_batch(_batch()) is None
    bad = _batch(timestamps=[T0, "2026-02-30T00:00:00Z", -1])
    assert check_label_batch(bad) == "row 1: timestamp: not an RFC 3339 date-time"
    assert check_label_batch([]) == "expected a JSON object, got a list"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.json")), ids=lambda p: p.stem)
def test_examples_decode_as_the_joiner_reads_them(path: Path) -> None:
    # A valid batch: every row kept. An invalid one: refused whole (envelope), or only
    # its bad row, with the reason of that row's single event.
    dec = decode_label_records([path.read_bytes()])
    obj = orjson.loads(path.read_bytes())
    if path.parent.name == "valid":
        assert not dec.refused and len(dec.labels) == obj["count"]
        return
    assert dec.refused
    for _, row, exc in dec.refused:
        if row is not None:
            assert _single_reason(row) == str(exc)
            assert len(dec.labels) == obj["count"] - len(dec.refused)


def test_pack_groups_by_model_and_cuts() -> None:
    events = [label(i, model="m" if i % 2 else "n") for i in range(7)]
    packed = pack_label_events(events, max_rows=2)
    assert [(b["model_id"], b["count"]) for b in packed] == [
        ("n", 2),
        ("n", 2),
        ("m", 2),
        ("m", 1),
    ]
    assert check_label_batch(packed[0]) is None
    dec = decode_label_records([orjson.dumps(b) for b in packed])
    assert dec.labels == [e for e in events if e["model_id"] == "n"] + [
        e for e in events if e["model_id"] == "m"
    ]
    with pytest.raises(ValueError):
        pack_label_events(events, max_rows=0)
