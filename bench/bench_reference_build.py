"""Time and memory of ``driftline reference build`` on a big training export (issue 12).

Writes a CSV of N rows (default 500k) as pandas would export it: an id, a time-zone
aware timestamp, 20 numeric features (5% missing), 3 categorical and 1 boolean, the
target, the prediction and two ``proba_*`` columns; then runs the command in a child
process and reports its wall time, its CPU time (user + system: the figure to compare
on a shared machine, where other work stretches wall time) and its peak resident
memory. The baseline beside it is the issue's measurement of the previous reader (15 s,
778 MB for 500k rows, which also read ``id``, ``timestamp`` and the outputs as
features).

    python bench/bench_reference_build.py [--rows 500000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def write_csv(path: Path, n: int, seed: int = 0) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {
        "id": np.arange(n),
        "timestamp": pd.date_range("2026-01-01", periods=n, freq="1min", tz="UTC"),
    }
    for j in range(20):
        x = rng.normal(j, 1 + j / 10, n)
        x[rng.random(n) < 0.05] = np.nan
        cols[f"f{j:02d}"] = x
    for j, k in enumerate((3, 12, 40)):
        cols[f"c{j}"] = rng.choice([f"v{i}" for i in range(k)], n)
    cols["member"] = rng.random(n) < 0.3
    p = 1 / (1 + np.exp(-np.nan_to_num(cols["f00"])))  # type: ignore[call-overload]
    cols["target"] = rng.random(n) < p
    cols["prediction"] = p > 0.5
    cols["proba_False"] = 1 - p
    cols["proba_True"] = p
    pd.DataFrame(cols).to_csv(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--keep", help="write the files here and keep them")
    ap.add_argument("--data", help="an existing CSV written by an earlier run (--keep)")
    a = ap.parse_args()
    d = Path(a.keep or tempfile.mkdtemp(prefix="dl-bench-"))
    d.mkdir(parents=True, exist_ok=True)
    data = Path(a.data) if a.data else d / "train.csv"
    if not a.data:
        t = time.perf_counter()
        write_csv(data, a.rows)
        took = time.perf_counter() - t
        print(f"wrote {data} ({data.stat().st_size / 1e6:.0f} MB) in {took:.1f} s")
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "DRIFTLINE_REDIS__STATE_SIGNING_KEY": "bench-key-0123456789",
    }
    cmd = [
        sys.executable,
        "-m",
        "driftline",
        "reference",
        "build",
        "--model",
        "m",
        "--version",
        "1",
        "--data",
        str(data),
        "--out",
        str(d / "m.ref"),
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb = usage.ru_maxrss / 1024
    cpu = usage.ru_utime + usage.ru_stime
    if r.returncode:
        sys.exit(r.stderr)
    print(r.stderr.strip().splitlines()[-1])
    print(f"{'':<28}{'now':>12}{'issue 12 baseline':>20}")
    print(f"{'reference build, wall time':<28}{wall:>10.1f} s{'15 s':>20}")
    print(f"{'reference build, CPU time':<28}{cpu:>10.1f} s{'':>20}")
    print(f"{'peak resident memory':<28}{peak_mb:>9.0f} MB{'778 MB':>20}")


if __name__ == "__main__":
    main()
