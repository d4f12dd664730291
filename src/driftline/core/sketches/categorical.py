"""The categorical sketch, and a bank of them updated together.

:class:`CategoricalSketch` counts one feature's values on the reference's top K.
:class:`CategoricalSketchBank` counts many features at once from category codes (one
``bincount`` per batch); a sketch's own :meth:`CategoricalSketch.update` is a bank of
one, so the contract suite runs the monitor's code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import pack
from driftline.core.sketches._common import (
    SketchBase,
    categories_fingerprint,
    dec_counts,
    dec_int,
    frozen_counts,
    open_record,
    resolve_bins,
)
from driftline.errors import SketchMismatch, StateCorrupt

__all__ = ["CategoricalBins", "CategoricalSketch", "CategoricalSketchBank"]


class CategoricalSketch(SketchBase):
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

    __slots__ = ("_categories", "_index")

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
        counts = frozen_counts(np.zeros(len(cats) + 1, dtype=np.int64))
        return cls(cats, counts)

    @property
    def categories(self) -> tuple[str, ...]:
        """The reference's top-K categories."""
        return self._categories

    def _fingerprint(self) -> str:
        return categories_fingerprint(self._categories)

    @property
    def total(self) -> int:
        """Every value seen: ``n + missing``."""
        return self._n + self._missing

    @property
    def other(self) -> int:
        """Non-missing values outside the top K."""
        return int(self._counts[-1])

    def update(self, values: Iterable[str | None]) -> Self:
        """Add a batch of values in place and return ``self``.

        Values are tallied with :class:`collections.Counter` first, so the per-value cost
        is one hash; then each distinct value is looked up once. ``None`` and float
        ``NaN`` are missing; any other value not among the categories is "other". The
        counting is a :class:`CategoricalSketchBank` of one column (the monitor's code).
        """
        tally = Counter(values)
        if not tally:
            return self
        k = len(self._categories)
        index = self._index
        codes = np.fromiter(
            (
                index.get(value, k)
                if isinstance(value, str)
                else -1
                if value is None or (isinstance(value, float) and math.isnan(value))
                else k
                for value in tally
            ),
            dtype=np.int64,
            count=len(tally),
        )
        repeated = np.repeat(codes, np.fromiter(tally.values(), np.int64, len(tally)))
        bank = CategoricalSketchBank.of(CategoricalBins.of(self), [self])
        done = bank.update(repeated[None, :]).sketch(0)
        self._counts, self._n, self._missing = done._counts, done._n, done._missing
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
            frozen_counts(self._counts + other._counts),
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
        f, fp = open_record(data, tag, cls.VERSION, {"fp", "counts", "missing", "n"}, "categories")
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
        given = tuple(categories) if categories is not None else None
        cats = resolve_bins(given, stored, fp, categories_fingerprint, tag)
        counts = dec_counts(f, "counts", len(cats) + 1, tag)
        n = dec_int(f, "n", tag)
        missing = dec_int(f, "missing", tag)
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


class CategoricalBins:
    """The buckets of several categorical sketches, side by side: a bank's layout.

    Row ``r`` has the categories ``categories[r]`` (``sizes[r]`` of them, plus "other").
    A value's *code* is its category's index, ``sizes[r]`` for other and -1 for
    missing; ``lookups[r]`` maps a category (and None) to its code. Counting adds
    ``offsets[r]`` (so missing lands in column 0 of a row ``width`` wide).
    """

    def __init__(self, categories: Sequence[tuple[str, ...]], fingerprints: Sequence[str]) -> None:
        self.categories = list(categories)
        self.k = k = len(self.categories)
        self.sizes = [len(c) for c in self.categories]
        self.width = max(self.sizes, default=0) + 2  # missing, categories..., other
        self.offsets = np.arange(k, dtype=np.int64) * self.width + 1
        self.index = [{c: i for i, c in enumerate(cats)} for cats in self.categories]
        self.lookups: list[dict[str | None, int]] = []
        for ix in self.index:
            lookup: dict[str | None, int] = {None: -1}
            lookup.update(ix)
            self.lookups.append(lookup)
        self.fingerprints = list(fingerprints)

    @classmethod
    def of(cls, *sketches: CategoricalSketch) -> CategoricalBins:
        """The layout of ``sketches``."""
        return cls([s.categories for s in sketches], [s.fingerprint for s in sketches])


class CategoricalSketchBank:
    """The categorical sketches of many rows as one count matrix.

    ``counts[r, :sizes[r] + 1]`` and ``missing[r]`` are row ``r``'s
    :class:`CategoricalSketch` on ``bins``; working memory, updated in place.

    Examples
    --------
    >>> bins = CategoricalBins.of(CategoricalSketch.zero(("a", "b")))
    >>> bank = CategoricalSketchBank.zero(bins).update(np.array([[0, 1, 1, 2, -1]]))
    >>> bank.sketch(0).counts.tolist(), bank.sketch(0).missing
    ([1, 2, 1], 1)
    """

    __slots__ = ("bins", "counts", "missing")

    def __init__(self, bins: CategoricalBins) -> None:
        """The empty bank on ``bins`` (same as :meth:`zero`)."""
        self.bins = bins
        self.counts = np.zeros((bins.k, max(bins.width - 1, 1)), dtype=np.int64)
        self.missing = np.zeros(bins.k, dtype=np.int64)

    @classmethod
    def zero(cls, bins: CategoricalBins) -> Self:
        """The empty bank on ``bins``."""
        return cls(bins)

    @classmethod
    def of(cls, bins: CategoricalBins, sketches: Sequence[CategoricalSketch | None]) -> Self:
        """A bank holding ``sketches`` (None, or another number of buckets: empty row)."""
        bank = cls(bins)
        for r, sk in enumerate(sketches):
            if sk is None or sk.bins != bins.sizes[r] + 1:
                continue
            bank.counts[r, : bins.sizes[r] + 1] = sk.counts
            bank.missing[r] = sk.missing
        return bank

    def reset(self) -> None:
        """Back to :meth:`zero`, in place."""
        self.counts.fill(0)
        self.missing.fill(0)

    def update(self, codes: npt.NDArray[np.int64]) -> Self:
        """Count row ``r`` of ``codes`` (category codes, see :class:`CategoricalBins`)
        into row ``r``, with one ``bincount``; return ``self``."""
        bins = self.bins
        flat = codes + bins.offsets[:, None]
        hist = np.bincount(flat.ravel(), minlength=bins.k * bins.width)
        hist = hist.reshape(bins.k, bins.width)
        self.missing += hist[:, 0]
        self.counts += hist[:, 1:]
        return self

    def merge(self, other: CategoricalSketchBank) -> CategoricalSketchBank:
        """A new bank of both banks' values (as :meth:`CategoricalSketch.merge`).

        Raises
        ------
        SketchMismatch
            ``other`` is on other categories.
        """
        if other.bins is not self.bins and other.bins.fingerprints != self.bins.fingerprints:
            raise SketchMismatch("categorical sketch banks on different categories")
        out = type(self)(self.bins)
        np.add(self.counts, other.counts, out=out.counts)
        np.add(self.missing, other.missing, out=out.missing)
        return out

    def row_totals(self) -> npt.NDArray[np.int64]:
        """``n`` of every row (non-missing values counted)."""
        total: npt.NDArray[np.int64] = self.counts.sum(axis=1)
        return total

    def sketch(self, r: int) -> CategoricalSketch:
        """Row ``r`` as a read-only :class:`CategoricalSketch` (a copy)."""
        return self.sketches([r])[0]

    def sketches(self, rows: Sequence[int] | None = None) -> list[CategoricalSketch]:
        """Rows ``rows`` (default: all) as read-only sketches (copies)."""
        bins = self.bins
        missing = self.missing.tolist()
        out: list[CategoricalSketch] = []
        for r in range(bins.k) if rows is None else rows:
            counts = self.counts[r, : bins.sizes[r] + 1].copy()
            counts.flags.writeable = False
            out.append(
                CategoricalSketch(
                    bins.categories[r],
                    counts,
                    missing=missing[r],
                    n=int(counts.sum()),
                    index=bins.index[r],
                    fingerprint=bins.fingerprints[r],
                )
            )
        return out
