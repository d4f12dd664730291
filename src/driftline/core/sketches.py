"""Mergeable per-window sketches of one feature, on the reference profile's bins.

A reference profile fixes, per numeric feature, interior bin edges
``e_1 < ... < e_{B-1}`` and, per categorical feature, its top-K categories. The live
stream keeps one sketch per window and feature on exactly those bins, so every
window-versus-reference test in :mod:`driftline.core.stats` works on two count vectors.

Sketches form a monoid: ``zero`` is the identity of ``merge``, ``merge`` is associative
and commutative, and ``zero().update(a ++ b)`` equals ``zero().update(a).merge(
zero().update(b))`` (exactly for every count; within rounding for the moments).
Partitions and windows therefore combine in any order.

Conventions
-----------
* Numeric bin ``i`` is ``(e_i, e_{i+1}]`` with ``e_0 = -inf`` and ``e_B = +inf``, so the
  bin of ``x`` is ``np.searchsorted(edges, x, side="left")``.
* ``NaN`` (and ``None`` in the input) is *missing*; ``+inf``/``-inf`` are *nonfinite*.
  Neither lands in a bin or in the moments: ``counts`` sums to ``n``, the number of
  finite values, and ``total = n + missing + nonfinite``.
* Categorical values are matched by string equality; ``None`` and float ``NaN`` are
  missing; anything else outside the top K lands in the last, "other" bucket.
* ``update`` changes the sketch in place and returns it; ``merge`` returns a new sketch.
  The arrays a sketch exposes are read-only.

Bytes
-----
``to_bytes`` writes a :func:`driftline.contract.codec.pack` record. Storing the bin edges (or the
category list) in every window sketch would be wasteful, so a record carries only a
fingerprint of them (BLAKE2b-128 of the float64 little-endian edge bytes, resp. of the
length-prefixed UTF-8 categories), and ``from_bytes`` needs the caller to pass the edges
(categories) of the reference, refusing a mismatch with
:class:`~driftline.errors.SketchMismatch`. ``to_bytes(embed=True)`` stores them as well,
for self-contained records. A record that is not valid JSON, has another tag or version,
or holds inconsistent fields raises :class:`~driftline.errors.StateCorrupt`.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import pack, unpack
from driftline.errors import SketchMismatch, StateCorrupt

__all__ = [
    "CategoricalSketch",
    "NumericSketch",
    "categories_fingerprint",
    "edges_fingerprint",
]

_INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------- helpers


def _frozen_edges(edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Validate bin edges; share a read-only float64 array, else copy and freeze."""
    arr = np.asarray(edges)
    if not (
        isinstance(edges, np.ndarray)
        and arr.dtype == np.float64
        and not arr.flags.writeable
        and arr.flags.c_contiguous
    ):
        arr = np.array(edges, dtype=np.float64, copy=True)
        arr.flags.writeable = False
    if arr.ndim != 1:
        raise ValueError(f"edges must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("edges must be finite")
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        raise ValueError("edges must be strictly increasing (deduplicate them)")
    return arr


def edges_fingerprint(edges: npt.ArrayLike) -> str:
    """Hex BLAKE2b-128 of the edges as little-endian float64 bytes.

    Examples
    --------
    >>> len(edges_fingerprint([0.0, 1.0]))
    32
    """
    raw = np.ascontiguousarray(edges, dtype="<f8").tobytes()
    return hashlib.blake2b(raw, digest_size=16, person=b"dl.edges").hexdigest()


def categories_fingerprint(categories: Iterable[str]) -> str:
    """Hex BLAKE2b-128 of the categories, in order, each as 4-byte length + UTF-8.

    Examples
    --------
    >>> categories_fingerprint(["a", "b"]) != categories_fingerprint(["b", "a"])
    True
    """
    h = hashlib.blake2b(digest_size=16, person=b"dl.cats")
    for c in categories:
        raw = c.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "little"))
        h.update(raw)
    return h.hexdigest()


def _frozen_counts(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    counts.flags.writeable = False
    return counts


def _enc_float(x: float) -> float | str:
    """JSON has no inf/NaN (orjson would write ``null``): spell them as strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _dec_float(f: dict[str, Any], key: str, tag: str) -> float:
    v = f.get(key)
    if isinstance(v, bool):
        raise StateCorrupt(f"{tag}: field {key!r} is not a number")
    if isinstance(v, int | float):
        return float(v)
    if v in ("inf", "-inf", "nan"):
        return float(v)
    raise StateCorrupt(f"{tag}: field {key!r} is not a number")


def _dec_int(f: dict[str, Any], key: str, tag: str) -> int:
    v = f.get(key)
    if type(v) is not int or not 0 <= v <= _INT64_MAX:
        raise StateCorrupt(f"{tag}: field {key!r} is not a non-negative int64")
    return v


def _dec_counts(f: dict[str, Any], key: str, length: int, tag: str) -> npt.NDArray[np.int64]:
    v = f.get(key)
    if (
        not isinstance(v, list)
        or len(v) != length
        or not all(type(c) is int and 0 <= c <= _INT64_MAX for c in v)
    ):
        raise StateCorrupt(f"{tag}: field {key!r} is not {length} non-negative int64 counts")
    return _frozen_counts(np.array(v, dtype=np.int64))


def _check_keys(f: dict[str, Any], required: set[str], optional: set[str], tag: str) -> None:
    keys = set(f)
    if not required <= keys or not keys <= required | optional:
        raise StateCorrupt(f"{tag}: unexpected field set {sorted(keys)}")


def _dec_fingerprint(f: dict[str, Any], tag: str) -> str:
    fp = f.get("fp")
    if not isinstance(fp, str):
        raise StateCorrupt(f"{tag}: field 'fp' is not a string")
    return fp


# ---------------------------------------------------------------------- numeric


class NumericSketch:
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
        "_counts",
        "_edges",
        "_fp",
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_missing",
        "_n",
        "_nonfinite",
        "_ref_max",
        "_ref_min",
    )

    __hash__ = None  # type: ignore[assignment]  # mutable (update works in place)

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
        e = _frozen_edges(edges)
        lo, hi = float(ref_min), float(ref_max)
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(f"need ref_min <= ref_max, got {lo!r} and {hi!r}")
        counts = _frozen_counts(np.zeros(e.size + 1, dtype=np.int64))
        return cls(e, lo, hi, counts)

    # ------------------------------------------------------------------ properties

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        """The read-only interior bin edges."""
        return self._edges

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """The read-only per-bin counts of finite values."""
        return self._counts

    @property
    def bins(self) -> int:
        """Number of bins ``B`` (``len(edges) + 1``)."""
        return int(self._counts.size)

    @property
    def missing(self) -> int:
        """Number of missing (``NaN``) values."""
        return self._missing

    @property
    def nonfinite(self) -> int:
        """Number of ``+inf``/``-inf`` values (in no bin, not in the moments)."""
        return self._nonfinite

    @property
    def n(self) -> int:
        """Number of finite values."""
        return self._n

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

    @property
    def fingerprint(self) -> str:
        """:func:`edges_fingerprint` of the edges (cached)."""
        if self._fp is None:
            self._fp = edges_fingerprint(self._edges)
        return self._fp

    # ------------------------------------------------------------------ monoid

    def update(self, values: npt.ArrayLike) -> Self:
        """Add a batch of values in place and return ``self``.

        ``values`` is converted to float64 (so ``None`` becomes ``NaN``) and flattened.
        ``NaN`` counts as missing, ``+-inf`` as nonfinite; finite values are binned with
        ``searchsorted(edges, x, side="left")`` and folded into the moments with Chan et
        al.'s pairwise update (the batch's own mean and ``M2`` are computed two-pass).
        Moments overflow to ``inf`` for ``|x|`` beyond about ``1e154``.
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        finite_mask = np.isfinite(x)
        n_missing = int(np.count_nonzero(np.isnan(x)))
        if n_missing:
            self._missing += n_missing
        fin = x[finite_mask]
        if fin.size != x.size:
            self._nonfinite += x.size - fin.size - n_missing
        if fin.size == 0:
            return self
        idx = np.searchsorted(self._edges, fin, side="left")
        self._counts = _frozen_counts(self._counts + np.bincount(idx, minlength=self._counts.size))
        self._below += int(np.count_nonzero(fin < self._ref_min))
        self._above += int(np.count_nonzero(fin > self._ref_max))
        bmin, bmax = float(fin.min()), float(fin.max())
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: inf, no warning
            bmean = float(fin.mean())
            dev = fin - bmean
            bm2 = float(dev @ dev)
            self._n, self._mean, self._m2 = _chan(
                self._n, self._mean, self._m2, int(fin.size), bmean, bm2
            )
        self._min = bmin if bmin < self._min else self._min
        self._max = bmax if bmax > self._max else self._max
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
        n, mean, m2 = _chan(self._n, self._mean, self._m2, other._n, other._mean, other._m2)
        return NumericSketch(
            self._edges,
            self._ref_min,
            self._ref_max,
            _frozen_counts(self._counts + other._counts),
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
            "ref_min": _enc_float(self._ref_min),
            "ref_max": _enc_float(self._ref_max),
            "counts": self._counts.tolist(),
            "missing": self._missing,
            "nonfinite": self._nonfinite,
            "n": self._n,
            "mean": _enc_float(self._mean),
            "m2": _enc_float(self._m2),
            "min": _enc_float(self._min),
            "max": _enc_float(self._max),
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
        f = unpack(data, tag, cls.VERSION)
        _check_keys(f, cls._REQUIRED, {"edges"}, tag)
        fp = _dec_fingerprint(f, tag)
        stored: npt.NDArray[np.float64] | None = None
        if "edges" in f:
            raw = f["edges"]
            if not isinstance(raw, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in raw
            ):
                raise StateCorrupt(f"{tag}: field 'edges' is not a list of numbers")
            try:
                stored = _frozen_edges(np.array(raw, dtype=np.float64))
            except ValueError as exc:
                raise StateCorrupt(f"{tag}: stored edges are invalid: {exc}") from None
            if edges_fingerprint(stored) != fp:
                raise StateCorrupt(f"{tag}: stored edges do not match their fingerprint")
        if edges is not None:
            e = _frozen_edges(edges)
            if edges_fingerprint(e) != fp:
                raise SketchMismatch(f"{tag}: record was built on other bin edges")
        elif stored is not None:
            e = stored
        else:
            raise SketchMismatch(f"{tag}: record stores only an edges fingerprint; pass edges")

        counts = _dec_counts(f, "counts", e.size + 1, tag)
        n = _dec_int(f, "n", tag)
        missing = _dec_int(f, "missing", tag)
        nonfinite = _dec_int(f, "nonfinite", tag)
        below = _dec_int(f, "below", tag)
        above = _dec_int(f, "above", tag)
        ref_min = _dec_float(f, "ref_min", tag)
        ref_max = _dec_float(f, "ref_max", tag)
        mean = _dec_float(f, "mean", tag)
        m2 = _dec_float(f, "m2", tag)
        lo = _dec_float(f, "min", tag)
        hi = _dec_float(f, "max", tag)
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
            and _same_floats(
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


def _same_floats(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Element-wise equality where NaN equals NaN (moments may overflow to NaN)."""
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


def _chan(
    na: int, ma: float, m2a: float, nb: int, mb: float, m2b: float
) -> tuple[int, float, float]:
    """Combine (count, mean, M2) pairs (Chan, Golub & LeVeque 1979).

    ``mean = ma * (na / n) + mb * (nb / n)`` and
    ``M2 = M2a + M2b + (mb - ma)**2 * (na * nb / n)``; both are symmetric in a and b
    bit for bit (``na * nb`` is an exact integer product), so merging is exactly
    commutative. An empty side returns the other side unchanged, so ``zero`` is an exact
    identity.
    """
    if nb == 0:
        return na, ma, m2a
    if na == 0:
        return nb, mb, m2b
    n = na + nb
    mean = ma * (na / n) + mb * (nb / n)
    delta = mb - ma
    m2 = (m2a + m2b) + delta * delta * ((na * nb) / n)
    return n, mean, m2


# ------------------------------------------------------------------ categorical


class CategoricalSketch:
    """Counts of one categorical feature over one window, on the reference's top K.

    Attributes (read-only)
    ----------------------
    categories : tuple[str, ...]
        The reference's top-K categories, in order.
    counts : NDArray[int64]
        ``K + 1`` counts; ``counts[i]`` for ``categories[i]``, ``counts[K]`` for every
        other (unseen or rare) value.
    missing : int
        Number of ``None`` (or float ``NaN``) values.
    n : int
        Number of non-missing values (``counts.sum()``).

    Examples
    --------
    >>> s = CategoricalSketch.zero(("a", "b")).update(["a", "b", "a", "zz", None])
    >>> s.counts.tolist(), s.n, s.missing
    ([2, 1, 1], 4, 1)
    >>> CategoricalSketch.from_bytes(s.to_bytes(), s.categories) == s
    True
    """

    TAG: ClassVar[str] = "sketch.categorical"
    VERSION: ClassVar[int] = 1

    __slots__ = ("_categories", "_counts", "_fp", "_index", "_missing", "_n")

    __hash__ = None  # type: ignore[assignment]  # mutable (update works in place)

    def __init__(
        self,
        categories: tuple[str, ...],
        counts: npt.NDArray[np.int64],
        *,
        missing: int = 0,
        n: int = 0,
        index: dict[str, int] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Low-level constructor without validation; use :meth:`zero` or :meth:`from_bytes`."""
        self._categories = categories
        self._counts = counts
        self._missing = missing
        self._n = n
        self._index = index if index is not None else {c: i for i, c in enumerate(categories)}
        self._fp = fingerprint

    @classmethod
    def zero(cls, categories: Sequence[str]) -> CategoricalSketch:
        """The empty sketch on the reference's top-K ``categories`` (distinct strings)."""
        cats = tuple(categories)
        if not all(isinstance(c, str) for c in cats):
            raise ValueError("categories must be strings")
        if len(set(cats)) != len(cats):
            raise ValueError("categories must be distinct")
        counts = _frozen_counts(np.zeros(len(cats) + 1, dtype=np.int64))
        return cls(cats, counts)

    @property
    def categories(self) -> tuple[str, ...]:
        """The reference's top-K categories."""
        return self._categories

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """The read-only counts (last entry: other)."""
        return self._counts

    @property
    def bins(self) -> int:
        """Number of buckets, ``K + 1``."""
        return int(self._counts.size)

    @property
    def missing(self) -> int:
        """Number of missing values."""
        return self._missing

    @property
    def n(self) -> int:
        """Number of non-missing values."""
        return self._n

    @property
    def total(self) -> int:
        """Every value seen: ``n + missing``."""
        return self._n + self._missing

    @property
    def other(self) -> int:
        """Non-missing values outside the top K."""
        return int(self._counts[-1])

    @property
    def fingerprint(self) -> str:
        """:func:`categories_fingerprint` of the categories (cached)."""
        if self._fp is None:
            self._fp = categories_fingerprint(self._categories)
        return self._fp

    def update(self, values: Iterable[str | None]) -> Self:
        """Add a batch of values in place and return ``self``.

        Values are tallied with :class:`collections.Counter` first, so the per-value cost
        is one hash; then each distinct value is looked up once. ``None`` and float
        ``NaN`` are missing; any other value not among the categories is "other".
        """
        tally = Counter(values)
        if not tally:
            return self
        k = len(self._categories)
        add = np.zeros(k + 1, dtype=np.int64)
        index = self._index
        missing = 0
        for value, c in tally.items():
            i = index.get(value, k) if isinstance(value, str) else -1
            if i >= 0:
                add[i] += c
            elif value is None or (isinstance(value, float) and math.isnan(value)):
                missing += c
            else:
                add[k] += c
        self._counts = _frozen_counts(self._counts + add)
        self._n += int(add.sum())
        self._missing += missing
        return self

    def merge(self, other: CategoricalSketch) -> CategoricalSketch:
        """A new sketch of both windows' values.

        Raises
        ------
        SketchMismatch
            ``other`` is not a CategoricalSketch or has other categories.
        """
        if not isinstance(other, CategoricalSketch):
            raise SketchMismatch(f"cannot merge CategoricalSketch with {type(other).__name__}")
        if other._categories != self._categories:
            raise SketchMismatch("categorical sketches have different categories")
        return CategoricalSketch(
            self._categories,
            _frozen_counts(self._counts + other._counts),
            missing=self._missing + other._missing,
            n=self._n + other._n,
            index=self._index,
            fingerprint=self._fp or other._fp,
        )

    def copy(self) -> CategoricalSketch:
        """An independent copy."""
        return CategoricalSketch(
            self._categories, self._counts, missing=self._missing, n=self._n,
            index=self._index, fingerprint=self._fp,
        )  # fmt: skip

    def to_bytes(self, *, embed: bool = False) -> bytes:
        """The versioned record; with ``embed=True`` it also stores the categories."""
        fields: dict[str, Any] = {
            "fp": self.fingerprint,
            "counts": self._counts.tolist(),
            "missing": self._missing,
            "n": self._n,
        }
        if embed:
            fields["categories"] = list(self._categories)
        return pack(self.TAG, self.VERSION, fields)

    @classmethod
    def from_bytes(cls, data: bytes, categories: Sequence[str] | None = None) -> CategoricalSketch:
        """Read a record written by :meth:`to_bytes`.

        ``categories`` is required unless the record embeds them, and must match the
        record's fingerprint.

        Raises
        ------
        StateCorrupt
            Not a categorical-sketch record of this version, or inconsistent fields.
        SketchMismatch
            ``categories`` do not match the record's fingerprint, or are needed and missing.
        """
        tag = cls.TAG
        f = unpack(data, tag, cls.VERSION)
        _check_keys(f, {"fp", "counts", "missing", "n"}, {"categories"}, tag)
        fp = _dec_fingerprint(f, tag)
        stored: tuple[str, ...] | None = None
        if "categories" in f:
            raw = f["categories"]
            if (
                not isinstance(raw, list)
                or not all(isinstance(c, str) for c in raw)
                or len(set(raw)) != len(raw)
            ):
                raise StateCorrupt(f"{tag}: field 'categories' is not a list of distinct strings")
            stored = tuple(raw)
            if categories_fingerprint(stored) != fp:
                raise StateCorrupt(f"{tag}: stored categories do not match their fingerprint")
        if categories is not None:
            cats = tuple(categories)
            if categories_fingerprint(cats) != fp:
                raise SketchMismatch(f"{tag}: record was built on other categories")
        elif stored is not None:
            cats = stored
        else:
            raise SketchMismatch(f"{tag}: record stores only a categories fingerprint")
        counts = _dec_counts(f, "counts", len(cats) + 1, tag)
        n = _dec_int(f, "n", tag)
        missing = _dec_int(f, "missing", tag)
        if int(counts.sum(dtype=object)) != n:
            raise StateCorrupt(f"{tag}: counts do not sum to n")
        return cls(cats, counts, missing=missing, n=n, fingerprint=fp)

    def __eq__(self, other: object) -> bool:
        """Same categories, counts and missing count."""
        if not isinstance(other, CategoricalSketch):
            return NotImplemented
        return (
            self._categories == other._categories
            and np.array_equal(self._counts, other._counts)
            and self._missing == other._missing
            and self._n == other._n
        )

    def __repr__(self) -> str:
        return (
            f"CategoricalSketch(k={len(self._categories)}, n={self._n}, "
            f"missing={self._missing}, other={self.other})"
        )
