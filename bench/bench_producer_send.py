"""Cost of the producer SDK's ``send()``, this tree against a baseline checkout, in one run.

Run: ``python bench/bench_producer_send.py --baseline /path/to/main/src [--events N]
[--features F] [--repeat K]``

``--events`` single events of ``--features`` numpy features each, ``np.float32`` in one
case and ``np.float64`` in the other, go through ``AsyncPredictionProducer.send`` (the
encoding, the contract check, the buffer; no broker: the producer is never started).
CPU time per event, best of 5 in each child. Each tree runs in a child process
(``PYTHONPATH`` its ``src``), the trees alternated in each of ``--repeat`` rounds, best
figure of each. The children also hash the buffered wire values: the float64 case must
give the same bytes in both trees (the float32 one differs by design: shortest decimals).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
THIS_SRC = HERE.parents[1] / "src"


def _child(n: int, k: int) -> dict[str, Any]:
    """Both cases in this process's tree."""
    import asyncio

    import numpy as np

    from driftline.config import Settings
    from driftline.producer import AsyncPredictionProducer

    names = [f"f{i}" for i in range(k)]
    out: dict[str, Any] = {}

    async def run(dtype: type[np.floating[Any]]) -> tuple[float, str]:
        x = np.random.default_rng(0).normal(0, 1, (n, k)).astype(dtype)
        events = [
            {
                "prediction_id": f"p{i}",
                "model_id": "m",
                "model_version": "1",
                "timestamp": 1_767_225_600_000 + i,
                "features": dict(zip(names, row, strict=True)),
                "prediction": 1,
            }
            for i, row in enumerate(x)
        ]
        best, digest = float("inf"), ""
        for _ in range(5):
            settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"})
            p = AsyncPredictionProducer(settings, max_buffer=n + 1, batch_events=False)
            t0 = time.process_time()
            for e in events:
                p.send(e)
            best = min(best, time.process_time() - t0)
            digest = hashlib.sha256(b"".join(entry[3] for entry in p._buf)).hexdigest()
            p._buf.clear()  # nothing to drop at shutdown
            await p.stop(timeout=0.01)
        return best / n * 1e6, digest

    for name, dtype in (("float32", np.float32), ("float64", np.float64)):
        us, digest = asyncio.run(run(dtype))
        out[name] = {"us_per_event": us, "digest": digest}
    return out


def _run(src: Path, n: int, k: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [sys.executable, str(HERE), "--child", "--events", str(n), "--features", str(k)]
    res = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="the src directory of another tree")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.events, a.features)))
        return
    trees = {"this tree": THIS_SRC}
    if a.baseline is not None:
        trees = {"baseline": a.baseline, **trees}
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for _ in range(a.repeat):
        for label, src in trees.items():
            for case, r in _run(src, a.events, a.features).items():
                was = best.setdefault(label, {}).get(case)
                if was is None or r["us_per_event"] < was["us_per_event"]:
                    best[label][case] = r
    print(f"send(): {a.events:,} events of {a.features} numpy features, CPU us per event")
    for case in ("float32", "float64"):
        row = "  ".join(f"{label} {best[label][case]['us_per_event']:6.2f}" for label in trees)
        print(f"  {case}: {row}")
    if "baseline" in best:
        same = best["baseline"]["float64"]["digest"] == best["this tree"]["float64"]["digest"]
        print(f"  float64 wire bytes identical to the baseline: {same}")


if __name__ == "__main__":
    main()
