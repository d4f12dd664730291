"""A labelled demo scenario: river's SEA stream with a model, delayed labels and drifts.

Used by the demo (:mod:`driftline.demo.driver`), the slow-loop tests and benchmarks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.core.reference import TrainingData

__all__ = ["SeaScenario", "interleave"]


#: river's SEA: ``y = x0 + x1 > threshold`` of the variant (0..3).
_SEA_THRESHOLDS = (8.0, 9.0, 7.0, 9.5)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class SeaScenario:
    """SEA stream (river's ``SEA`` generator) with a model, delayed labels and drifts.

    Features and true labels come from ``river.datasets.synth.SEA``; the "model" is the
    rule ``x0 + x1 > model_threshold`` with a logistic score (8: variant 0's own rule, so
    it is wrong only on the label noise; above 8 it also errs, with low confidence,
    between 8 and its threshold). A *concept switch* changes the generator's variant
    (same inputs, new labelling rule); a *covariate shift* rescales the irrelevant
    feature ``x2`` (inputs move, accuracy does not); a *squeeze* pulls ``x0`` and ``x1``
    towards the model's boundary, where it is less sure and, unless it is perfect,
    less right (a covariate shift that hurts).
    """

    model_id: str = "sea"
    model_version: str = "1"
    seed: int = 7
    noise: float = 0.05
    t0_ms: int = 1_767_225_600_000
    step_ms: int = 10
    slope: float = 1.5
    segment: Mapping[str, str] | None = None
    model_threshold: float = 8.0

    def _score(self, x: Mapping[int, float]) -> tuple[str, dict[str, float]]:
        p = _sigmoid(self.slope * (x[0] + x[1] - self.model_threshold))
        scores = {"pos": round(p, 6), "neg": round(1.0 - p, 6)}
        return ("pos" if p > 0.5 else "neg"), scores

    def _rows(self, n: int, variant: int, seed: int) -> Iterator[tuple[dict[int, float], bool]]:
        from river.datasets import synth

        gen = synth.SEA(variant=variant, noise=self.noise, seed=seed)
        for x, y in gen.take(n):
            yield dict(x), bool(y)

    def training_data(self, n: int = 5000) -> TrainingData:
        """Labelled reference rows (features, predictions, scores, labels)."""
        feats: list[dict[str, Any]] = []
        preds: list[Any] = []
        scores: list[dict[str, float] | None] = []
        labels: list[Any] = []
        for x, y in self._rows(n, 0, self.seed + 1000):
            pred, sc = self._score(x)
            feats.append({"x0": round(x[0], 6), "x1": round(x[1], 6), "x2": round(x[2], 6)})
            preds.append(pred)
            scores.append(sc)
            labels.append("pos" if y else "neg")
        return TrainingData(features=feats, predictions=preds, scores=scores, labels=labels)

    def events(
        self,
        n: int,
        *,
        concept_at: int | None = None,
        variant_after: int = 3,
        covariate_at: int | None = None,
        x2_scale: float = 0.4,
        squeeze_at: int | None = None,
        squeeze: float = 0.15,
        delay_events: int = 300,
        jitter_events: int = 100,
        start: int = 0,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``n`` prediction events and their label events (labels sorted by label time).

        Label ``i`` is observed ``delay_events`` (+ uniform jitter) events after
        prediction ``i``. From ``squeeze_at`` on, ``x0`` and ``x1`` are pulled towards
        the model's boundary (``x0 + x1 = model_threshold``) by the factor ``squeeze``.
        """
        rng = random.Random(self.seed)
        switch = n if concept_at is None else min(n, max(0, concept_at - start))
        rows = list(self._rows(switch, 0, self.seed + start))
        if switch < n:
            rows += list(self._rows(n - switch, variant_after, self.seed + 77 + start))
        preds: list[dict[str, Any]] = []
        labels: list[tuple[int, dict[str, Any]]] = []
        for i, (x, y) in enumerate(rows):
            j = start + i
            if covariate_at is not None and j >= covariate_at:
                x[2] = x[2] * x2_scale
            if squeeze_at is not None and j >= squeeze_at:
                # Same concept on the moved inputs: SEA's rule for the row's variant,
                # with the row's label noise kept.
                theta = _SEA_THRESHOLDS[0 if i < switch else variant_after]
                noisy = y != (x[0] + x[1] > theta)
                centre = self.model_threshold / 2
                x[0] = centre + (x[0] - centre) * squeeze
                x[1] = centre + (x[1] - centre) * squeeze
                y = (x[0] + x[1] > theta) != noisy
            pred, sc = self._score(x)
            t = self.t0_ms + j * self.step_ms
            e: dict[str, Any] = {
                "prediction_id": f"{self.model_id}-{self.model_version}-{j}",
                "model_id": self.model_id,
                "model_version": self.model_version,
                "timestamp": t,
                "features": {"x0": round(x[0], 6), "x1": round(x[1], 6), "x2": round(x[2], 6)},
                "prediction": pred,
                "scores": sc,
            }
            if self.segment:
                e["segment"] = dict(self.segment)
            preds.append(e)
            lag = (delay_events + rng.randint(0, jitter_events)) * self.step_ms
            labels.append(
                (
                    t + lag,
                    {
                        "prediction_id": e["prediction_id"],
                        "model_id": self.model_id,
                        "label": "pos" if y else "neg",
                        "timestamp": t + lag,
                    },
                )
            )
        labels.sort(key=lambda tl: tl[0])
        return preds, [lab for _, lab in labels]


def interleave(
    preds: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """Predictions and labels in event-time order, as a live system would publish them."""
    out: list[tuple[str, dict[str, Any]]] = []
    i = j = 0
    while i < len(preds) or j < len(labels):
        if j >= len(labels) or (i < len(preds) and preds[i]["timestamp"] <= labels[j]["timestamp"]):
            out.append(("p", preds[i]))
            i += 1
        else:
            out.append(("l", labels[j]))
            j += 1
    return out
