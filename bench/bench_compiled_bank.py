"""What compiling the CUSUM bank's pass would give: the monitor's core with the bank's
pass in numpy (as shipped) beside the same pass compiled with numba, on the benchmark's
stream, with the two results compared bit for bit.

Run::

    pip install numba        # not a Driftline dependency: this script measures whether
                             # it should become one (docs/performance.md, round eleven)
    python bench/bench_compiled_bank.py [--events N] [--rounds K] [--paths batch,single]

Each measurement runs in a fresh process (numpy, then compiled, alternated ``--rounds``
times, so both see the same load on a shared machine). A process builds the benchmark's
reference and events (``bench_pipeline``: 20 numeric and 3 categorical features, 3
classes with scores, a 0.5 sd shift of ``f03`` at 60%), decodes them in fetches of 5 000
records, runs the core once (the compiled process compiles here: its wall time is
printed as the cold start), then three times from fresh states, timed in CPU time. The
figures are the best run's CPU microseconds per event of the whole core
(``process_batch``) and of the bank (``CusumBank.update_many``). Each process prints a
digest of every state's bytes, the window summaries and the alert ids: the two must be
equal.

The compiled pass is this script's, not the product's. It replaces
``CusumBank._run``'s numpy steps (the increments of every active row, the running sums,
the block bounds of ``_quiet``) with one loop per row over the events, in the same
arithmetic (the fixed-point increment ``rint((x * a + b) * SCALE)``, clipped, 0 for a
missing value; the statistic ``max(0, S + y)`` in integers), and keeps the rest of
``_run`` (transitions, peaks, away tracking) as it is.
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

import numpy as np

HERE = Path(__file__).resolve()


def _compiled_run() -> Any:
    """``CusumBank._run`` with its pass compiled (imports numba: only in the child)."""
    import numba

    from driftline.core.detectors import bank

    @numba.njit(cache=False, nogil=True)  # type: ignore[misc]
    def cusum_pass(
        v: Any,
        pos: int,
        end: int,
        act: Any,
        chan: Any,
        ra: Any,
        rb: Any,
        hf: Any,
        clip: bool,
        s: Any,
        scale: float,
        max_step: float,
    ) -> Any:
        # Row by row: each row's events are contiguous in ``v``. The first pass stops
        # every row at the earliest crossing found so far; when no row crosses (most
        # passes) it is the only pass, else a second pass runs every row to that event.
        r = act.size
        first = end
        top = np.zeros(r, np.float64)
        final = np.empty(r, np.int64)
        for k in range(r):
            row = act[k]
            a, b, h, c, peak = ra[row], rb[row], hf[row], s[row], 0
            x = v[chan[row]]
            for t in range(pos, first):
                y = np.rint((x[t] * a + b) * scale)
                if y != y:
                    y = 0.0  # a missing value leaves the statistic unchanged
                elif clip:
                    y = min(max(y, -max_step), max_step)
                c = max(c + np.int64(y), 0)
                peak = max(peak, c)
                if c >= h:
                    first = t
                    break
            final[k] = c
            top[k] = peak
        if first == end:
            for k in range(r):
                s[act[k]] = final[k]
            return -1, top
        for k in range(r):
            row = act[k]
            a, b, c, peak = ra[row], rb[row], s[row], 0
            x = v[chan[row]]
            for t in range(pos, first + 1):
                y = np.rint((x[t] * a + b) * scale)
                if y != y:
                    y = 0.0
                elif clip:
                    y = min(max(y, -max_step), max_step)
                c = max(c + np.int64(y), 0)
                peak = max(peak, c)
            s[row] = c
            top[k] = peak
        return first, top

    def run(self: Any, v: Any, pos: int, end: int) -> None:
        lay = self.layout
        while pos < end:
            act = self._active()
            if act.size == 0:
                return
            t, top = cusum_pass(
                v, pos, end, act, lay.row_chan, lay.row_a, lay.row_b, lay.row_hf,
                lay.clip_steps, self.s, float(bank.SCALE), bank.MAX_STEP * bank.SCALE,
            )  # fmt: skip
            self._note_peak(act, top)
            if t < 0:
                self._track(v, pos, end)
                return
            self._track(v, pos, t + 1)
            crossed = self.s[act] >= lay.row_hf[act]
            for i in np.flatnonzero(crossed).tolist():
                self._transition(int(act[i]), t, float(self.s[act[i]]))
            pos = t + 1

    return run


def _child(mode: str, path: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent))
    import bench_pipeline as bp
    import orjson

    from driftline.contract.columnar import pack_events
    from driftline.contract.decode import decode_records
    from driftline.core.detectors import bank
    from driftline.runtime.blas import single_threaded_blas
    from driftline.runtime.gc_policy import batch_sized_gc

    single_threaded_blas()
    if mode == "compiled":
        bank.CusumBank._run = _compiled_run()  # type: ignore[method-assign]
    ref = bp._reference()
    events = bp._events(n)
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
    digest = run()  # warm-up; the compiled process compiles its pass here
    cold = time.perf_counter() - t
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
    ap.add_argument("--paths", default="batch,single")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.events)))
        return 0
    try:
        import numba  # noqa: F401
    except ImportError:
        print("bench_compiled_bank: numba is not installed (pip install numba)", file=sys.stderr)
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
    print(f"{args.events} events, fetches of 5 000 records); cold: the first run's wall seconds")
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
        label = "columnar batches" if path == "batch" else "single JSON events"
        print(
            f"| {label} | {bank_best['numpy']:.2f} | {bank_best['compiled']:.2f} "
            f"| {best['numpy']['core']:.2f} | {best['compiled']['core']:.2f} "
            f"| {cold['numpy']:.2f} | {cold['compiled']:.2f} | {verdict} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
