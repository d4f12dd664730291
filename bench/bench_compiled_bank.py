"""What the compiled core gives: the monitor's core with the CUSUM banks' pass in numpy
beside the same pass compiled with numba (``driftline[compiled]``,
``core/detectors/bank_compiled.py``), on the benchmark's stream, with the two results
compared bit for bit.

Run::

    pip install -e '.[compiled]'
    python bench/bench_compiled_bank.py [--events N] [--rounds K] [--paths batch2,batch,single]

Each measurement runs in a fresh process (numpy, then compiled, alternated ``--rounds``
times, so both see the same load on a shared machine). A process builds the benchmark's
reference and events (``bench_pipeline``: 20 numeric and 3 categorical features, 3
classes with scores, a 0.5 sd shift of ``f03`` at 60%), decodes them in fetches of 5 000
records (``batch2``: binary batches, ``prediction_batch.v2``; ``batch``: JSON batches;
``single``: single JSON events), turns the compiled pass on or off
(:func:`driftline.core.detectors.bank.use_compiled_pass`; its wall time, the compilation
or the load of numba's cache, is printed as the start-up), runs the core once, then three
times from fresh states, timed in CPU time. The figures are the best run's CPU
microseconds per event of the whole core (``process_batch``) and of the bank
(``CusumBank.update_many``). Each process prints a digest of every state's bytes, the
window summaries and the alert ids: the two must be equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def _child(mode: str, path: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent))
    import bench_pipeline as bp
    import orjson

    from driftline.contract.binary_batch import encode_binary_batch
    from driftline.contract.columnar import pack_events
    from driftline.contract.decode import decode_records
    from driftline.core.detectors import bank
    from driftline.runtime.blas import single_threaded_blas
    from driftline.runtime.gc_policy import batch_sized_gc

    single_threaded_blas()
    t = time.perf_counter()
    on = bank.use_compiled_pass(mode == "compiled")
    start = time.perf_counter() - t
    assert on == (mode == "compiled")
    ref = bp._reference()
    events = bp._events(n)
    if path == "batch2":
        records = [encode_binary_batch(env) for env in pack_events(events)]
    else:
        records = [orjson.dumps(e) for e in (pack_events(events) if path == "batch" else events)]
    frames = [decode_records(records[i : i + 5000])[0] for i in range(0, len(records), 5000)]
    in_bank = [0.0]
    crossings = [0]
    update_many = bank.CusumBank.update_many

    def timed(self: Any, v: Any) -> Any:
        t = time.process_time()
        try:
            found = update_many(self, v)
        finally:
            in_bank[0] += time.process_time() - t
        crossings[0] += len(found)
        return found

    bank.CusumBank.update_many = timed  # type: ignore[method-assign]

    def run() -> str:
        states: dict[Any, Any] = {}
        digest = hashlib.sha256()
        for frame in frames:
            result = bp.process_batch(frame, states, lambda m, v: ref)
            for st in states.values():
                digest.update(st.to_bytes())
            digest.update(orjson.dumps(result.windows, option=orjson.OPT_SORT_KEYS))
            digest.update(" ".join(a.alert_id for a in result.alerts).encode())
        return digest.hexdigest()[:16]

    t = time.perf_counter()
    digest = run()  # warm-up
    cold = time.perf_counter() - t + start
    transitions = crossings[0]
    batch_sized_gc()
    core = bank_us = math.inf
    for _ in range(3):
        in_bank[0] = 0.0
        t = time.process_time()
        run()
        core = min(core, time.process_time() - t)
        bank_us = min(bank_us, in_bank[0])
    out = {"core": core / n * 1e6, "bank": bank_us / n * 1e6, "cold": cold, "digest": digest}
    return {**out, "transitions": transitions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2, help="processes per mode and path")
    ap.add_argument("--paths", default="batch2,batch,single")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.events)))
        return 0
    try:
        import numba  # noqa: F401
    except ImportError:
        print(
            "bench_compiled_bank: numba is not installed (pip install -e '.[compiled]')",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ, PYTHONPATH=str(HERE.parent.parent / "src"))
    modes = ("numpy", "compiled")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for path in args.paths.split(","):
            for mode in modes:
                cmd = [sys.executable, str(HERE), "--child", mode, path]
                cmd += ["--events", str(args.events)]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                runs.setdefault((path, mode), []).append(json.loads(out.stdout.splitlines()[-1]))
    print(f"the monitor's core, CPU us an event (best of {args.rounds} processes x 3 runs,")
    print(
        f"{args.events} events, fetches of 5 000 records); cold: the first run's wall "
        "seconds with the start-up (compiling, or loading numba's cache)"
    )
    print("| path | bank: numpy | bank: compiled | core: numpy | core: compiled | cold: numpy "
          "| cold: compiled | results |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for path in args.paths.split(","):
        best = {m: min(runs[(path, m)], key=lambda r: r["core"]) for m in modes}
        bank_best = {m: min(r["bank"] for r in runs[(path, m)]) for m in modes}
        cold = {m: min(r["cold"] for r in runs[(path, m)]) for m in modes}
        digests = {(r["digest"], r["transitions"]) for m in modes for r in runs[(path, m)]}
        verdict = f"DIFFER: {sorted(digests)}"
        if len(digests) == 1:
            verdict = f"identical ({next(iter(digests))[1]} bank transitions)"
        label = {"batch2": "binary batches (v2)", "batch": "JSON batches (v1)"}.get(
            path, "single JSON events"
        )
        print(
            f"| {label} | {bank_best['numpy']:.2f} | {bank_best['compiled']:.2f} "
            f"| {best['numpy']['core']:.2f} | {best['compiled']['core']:.2f} "
            f"| {cold['numpy']:.2f} | {cold['compiled']:.2f} | {verdict} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
