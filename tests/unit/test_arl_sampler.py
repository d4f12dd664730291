"""The calibration's fast draws and walks against their plain forms, bit for bit.

The sampler's fine table and the walks' blocks are shortcuts: the oracle is the search
they replace (a guide table, then steps forward) and the walks of whole chunks, here as
they were written before (the golden references pin the same values end to end).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.core.detectors.arl import _Sampler, _walks

TINY = 2.0**-53


def search(s: _Sampler, r: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The draw's definition: from the guide's start, forward past the cumulative
    weights at or below ``u + r``; clipped to the row."""
    w = s.width
    cell = np.minimum((u * w).astype(np.intp), w - 1) + (r * w)[:, None]
    j = s.guide[cell]
    target = u + r[:, None]
    last = s.flat_cdf.size - 1
    lag = s.flat_cdf[np.minimum(j, last)] <= target
    while lag.any():
        j += lag
        lag = s.flat_cdf[np.minimum(j, last)] <= target
    lo = (r * w)[:, None]
    out: np.ndarray = s.flat_y[np.clip(j, lo, lo + w - 1)]
    return out


def distributions(seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for trial in range(60):
        rows = int(rng.integers(1, 12))
        width = int(rng.choice([1, 2, 3, 7, 50, 333, 2000]))
        ys = rng.normal(size=(rows, width))
        kind = trial % 5
        if kind == 0:
            ws = np.full((rows, width), 1.0 / width)
        elif kind == 1:
            ws = rng.random((rows, width)) ** 8
        elif kind == 2:  # tilted: most mass on a few points, many next to nothing
            ws = np.exp(rng.normal(0, 6, (rows, width)))
        elif kind == 3:  # zero weights inside and as padding
            ws = rng.random((rows, width))
            ws[rng.random((rows, width)) < 0.5] = 0
            ws[:, 0] += 1e-300
            ws[:, width - int(rng.integers(0, width)) :] = 0
            ws[:, 0] += 1.0
        else:  # an overflowed tilt: no sorted cumulative weights in a row
            ws = rng.random((rows, width))
            ws[0, width // 2] = np.inf
        with np.errstate(invalid="ignore"):
            ws = ws / ws.sum(axis=1, keepdims=True)
        yield rng, ys, ws


@pytest.mark.parametrize("seed", [0, 1])
def test_draws_are_the_search_at_random_and_edge_uniforms(seed: int) -> None:
    for rng, ys, ws in distributions(seed):
        with np.errstate(invalid="ignore"):
            s = _Sampler(ys, ws)
        rows, width = ys.shape
        n = 300
        r = rng.integers(0, rows, n)
        u = rng.random((n, 24))
        k = rng.integers(0, width + 1, n) / width  # guide cells' edges
        f = rng.integers(1, s.fine + 1, n) / s.fine  # fine cells' edges
        cdf = np.nan_to_num(s.flat_cdf.reshape(rows, width)[r, rng.integers(0, width, n)] - r)
        for i, edge in enumerate((k, f, cdf)):
            u[:, 3 * i] = edge
            u[:, 3 * i + 1] = np.nextafter(edge, 0.0)
            u[:, 3 * i + 2] = np.nextafter(edge, 1.0)
        u[:, 9:12] = [0.0, TINY, 1 - 2 * TINY]
        u[:, 12] = 1 - TINY  # u + r rounds up to r + 1 for most rows
        u = np.clip(np.floor(u * 2**53) / 2**53, 0.0, 1 - TINY)  # the generator's values
        # the definition never ends where u + r rounds up past the last row's end
        u[(u + r[:, None] >= rows) & (r[:, None] == rows - 1)] = 0.5
        assert np.array_equal(s.draw(r, u), search(s, r, u), equal_nan=True), (rows, width)


def plain_walks(
    s: _Sampler, counts: np.ndarray, h: np.ndarray, rng: np.random.Generator, max_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The walks in whole chunks, each a running sum from the chunk's start."""
    row_of = np.repeat(np.arange(counts.size), counts)
    s_now, steps, end = np.zeros(row_of.size), np.zeros(row_of.size), np.zeros(row_of.size)
    alive = np.arange(row_of.size)
    chunk, taken = 16, 0
    while alive.size and taken < max_steps:
        r = row_of[alive]
        u = rng.random((alive.size, chunk))
        path = s_now[alive, None] + np.cumsum(search(s, r, u), axis=1)
        stop = (path <= 0) | (path >= h[r, None])
        stopped = stop.any(axis=1)
        first = np.argmax(stop, axis=1)
        done = np.flatnonzero(stopped)
        end[alive[done]] = path[done, first[done]]
        steps[alive[done]] += first[done] + 1
        keep = np.flatnonzero(~stopped)
        s_now[alive[keep]] = path[keep, -1]
        steps[alive[keep]] += chunk
        alive = alive[keep]
        taken += chunk
        chunk = min(chunk * 2, 256)
    end[alive] = s_now[alive]
    return row_of, steps, end


@pytest.mark.parametrize("max_steps", [16, 40, 4096])
def test_walks_are_the_walks_of_whole_chunks(max_steps: int) -> None:
    rng = np.random.default_rng(3)
    ys = np.vstack([rng.normal(-0.2, 1, 400), rng.exponential(1, 400) - 1.1, np.zeros(400)])
    ys[2, :2] = [1.0, -0.1]  # a two-point row, padded
    ws = np.full(ys.shape, 1 / 400)
    ws[2] = 0
    ws[2, :2] = [0.05, 0.95]
    s = _Sampler(ys, ws)
    counts = np.array([500, 300, 400])
    h = np.array([3.0, 0.5, 2.0])
    got = _walks(s, counts, h, np.random.default_rng(9), max_steps)
    want = plain_walks(s, counts, h, np.random.default_rng(9), max_steps)
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)
