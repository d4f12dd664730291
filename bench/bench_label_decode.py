"""Decode cost per label: single label events against label batches (``label_batch.v1``).

Run: ``python bench/bench_label_decode.py [--labels N] [--rows R] [--repeat K]``

The labels are the pipeline benchmark's (bench/bench_pipeline.py: one model, string
labels, epoch-ms times). Each figure is the best of ``--repeat`` runs, in CPU time of
this process (``time.process_time``, with the workers' collector policy), per label, of
decoding the same labels sent as:

* single events, one by one with ``decode_label_fast`` (what the joiner did before
  label batches: the baseline);
* single events through ``decode_label_records`` (the joiner's decoding step now);
* label batches of ``--rows`` rows (what the SDK sends by default);
* the same batches with one poison row each (refused alone, the rest kept).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from driftline.contract.checks import decode_label_fast
from driftline.contract.label_batch import decode_label_records, pack_label_events
from driftline.runtime.gc_policy import batch_sized_gc

T0 = 1_767_225_600_000


def make_labels(n: int) -> list[dict[str, object]]:
    return [
        {
            "prediction_id": f"p-{i:09d}",
            "model_id": "churn-classifier",
            "label": "churn" if i % 5 == 0 else "stay",
            "timestamp": T0 + i * 10 + 60_000,
        }
        for i in range(n)
    ]


def best_us(cases: list[tuple[str, Callable[[], object]]], repeat: int) -> list[float]:
    """Best CPU time of each case over ``repeat`` rounds (the cases alternated in each
    round, so a busy moment of the shared machine hits them all), in seconds."""
    best = [float("inf")] * len(cases)
    for _ in range(repeat):
        for i, (_name, run) in enumerate(cases):
            t = time.process_time()
            run()
            best[i] = min(best[i], time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=500, help="rows per label batch")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    batch_sized_gc()  # the workers' collector policy (docs/performance.md, round four)
    n = args.labels
    labels = make_labels(n)
    singles = [orjson.dumps(e) for e in labels]
    batches = [orjson.dumps(b) for b in pack_label_events(labels, args.rows)]
    poisoned = []
    for b in pack_label_events(labels, args.rows):
        b["labels"][len(b["labels"]) // 2] = True  # one row each that breaks the contract
        poisoned.append(orjson.dumps(b))
    dec = decode_label_records(poisoned)
    assert len(dec.labels) == n - len(poisoned) and len(dec.refused) == len(poisoned)
    assert decode_label_records(batches).labels == decode_label_records(singles).labels

    def one_by_one() -> list[dict[str, object]]:
        # The joiner's loop before label batches: every event kept, in order.
        out = []
        for v in singles:
            out.append(decode_label_fast(v))
        return out

    cases = [
        ("single events, decode_label_fast (before)", one_by_one),
        ("single events, decode_label_records", lambda: decode_label_records(singles)),
        (f"label batches of {args.rows}", lambda: decode_label_records(batches)),
        (
            f"label batches of {args.rows}, one poison row each",
            lambda: decode_label_records(poisoned),
        ),
    ]
    print(f"{n:,} labels, {len(batches)} batches, CPU us per label (best of {args.repeat})")
    times = best_us(cases, args.repeat)
    for (name, _run), t in zip(cases, times, strict=True):
        print(f"  {name:48s} {t / n * 1e6:6.3f} us  {times[0] / t:5.1f}x")


if __name__ == "__main__":
    main()
