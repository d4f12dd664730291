"""Score calibration: the map from a model's top score to the chance it is right.

Fitted on the labelled reference rows when a reference is built
(:func:`driftline.core.reference.build_reference`) and applied by the slow loop's
label-free accuracy estimate (confidence-based performance estimation).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Calibration", "fit_calibration"]


@dataclass(frozen=True)
class Calibration:
    """Monotone map from a model's top score to the probability that it is right.

    A step function: bin ``i`` covers top scores up to ``edges[i]`` and maps to
    ``values[i]`` (non-decreasing, fitted by isotonic regression on labelled reference
    rows). The expected accuracy of a set of predictions is the mean calibrated top
    score (confidence-based performance estimation, as NannyML's CBPE).

    Examples
    --------
    >>> cal = Calibration(edges=(0.6, 0.9, 1.0), values=(0.5, 0.8, 0.97))
    >>> cal.apply(0.55), cal.apply(0.95)
    (0.5, 0.97)
    """

    edges: tuple[float, ...]
    values: tuple[float, ...]

    def apply(self, score: float) -> float:
        """Calibrated probability of being right for a top score."""
        i = bisect.bisect_left(self.edges, score)
        return self.values[min(i, len(self.values) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (stored in the reference's output profile)."""
        return {"edges": list(self.edges), "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        edges = tuple(float(x) for x in d["edges"])
        values = tuple(float(x) for x in d["values"])
        if not edges or len(edges) != len(values):
            raise ValueError("calibration needs as many edges as values, at least one")
        return cls(edges, values)


def fit_calibration(
    top_scores: Sequence[float], correct: Sequence[bool], bins: int = 20
) -> Calibration | None:
    """Isotonic calibration of top scores on labelled data (``None`` under 50 rows).

    The scores are cut into up to ``bins`` groups of equal count, then the groups'
    accuracies are made non-decreasing by pool-adjacent-violators (weighted by size).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(0.5, 1.0, 5000)
    >>> ok = rng.random(5000) < s - 0.1           # the model is over-confident by 0.1
    >>> cal = fit_calibration(s.tolist(), ok.tolist())
    >>> abs(np.mean([cal.apply(x) for x in s]) - ok.mean()) < 0.01
    True
    """
    s = np.asarray(top_scores, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if s.size < 50:
        return None
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    cuts = np.unique(np.quantile(s, np.arange(1, bins) / bins, method="inverted_cdf"))
    cuts = cuts[cuts < s[-1]]
    idx = np.searchsorted(cuts, s, side="left")
    n = np.bincount(idx, minlength=cuts.size + 1).astype(np.float64)
    k = np.bincount(idx, weights=y, minlength=cuts.size + 1)
    edges = [*cuts.tolist(), 1.0]
    # pool adjacent violators on (mean, weight) blocks
    blocks: list[list[float]] = []  # [sum, weight, first bin, last bin]
    for i in range(n.size):
        if n[i] == 0:
            continue
        blocks.append([float(k[i]), float(n[i]), float(i), float(i)])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1][0] += last[0]
            blocks[-1][1] += last[1]
            blocks[-1][3] = last[3]
    values = [0.0] * len(edges)
    for b in blocks:
        for i in range(int(b[2]), int(b[3]) + 1):
            values[i] = round(b[0] / b[1], 6)
    # Empty bins (none in practice) take the value of the bin below.
    for i in range(1, len(values)):
        values[i] = max(values[i], values[i - 1])
    return Calibration(tuple(round(e, 6) for e in edges), tuple(values))
