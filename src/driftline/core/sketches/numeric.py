"""The numeric sketch, and a bank of them updated together.

:class:`NumericSketch` is one feature's window: counts on the reference's bins and the
moments of the finite values. :class:`NumericSketchBank` holds the windows of many
features as the rows of a few arrays and updates them all with one ``bincount`` and a
handful of array operations per batch: it is the only implementation of the update
(a sketch's own :meth:`NumericSketch.update` is a bank of one), so the sketch contract
suite runs the code the monitor runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import decode_float, encode_float, pack
from driftline.core.sketches._common import (
    SketchBase,
    chan,
    dec_counts,
    dec_int,
    edges_fingerprint,
    frozen_counts,
    frozen_edges,
    open_record,
    resolve_bins,
    same_floats,
)
from driftline.core.sketches.binning import Located, NumericBins
from driftline.errors import SketchMismatch, StateCorrupt

__all__ = ["NumericSketch", "NumericSketchBank"]


class NumericSketch(SketchBase):
    """Binned counts and moments of one numeric feature over one window.

    Attributes (read-only)
    ----------------------
    edges : NDArray[float64]
        The ``B - 1`` interior bin edges, strictly increasing, read-only; shared (not
        copied) between the sketches of one reference.
    counts : NDArray[int64]
        ``B`` finite-value counts; bin ``i`` is ``(edges[i-1], edges[i]]``.
    missing : int
        Number of ``NaN`` (``None``) values.
    nonfinite : int
        Number of ``+inf``/``-inf`` values; they are in no bin and not in the moments.
    n : int
        Number of finite values (``counts.sum()``).
    mean, m2 : float
        Mean and sum of squared deviations of the finite values (Welford / Chan et al.
        pairwise form, no raw power sums); ``mean`` is ``nan`` while ``n == 0``.
    min, max : float
        Extremes of the finite values; ``+inf``/``-inf`` while ``n == 0``.
    ref_min, ref_max : float
        The reference range given to :meth:`zero`.
    below, above : int
        Finite values ``< ref_min`` and ``> ref_max``.

    Examples
    --------
    >>> s = NumericSketch.zero(np.array([0.0, 1.0]), ref_min=-1.0, ref_max=2.0)
    >>> s = s.update(np.array([-5.0, 0.0, 0.5, 3.0, np.nan, np.inf]))
    >>> s.counts.tolist(), s.n, s.missing, s.nonfinite, s.below, s.above
    ([2, 1, 1], 4, 1, 1, 1, 1)
    >>> NumericSketch.from_bytes(s.to_bytes(), s.edges) == s
    True
    """

    TAG: ClassVar[str] = "sketch.numeric"
    VERSION: ClassVar[int] = 1

    __slots__ = (
        "_above",
        "_below",
        "_edges",
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_nonfinite",
        "_ref_max",
        "_ref_min",
    )

    def __init__(
        self,
        edges: npt.NDArray[np.float64],
        ref_min: float,
        ref_max: float,
        counts: npt.NDArray[np.int64],
        *,
        missing: int = 0,
        nonfinite: int = 0,
        n: int = 0,
        mean: float = 0.0,
        m2: float = 0.0,
        min: float = math.inf,
        max: float = -math.inf,
        below: int = 0,
        above: int = 0,
        fingerprint: str | None = None,
    ) -> None:
        """Low-level constructor without validation; use :meth:`zero` or :meth:`from_bytes`."""
        self._edges = edges
        self._ref_min = ref_min
        self._ref_max = ref_max
        self._counts = counts
        self._missing = missing
        self._nonfinite = nonfinite
        self._n = n
        self._mean = mean
        self._m2 = m2
        self._min = min
        self._max = max
        self._below = below
        self._above = above
        self._fp = fingerprint

    # ------------------------------------------------------------------ construction

    @classmethod
    def zero(cls, edges: npt.ArrayLike, ref_min: float, ref_max: float) -> NumericSketch:
        """The empty sketch on ``edges`` (``B - 1`` interior edges, so ``B`` bins).

        Parameters
        ----------
        edges
            Strictly increasing finite interior edges. A read-only C-contiguous float64
            array is shared as is; anything else is copied into one.
        ref_min, ref_max
            The reference range; finite values outside it are counted in ``below`` and
            ``above``. Infinite bounds are allowed (nothing is then out of range there).
        """
        e = frozen_edges(edges)
        lo, hi = float(ref_min), float(ref_max)
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(f"need ref_min <= ref_max, got {lo!r} and {hi!r}")
        counts = frozen_counts(np.zeros(e.size + 1, dtype=np.int64))
        return cls(e, lo, hi, counts)

    # ------------------------------------------------------------------ properties

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        """The read-only interior bin edges."""
        return self._edges

    @property
    def nonfinite(self) -> int:
        """Number of ``+inf``/``-inf`` values (in no bin, not in the moments)."""
        return self._nonfinite

    def _fingerprint(self) -> str:
        return edges_fingerprint(self._edges)

    @property
    def total(self) -> int:
        """Every value seen: ``n + missing + nonfinite``."""
        return self._n + self._missing + self._nonfinite

    @property
    def mean(self) -> float:
        """Mean of the finite values (``nan`` if there are none)."""
        return self._mean if self._n else math.nan

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean of the finite values."""
        return self._m2

    @property
    def variance(self) -> float:
        """Population variance ``m2 / n`` (ddof = 0; ``nan`` if ``n == 0``)."""
        return self._m2 / self._n if self._n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation ``sqrt(m2 / n)`` (ddof = 0, like ``np.std``)."""
        return math.sqrt(self._m2 / self._n) if self._n else math.nan

    @property
    def min(self) -> float:
        """Smallest finite value (``+inf`` if there are none)."""
        return self._min

    @property
    def max(self) -> float:
        """Largest finite value (``-inf`` if there are none)."""
        return self._max

    @property
    def ref_min(self) -> float:
        """Lower end of the reference range."""
        return self._ref_min

    @property
    def ref_max(self) -> float:
        """Upper end of the reference range."""
        return self._ref_max

    @property
    def below(self) -> int:
        """Finite values ``< ref_min``."""
        return self._below

    @property
    def above(self) -> int:
        """Finite values ``> ref_max``."""
        return self._above

    # ------------------------------------------------------------------ monoid

    def update(self, values: npt.ArrayLike) -> Self:
        """Add a batch of values in place and return ``self``.

        ``values`` is converted to float64 (so ``None`` becomes ``NaN``) and flattened.
        ``NaN`` counts as missing, ``+-inf`` as nonfinite; finite values are binned with
        ``searchsorted(edges, x, side="left")`` and folded into the moments with Chan et
        al.'s pairwise update (the batch's own mean and ``M2`` are computed two-pass).
        Moments overflow to ``inf`` for ``|x|`` beyond about ``1e154``.

        This is a :class:`NumericSketchBank` of one column: the code that updates the
        monitor's windows, many columns at a time.
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        bank = NumericSketchBank.of(NumericBins.of(self), [self]).update(x[None, :])
        done = bank.sketch(0)
        for name in ("_counts", "_missing", "_nonfinite", "_n", "_mean", "_m2", "_min",
                     "_max", "_below", "_above"):  # fmt: skip
            setattr(self, name, getattr(done, name))
        return self

    def merge(self, other: NumericSketch) -> NumericSketch:
        """A new sketch of both windows' values (exactly commutative).

        Raises
        ------
        SketchMismatch
            ``other`` is not a NumericSketch or has other edges or another reference range.
        """
        if not isinstance(other, NumericSketch):
            raise SketchMismatch(f"cannot merge NumericSketch with {type(other).__name__}")
        if other._edges is not self._edges and not np.array_equal(other._edges, self._edges):
            raise SketchMismatch("numeric sketches have different bin edges")
        if (other._ref_min, other._ref_max) != (self._ref_min, self._ref_max):
            raise SketchMismatch("numeric sketches have different reference ranges")
        n, mean, m2 = chan(self._n, self._mean, self._m2, other._n, other._mean, other._m2)
        return NumericSketch(
            self._edges,
            self._ref_min,
            self._ref_max,
            frozen_counts(self._counts + other._counts),
            missing=self._missing + other._missing,
            nonfinite=self._nonfinite + other._nonfinite,
            n=n,
            mean=mean,
            m2=m2,
            min=min(self._min, other._min),
            max=max(self._max, other._max),
            below=self._below + other._below,
            above=self._above + other._above,
            fingerprint=self._fp or other._fp,
        )

    def copy(self) -> NumericSketch:
        """An independent copy (arrays are read-only, so they are shared)."""
        return NumericSketch(
            self._edges, self._ref_min, self._ref_max, self._counts,
            missing=self._missing, nonfinite=self._nonfinite, n=self._n, mean=self._mean,
            m2=self._m2, min=self._min, max=self._max, below=self._below, above=self._above,
            fingerprint=self._fp,
        )  # fmt: skip

    # ------------------------------------------------------------------ bytes

    def to_bytes(self, *, embed: bool = False) -> bytes:
        """The versioned record; with ``embed=True`` it also stores the edges.

        Deterministic: equal sketches give identical bytes.
        """
        fields: dict[str, Any] = {
            "fp": self.fingerprint,
            "ref_min": encode_float(self._ref_min),
            "ref_max": encode_float(self._ref_max),
            "counts": self._counts.tolist(),
            "missing": self._missing,
            "nonfinite": self._nonfinite,
            "n": self._n,
            "mean": encode_float(self._mean),
            "m2": encode_float(self._m2),
            "min": encode_float(self._min),
            "max": encode_float(self._max),
            "below": self._below,
            "above": self._above,
        }
        if embed:
            fields["edges"] = self._edges.tolist()
        return pack(self.TAG, self.VERSION, fields)

    _REQUIRED: ClassVar[set[str]] = {
        "fp", "ref_min", "ref_max", "counts", "missing", "nonfinite", "n",
        "mean", "m2", "min", "max", "below", "above",
    }  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, edges: npt.ArrayLike | None = None) -> NumericSketch:
        """Read a record written by :meth:`to_bytes`.

        Parameters
        ----------
        data
            The record.
        edges
            The reference's edges. Required unless the record embeds its edges; when
            given, the result shares them (if read-only float64) and they must match
            the record's fingerprint.

        Raises
        ------
        StateCorrupt
            Not a numeric-sketch record of this version, or inconsistent fields.
        SketchMismatch
            ``edges`` do not match the record's fingerprint, or are needed and missing.
        """
        tag = cls.TAG
        f, fp = open_record(data, tag, cls.VERSION, cls._REQUIRED, "edges")
        stored: npt.NDArray[np.float64] | None = None
        if "edges" in f:
            raw = f["edges"]
            if not isinstance(raw, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in raw
            ):
                raise StateCorrupt(f"{tag}: field 'edges' is not a list of numbers")
            try:
                stored = frozen_edges(np.array(raw, dtype=np.float64))
            except ValueError as exc:
                raise StateCorrupt(f"{tag}: stored edges are invalid: {exc}") from None
        given = frozen_edges(edges) if edges is not None else None
        e = resolve_bins(given, stored, fp, edges_fingerprint, tag)

        counts = dec_counts(f, "counts", e.size + 1, tag)
        n = dec_int(f, "n", tag)
        missing = dec_int(f, "missing", tag)
        nonfinite = dec_int(f, "nonfinite", tag)
        below = dec_int(f, "below", tag)
        above = dec_int(f, "above", tag)
        ref_min = decode_float(f.get("ref_min"), f"{tag}.ref_min")
        ref_max = decode_float(f.get("ref_max"), f"{tag}.ref_max")
        mean = decode_float(f.get("mean"), f"{tag}.mean")
        m2 = decode_float(f.get("m2"), f"{tag}.m2")
        lo = decode_float(f.get("min"), f"{tag}.min")
        hi = decode_float(f.get("max"), f"{tag}.max")
        if int(counts.sum(dtype=object)) != n:
            raise StateCorrupt(f"{tag}: counts do not sum to n")
        if below + above > n:
            raise StateCorrupt(f"{tag}: below + above exceeds n")
        if math.isnan(ref_min) or math.isnan(ref_max) or ref_min > ref_max:
            raise StateCorrupt(f"{tag}: invalid reference range")
        if n == 0:
            if (mean, m2, lo, hi) != (0.0, 0.0, math.inf, -math.inf):
                raise StateCorrupt(f"{tag}: moments of an empty sketch are not zero")
        elif not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi and not m2 < 0):
            raise StateCorrupt(f"{tag}: invalid min/max/m2")
        return cls(
            e, ref_min, ref_max, counts, missing=missing, nonfinite=nonfinite, n=n,
            mean=mean, m2=m2, min=lo, max=hi, below=below, above=above, fingerprint=fp,
        )  # fmt: skip

    # ------------------------------------------------------------------ dunder

    def __eq__(self, other: object) -> bool:
        """Same edges, reference range, counts and (bit-for-bit) moments."""
        if not isinstance(other, NumericSketch):
            return NotImplemented
        return (
            (self._edges is other._edges or np.array_equal(self._edges, other._edges))
            and np.array_equal(self._counts, other._counts)
            and same_floats(
                (self._ref_min, self._ref_max, self._mean, self._m2, self._min, self._max),
                (other._ref_min, other._ref_max, other._mean, other._m2, other._min, other._max),
            )
            and (self._missing, self._nonfinite, self._n, self._below, self._above)
            == (other._missing, other._nonfinite, other._n, other._below, other._above)
        )

    def __repr__(self) -> str:
        return (
            f"NumericSketch(bins={self.bins}, n={self._n}, missing={self._missing}, "
            f"nonfinite={self._nonfinite}, mean={self.mean:.6g}, std={self.std:.6g}, "
            f"below={self._below}, above={self._above})"
        )


class NumericSketchBank:
    """The numeric sketches of many columns as the rows of one set of arrays.

    ``counts[i, :sizes[i]]`` and ``missing[i]``, ``nonfinite[i]``, ``n[i]``,
    ``mean[i]``, ``m2[i]``, ``min[i]``, ``max[i]``, ``below[i]``, ``above[i]`` are the
    fields of column ``i``'s :class:`NumericSketch` on ``bins`` (a
    :class:`~driftline.core.sketches.binning.NumericBins`). The arrays are the bank's
    working memory (writable, updated in place); :meth:`sketch` and :meth:`sketches`
    hand out read-only sketches. Monoid like the sketches: :meth:`zero`,
    :meth:`update`, :meth:`merge`; bytes are the sketches' (:meth:`sketches`,
    :meth:`of`).

    Examples
    --------
    >>> bins = NumericBins.of(NumericSketch.zero([0.0], -1.0, 1.0),
    ...                       NumericSketch.zero([0.0, 1.0], 0.0, 2.0))
    >>> bank = NumericSketchBank.zero(bins).update(np.array([[-0.5, 0.5], [0.5, np.nan]]))
    >>> [s.counts.tolist() for s in bank.sketches()], bank.sketch(1).missing
    ([[1, 1], [0, 1, 0]], 1)
    """

    __slots__ = (
        "above",
        "below",
        "bins",
        "counts",
        "m2",
        "max",
        "mean",
        "min",
        "missing",
        "n",
        "nonfinite",
    )

    def __init__(self, bins: NumericBins) -> None:
        """The empty bank on ``bins`` (same as :meth:`zero`)."""
        k = bins.k
        self.bins = bins
        self.counts = np.zeros((k, bins.width), dtype=np.int64)
        self.missing = np.zeros(k, dtype=np.int64)
        self.nonfinite = np.zeros(k, dtype=np.int64)
        self.n = np.zeros(k, dtype=np.int64)
        self.below = np.zeros(k, dtype=np.int64)
        self.above = np.zeros(k, dtype=np.int64)
        self.mean = np.zeros(k, dtype=np.float64)
        self.m2 = np.zeros(k, dtype=np.float64)
        self.min = np.full(k, math.inf)
        self.max = np.full(k, -math.inf)

    @classmethod
    def zero(cls, bins: NumericBins) -> Self:
        """The empty bank on ``bins``."""
        return cls(bins)

    @classmethod
    def of(cls, bins: NumericBins, sketches: Sequence[NumericSketch | None]) -> Self:
        """A bank holding ``sketches`` (one per column; None, or a sketch with another
        number of bins, leaves its column empty)."""
        bank = cls(bins)
        for i, sk in enumerate(sketches):
            if sk is None or sk.bins != bins.sizes[i]:
                continue
            bank.counts[i, : bins.sizes[i]] = sk.counts
            bank.missing[i] = sk.missing
            bank.nonfinite[i] = sk.nonfinite
            bank.n[i] = sk.n
            bank.below[i] = sk.below
            bank.above[i] = sk.above
            if sk.n:
                bank.mean[i] = sk.mean
                bank.m2[i] = sk.m2
                bank.min[i] = sk.min
                bank.max[i] = sk.max
        return bank

    def reset(self) -> None:
        """Back to :meth:`zero`, in place (a window closed)."""
        for a in (self.counts, self.missing, self.nonfinite, self.n, self.below, self.above):
            a.fill(0)
        self.mean.fill(0.0)
        self.m2.fill(0.0)
        self.min.fill(math.inf)
        self.max.fill(-math.inf)

    # ------------------------------------------------------------------ monoid

    def update(self, x: npt.NDArray[np.float64], located: Located | None = None) -> Self:
        """Add row ``i`` of ``x`` to column ``i``, in place; return ``self``.

        ``located`` is ``bins.locate`` of the same values (a caller that binned a whole
        batch passes ``located[:, a:b]`` with ``x[:, a:b]``). Rows holding only finite
        values are folded together (one mean and ``M2`` per row, combined with the
        running ones by :func:`~driftline.core.sketches._common.chan`'s formula on
        whole arrays); the others one by one, exactly as a lone sketch would.
        """
        if located is None:
            located = self.bins.locate(x)
        bins = self.bins
        k, m = x.shape
        if m == 0:
            return self
        hist = np.bincount(located.flat.ravel(), minlength=bins.sentinel + 1)
        self.counts += hist[: bins.sentinel].reshape(k, bins.width)
        rows = located.finite_rows
        if rows.size:
            sub = x if rows.size == k else x[rows]
            with np.errstate(over="ignore", invalid="ignore"):
                bmean = sub.mean(axis=1)
                dev = sub - bmean[:, None]
                bm2 = np.einsum("ij,ij->i", dev, dev)
                na = self.n[rows]
                ntot = na + m
                fresh = na == 0
                ma = self.mean[rows]
                mean = ma * (na / ntot) + bmean * (m / ntot)
                delta = bmean - ma
                m2 = (self.m2[rows] + bm2) + delta * delta * ((na * m) / ntot)
            self.mean[rows] = np.where(fresh, bmean, mean)
            self.m2[rows] = np.where(fresh, bm2, m2)
            self.n[rows] = ntot
            self.min[rows] = np.minimum(self.min[rows], sub.min(axis=1))
            self.max[rows] = np.maximum(self.max[rows], sub.max(axis=1))
            self.below[rows] += np.count_nonzero(sub < bins.ref_min[rows, None], axis=1)
            self.above[rows] += np.count_nonzero(sub > bins.ref_max[rows, None], axis=1)
        for i in located.other_rows.tolist():
            self._update_row(i, x[i])
        return self

    def _update_row(self, i: int, x: npt.NDArray[np.float64]) -> None:
        """The moments and range counts of column ``i`` (missing or infinite values)."""
        finite = np.isfinite(x)
        n_missing = int(np.count_nonzero(np.isnan(x)))
        self.missing[i] += n_missing
        fin = x[finite]
        self.nonfinite[i] += x.size - fin.size - n_missing
        if fin.size == 0:
            return
        self.below[i] += int(np.count_nonzero(fin < self.bins.ref_min[i]))
        self.above[i] += int(np.count_nonzero(fin > self.bins.ref_max[i]))
        with np.errstate(over="ignore", invalid="ignore"):
            bmean = float(fin.mean())
            dev = fin - bmean
            bm2 = float(dev @ dev)
            n, mean, m2 = chan(
                int(self.n[i]), float(self.mean[i]), float(self.m2[i]), int(fin.size), bmean, bm2
            )
        self.n[i], self.mean[i], self.m2[i] = n, mean, m2
        self.min[i] = min(float(self.min[i]), float(fin.min()))
        self.max[i] = max(float(self.max[i]), float(fin.max()))

    def merge(self, other: NumericSketchBank) -> NumericSketchBank:
        """A new bank of both banks' values, column by column (as :meth:`NumericSketch.merge`).

        Raises
        ------
        SketchMismatch
            ``other`` is on other bins.
        """
        if other.bins is not self.bins and (
            other.bins.fingerprints != self.bins.fingerprints
            or not np.array_equal(other.bins.ref_min, self.bins.ref_min)
            or not np.array_equal(other.bins.ref_max, self.bins.ref_max)
        ):
            raise SketchMismatch("numeric sketch banks on different bins")
        out = type(self)(self.bins)
        for name in ("counts", "missing", "nonfinite", "n", "below", "above"):
            np.add(getattr(self, name), getattr(other, name), out=getattr(out, name))
        na, nb = self.n, other.n
        n = na + nb
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mean = self.mean * (na / n) + other.mean * (nb / n)
            delta = other.mean - self.mean
            m2 = (self.m2 + other.m2) + delta * delta * ((na * nb) / n)
        out.mean[:] = np.where(nb == 0, self.mean, np.where(na == 0, other.mean, mean))
        out.m2[:] = np.where(nb == 0, self.m2, np.where(na == 0, other.m2, m2))
        np.minimum(self.min, other.min, out=out.min)
        np.maximum(self.max, other.max, out=out.max)
        return out

    # ------------------------------------------------------------------ sketches

    def sketch(self, i: int) -> NumericSketch:
        """Column ``i`` as a read-only :class:`NumericSketch` (a copy)."""
        return self.sketches([i])[0]

    def sketches(self, columns: Sequence[int] | None = None) -> list[NumericSketch]:
        """Columns ``columns`` (default: all) as read-only sketches (copies)."""
        bins = self.bins
        cols = range(bins.k) if columns is None else columns
        missing, nonfinite, n = self.missing.tolist(), self.nonfinite.tolist(), self.n.tolist()
        below, above = self.below.tolist(), self.above.tolist()
        mean, m2 = self.mean.tolist(), self.m2.tolist()
        lo, hi = self.min.tolist(), self.max.tolist()
        ref_min, ref_max = bins.ref_min.tolist(), bins.ref_max.tolist()
        out: list[NumericSketch] = []
        for i in cols:
            counts = self.counts[i, : bins.sizes[i]].copy()
            counts.flags.writeable = False
            out.append(
                NumericSketch(
                    bins.edges[i], ref_min[i], ref_max[i], counts,
                    missing=missing[i], nonfinite=nonfinite[i], n=n[i],
                    mean=mean[i] if n[i] else 0.0, m2=m2[i] if n[i] else 0.0,
                    min=lo[i], max=hi[i], below=below[i], above=above[i],
                    fingerprint=bins.fingerprints[i],
                )
            )  # fmt: skip
        return out
