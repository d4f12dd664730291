"""Time river's detectors against Driftline's, value by value, on the same data.

Plain script (no pytest): prints ns per update, side by side, and checks on the way
that both report the same detection indices.

    python bench/bench_detectors.py            # 1M values for Page-Hinkley, 200k for ADWIN
    python bench/bench_detectors.py --ph 200000 --adwin 50000 --repeat 1

CPU time (``time.process_time``) is reported, the best of ``--repeat`` runs, so other
processes on the machine disturb the figures less.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from river import drift

from driftline.core.detectors import ADWIN, PageHinkley


def best_ns(run: Callable[[], Any], n: int, repeat: int) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.process_time()
        result = run()
        best = min(best, time.process_time() - start)
    return best / n * 1e9, result


def river_loop(make: Callable[[], Any], xs: np.ndarray) -> Callable[[], list[int]]:
    values = xs.tolist()

    def run() -> list[int]:
        det = make()
        hits = []
        for i, x in enumerate(values):
            det.update(x)
            if det.drift_detected:
                hits.append(i)
        return hits

    return run


def ours_many(make: Callable[[], Any], xs: np.ndarray) -> Callable[[], list[int]]:
    def run() -> list[int]:
        hits: list[int] = make().update_many(xs).tolist()
        return hits

    return run


def ours_loop(make: Callable[[], Any], xs: np.ndarray) -> Callable[[], list[int]]:
    values = xs.tolist()

    def run() -> list[int]:
        det = make()
        return [i for i, x in enumerate(values) if det.update(x).drift_detected]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ph", type=int, default=1_000_000, help="values for Page-Hinkley")
    parser.add_argument("--adwin", type=int, default=200_000, help="values for ADWIN")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the fast variants")
    args = parser.parse_args()
    rng = np.random.default_rng(42)

    noise = rng.normal(0.0, 1.0, args.ph)
    shifted = noise + np.repeat(rng.normal(0.0, 1.5, args.ph // 100_000 + 1), 100_000)[: args.ph]
    shifted = (shifted - shifted.mean()) / shifted.std()
    workloads: list[tuple[str, dict[str, Any], np.ndarray]] = [
        ("PH defaults, N(0,1)", {}, noise),
        (
            "PH delta=.25 thr=40, shifts",
            {"delta": 0.25, "threshold": 40.0},
            shifted,
        ),
    ]
    errors = np.r_[
        rng.random(args.adwin // 2) < 0.1, rng.random(args.adwin - args.adwin // 2) < 0.2
    ].astype(np.float64)

    print(f"{'workload':52s} {'river':>10s} {'driftline':>10s}   detections")
    for title, params, xs in workloads:
        n = xs.size
        ns_river, hits_river = best_ns(river_loop(partial(drift.PageHinkley, **params), xs), n, 1)
        ns_many, hits_many = best_ns(ours_many(partial(PageHinkley, **params), xs), n, args.repeat)
        assert hits_many == hits_river, "update_many disagrees with river"
        print(f"{title + ' update_many':52s} {ns_river:10.1f} {ns_many:10.1f}   {len(hits_river)}")
        small = xs[: min(n, 200_000)]
        ns_loop, hits_loop = best_ns(
            ours_loop(partial(PageHinkley, **params), small), small.size, 1
        )
        ns_rsmall, hits_rsmall = best_ns(
            river_loop(partial(drift.PageHinkley, **params), small), small.size, 1
        )
        assert hits_loop == hits_rsmall, "update() disagrees with river"
        print(f"{'  (update() one by one, 200k)':52s} {ns_rsmall:10.1f} {ns_loop:10.1f}")

    n = errors.size
    for title, params in [
        ("ADWIN defaults, 0/1 errors", {}),
        ("ADWIN clock=1, 0/1 errors", {"clock": 1}),
    ]:
        xs = errors if params.get("clock", 32) > 1 else errors[: max(1, n // 10)]
        ns_river, hits_river = best_ns(river_loop(partial(drift.ADWIN, **params), xs), xs.size, 1)
        ns_ours, hits_ours = best_ns(ours_many(partial(ADWIN, **params), xs), xs.size, 1)
        assert hits_ours == hits_river, "ADWIN disagrees with river"
        label = f"{title} update_many ({xs.size // 1000}k)"
        print(f"{label:52s} {ns_river:10.1f} {ns_ours:10.1f}   {len(hits_river)}")
    print("(ns per update, CPU time; river fed one value at a time through its Python API)")


if __name__ == "__main__":
    main()
