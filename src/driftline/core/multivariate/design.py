"""The columns the multivariate detector sees, and how an event becomes a vector.

Numeric features enter as **normal scores on the reference's own quantile bins**: the
value's bin (the same bins the window sketches count on) maps to
``Phi^-1(mid-quantile of the bin)``, standardised to mean 0 and sd 1 over the
reference. Why not ``(x - mean) / sd``: the scores make every marginal close to
Gaussian whatever its shape (log-normal, Student t, Poisson), so Hotelling's T^2 is
close to chi-square, the correlations the PCA sees are those of the Gaussian copula
(a lognormal feature's 0.8 stays 0.8), outliers are bounded (the extreme bins' scores,
about +-2.6 sd with 100 bins) and, in the fast loop, a feature's score is one table
lookup on the bin index the sketches already computed.

Categorical features enter as **indicators of their frequent categories**: a category
with a reference share ``p`` in ``[min_share, 1 - min_share]`` (at most ``max_levels``
per feature, most frequent first) gives a column ``(1[x = c] - p) / sqrt(p (1 - p))``.
Why: a categorical's relation to the numeric features (a plan's spend, a region's
latency) is joint behaviour that its own mix does not show; rare categories are left
out because their standardised indicators are heavy-tailed (a 1% category scores 9.9)
and their covariance estimates noisy; when every category of a feature would be a
column, the rarest is dropped (the indicators would sum to a constant).

Missing values. A missing, non-finite or mistyped value scores NaN, and an event
with one is left out of the joint watch (:mod:`.fit`: it moves neither the CUSUM nor
the sketches): missingness is a data-quality signal of its own, and imputing it would
make a feature that goes missing look like joint drift (two features gone missing
lowered T^2 enough to fire). Features missing in more than ``max_missing`` of the
reference rows are not columns at all, so that sparse features do not blind the
detector.

Exactness. Scores are rounded to multiples of ``2**-SCORE_BITS`` and the component
matrix to multiples of ``2**-COMPONENT_BITS`` (:mod:`.fit`), so every product and sum
of the projection is an integer multiple of a power of two below ``2**53``: the matrix
products are exact, hence the same whatever the batch boundaries or the BLAS kernel
(floating-point GEMM results otherwise depend on the batch's shape in the last bits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.columnar import category_value
from driftline.core.sketches import edges_fingerprint

__all__ = [
    "SCORE_BITS",
    "CategoricalInput",
    "Column",
    "Design",
    "NumericInput",
    "category_levels",
    "numeric_scores",
    "quantise",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: Scores are multiples of 2**-SCORE_BITS (|score| < 8, so below 2**19 units).
SCORE_BITS = 16
_NORMAL = NormalDist()


def quantise(x: F64, bits: int) -> F64:
    """``x`` rounded to the nearest multiple of ``2**-bits`` (exact in float64)."""
    scale = float(1 << bits)
    out: F64 = np.rint(np.asarray(x, dtype=np.float64) * scale) / scale
    return out


@dataclass(frozen=True)
class NumericInput:
    """One numeric feature of the reference: its column and its quantile bins.

    ``edges`` and ``counts`` are the reference profile's (``NumericProfile``): the
    bins of the window sketches, so the fast loop scores a value from the bin index
    it already has.
    """

    name: str
    values: F64
    edges: F64
    counts: I64


@dataclass(frozen=True)
class CategoricalInput:
    """One categorical feature of the reference: its column and its category counts.

    ``values`` holds the raw categories (``None`` missing); ``categories`` and
    ``counts`` are the reference profile's top-K list and counts (the last count is
    every other category).
    """

    name: str
    values: Sequence[str | None]
    categories: tuple[str, ...]
    counts: I64


@dataclass(frozen=True)
class Column:
    """One column of the design: a numeric feature, or one category of a feature."""

    feature: str
    category: str | None = None
    #: Numeric: the score of each bin (``len(edges) + 1``). Categorical: (present, absent).
    scores: tuple[float, ...] = ()
    #: Numeric: fingerprint of the bin edges the scores belong to.
    edges_fp: str = ""

    @property
    def numeric(self) -> bool:
        """Whether the column is a numeric feature (else a category indicator)."""
        return self.category is None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "feature": self.feature,
            "category": self.category,
            "scores": list(self.scores),
            "edges_fp": self.edges_fp,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        """Inverse of :meth:`to_dict`."""
        return cls(
            feature=str(d["feature"]),
            category=None if d["category"] is None else str(d["category"]),
            scores=tuple(float(s) for s in d["scores"]),
            edges_fp=str(d.get("edges_fp", "")),
        )


def numeric_scores(counts: I64) -> F64 | None:
    """Standardised normal scores of a feature's bins (None: fewer than two bins used).

    Bin ``b`` scores ``Phi^-1((N_<b + N_b / 2) / N)``, the normal quantile of its
    mid-rank; the scores are then standardised to mean 0 and sd 1 under the counts,
    and quantised (:data:`SCORE_BITS`).

    Examples
    --------
    >>> s = numeric_scores(np.array([25, 50, 25]))
    >>> [round(v, 3) for v in s.tolist()]
    [-1.414, 0.0, 1.414]
    """
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if total <= 0 or np.count_nonzero(c) < 2:
        return None
    mid = (np.cumsum(c) - c / 2) / total
    lo, hi = 0.5 / total, 1 - 0.5 / total
    raw = np.array([_NORMAL.inv_cdf(min(max(p, lo), hi)) for p in mid.tolist()])
    mean = float(c @ raw) / total
    sd = math.sqrt(float(c @ (raw - mean) ** 2) / total)
    if not sd > 0:
        return None
    return quantise((raw - mean) / sd, SCORE_BITS)


def category_levels(
    categories: Sequence[str], counts: I64, min_share: float, max_levels: int
) -> list[tuple[str, float]]:
    """The categories of a feature that become indicator columns, with their shares."""
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if total <= 0:
        return []
    shares = [(cat, float(c[i]) / total) for i, cat in enumerate(categories)]
    ok = [(cat, p) for cat, p in shares if min_share <= p <= 1 - min_share]
    ok.sort(key=lambda cp: (-cp[1], cp[0]))
    ok = ok[:max_levels]
    if ok and abs(sum(p for _, p in ok) - 1.0) < 1e-12:
        ok = ok[:-1]  # every category tracked: the indicators would sum to a constant
    return ok


def _indicator_scores(p: float) -> tuple[float, float]:
    sd = math.sqrt(p * (1 - p))
    hi, lo = quantise(np.array([(1 - p) / sd, -p / sd]), SCORE_BITS).tolist()
    return float(hi), float(lo)


class Design:
    """Turns events (columns of raw values, or bin indices and codes) into scores.

    Parameters
    ----------
    columns
        The design's columns, in order.
    edges
        Bin edges of each numeric feature (needed to score raw values; the fast loop
        scores bin indices instead, see :meth:`scores_from_bins`).
    """

    def __init__(self, columns: Sequence[Column], edges: Mapping[str, F64] | None = None) -> None:
        self.columns = tuple(columns)
        self.d = len(self.columns)
        self.features = tuple(dict.fromkeys(c.feature for c in self.columns))
        self.edges = dict(edges or {})
        self._tables = [np.asarray(c.scores, dtype=np.float64) for c in self.columns]

    @classmethod
    def build(
        cls,
        numeric: Sequence[NumericInput],
        categorical: Sequence[CategoricalInput],
        *,
        min_share: float,
        max_levels: int,
        max_missing: float = 1.0,
    ) -> Design:
        """The columns of a reference: usable numeric features, then category indicators.

        Features missing (or non-finite) in more than ``max_missing`` of the rows are
        left out.
        """
        cols: list[Column] = []
        edges: dict[str, F64] = {}
        for f in numeric:
            values = np.asarray(f.values, dtype=np.float64)
            if values.size and np.count_nonzero(~np.isfinite(values)) > max_missing * values.size:
                continue
            s = numeric_scores(f.counts)
            if s is None:
                continue
            cols.append(Column(f.name, None, tuple(s.tolist()), edges_fingerprint(f.edges)))
            edges[f.name] = np.asarray(f.edges, dtype=np.float64)
        for g in categorical:
            gone = sum(1 for v in g.values if v is None)
            if g.values and gone > max_missing * len(g.values):
                continue
            for cat, p in category_levels(g.categories, g.counts, min_share, max_levels):
                cols.append(Column(g.name, cat, _indicator_scores(p)))
        return cls(cols, edges)

    # ------------------------------------------------------------------ scoring
    def scores(
        self,
        numeric: Mapping[str, Any],
        categorical: Mapping[str, Sequence[Any]],
        n: int,
    ) -> F64:
        """Scores of ``n`` events, shape ``(d, n)``, from raw columns.

        ``numeric[name]`` are floats (NaN missing), ``categorical[name]`` raw values
        (``None`` missing, seen as :func:`~driftline.contract.columnar.category_value`
        sees them). Missing, non-finite values and absent features score NaN.
        """
        out = np.full((self.d, n), np.nan, dtype=np.float64)
        for j, col in enumerate(self.columns):
            if col.numeric:
                raw = numeric.get(col.feature)
                if raw is None:
                    continue
                x = np.asarray(raw, dtype=np.float64)
                b = np.searchsorted(self.edges[col.feature], x, side="left")
                # NaN sorts last, so every bin index is in range.
                out[j] = np.where(np.isfinite(x), self._tables[j][b], np.nan)
            else:
                vals = categorical.get(col.feature)
                if vals is None:
                    continue
                hi, lo = col.scores
                seen = [category_value(v) for v in vals]
                out[j] = [np.nan if c is None else (hi if c == col.category else lo) for c in seen]
        return out

    def scores_from_bins(
        self,
        bins: Mapping[str, NDArray[np.intp]],
        finite: Mapping[str, NDArray[np.bool_]],
        codes: Mapping[str, tuple[I64, Mapping[str, int]]],
        n: int,
    ) -> F64:
        """Scores from bin indices (numeric) and category codes (the fast loop's arrays).

        ``bins[name]`` are bin indices on the edges the scores were made for,
        ``finite[name]`` marks the values that are finite; ``codes[name]`` is a code
        array and the code of each category (``-1`` missing).
        """
        out = np.full((self.d, n), np.nan, dtype=np.float64)
        for j, col in enumerate(self.columns):
            if col.numeric:
                b = bins.get(col.feature)
                if b is None:
                    continue
                out[j] = np.where(finite[col.feature], self._tables[j][b], np.nan)
            else:
                got = codes.get(col.feature)
                if got is None:
                    continue
                arr, index = got
                code = index.get(col.category or "", -2)
                hi, lo = col.scores
                out[j] = np.where(arr == code, hi, np.where(arr < 0, np.nan, lo))
        return out

    def check_edges(self, edges: Mapping[str, F64]) -> bool:
        """Whether ``edges`` are the bins the numeric scores were made for."""
        for col in self.columns:
            if col.numeric:
                e = edges.get(col.feature)
                if e is None or edges_fingerprint(e) != col.edges_fp:
                    return False
        return True
