"""The join reads a columnar batch's predictions from its columns as it reads its rows.

Oracle: the same batches with each columnar batch given as its rows (single events,
``columns.join_rows``), the join's event path. Every output of every batch is compared
(``support.join_snapshot``: every ``JoinResult`` field, the stored state, buckets and
class tables), and the lookup plans too.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from driftline.config import LabelsSettings
from driftline.contract.columnar import ColumnarBatch
from driftline.core.slowloop import join
from driftline.core.slowloop.columns import join_rows, quantised_scores
from driftline.core.slowloop.diagnosis import DriftIndex
from driftline.core.slowloop.lookups import MemoryRecords, plan_lookups
from driftline.core.slowloop.pending import SCORE_SCALE, PendingPrediction, encode_scored
from driftline.core.slowloop.perf_state import UnitState
from support import join_snapshot

T0 = 1_767_225_600_000
CLASSES = ["a", "b", "c", "d"]
#: A model with more classes than a pending record stores scores of (no score vector).
WIDE = [f"w{i}" for i in range(20)]
SEGMENTS = [None, {"region": "eu"}, {"region": "us", "plan": "pro"}]


def _halves() -> list[float]:
    """Scores whose scaled value is exactly halfway between two integers."""
    out = []
    for k in range(0, SCORE_SCALE, 997):
        x = (k + 0.5) / SCORE_SCALE
        if x * SCORE_SCALE == k + 0.5:
            out.append(x)
    return out


HALVES = _halves()
#: In range, halves, and out of range (the join clamps what the contract would refuse).
SCORES = [0.0, 1.0, 0.25, *HALVES[:5], 1.00001, -0.00001, 2.0, -3.5, 1e300, -1e300, 1, 0, True]


def _rfc3339(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, UTC).isoformat(timespec="milliseconds")


def _events(rng: random.Random, seed: int, b: int, clock: dict[str, int], seen: list[Any]) -> Any:
    """One batch's prediction events (test_join_runs' mix, plus numeric classes)."""
    preds = []
    m, v, seg = "m1", "1", None
    for k in range(rng.randrange(0, 400)):
        if k == 0 or rng.random() < 0.04:
            m = rng.choice(list(clock))
            v, seg = rng.choice(["1", "2"]), rng.choice(SEGMENTS)
        clock[m] += rng.randrange(0, 40_000)
        t, r = clock[m], rng.random()
        if r < 0.03:
            t -= rng.randrange(1, 30) * 3_600_000  # too old, or not yet
        elif r < 0.06:
            t += rng.randrange(1, 20) * 60_000  # future-dated
        pid = f"p{seed}-{b}-{k}"
        if seen and rng.random() < 0.06:
            pid, pm = rng.choice(seen)
            pid = pid if pm == m else f"x{pid}"
        elif rng.random() < 0.02 and preds:
            pid = preds[-1]["prediction_id"]  # a duplicate inside the batch
        e: dict[str, Any] = {"prediction_id": pid, "model_id": m, "model_version": v}
        e["timestamp"] = t
        if seg is not None:
            e["segment"] = dict(seg)
        if m == "reg":
            e["prediction"] = rng.random() * 10 if rng.random() > 0.05 else "high"
        else:
            classes = WIDE if m == "wide" else CLASSES
            e["prediction"] = rng.choice(classes) if rng.random() > 0.03 else rng.choice([1, True])
            if rng.random() < 0.8:
                names = classes if rng.random() < 0.7 else rng.sample(classes, rng.randrange(1, 5))
                e["scores"] = {
                    c: rng.choice(SCORES) if rng.random() < 0.3 else rng.random() for c in names
                }
        preds.append(e)
        seen.append((pid, m))
    return preds


def _pack(rng: random.Random, events: list[dict[str, Any]]) -> list[Any]:
    """Events as a mix of single events and columnar batches (runs of one stream)."""
    out: list[Any] = []
    i = 0
    while i < len(events):
        e = events[i]
        key = (e["model_id"], e["model_version"], repr(e.get("segment")))
        j = i + 1
        while j < len(events):
            f = events[j]
            if (f["model_id"], f["model_version"], repr(f.get("segment"))) != key:
                break
            j += 1
        j = min(j, i + rng.randrange(1, 300))
        if rng.random() < 0.25:
            out += events[i:j]  # single events
        else:
            out.append(_batch(rng, events[i:j]))
        i = j
    return out


def _batch(rng: random.Random, rows: list[dict[str, Any]]) -> ColumnarBatch:
    names = list(dict.fromkeys(c for r in rows for c in r.get("scores", {})))
    rng.shuffle(names)
    strings = rng.random() < 0.2
    return ColumnarBatch(
        model_id=rows[0]["model_id"],
        model_version=rows[0]["model_version"],
        prediction_ids=[r["prediction_id"] for r in rows],
        timestamps=[_rfc3339(r["timestamp"]) if strings else r["timestamp"] for r in rows],
        features={},
        predictions=[r["prediction"] for r in rows],
        scores={c: [r.get("scores", {}).get(c) for r in rows] for c in names} if names else None,
        segment=rows[0].get("segment"),
    )


def _batches(seed: int, t0: int = T0) -> list[tuple[list[Any], list[dict[str, Any]]]]:
    rng = random.Random(seed)
    clock = {m: t0 for m in ("m1", "m2", "reg", "wide")}
    seen: list[tuple[str, str]] = []
    preds = [_events(rng, seed, b, clock, seen) for b in range(rng.randrange(3, 8))]
    out = []
    for events in preds:
        labels = []
        # labels of predictions stored before, in this batch, and still to come (held)
        for _ in range(rng.randrange(0, 150) if seen else 0):
            pid, m = rng.choice(seen)
            label: Any = (
                rng.random() * 10 if m == "reg" else rng.choice(WIDE if m == "wide" else CLASSES)
            )
            t = clock[m] + rng.randrange(-600_000, 600_000)
            labels.append({"prediction_id": pid, "model_id": m, "label": label, "timestamp": t})
        out.append((_pack(rng, events), labels))
    return out


#: Model m2's reference: its calibration maps confidences (the estimated accuracy's).
M2_REF = SimpleNamespace(
    reference_id="m2-ref",
    row_count=2000,
    outputs=SimpleNamespace(
        task="classification",
        accuracy=0.8,
        mae=None,
        calibration={"edges": [0.2, 0.5, 0.5, 0.7, 0.9], "values": [0.1, 0.4, 0.45, 0.6, 0.8]},
    ),
)


def _reference(model: str, version: str) -> Any:
    return M2_REF if model == "m2" else None


def _rows(items: list[Any]) -> list[Any]:
    return [r for it in items for r in (join_rows(it) if isinstance(it, ColumnarBatch) else [it])]


def _run(seed: int, columns: bool, t0: int = T0) -> list[Any]:
    settings = LabelsSettings(window_labels=20, horizon_seconds=6 * 3600)
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    seen: list[Any] = []
    for items, labels in _batches(seed, t0):
        preds = items if columns else _rows(items)
        plan = plan_lookups(preds, labels, unit, settings)
        res = join.join_batch(
            preds, labels, plan, mem.lookup(plan), unit, _reference, drift, settings
        )
        mem.apply(res)
        seen += [(plan.keys, plan.probes, plan.pred_probe, plan.label_probe, plan.pred_digest)]
        seen += join_snapshot(res, unit)
    return seen


@pytest.mark.parametrize("seed", range(30))
def test_columns_equal_rows(seed: int) -> None:
    assert _run(seed, columns=True) == _run(seed, columns=False)


@pytest.mark.parametrize("seed", range(3))
def test_columns_equal_rows_before_1970(seed: int) -> None:
    # negative event times: generation -1, negative buckets (numpy's // and % floor)
    t0 = -3_600_000
    assert _run(seed, columns=True, t0=t0) == _run(seed, columns=False, t0=t0)


def test_the_batches_reach_every_outcome() -> None:
    text = repr([_run(seed, columns=True) for seed in range(6)])
    for what in ("'too_old'", "'invalid'", "'duplicate'", "'stored'", "'joined'", "estimated"):
        assert what in text
    kinds = [type(it) for seed in range(6) for items, _ in _batches(seed) for it in items]
    assert ColumnarBatch in kinds and dict in kinds
    batches = [it for seed in range(6) for items, _ in _batches(seed) for it in items]
    scored = [b for b in batches if isinstance(b, ColumnarBatch) and b.scores]
    assert any(None in col for b in scored for col in b.scores.values())  # null scores
    assert any(not isinstance(b, dict) and not b.scores for b in batches)


def test_quantised_scores_are_the_rounded_products() -> None:
    # np.rint of the scaled score is round() of it for every float64 the join meets:
    # random bit patterns, halves, near-halves, tiny, huge and negative values.
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**64, size=200_000, dtype=np.uint64).view(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bits[np.isfinite(bits * SCORE_SCALE)]
    near = [float(np.nextafter(h, d)) for h in HALVES for d in (0.0, 2.0)]
    values = [*finite.tolist(), *HALVES, *near]
    values += [0.0, -0.0, 5e-324, 1.0, 1 - 2**-53, 1e308 / SCORE_SCALE, -1e308 / SCORE_SCALE]
    values += [(k + 0.5) / SCORE_SCALE for k in range(SCORE_SCALE)]
    assert len(HALVES) > 20
    b = ColumnarBatch(
        model_id="m",
        model_version="1",
        prediction_ids=[str(i) for i in range(len(values))],
        timestamps=[0] * len(values),
        features={},
        predictions=["a"] * len(values),
        scores={"a": values},
    )
    got = quantised_scores(b)
    assert got is not None and got.pattern is None
    want = [min(max(round(x * SCORE_SCALE), 0), SCORE_SCALE) for x in values]
    assert got.q[:, 0].tolist() == want
    assert got.top.tolist() == want


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e308, "0.5", 10**400])
def test_scores_the_matrix_cannot_hold_take_the_rows_path(bad: Any) -> None:
    # Never contract-valid; the join does with them what it does with the rows (raises).
    b = ColumnarBatch(
        model_id="m",
        model_version="1",
        prediction_ids=["p1", "p2"],
        timestamps=[T0, T0 + 1],
        features={},
        predictions=["a", "b"],
        scores={"a": [0.5, bad], "b": [0.5, None]},
    )
    assert quantised_scores(b) is None
    errors = []
    for preds in ([b], join_rows(b)):
        unit, settings = UnitState(), LabelsSettings()
        plan = plan_lookups(preds, [], unit, settings)
        with pytest.raises((ValueError, OverflowError, TypeError)) as info:
            join.join_batch(preds, [], plan, [], unit, lambda m, v: None, DriftIndex(), settings)
        errors.append(type(info.value))
    assert errors[0] is errors[1]


def test_records_packed_at_once_are_the_records_encoded() -> None:
    rng = random.Random(3)
    for k in (1, 3, 16):
        times = [rng.randrange(-(2**47), 2**47) for _ in range(50)] + [0, -1, 2**47 - 1, -(2**47)]
        cls = [rng.randrange(0, 65536) for _ in times]
        q = np.array([[rng.randrange(0, SCORE_SCALE + 1) for _ in range(k)] for _ in times])
        packed = encode_scored(7, times, cls, q)
        want = [
            PendingPrediction(7, t, False, 0.0, c, max(row), tuple(row)).encode()
            for t, c, row in zip(times, cls, q.tolist(), strict=True)
        ]
        assert packed == want
    assert encode_scored(0, [2**47], [0], np.zeros((1, 2), np.int64)) is None  # wide time
    assert encode_scored(70_000, [0], [0], np.zeros((1, 2), np.int64)) is None
    assert encode_scored(0, [0], [0], np.zeros((1, 17), np.int64)) is None
