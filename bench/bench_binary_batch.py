"""What decoding a columnar batch would cost if its numeric features came as one binary
block (float64, little-endian, column after column) instead of JSON numbers.

Run::

    python bench/bench_binary_batch.py [--events N] [--repeat R]

The batches are the benchmark's (``bench_pipeline``: 500 predictions of 20 numeric and 3
categorical features, 3 classes with scores, in ``prediction_batch.v1``). The figures are
CPU microseconds a prediction (best of ``--repeat`` passes over every batch):

* ``orjson.loads`` of the batch as it is, and ``decode_records`` (the monitor's decoding:
  parse, contract checks, columns);
* ``orjson.loads`` of the same batch without its numeric feature columns, then the block
  read with ``np.frombuffer`` and checked as the contract checks numbers (every value
  finite or missing: here, no infinity).

No such format exists: this measures whether one would pay (docs/performance.md, round
eleven).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline as bp  # noqa: E402

from driftline.contract.columnar import pack_events  # noqa: E402
from driftline.contract.decode import decode_records  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    batches = pack_events(bp._events(args.events))
    numeric = [
        k
        for k, col in batches[0]["features"].items()
        if col and all(isinstance(x, float) for x in col)
    ]
    records = [orjson.dumps(b) for b in batches]

    def without_numeric(b: dict[str, Any]) -> dict[str, Any]:
        rest = {k: col for k, col in b["features"].items() if k not in numeric}
        return {**b, "features": rest}

    light = [orjson.dumps(without_numeric(b)) for b in batches]
    blocks = [
        np.asarray([b["features"][k] for k in numeric], dtype="<f8").tobytes() for b in batches
    ]
    rows = sum(int(b["count"]) for b in batches)

    def binary() -> None:
        for text, block in zip(light, blocks, strict=True):
            orjson.loads(text)
            values = np.frombuffer(block, dtype="<f8").reshape(len(numeric), -1)
            if np.isinf(values).any():
                raise ValueError("an infinite feature value")

    def best(fn: Callable[[], object]) -> float:
        took = float("inf")
        for _ in range(args.repeat):
            t = time.process_time()
            fn()
            took = min(took, time.process_time() - t)
        return took / rows * 1e6

    full = sum(map(len, records)) / rows
    part = (sum(map(len, light)) + sum(map(len, blocks))) / rows
    print(f"{rows} predictions in {len(batches)} batches; {len(numeric)} numeric features")
    print("| decoding a batch, CPU us a prediction | bytes a prediction | us |")
    print("|---|---:|---:|")
    cases: list[tuple[str, float, Callable[[], object]]] = [
        ("`orjson.loads`, as it is", full, lambda: list(map(orjson.loads, records))),
        ("`decode_records` (the monitor's decoding)", full, lambda: decode_records(records)),
        ("the rest as JSON + a binary numeric block", part, binary),
    ]
    for name, size, fn in cases:
        print(f"| {name} | {size:.0f} | {best(fn):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
