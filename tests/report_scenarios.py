"""Scenarios for report, history and status-page tests: references and event streams.

``churn``: the simulated 23-feature model (20 numeric, 3 categorical); from a third of
the stream on ``f03`` shifts by one standard deviation and ``plan`` gains
"enterprise", from two thirds on the data recovers (as in the demo).
``wide``: 300 numeric features, five of which shift in the second half.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.core.reference import ReferenceProfile, TrainingData, build_reference
from driftline.demo.simulate import Shift, SimulatedModel

T0 = 1_767_225_600_000


@functools.cache
def churn_reference() -> ReferenceProfile:
    return build_reference(
        SimulatedModel(seed=3).training_data(20_000),
        "churn",
        "1",
        seed=0,
        created_at=T0 - 3_600_000,
        source="simulated training data",
    )


def churn_events(total: int = 18_000, model_id: str = "churn") -> list[dict[str, Any]]:
    sim = SimulatedModel(seed=11, model_id=model_id)
    shift_at, recover_at = total // 3, 2 * total // 3
    shift = Shift(start=shift_at, sigmas=1.0, cat_feature="plan", category="enterprise", share=0.3)
    return [*sim.events(recover_at, shift=shift), *sim.events(total - recover_at, start=recover_at)]


def quiet_events(total: int, model_id: str, version: str = "1") -> list[dict[str, Any]]:
    sim = SimulatedModel(seed=12, model_id=model_id, model_version=version)
    return list(sim.events(total))


def quiet_reference(model_id: str, version: str = "1") -> ReferenceProfile:
    sim = SimulatedModel(seed=13, model_id=model_id, model_version=version)
    return build_reference(sim.training_data(10_000), model_id, version, seed=0, created_at=T0)


WIDE_FEATURES = [f"feature_{i:03d}" for i in range(300)]


def _wide_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, float]]:
    x = rng.normal(0, 1, size=(n, len(WIDE_FEATURES)))
    if shift:
        x[:, [7, 42, 99, 150, 299]] += shift
    return [dict(zip(WIDE_FEATURES, r.round(4).tolist(), strict=True)) for r in x]


def _wide_output(row: dict[str, float]) -> tuple[str, dict[str, float]]:
    a = 1 / (1 + np.exp(-2 * row["feature_007"]))
    return ("a" if a >= 0.5 else "b"), {"a": round(float(a), 4), "b": round(float(1 - a), 4)}


@functools.cache
def wide_reference() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    rows = _wide_rows(rng, 3000)
    outs = [_wide_output(r) for r in rows]
    data = TrainingData(rows, [o[0] for o in outs], [o[1] for o in outs])
    return build_reference(data, "wide", "1", seed=0, created_at=T0, source="synthetic")


def wide_events(total: int = 4000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows = _wide_rows(rng, total // 2) + _wide_rows(rng, total - total // 2, shift=1.0)
    out = []
    for i, r in enumerate(rows):
        pred, scores = _wide_output(r)
        out.append(
            {
                "prediction_id": f"w{i}",
                "model_id": "wide",
                "model_version": "1",
                "timestamp": T0 + i * 100,
                "features": r,
                "prediction": pred,
                "scores": scores,
            }
        )
    return out


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    with path.open("wb") as fh:
        for e in events:
            fh.write(orjson.dumps(e) + b"\n")
    return path


def perf_points(version: str = "1", n: int = 12, drop_after: int | None = None) -> list[dict]:
    """Slow-loop style performance points: accuracy, estimate, coverage and lag."""
    pts = []
    for i in range(n):
        acc = 0.86 if drop_after is None or i < drop_after else 0.7
        pts.append(
            {
                "model_version": version,
                "at": T0 + i * 15_000,
                "accuracy": acc if i < n - 2 else None,  # the newest labels are not in yet
                "estimated_accuracy": acc - 0.01,
                "coverage": min(1.0, 0.1 * (i + 1)),
                "lag_seconds": 3600.0 - i * 60,
                "labels": 100 * (i + 1),
            }
        )
    return pts
