"""A simulated model server: training data and prediction events, with optional drift.

Used by the demo, the tests and the benchmarks. The "model" is a fixed softmax over a
linear function of the features, so shifting a feature also moves the output mix and
confidence, as it would in a real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.core.reference import TrainingData

__all__ = ["Shift", "SimulatedModel"]

CLASSES = ("churn", "stay", "upgrade")
CATEGORIES = {
    "plan": (("basic", 0.5), ("pro", 0.35), ("enterprise", 0.15)),
    "region": (("eu", 0.4), ("us", 0.4), ("apac", 0.2)),
    "channel": (("web", 0.6), ("app", 0.3), ("partner", 0.1)),
}


@dataclass(frozen=True)
class Shift:
    """A drift injected from event ``start`` on: ``feature``'s mean moves by ``sigmas``
    and its standard deviation is multiplied by ``scale``."""

    start: int
    feature: str = "f03"
    sigmas: float = 0.5
    scale: float = 1.0
    #: Optional categorical shift: this category of ``cat_feature`` gains this share.
    cat_feature: str | None = None
    category: str = ""
    share: float = 0.0


class SimulatedModel:
    """Generates feature rows, predictions and scores for a 3-class model."""

    def __init__(
        self, n_numeric: int = 20, seed: int = 0, model_id: str = "churn", model_version: str = "1"
    ) -> None:
        self.n_numeric = n_numeric
        self.names = [f"f{i:02d}" for i in range(n_numeric)]
        self.model_id = model_id
        self.model_version = model_version
        rng = np.random.default_rng(1234)  # the model's weights never change with the seed
        self.weights = rng.normal(0, 0.6, size=(n_numeric, len(CLASSES)))
        self.means = rng.normal(0, 2, size=n_numeric)
        self.scales = rng.uniform(0.5, 3, size=n_numeric)
        self.rng = np.random.default_rng(seed)

    def _rows(
        self, n: int, offset: int, shift: Shift | None
    ) -> tuple[np.ndarray, list[dict[str, str]]]:
        z = self.rng.normal(0, 1, size=(n, self.n_numeric))
        cats: list[dict[str, str]] = [{} for _ in range(n)]
        for cname, options in CATEGORIES.items():
            labels = [o for o, _ in options]
            probs = np.array([p for _, p in options])
            draws = self.rng.choice(len(labels), size=n, p=probs)
            for i, d in enumerate(draws.tolist()):
                cats[i][cname] = labels[d]
        if shift is not None:
            idx = np.arange(offset, offset + n) >= shift.start
            if shift.feature in self.names:
                col = self.names.index(shift.feature)
                z[idx, col] = z[idx, col] * shift.scale + shift.sigmas
            if shift.cat_feature:
                flip = idx & (self.rng.random(n) < shift.share)
                for i in np.flatnonzero(flip).tolist():
                    cats[i][shift.cat_feature] = shift.category
        x = self.means + z * self.scales
        return x, cats

    def _scores(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.means) / self.scales) @ self.weights
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return p

    def training_data(self, n: int = 20_000) -> TrainingData:
        """Reference rows with the model's predictions and scores."""
        x, cats = self._rows(n, 0, None)
        p = self._scores(x)
        feats = [
            {**{nm: float(v) for nm, v in zip(self.names, row, strict=True)}, **c}
            for row, c in zip(x, cats, strict=True)
        ]
        preds = [CLASSES[i] for i in p.argmax(axis=1)]
        scores: list[dict[str, float] | None] = [
            {c: round(float(v), 6) for c, v in zip(CLASSES, row, strict=True)} for row in p
        ]
        return TrainingData(features=feats, predictions=preds, scores=scores)

    def events(
        self,
        n: int,
        *,
        start: int = 0,
        shift: Shift | None = None,
        t0_ms: int = 1_767_225_600_000,
        step_ms: int = 10,
        chunk: int = 10_000,
    ) -> Iterator[dict[str, Any]]:
        """Prediction events ``start .. start+n`` (ids and times follow the index)."""
        done = 0
        while done < n:
            k = min(chunk, n - done)
            off = start + done
            x, cats = self._rows(k, off, shift)
            p = self._scores(x)
            for i in range(k):
                j = off + i
                yield {
                    "prediction_id": f"{self.model_id}-{j}",
                    "model_id": self.model_id,
                    "model_version": self.model_version,
                    "timestamp": t0_ms + j * step_ms,
                    "features": {
                        **{nm: round(float(v), 6) for nm, v in zip(self.names, x[i], strict=True)},
                        **cats[i],
                    },
                    "prediction": CLASSES[int(p[i].argmax())],
                    "scores": {c: round(float(v), 6) for c, v in zip(CLASSES, p[i], strict=True)},
                }
            done += k
