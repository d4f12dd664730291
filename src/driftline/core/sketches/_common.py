"""What every sketch shares: bins made read-only, fingerprints, checked record fields,
and the pairwise combination of moments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import unpack
from driftline.errors import SketchMismatch, StateCorrupt

B = TypeVar("B")

_INT64_MAX = 2**63 - 1


def frozen_edges(edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
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


def frozen_counts(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``counts``, made read-only (a sketch never hands out a writable array)."""
    counts.flags.writeable = False
    return counts


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


def chan(
    na: int, ma: float, m2a: float, nb: int, mb: float, m2b: float
) -> tuple[int, float, float]:
    """Combine (count, mean, M2) pairs (Chan, Golub & LeVeque 1979).

    ``mean = ma * (na / n) + mb * (nb / n)`` and
    ``M2 = M2a + M2b + (mb - ma)**2 * (na * nb / n)``; both are symmetric in a and b
    bit for bit (``na * nb`` is an exact integer product), so merging is exactly
    commutative. An empty side returns the other side unchanged, so ``zero`` is an exact
    identity. :class:`~driftline.core.sketches.NumericSketchBank` applies the same
    formula to whole arrays.
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


def same_floats(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Element-wise equality where NaN equals NaN (moments may overflow to NaN)."""
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ record fields


def check_keys(f: dict[str, Any], required: set[str], optional: set[str], tag: str) -> None:
    """Refuse a record whose field set is not ``required`` plus some of ``optional``."""
    keys = set(f)
    if not required <= keys or not keys <= required | optional:
        raise StateCorrupt(f"{tag}: unexpected field set {sorted(keys)}")


def dec_int(f: dict[str, Any], key: str, tag: str) -> int:
    """A non-negative int64 field."""
    v = f.get(key)
    if type(v) is not int or not 0 <= v <= _INT64_MAX:
        raise StateCorrupt(f"{tag}: field {key!r} is not a non-negative int64")
    return v


def dec_counts(f: dict[str, Any], key: str, length: int, tag: str) -> npt.NDArray[np.int64]:
    """A field of ``length`` non-negative int64 counts, as a read-only array."""
    v = f.get(key)
    if (
        not isinstance(v, list)
        or len(v) != length
        or not all(type(c) is int and 0 <= c <= _INT64_MAX for c in v)
    ):
        raise StateCorrupt(f"{tag}: field {key!r} is not {length} non-negative int64 counts")
    return frozen_counts(np.array(v, dtype=np.int64))


def resolve_bins(
    given: B | None, stored: B | None, fp: str, fingerprint: Callable[[B], str], tag: str
) -> B:
    """The bins a record is read on: the caller's (``given``), else the ones it embeds.

    Raises
    ------
    StateCorrupt
        The embedded bins do not match the record's fingerprint.
    SketchMismatch
        The caller's bins do not match it, or the record embeds none and none were given.
    """
    if stored is not None and fingerprint(stored) != fp:
        raise StateCorrupt(f"{tag}: stored bins do not match their fingerprint")
    if given is not None:
        if fingerprint(given) != fp:
            raise SketchMismatch(f"{tag}: record was built on other bins")
        return given
    if stored is None:
        raise SketchMismatch(f"{tag}: record stores only a fingerprint of its bins; pass them")
    return stored


def open_record(
    data: bytes, tag: str, version: int, required: set[str], bins_field: str
) -> tuple[dict[str, Any], str]:
    """A sketch record's fields (exactly ``required``, and maybe ``bins_field``) and
    the fingerprint of its bins."""
    f = unpack(data, tag, version)
    check_keys(f, required, {bins_field}, tag)
    fp = f.get("fp")
    if not isinstance(fp, str):
        raise StateCorrupt(f"{tag}: field 'fp' is not a string")
    return f, fp


class SketchBase:
    """Counts over fixed bins, a missing count and a fingerprint of the bins: what the
    numeric and the categorical sketch have in common (read-only properties)."""

    __slots__ = ("_counts", "_fp", "_missing", "_n")

    __hash__ = None  # type: ignore[assignment]  # mutable (update works in place)

    _counts: npt.NDArray[np.int64]
    _missing: int
    _n: int
    _fp: str | None

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """The read-only per-bin counts."""
        return self._counts

    @property
    def bins(self) -> int:
        """Number of bins."""
        return int(self._counts.size)

    @property
    def missing(self) -> int:
        """Number of missing values (``None`` or ``NaN``)."""
        return self._missing

    @property
    def n(self) -> int:
        """Number of values counted in a bin (``counts.sum()``)."""
        return self._n

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the bins (cached)."""
        if self._fp is None:
            self._fp = self._fingerprint()
        return self._fp

    def _fingerprint(self) -> str:
        raise NotImplementedError
