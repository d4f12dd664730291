"""Join cost of the prediction side: runs of predictions against one prediction at a time.

Run: ``python bench/bench_join_predictions.py [--events N] [--fetch F] [--repeat K]``

The predictions are the pipeline benchmark's (bench/bench_pipeline.py: one model, three
classes with scores), read as the joiner reads them, in fetches of ``--fetch``; the
labels are its labels-phase labels (a minute later, one in five wrong). Each figure is
the best of ``--repeat`` rounds (the cases alternated in each round), in CPU time of
this process per prediction, of ``join_batch`` over a fresh state with the records in
memory (``MemoryRecords``), for:

* each prediction a run of its own: every lookup and count done per prediction, as the
  join did before runs (a little dearer than that code was: each run also sets up and
  ends a run; main's per-prediction loop measured in docs/performance.md);
* runs of the same (model, version, segment): what ``join_batch`` does with single
  events;
* the same predictions as columnar batches (the SDK's default), joined from their
  columns.

All give the same results (tests/unit/test_join_runs.py, test_join_columns.py); this
checks it on these too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from driftline.config import LabelsSettings
from driftline.contract.columnar import pack_events
from driftline.contract.label_batch import decode_label_records
from driftline.core.slowloop import join
from driftline.core.slowloop.diagnosis import DriftIndex
from driftline.core.slowloop.lookups import MemoryRecords, plan_lookups
from driftline.core.slowloop.perf_state import UnitState
from driftline.runtime.blas import single_threaded_blas
from driftline.runtime.gc_policy import batch_sized_gc
from driftline.runtime.labels import _decode_predictions

sys.path.insert(0, str(Path(__file__).parent))
import bench_pipeline  # noqa: E402  (the pipeline benchmark's events and reference)


class _Record:
    def __init__(self, value: bytes) -> None:
        self.value = value


@contextlib.contextmanager
def _runs_of_one() -> Iterator[None]:
    runs = join._Joiner.add_predictions

    def one_by_one(j: Any, events: Sequence[Any], digests: Any, found: Any) -> None:
        for i in range(len(events)):
            j._add_run(events, digests, found, i, i + 1)

    join._Joiner.add_predictions = one_by_one  # type: ignore[method-assign]
    try:
        yield
    finally:
        join._Joiner.add_predictions = runs  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--fetch", type=int, default=5_000, help="predictions per join_batch")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    single_threaded_blas()
    batch_sized_gc()  # the workers' collector policy (docs/performance.md, round four)
    n, f = args.events, args.fetch
    events = bench_pipeline._events(n)
    ref = bench_pipeline._reference()
    # single events (a run each, or runs) and the same as columnar batches (the SDK's
    # default, joined from their columns): three routes to the same results
    singles, _ = _decode_predictions([_Record(orjson.dumps(e)) for e in events])
    batched, _ = _decode_predictions([_Record(orjson.dumps(b)) for b in pack_events(events)])
    label_values = [orjson.dumps(e) for e in bench_pipeline._label_events(events)]
    labels = decode_label_records(label_values).labels
    settings = LabelsSettings()

    def run(preds: Sequence[Any], with_labels: bool) -> tuple[float, list[Any]]:
        unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
        cpu, out = 0.0, []
        rows = 0
        for lo in range(0, len(preds), f if preds is singles else max(1, f // per)):
            p = preds[lo : lo + (f if preds is singles else max(1, f // per))]
            count = sum(getattr(x, "count", 1) for x in p)
            lab = labels[rows : rows + count] if with_labels else []
            rows += count
            plan = plan_lookups(p, lab, unit, settings)
            found = mem.lookup(plan)
            t = time.process_time()
            res = join.join_batch(p, lab, plan, found, unit, lambda m, v: ref, drift, settings)
            cpu += time.process_time() - t
            mem.apply(res)
            out.append(unit.to_fields())
        return cpu, out

    per = batched[0].count  # rows a batch record holds
    print(f"{n:,} predictions in fetches of {f:,}, join_batch CPU us per prediction")
    for with_labels in (False, True):
        best = [float("inf")] * 3
        outs: list[Any] = [None, None, None]
        for _ in range(args.repeat):
            with _runs_of_one():
                t, outs[0] = run(singles, with_labels)
            best[0] = min(best[0], t)
            t, outs[1] = run(singles, with_labels)
            best[1] = min(best[1], t)
            t, outs[2] = run(batched, with_labels)
            best[2] = min(best[2], t)
        assert outs[0] == outs[1], "runs and one by one differ"
        assert outs[1][-1] == outs[2][-1], "columnar batches and single events differ"
        what = "predictions and their labels" if with_labels else "predictions only"
        print(f"  {what}:")
        print(f"    single events, a run each      {best[0] / n * 1e6:6.2f} us")
        print(
            f"    single events in runs          {best[1] / n * 1e6:6.2f} us"
            f"  {best[0] / best[1]:4.2f}x"
        )
        print(
            f"    columnar batches               {best[2] / n * 1e6:6.2f} us"
            f"  {best[0] / best[2]:4.2f}x"
        )


if __name__ == "__main__":
    main()
