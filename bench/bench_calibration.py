"""Reference build time for wide models: the CUSUM calibration now and before (round 5).

Builds the reference of a simulated model (2,000 training rows) at 20 and 200 features
with the calibration's sampler and walks as they are, and with the previous ones (kept
below as the baseline: a guide-table search for every draw, whole chunks of steps),
alternated, best of ``--repeat`` in CPU time (the figure to compare on a shared machine);
and checks the two references are byte-identical (the calibration is seeded: the same
uniforms must give the same thresholds).

    python bench/bench_calibration.py [--features 20 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from driftline.core.detectors import arl  # noqa: E402
from driftline.core.reference import build_reference  # noqa: E402
from driftline.demo.simulate import SimulatedModel  # noqa: E402


class PreviousSampler:
    """The sampler before round five: every draw searched from its guide cell."""

    def __init__(self, ys: Any, ws: Any) -> None:
        rows, width = ys.shape
        cdf = np.cumsum(ws, axis=1)
        cdf /= cdf[:, -1:]
        cdf[ws == 0] = 1.0
        cdf[:, -1] = 1.0
        cdf = np.maximum.accumulate(cdf, axis=1)
        self.width = width
        self.flat_cdf = (cdf + np.arange(rows)[:, None]).ravel()
        self.flat_y = ys.ravel()
        cells = (np.arange(width) / width)[None, :] + np.arange(rows)[:, None]
        self.guide = np.searchsorted(self.flat_cdf, cells.ravel(), side="right")

    def draw(self, r: Any, u: Any) -> Any:
        cell = np.minimum((u * self.width).astype(np.intp), self.width - 1)
        cell += (r * self.width)[:, None]
        j = self.guide[cell]
        target = u + r[:, None]
        last = self.flat_cdf.size - 1
        lag = self.flat_cdf[np.minimum(j, last)] <= target
        while lag.any():
            j += lag
            lag = self.flat_cdf[np.minimum(j, last)] <= target
        lo = (r * self.width)[:, None]
        np.clip(j, lo, lo + self.width - 1, out=j)
        return self.flat_y[j]


def previous_walks(
    sampler: Any, counts: Any, h: Any, rng: Any, max_steps: int, work: Any = None
) -> tuple[Any, Any, Any]:
    """The walks before round five: whole chunks, fresh arrays for every step."""
    row_of = np.repeat(np.arange(counts.size), counts)
    total = row_of.size
    s, steps, end = np.zeros(total), np.zeros(total), np.zeros(total)
    alive = np.arange(total)
    chunk, taken = 16, 0
    while alive.size and taken < max_steps:
        r = row_of[alive]
        path = s[alive, None] + np.cumsum(sampler.draw(r, rng.random((alive.size, chunk))), axis=1)
        stop = (path <= 0) | (path >= h[r, None])
        stopped = stop.any(axis=1)
        first = np.argmax(stop, axis=1)
        done = np.flatnonzero(stopped)
        end[alive[done]] = path[done, first[done]]
        steps[alive[done]] += first[done] + 1
        keep = np.flatnonzero(~stopped)
        s[alive[keep]] = path[keep, -1]
        steps[alive[keep]] += chunk
        alive = alive[keep]
        taken += chunk
        chunk = min(chunk * 2, 256)
    end[alive] = s[alive]
    return row_of, steps, end


def build(data: Any, previous: bool) -> tuple[float, bytes]:
    now = arl._Sampler, arl._walks
    if previous:
        arl._Sampler, arl._walks = PreviousSampler, previous_walks  # type: ignore[assignment,misc]
    try:
        t = time.process_time()
        ref = build_reference(data, "wide", "1", seed=0, created_at=0)
        return time.process_time() - t, ref.to_bytes()
    finally:
        arl._Sampler, arl._walks = now  # type: ignore[misc]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", type=int, nargs="+", default=[20, 200])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(f"reference build, CPU seconds (best of {a.repeat}), {a.rows} rows")
    print(f"{'features':>8}{'previous':>12}{'now':>10}{'speed-up':>10}  same bytes")
    for nf in a.features:
        data = SimulatedModel(nf, seed=4).training_data(a.rows)
        best: dict[bool, float] = {True: float("inf"), False: float("inf")}
        blobs: dict[bool, bytes] = {}
        for _ in range(a.repeat):
            for previous in (True, False):
                took, blobs[previous] = build(data, previous)
                best[previous] = min(best[previous], took)
        same = blobs[True] == blobs[False]
        ratio = best[True] / best[False]
        print(f"{nf:>8}{best[True]:>10.2f} s{best[False]:>8.2f} s{ratio:>9.1f}x  {same}")
        if not same:
            sys.exit("the calibration changed: the references differ")


if __name__ == "__main__":
    main()
