"""The monitor's in-process CPU per event (decode + core + state encoding), this tree
beside a baseline tree, on single JSON events and on columnar batches (JSON v1 and
binary v2).

Run::

    python bench/bench_monitor_core.py --base /path/to/baseline/src [--events N]
        [--repeat R] [--rounds K] [--paths single,batch,batch2] [--compiled]

Each measurement runs in a fresh process with ``PYTHONPATH`` set to one tree's ``src``
(this tree, then the baseline, alternated ``--rounds`` times, so both see the same load
on a shared machine). A process builds the benchmark's reference and events
(``bench_pipeline``: 20 numeric and 3 categorical features, 3 classes with scores, a
0.5 sd shift of ``f03`` at 60%), sizes the collector as a worker does
(:func:`driftline.runtime.gc_policy.batch_sized_gc`), runs the whole stream once to
warm up, then ``--repeat`` times from fresh states: ``decode_records`` per fetch of
5 000 records, ``process_batch``, and every state's ``to_bytes``, timed in CPU time
(``time.process_time``). The figure is the best run's CPU microseconds per event.

Each process also prints a digest of what the run produced (the states' bytes, the
window summaries, the alert ids): the two trees must give the same digest, bit for bit.
Without ``--base`` only this tree is measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def _child(path: str, n: int, repeat: int, fetch: int, compiled: bool) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent))
    import bench_pipeline as bp
    import orjson

    from driftline.contract.binary_batch import encode_binary_batch
    from driftline.contract.columnar import pack_events
    from driftline.contract.decode import decode_records
    from driftline.runtime.blas import single_threaded_blas
    from driftline.runtime.gc_policy import batch_sized_gc

    single_threaded_blas()
    ref = bp._reference()
    events = bp._events(n)
    if path == "single":
        records = [orjson.dumps(e) for e in events]
    elif path == "batch":
        records = [orjson.dumps(b) for b in pack_events(events)]
    else:  # "batch2": prediction_batch.v2, the SDK's default
        records = [encode_binary_batch(b) for b in pack_events(events)]
    if compiled:
        from driftline.core.detectors.bank import use_compiled_pass

        use_compiled_pass(True)
    digest = hashlib.sha256()
    spent: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    _time_stages(spent)

    def run(keep: bool) -> None:
        states: dict[Any, Any] = {}
        for i in range(0, len(records), fetch):
            t = time.process_time()
            frame, _ = decode_records(records[i : i + fetch])
            spent["decode"] += time.process_time() - t
            result = bp.process_batch(frame, states, lambda m, v: ref)
            blobs = [st.to_bytes() for st in states.values()]
            if keep:
                for b in blobs:
                    digest.update(b)
                digest.update(orjson.dumps(result.windows, option=orjson.OPT_SORT_KEYS))
                digest.update(" ".join(a.alert_id for a in result.alerts).encode())

    run(keep=True)  # warm-up (layouts, plans), and the digest
    batch_sized_gc()
    best = float("inf")
    stages: dict[str, float] = {}
    faults = 0
    for _ in range(repeat):
        for k in spent:
            spent[k] = 0.0
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.process_time()
        run(keep=False)
        took = time.process_time() - t
        if took < best:
            best, stages = took, dict(spent)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    out = {k: v / n * 1e6 for k, v in stages.items()}
    out["page faults"] = faults / n
    return {"us": best / n * 1e6, "digest": digest.hexdigest()[:16], **out}


#: Stages timed inside a run (CPU us an event of the best run), where they are in the core.
STAGES = ("decode", "SegmentArrays", "BankRun", "start", "_absorb", "_close_window")


def _time_stages(spent: dict[str, float]) -> None:
    """Wrap the core's stages in ``driftline.core.fastloop.process`` with CPU timers."""
    from driftline.core.fastloop import multivariate, process

    def timed(owner: Any, name: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - t

        setattr(owner, name, wrapper)

    for name in ("SegmentArrays", "BankRun", "_absorb", "_close_window"):
        timed(process, name)
    timed(multivariate, "start")


def _measure(
    src: str, path: str, n: int, repeat: int, fetch: int, compiled: bool
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, str(HERE), "--child", path, "--events", str(n)]
    cmd += ["--compiled"] if compiled else []
    cmd += ["--repeat", str(repeat), "--fetch", str(fetch)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="the baseline tree's src directory (e.g. a main worktree)")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per process (best)")
    ap.add_argument("--rounds", type=int, default=2, help="processes per tree and path")
    ap.add_argument(
        "--paths",
        default="single,batch,batch2",
        help="single JSON events, prediction_batch.v1 (batch), prediction_batch.v2 (batch2)",
    )
    ap.add_argument(
        "--compiled", action="store_true", help="the compiled bank pass (numba) in both trees"
    )
    ap.add_argument(
        "--fetch", type=int, default=5000, help="records per fetch (a batch record: 500 rows)"
    )
    ap.add_argument("--child", choices=["single", "batch", "batch2"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.events, args.repeat, args.fetch, args.compiled)))
        return 0
    this = str(HERE.parent.parent / "src")
    trees = [("this tree", this)] + ([("baseline", args.base)] if args.base else [])
    paths = args.paths.split(",")
    best: dict[tuple[str, str], dict[str, float]] = {}
    digests: dict[tuple[str, str], set[str]] = {}
    for _ in range(args.rounds):
        for path in paths:
            for name, src in trees:
                r = _measure(src, path, args.events, args.repeat, args.fetch, args.compiled)
                key = (name, path)
                if key not in best or r["us"] < best[key]["us"]:
                    best[key] = r
                digests.setdefault(key, set()).add(r["digest"])
    print(f"decode + core + state bytes, CPU us an event (best of {args.rounds}x{args.repeat},")
    core = "compiled bank pass" if args.compiled else "numpy bank pass"
    print(f"{args.events} events, fetches of {args.fetch} records, {core})")
    print(f"| path | {' | '.join(n for n, _ in trees)} | change | results |")
    print(f"|---|{'---:|' * len(trees)}---:|---|")
    for path in paths:
        figs = [best[(n, path)]["us"] for n, _ in trees]
        change = f"{figs[0] / figs[1] - 1:+.1%}" if len(figs) > 1 else ""
        same = {d for n, _ in trees for d in digests[(n, path)]}
        verdict = "identical" if len(same) == 1 else f"DIFFER: {sorted(same)}"
        cells = " | ".join(f"{f:.2f}" for f in figs)
        label = {
            "single": "single JSON events",
            "batch": "columnar batches (v1, JSON)",
            "batch2": "columnar batches (v2, binary)",
        }[path]
        print(f"| {label} | {cells} | {change} | {verdict} |")
        for stage in (*STAGES, "page faults"):
            figs = [best[(n, path)][stage] for n, _ in trees]
            change = f"{figs[0] / figs[1] - 1:+.1%}" if len(figs) > 1 and figs[1] else ""
            cells = " | ".join(f"{f:.2f}" for f in figs)
            print(f"| - {stage} | {cells} | {change} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
