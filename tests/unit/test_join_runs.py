"""The join stores a run of predictions as it stores them one by one (every output).

``_Joiner.add_predictions`` looks up what a run of the same (model, version, segment)
shares once and adds its counts once a run; the oracle is the same batches with each
prediction a run of its own (every lookup and count done per prediction, as before runs).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from driftline.config import LabelsSettings
from driftline.core.slowloop import join
from driftline.core.slowloop.diagnosis import DriftIndex
from driftline.core.slowloop.lookups import Found, MemoryRecords, plan_lookups
from driftline.core.slowloop.perf_state import UnitState
from support import join_snapshot

T0 = 1_767_225_600_000
CLASSES = ["a", "b", "c", "d"]
SEGMENTS = [None, {"region": "eu"}, {"region": "us", "plan": "pro"}]


def _batches(seed: int, t0: int = T0) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Random batches: several models, versions and segments in runs, classification
    with and without scores (some out of [0, 1]), regression (some not numbers),
    duplicates within and across batches, too-old and future-dated predictions, and
    labels (joined, held, duplicate, expired, invalid)."""
    rng = random.Random(seed)
    clock = {m: t0 for m in ("m1", "m2", "reg")}
    seen: list[tuple[str, str]] = []
    out = []
    for b in range(rng.randrange(3, 8)):
        preds = []
        m, v, seg = "m1", "1", None
        for k in range(rng.randrange(0, 300)):
            if k == 0 or rng.random() < 0.15:
                m = rng.choice(list(clock))
                v, seg = rng.choice(["1", "2"]), rng.choice(SEGMENTS)
            clock[m] += rng.randrange(0, 40_000)
            t, r = clock[m], rng.random()
            if r < 0.05:
                t -= rng.randrange(1, 30) * 3_600_000  # too old, or not yet
            elif r < 0.1:
                t += rng.randrange(1, 20) * 60_000  # future-dated
            pid = f"p{seed}-{b}-{k}"
            if seen and rng.random() < 0.08:
                pid, pm = rng.choice(seen)  # a duplicate (another model's id is new)
                pid = pid if pm == m else f"x{pid}"
            e: dict[str, Any] = {"prediction_id": pid, "model_id": m, "model_version": v}
            e["timestamp"] = t
            if seg is not None and rng.random() < 0.9:
                e["segment"] = dict(seg)
            if m == "reg":
                e["prediction"] = rng.random() * 10 if rng.random() > 0.05 else "high"
            else:
                e["prediction"] = rng.choice(CLASSES)
                if rng.random() < 0.7:
                    names = rng.sample(CLASSES, rng.randrange(1, 5))
                    values = [rng.random(), 0.0, 1.0, 1.00001, -0.00001]
                    e["scores"] = {c: rng.choice(values) for c in names}
            preds.append(e)
            seen.append((pid, m))
        labels = []
        for _ in range(rng.randrange(0, 100) if seen else 0):
            pid, m = rng.choice(seen)
            label: Any = rng.random() * 10 if m == "reg" else rng.choice(CLASSES)
            t = clock[m] + rng.randrange(-60_000, 600_000)
            labels.append({"prediction_id": pid, "model_id": m, "label": label, "timestamp": t})
        out.append((preds, labels))
    return out


def _one_by_one(
    self: Any,
    events: Sequence[Mapping[str, Any]],
    digests: Sequence[bytes],
    found: Sequence[Found],
) -> None:
    for i in range(len(events)):
        self._add_run(events, digests, found, i, i + 1)


def _run(seed: int, t0: int = T0) -> list[Any]:
    settings = LabelsSettings(window_labels=20, horizon_seconds=6 * 3600)
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    seen = []
    for preds, labels in _batches(seed, t0):
        plan = plan_lookups(preds, labels, unit, settings)
        res = join.join_batch(
            preds, labels, plan, mem.lookup(plan), unit, lambda m, v: None, drift, settings
        )
        mem.apply(res)
        seen += join_snapshot(res, unit)
    return seen


@pytest.mark.parametrize("seed", range(40))
def test_runs_equal_one_by_one(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _run(seed)
    monkeypatch.setattr(join._Joiner, "add_predictions", _one_by_one)
    assert _run(seed) == runs


@pytest.mark.parametrize("seed", range(3))
def test_runs_equal_one_by_one_before_1970(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # negative event times: generation -1 and negative buckets are ones like any other
    runs = _run(seed, t0=-3_600_000)
    monkeypatch.setattr(join._Joiner, "add_predictions", _one_by_one)
    assert _run(seed, t0=-3_600_000) == runs


def test_the_batches_reach_every_outcome() -> None:
    # the oracle above is only as good as what its batches exercise
    text = repr([_run(seed) for seed in range(10)])
    for what in ("'too_old'", "'invalid'", "'duplicate'", "'stored'", "'joined'", "estimated"):
        assert what in text
    assert "PerfObservation(model_id='m1', model_version='1', metric='estimated_accuracy'" in text
