"""False alerts on unchanged data against references built from few training rows.

Run::

    python bench/bench_small_reference.py [--rows 400,1000,3000] [--seeds 4] [--events 5000]

For each training size and seed, a table of 10 log-normal and 3 categorical features,
a Poisson count and a binary model's output (``prediction``, ``proba``, ``target``) is
drawn, a reference is built from it (``driftline.build_reference``, default policy: one
false alarm per 1,000,000 events), and ``--events`` new rows drawn from the same
distribution are monitored (``driftline.monitor``). Nothing changes between training
and current data, so every alert is a false one. The table prints, per training size,
the runs with at least one alert, the alerts by detector, and the detection rows the
calibration turned off (a reference too small to bound their false alarms), on average.

Found in round eleven's first-hour trial (docs/performance.md has no figure for it: it
is a detection question, docs/architecture.md "Known limits of the fast loop").
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import numpy as np
import pandas as pd

import driftline

LEVELS = [f"c{i}" for i in range(15)]
SHARES = np.linspace(1, 15, 15)[::-1] / np.linspace(1, 15, 15).sum()


def table(rng: np.random.Generator, n: int, start: str) -> Any:
    """``n`` rows of the benchmark's model, every 10 minutes from ``start``."""
    df = pd.DataFrame(
        {"id": np.arange(n), "timestamp": pd.date_range(start, periods=n, freq="10min", tz="UTC")}
    )
    for j in range(10):
        df[f"num{j}"] = rng.lognormal(0, 1, n)
    for j in range(3):
        df[f"cat{j}"] = rng.choice(LEVELS, n, p=SHARES)
    df["count"] = rng.poisson(2, n)
    p = 1 / (1 + np.exp(-(df["num0"] - 1.5)))
    df["prediction"] = p > 0.5
    df["proba"] = p
    df["target"] = rng.random(n) < p
    return df


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="400,1000,3000", help="training sizes")
    ap.add_argument("--seeds", type=int, default=4, help="runs per training size")
    ap.add_argument("--events", type=int, default=5000, help="current rows per run")
    args = ap.parse_args()
    print(
        f"| training rows | runs with a false alert (of {args.seeds}) | alerts by detector "
        "| detectors off |"
    )
    print("|---:|---:|---|---:|")
    for n in (int(x) for x in args.rows.split(",")):
        hit = 0
        detectors: collections.Counter[str] = collections.Counter()
        off, total = 0, 0
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            ref = driftline.build_reference(table(rng, n, "2026-01-01"), "small", "1", show=False)
            for _, _, plan in ref.profile.banks():
                rows = [t for r, t in zip(plan.role, plan.threshold, strict=True) if r == 0]
                off += sum(1 for t in rows if t == float("inf"))
                total += len(rows)
            run = driftline.monitor(table(rng, args.events, "2026-02-01"), ref, show=False)
            firing = [a for a in run.run.alerts if a.status == "firing"]
            hit += bool(firing)
            detectors.update(f"{a.kind}/{a.detector}" for a in firing)
        said = ", ".join(f"{k} {v}" for k, v in sorted(detectors.items())) or "none"
        print(f"| {n:,} | {hit} | {said} | {off / args.seeds:.1f} of {total / args.seeds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
