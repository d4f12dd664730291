"""Sufficient statistics of a stretch of events in component space, and attribution.

:class:`ComponentSketch` is a monoid like the per-feature sketches
(:mod:`driftline.core.sketches`): ``zero``, ``update``, ``merge`` (associative and
commutative) and versioned bytes. It holds the count, the sums of the whitened
projections ``t`` and of their cross-products ``t t^T`` (``k x k``), of the squared
residual per column, and of the two channels. Windows and partitions combine by
addition, so a window's statistics do not depend on how its events were batched,
up to float rounding (tested at 1e-9 relative; the sums are float64).

:func:`attribute` turns a sketch into what an alert and a report say: the features
whose joint behaviour moved most and the pairs whose correlation changed most,
computed from the sufficient statistics alone. With ``P`` the components and
``Lambda`` their variances, ``L = P Lambda^(1/2)`` maps the whitened covariance back to
the columns: ``C = L M L^T``, where the reference has ``M = I``. Each score is a z
statistic: the Fisher z of a column's correlation change with another feature's, its
mean shift, or its residual variance change (the part the kept components do not
explain); its own variance change is the univariate detectors' business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.codec import pack, unpack
from driftline.core.multivariate.fit import Channels, MultivariateProfile
from driftline.errors import SketchMismatch, StateCorrupt

__all__ = ["Attribution", "ComponentSketch", "attribute"]

F64 = NDArray[np.float64]


class ComponentSketch:
    """Count, sums and cross-products of events in a model's component space.

    Attributes (read-only)
    ----------------------
    n : int
        Events.
    s1 : NDArray[float64]
        ``(k,)`` sums of the whitened projections.
    s2 : NDArray[float64]
        ``(k, k)`` sums of their cross-products (symmetric).
    sq : NDArray[float64]
        ``(d,)`` sums of the squared residuals (zeros when every component is kept).
    t2, spe : float
        Sums of Hotelling's T^2 and of the weighted reconstruction error.
    """

    TAG = "mv_sketch"
    VERSION = 1

    def __init__(
        self,
        fingerprint: str,
        k: int,
        d: int,
        *,
        n: int = 0,
        s1: F64 | None = None,
        s2: F64 | None = None,
        sq: F64 | None = None,
        t2: float = 0.0,
        spe: float = 0.0,
    ) -> None:
        self.fingerprint = fingerprint
        self.n = n
        self.s1 = np.zeros(k) if s1 is None else s1
        self.s2 = np.zeros((k, k)) if s2 is None else s2
        self.sq = np.zeros(d) if sq is None else sq
        self.t2 = t2
        self.spe = spe

    @classmethod
    def zero(cls, profile: MultivariateProfile) -> ComponentSketch:
        """The empty sketch of ``profile``'s component space."""
        return cls(profile.fingerprint, profile.k, profile.d)

    def update(self, ch: Channels, start: int = 0, stop: int | None = None) -> ComponentSketch:
        """Add events ``start:stop`` of a batch's channels (in place; returns self).

        Incomplete events (``ch.complete`` False) are not added.
        """
        stop = ch.t.shape[0] if stop is None else stop
        if stop <= start:
            return self
        rows: slice | NDArray[np.intp] = slice(start, stop)
        if ch.complete is not None and not ch.complete[start:stop].all():
            rows = start + np.flatnonzero(ch.complete[start:stop])  # incomplete events: none
        t = ch.t[rows]
        self.n += t.shape[0]
        # In place: a sketch owns its arrays (merge and copy make new ones).
        self.s1 += t.sum(axis=0)
        self.s2 += t.T @ t
        if ch.rsq is not None:
            self.sq += ch.rsq[rows].sum(axis=0)
        self.t2 += float(ch.t2[rows].sum())
        if ch.spe is not None:
            self.spe += float(ch.spe[rows].sum())
        return self

    def merge(self, other: ComponentSketch) -> ComponentSketch:
        """The sketch of both stretches of events (a new sketch)."""
        if other.fingerprint != self.fingerprint or other.s1.shape != self.s1.shape:
            raise SketchMismatch("component sketches of different multivariate models")
        return ComponentSketch(
            self.fingerprint,
            self.s1.size,
            self.sq.size,
            n=self.n + other.n,
            s1=self.s1 + other.s1,
            s2=self.s2 + other.s2,
            sq=self.sq + other.sq,
            t2=self.t2 + other.t2,
            spe=self.spe + other.spe,
        )

    def copy(self) -> ComponentSketch:
        """An independent copy."""
        return ComponentSketch.zero_like(self).merge(self)

    @classmethod
    def zero_like(cls, other: ComponentSketch) -> ComponentSketch:
        """The empty sketch of ``other``'s space."""
        return cls(other.fingerprint, other.s1.size, other.sq.size)

    # ------------------------------------------------------------------ views
    def mean(self) -> F64:
        """Mean whitened projection (zeros while empty)."""
        out: F64 = self.s1 / self.n if self.n else np.zeros_like(self.s1)
        return out

    def covariance(self) -> F64:
        """Centred covariance of the whitened projections (the reference has ``I``)."""
        if not self.n:
            return np.zeros_like(self.s2)
        m = self.mean()
        out: F64 = self.s2 / self.n - np.outer(m, m)
        return out

    def distance(self) -> float:
        """Frobenius distance between the covariance and the reference's identity."""
        if not self.n:
            return 0.0
        return float(np.linalg.norm(self.covariance() - np.eye(self.s1.size)))

    # ------------------------------------------------------------------ bytes
    def to_fields(self) -> dict[str, Any]:
        """Plain fields (numbers and lists) for embedding in a larger record."""
        iu = np.triu_indices(self.s1.size)
        return {
            "fp": self.fingerprint,
            "n": self.n,
            "s1": self.s1.tolist(),
            "s2": self.s2[iu].tolist(),
            "sq": self.sq.tolist(),
            "t2": self.t2,
            "spe": self.spe,
        }

    @classmethod
    def from_fields(cls, f: dict[str, Any], profile: MultivariateProfile) -> ComponentSketch:
        """Inverse of :meth:`to_fields`, checked against ``profile``.

        Raises
        ------
        SketchMismatch
            The sketch belongs to another model.
        StateCorrupt
            Fields missing or of the wrong shape.
        """
        if f.get("fp") != profile.fingerprint:
            raise SketchMismatch("component sketch of another multivariate model")
        k, d = profile.k, profile.d
        try:
            n = f["n"]
            s1 = np.asarray(f["s1"], dtype=np.float64)
            tri = np.asarray(f["s2"], dtype=np.float64)
            sq = np.asarray(f["sq"], dtype=np.float64)
            t2, spe = float(f["t2"]), float(f["spe"])
        except (KeyError, TypeError, ValueError):
            raise StateCorrupt(f"{cls.TAG}: missing or malformed fields") from None
        if (
            type(n) is not int
            or n < 0
            or s1.shape != (k,)
            or tri.shape != (k * (k + 1) // 2,)
            or sq.shape != (d,)
        ):
            raise StateCorrupt(f"{cls.TAG}: fields do not fit the model")
        s2 = np.zeros((k, k))
        s2[np.triu_indices(k)] = tri
        s2 = s2 + np.triu(s2, 1).T
        return cls(profile.fingerprint, k, d, n=n, s1=s1, s2=s2, sq=sq, t2=t2, spe=spe)

    def to_bytes(self) -> bytes:
        """Versioned, pickle-free record."""
        return pack(self.TAG, self.VERSION, self.to_fields())

    @classmethod
    def from_bytes(cls, data: bytes, profile: MultivariateProfile) -> ComponentSketch:
        """Inverse of :meth:`to_bytes` (raises StateCorrupt or SketchMismatch)."""
        return cls.from_fields(unpack(data, cls.TAG, cls.VERSION), profile)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ComponentSketch):
            return NotImplemented
        return (
            self.fingerprint == other.fingerprint
            and self.n == other.n
            and np.array_equal(self.s1, other.s1)
            and np.array_equal(self.s2, other.s2)
            and np.array_equal(self.sq, other.sq)
            and self.t2 == other.t2
            and self.spe == other.spe
        )

    def close_to(self, other: ComponentSketch, rtol: float = 1e-9) -> bool:
        """Equal counts and sums equal to ``rtol`` (relative to the sums' scale)."""

        def near(a: F64, b: F64, scale: float) -> bool:
            return bool(np.all(np.abs(a - b) <= rtol * max(scale, 1e-300)))

        scale = float(max(self.n, 1))
        return (
            self.fingerprint == other.fingerprint
            and self.n == other.n
            and near(self.s1, other.s1, scale)
            and near(self.s2, other.s2, scale * max(1.0, float(np.abs(self.s2).max(initial=0))))
            and near(self.sq, other.sq, scale * max(1.0, float(np.abs(self.sq).max(initial=0))))
            and math.isclose(self.t2, other.t2, rel_tol=rtol, abs_tol=rtol)
            and math.isclose(self.spe, other.spe, rel_tol=rtol, abs_tol=rtol)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ComponentSketch(n={self.n}, k={self.s1.size}, d={self.sq.size})"


@dataclass(frozen=True)
class Attribution:
    """What moved, from a sketch: ranked features and pairs, and summary numbers."""

    #: ``(feature, score, share of the listed scores)``, largest first; the score is a
    #: z statistic (see :func:`attribute`).
    features: tuple[tuple[str, float, float], ...]
    #: ``(column_a, column_b, reference correlation, current correlation)``, by the
    #: Fisher z of the change, largest first.
    pairs: tuple[tuple[str, str, float, float], ...]
    #: Mean T^2 and weighted reconstruction error per degree of freedom (1 at reference).
    t2_ratio: float
    spe_ratio: float
    #: Frobenius distance of the whitened covariance from the identity.
    distance: float


def _label(profile: MultivariateProfile, j: int) -> str:
    c = profile.design.columns[j]
    return c.feature if c.category is None else f"{c.feature}={c.category}"


def _correlations(c: F64) -> F64:
    sd = np.sqrt(np.maximum(np.diag(c), 1e-300))
    out: F64 = np.clip(c / np.outer(sd, sd), -0.999999, 0.999999)
    return out


def attribute(profile: MultivariateProfile, sketch: ComponentSketch, top: int = 20) -> Attribution:
    """Rank the features (and pairs of columns) by how much their joint behaviour moved.

    Every score is a z statistic, so a change stands out of the noise of the others
    whatever the number of events (a sum of squared changes over all partners did
    not: with 50 events, 24 noisy partners outweighed one broken pair):

    * a pair of columns of two features: the Fisher z of its correlation change,
      ``|atanh r_now - atanh r_ref| sqrt(n - 3)`` (correlations of the columns in the
      kept components: ``L M L^T`` against ``L L^T``, ``L = P Lambda^(1/2)``);
    * a column's mean shift, ``|mean| sqrt(n)`` (scores are in reference sd);
    * a column's residual variance (when components were dropped), ``|ratio - 1|
      sqrt(n / 2)``.

    A feature's score is the largest of its columns' (its own variance is the
    univariate detectors' business).

    Parameters
    ----------
    profile
        The model the sketch belongs to.
    sketch
        Events to explain (a window, or the events since the detector fired).
    top
        How many features and pairs to return.
    """
    n = sketch.n
    if n == 0:
        return Attribution((), (), 0.0, 0.0, 0.0)
    k = profile.k
    lw = profile.components * np.sqrt(profile.variances)  # (d, k)
    dm = sketch.covariance() - np.eye(k)
    ref = lw @ lw.T
    now = ref + lw @ dm @ lw.T
    feats = [c.feature for c in profile.design.columns]
    same = np.equal.outer(np.asarray(feats, dtype=object), np.asarray(feats, dtype=object))
    r_ref, r_now = _correlations(ref), _correlations(now)
    pair_z = np.abs(np.arctanh(r_now) - np.arctanh(r_ref)) * math.sqrt(max(n - 3, 1))
    pair_z[same] = 0.0
    col = np.maximum(pair_z.max(axis=1), np.abs(lw @ sketch.mean()) * math.sqrt(n))
    w = profile.weights
    has = w > 0
    if has.any():
        ratio = sketch.sq[has] * w[has] / n
        col[has] = np.maximum(col[has], np.abs(ratio - 1.0) * math.sqrt(n / 2))
    per_feature: dict[str, float] = {}
    for f, v in zip(feats, col.tolist(), strict=True):
        per_feature[f] = max(per_feature.get(f, 0.0), v)
    # Ranked on the rounded scores, ties by name: the two features of a pair share
    # their z exactly, and float sums may differ in the last bits between batchings.
    rounded = {f: round(v, 6) for f, v in per_feature.items()}
    ranked = sorted(rounded.items(), key=lambda x: (-x[1], x[0]))[:top]
    total = sum(v for _, v in ranked) or 1.0
    features = tuple((f, v, round(v / total, 6)) for f, v in ranked)

    iu = np.triu_indices(profile.d, 1)
    flat = np.round(pair_z[iu], 6)
    order = np.argsort(-flat, kind="stable")[:top]
    pairs = tuple(
        (
            _label(profile, int(iu[0][i])),
            _label(profile, int(iu[1][i])),
            round(float(r_ref[iu[0][i], iu[1][i]]), 6),
            round(float(r_now[iu[0][i], iu[1][i]]), 6),
        )
        for i in order.tolist()
        if flat[i] > 0
    )
    dof = profile.channel_dof
    return Attribution(
        features=features,
        pairs=pairs,
        t2_ratio=sketch.t2 / n / dof[0],
        spe_ratio=sketch.spe / n / dof[1] if len(dof) > 1 else 0.0,
        distance=float(np.linalg.norm(dm)),
    )
