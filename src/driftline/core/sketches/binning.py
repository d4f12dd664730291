"""Bin lookup for many numeric columns at once (``searchsorted``, vectorised).

The numeric sketches count values in bins ``(e_i, e_{i+1}]``: the bin of ``x`` is
``np.searchsorted(edges, x, side="left")``. A window of a model with tens of features
bins every value of every feature; :class:`GridBinner` gives exactly ``searchsorted``'s
answer for all the columns in a few array operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["GridBinner", "Located", "NumericBins"]

#: Grid cells per column and the most "next edge" steps a lookup may need.
_GRID = 8192
_GRID_STEPS = 6


class GridBinner:
    """``searchsorted(edges[i], x[i], side="left")`` for every row of ``x`` at once.

    A lookup grid of :data:`_GRID` cells per column gives, for each value, a lower
    bound of its bin (the bin of the grid point one cell below); a few vectorised
    "is the next edge still below x?" steps finish the search. Columns whose edges
    crowd more than :data:`_GRID_STEPS` into a few cells use ``searchsorted``.
    The result is exactly ``searchsorted``'s (tests/unit/test_sketches.py).
    """

    def __init__(self, edges: Sequence[NDArray[np.float64]]) -> None:
        self.n = len(edges)
        grid_rows: list[int] = []
        bases: list[NDArray[np.intp]] = []
        lows: list[float] = []
        scales: list[float] = []
        steps = 0
        for i, e in enumerate(edges):
            if e.size < 2:
                continue
            lo, hi = float(e[0]), float(e[-1])
            scale = _GRID / (hi - lo)
            if not (math.isfinite(scale) and scale > 0):
                continue
            points = lo + np.arange(_GRID) / scale
            base = np.searchsorted(e, points, side="left")
            per_cell = np.diff(np.searchsorted(e, np.r_[points, math.inf], side="left"))
            near = int(np.convolve(per_cell, np.ones(5, dtype=np.int64), mode="same").max())
            if near + 1 > _GRID_STEPS:
                continue
            steps = max(steps, near + 1)
            grid_rows.append(i)
            bases.append(base.astype(np.intp))
            lows.append(lo)
            scales.append(scale)
        self.edges = list(edges)
        self.grid_rows = np.asarray(grid_rows, dtype=np.intp)
        self.other_rows = [i for i in range(self.n) if i not in set(grid_rows)]
        self.steps = steps
        k = len(grid_rows)
        width = max((edges[i].size for i in grid_rows), default=0) + steps + 1
        pad = np.full((k, width), math.inf)
        for j, i in enumerate(grid_rows):
            pad[j, : edges[i].size] = edges[i]
        self.pad = pad.ravel()
        self.pad_off = (np.arange(k, dtype=np.intp) * width)[:, None]
        # Bin indices are small: int16 keeps the grid's table at 2 bytes a cell.
        small = max((edges[i].size for i in grid_rows), default=0) < 1 << 15
        self.base = (np.concatenate(bases) if bases else np.zeros(0, dtype=np.intp)).astype(
            np.int16 if small else np.intp
        )
        self.base_off = (np.arange(k, dtype=np.intp) * _GRID - 1)[:, None]
        self.low = np.asarray(lows, dtype=np.float64)[:, None]
        self.scale = np.asarray(scales, dtype=np.float64)[:, None]

    def bins(self, x: NDArray[np.float64], finite: NDArray[np.bool_]) -> NDArray[np.intp]:
        """Bin index of every value (non-finite values get an arbitrary bin)."""
        out = np.empty(x.shape, dtype=np.intp)
        rows = self.grid_rows
        if rows.size:
            xs = x if rows.size == self.n else x[rows]
            if not finite[rows].all():
                xs = np.where(np.isfinite(xs), xs, self.low)
            with np.errstate(over="ignore", invalid="ignore"):
                cell = (xs - self.low) * self.scale
            np.clip(cell, 1.0, _GRID - 1.0, out=cell)
            at = cell.astype(np.intp)
            at += self.base_off
            idx = self.base[at].astype(np.intp)
            idx += self.pad_off
            pad = self.pad
            for _ in range(self.steps):
                idx += pad[idx] < xs
            idx -= self.pad_off
            if rows.size == self.n:
                out = idx
            else:
                out[rows] = idx
        for i in self.other_rows:
            out[i] = np.searchsorted(self.edges[i], x[i], side="left")
        return out


class NumericBins:
    """The bins of several numeric sketches, side by side: one layout for a bank.

    Column ``i`` has the interior edges ``edges[i]`` (so ``sizes[i]`` bins) and the
    reference range ``[ref_min[i], ref_max[i]]``. Counts of all columns live in one
    ``(k, width)`` matrix, column ``i``'s bin ``b`` at flat position
    ``offsets[i] + b``; ``sentinel`` (one past the last) receives values in no bin.
    Built once per reference and shared, read-only, by every bank on it.
    """

    def __init__(
        self,
        edges: Sequence[NDArray[np.float64]],
        ref_min: Sequence[float],
        ref_max: Sequence[float],
        fingerprints: Sequence[str],
    ) -> None:
        self.edges = list(edges)
        self.k = k = len(self.edges)
        self.sizes = [int(e.size) + 1 for e in self.edges]
        width = self.width = max(self.sizes, default=1)
        self.offsets = np.arange(k, dtype=np.intp) * width
        self.sentinel = k * width
        self.ref_min = np.asarray(ref_min, dtype=np.float64).reshape(k)
        self.ref_max = np.asarray(ref_max, dtype=np.float64).reshape(k)
        self.fingerprints = list(fingerprints)
        self.binner = GridBinner(self.edges)

    @classmethod
    def of(cls, *sketches: _Binned) -> NumericBins:
        """The layout of ``sketches`` (their edges, reference ranges and fingerprints)."""
        return cls(
            [s.edges for s in sketches],
            [s.ref_min for s in sketches],
            [s.ref_max for s in sketches],
            [s.fingerprint for s in sketches],
        )

    def locate(self, x: NDArray[np.float64]) -> Located:
        """Where every value of ``x`` (one row per column) falls."""
        k, m = x.shape
        finite: NDArray[np.bool_] = np.ones(k, dtype=np.bool_)
        if m:
            finite = np.asarray(np.isfinite(x).all(axis=1))
        flat = self.binner.bins(x, finite)
        flat += self.offsets[:, None]
        located = Located(flat, finite)
        for i in located.other_rows.tolist():
            flat[i, ~np.isfinite(x[i])] = self.sentinel
        return located


class Located:
    """Values placed in their bins: the flat bin index of each value (the sentinel for
    missing and infinite ones) and which rows hold only finite values.

    ``located[:, a:b]`` is the same for the values ``a:b`` (a view; the rows keep their
    classification, which only chooses between two exact ways of updating them).
    """

    __slots__ = ("finite", "finite_rows", "flat", "other_rows")

    def __init__(
        self,
        flat: NDArray[np.intp],
        finite: NDArray[np.bool_],
        finite_rows: NDArray[np.intp] | None = None,
        other_rows: NDArray[np.intp] | None = None,
    ) -> None:
        self.flat = flat
        self.finite = finite
        self.finite_rows = np.flatnonzero(finite) if finite_rows is None else finite_rows
        self.other_rows = np.flatnonzero(~finite) if other_rows is None else other_rows

    def __getitem__(self, cols: tuple[slice, slice]) -> Located:
        return Located(self.flat[cols], self.finite, self.finite_rows, self.other_rows)


class _Binned(Protocol):
    @property
    def edges(self) -> NDArray[np.float64]: ...
    @property
    def ref_min(self) -> float: ...
    @property
    def ref_max(self) -> float: ...
    @property
    def fingerprint(self) -> str: ...
