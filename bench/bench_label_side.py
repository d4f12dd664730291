"""Join cost of the label side, this tree against a baseline checkout, in one run.

Run: ``python bench/bench_label_side.py --baseline /path/to/main/src [--events N]
[--fetch F] [--repeat K]``

The events are the pipeline benchmark's (bench/bench_pipeline.py: one model, three
classes with scores, its reference and calibration), the predictions as columnar
batches, the labels as label batches a minute later (one in five wrong), read as the
joiner reads them in fetches of ``--fetch`` records. Two cases, in CPU time per label
of ``plan_lookups`` + ``join_batch`` + the state's encoding (records in memory,
``MemoryRecords``; decoding not counted), and one per prediction:

* **labels alone**: the predictions are stored first (not timed), then the labels are
  joined against them;
* **together**: each batch holds a slice of the predictions and of their labels (per
  label and its prediction);
* **predictions alone** (the harness's ``pending`` case): the batched predictions
  without labels, decoding (``labels._decode_predictions``) and the records' script
  arguments (``RecordWrites.arguments``) included, per prediction; the generation
  has the buckets a later one of that many predictions gets, as in the harness.

Each tree runs in a child process (``PYTHONPATH`` its ``src``), the trees alternated in
each of ``--repeat`` rounds, best figure of each. The children also hash every
``JoinResult`` and the final state: the two trees must give the same bytes.
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


class _Record:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.offset = 0
        self.key = None


def _child(n: int, fetch: int) -> dict[str, Any]:
    """Both cases once (after a warm-up round) in this process's tree."""
    import orjson

    sys.path.insert(0, str(HERE.parent))
    import bench_pipeline

    from driftline.config import LabelsSettings
    from driftline.contract.columnar import pack_events
    from driftline.contract.label_batch import decode_label_records, pack_label_events
    from driftline.core.slowloop.diagnosis import DriftIndex
    from driftline.core.slowloop.join import join_batch
    from driftline.core.slowloop.lookups import MemoryRecords, plan_lookups
    from driftline.core.slowloop.perf_state import UnitState
    from driftline.runtime.blas import single_threaded_blas
    from driftline.runtime.labels import _decode_predictions
    from driftline.runtime.store_records import RecordWrites

    single_threaded_blas()
    bench_pipeline.joiner_gc()  # the joiner's collector policy, as each tree's CLI sets it
    events = bench_pipeline._events(n)
    ref = bench_pipeline._reference()
    pvals = [orjson.dumps(p) for p in pack_events(events)]
    lev = [
        {
            "prediction_id": e["prediction_id"],
            "model_id": e["model_id"],
            "label": e["prediction"] if i % 5 else "churn",
            "timestamp": e["timestamp"] + 60_000,
        }
        for i, e in enumerate(events)
    ]
    lvals = [orjson.dumps(x) for x in pack_label_events(lev)]
    settings = LabelsSettings()
    pbatches = [
        _decode_predictions([_Record(v) for v in pvals[i : i + fetch]])[0]  # type: ignore[list-item]
        for i in range(0, len(pvals), fetch)
    ]
    lbatches = [
        decode_label_records(lvals[i : i + fetch]).labels for i in range(0, len(lvals), fetch)
    ]

    def step(st: tuple[Any, Any, Any], preds: Any, labels: Any, h: Any) -> None:
        unit, mem, drift = st
        plan = plan_lookups(preds, labels, unit, settings)
        res = join_batch(
            preds, labels, plan, mem.lookup(plan), unit, lambda m, v: ref, drift, settings
        )
        mem.apply(res)
        fields = unit.to_fields(set(res.dirty) | {"u"})
        if h is not None:
            h.update(
                repr(
                    [(f, getattr(res, f)) for f in res.__dataclass_fields__ if f != "dirty"]
                ).encode()
            )
            h.update(repr(sorted(fields.items())).encode())

    def alone(h: Any) -> float:
        st = (UnitState(), MemoryRecords(), DriftIndex())
        for preds in pbatches:
            step(st, preds, [], None)
        t0 = time.process_time()
        for labels in lbatches:
            step(st, [], labels, h)
        return time.process_time() - t0

    def together(h: Any) -> float:
        st = (UnitState(), MemoryRecords(), DriftIndex())
        k = max(len(pbatches), len(lbatches))
        t = 0.0
        for i in range(k):
            preds = pbatches[i] if i < len(pbatches) else []
            labels = lbatches[i] if i < len(lbatches) else []
            t0 = time.process_time()
            step(st, preds, labels, h)
            t += time.process_time() - t0
        return t

    pending = LabelsSettings(initial_buckets=bench_pipeline._later_buckets(n))

    def predictions(h: Any) -> float:
        unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
        t = 0.0
        for i in range(0, len(pvals), fetch):
            recs = [_Record(v) for v in pvals[i : i + fetch]]
            t0 = time.process_time()
            preds = _decode_predictions(recs)[0]
            plan = plan_lookups(preds, [], unit, pending)
            found = mem.lookup(plan)
            res = join_batch(preds, [], plan, found, unit, lambda m, v: ref, drift, pending)
            fields = unit.to_fields(set(res.dirty) | {"u"})
            writes = RecordWrites(res.puts, res.expire_after, res.tombs)
            args = writes.arguments({k: j for j, k in enumerate(res.puts)})
            t += time.process_time() - t0
            mem.apply(res)
            if h is not None:
                out = [(f, getattr(res, f)) for f in res.__dataclass_fields__ if f != "dirty"]
                h.update(repr((out, sorted(res.dirty), sorted(fields.items()), args)).encode())
        return t

    alone(None), together(None), predictions(None)  # warm-up
    h = hashlib.blake2b(digest_size=16)
    a = alone(h)
    b = together(h)
    c = predictions(h)
    return {
        "alone": a / n * 1e6,
        "together": b / n * 1e6,
        "predictions": c / n * 1e6,
        "digest": h.hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="src/ of the baseline tree")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--fetch", type=int, default=10, help="Kafka records per batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.events, args.fetch)))
        return
    trees = {"baseline": args.baseline.resolve(), "this tree": THIS_SRC}
    best: dict[str, dict[str, float]] = {t: {} for t in trees}
    digests: dict[str, set[str]] = {t: set() for t in trees}
    for _ in range(args.repeat):
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": str(src)}
            cmd = [sys.executable, str(HERE), "--child", "--events", str(args.events)]
            cmd += ["--fetch", str(args.fetch), "--baseline", str(src)]
            out = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)
            digests[name].add(out.pop("digest"))
            for case, us in out.items():
                best[name][case] = min(us, best[name].get(case, us))
    print(
        f"{args.events} labels, fetches of {args.fetch} records, best of {args.repeat}, "
        "CPU us a label (plan_lookups + join_batch + state encoding)"
    )
    print(f"{'case':<20}{'baseline':>10}{'this tree':>11}")
    for case, name in (
        ("alone", "labels alone"),
        ("together", "labels together"),
        ("predictions", "predictions alone"),
    ):
        print(f"{name:<20}{best['baseline'][case]:>10.2f}{best['this tree'][case]:>11.2f}")
    print("(predictions alone: CPU us a prediction, decoding and record arguments included)")
    same = digests["baseline"] == digests["this tree"] and len(digests["baseline"]) == 1
    print("results and states identical:", "yes" if same else f"NO {digests}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
