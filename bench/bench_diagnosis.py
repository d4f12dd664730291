"""The slow loop's diagnosis on seeded streams, whichever worker runs first.

Plain script (no pytest). The scenarios are :mod:`driftline.demo.diagnosis`: a stream of
river's SEA (``river.datasets.synth``) scored by a slightly wrong model (its boundary at
``x0 + x1 = 8.6`` where variant 0's is 8, so it errs, with little confidence, just
above 8), a change at prediction ``--change`` of ``--n``, labels 200 predictions late
(+ up to 100), in four cases:

* ``concept``: the labelling rule switches (SEA variant 0 -> 2: ``x0 + x1 > 7``, so
  the model is now wrong, fairly confidently, between 7 and 8.6); inputs unchanged;
* ``benign``: the irrelevant input ``x2`` shrinks (covariate shift; accuracy unchanged);
* ``harmful``: ``x0`` and ``x1`` are pulled towards the model's boundary (covariate shift
  where the model is less sure and less right);
* ``concept+x2``: the concept switch and the irrelevant shift at once.

The monitor's core (``process_batch``, reference built from labelled training rows)
reads the predictions and raises its input-drift alerts; the joiner's core
(``join_batch``) joins the labels. The monitor's alerts reach the joiner in one of
three orders: ``monitor-first`` (all of them before any label), ``joiner-first`` (only
after every label is joined, then one empty batch, as the worker does when the alert
topic brings news) and ``interleaved`` (each when the joiner reaches the label time it
was raised at). A run is right when the first concept/performance alert carries the
expected diagnosis (none may fire in ``benign``, none before the change) and the final
diagnosis of the model (``driftline_diagnosis``) is the expected one.

Beside it, on the same runs, the rule before issue 13 (``old overlap rule``:
:class:`driftline.demo.diagnosis.OverlapRule`): a slow-loop alert whose window meets an
input-drift interval the joiner has read is ``covariate_shift_harmful``, else
``concept_drift``; an input-drift episode is judged on the predictions labelled after
the joiner read it.

    python bench/bench_diagnosis.py                 # 20 seeds: 240 runs
    python bench/bench_diagnosis.py --seeds 5
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

from driftline.demo.diagnosis import CASES, MODEL_THRESHOLD, ORDERS, Run, run_case


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--change", type=int, default=10_000)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    runs: list[Run] = []
    for seed in range(1000, 1000 + args.seeds):
        for case in CASES:
            for r in run_case(case, seed, args.n, args.change):
                runs.append(r)
                if args.verbose:
                    print(r, flush=True)
    labels = sorted({r.verdict for r in runs})
    print(
        f"SEA (river), model boundary {MODEL_THRESHOLD}, {args.n} predictions, change at "
        f"{args.change}, labels 200-300 late, {args.seeds} seeds x {len(ORDERS)} orders\n"
    )
    widths = [max(len(x), 5) + 2 for x in labels]
    print("verdicts (first slow-loop alert/final diagnosis when they differ), this rule:")
    print(
        f"{'case (expected)':38s}"
        + "".join(f"{x:>{w}s}" for x, w in zip(labels, widths, strict=True))
        + f"{'right':>10s}{'old overlap rule':>18s}"
    )
    for case, want in CASES.items():
        mine = [r for r in runs if r.case == case]
        got = Counter(r.verdict for r in mine)
        ok = sum(r.right for r in mine)
        old = sum(r.old_right for r in mine)
        print(
            f"{case + ' (' + want + ')':38s}"
            + "".join(f"{got.get(x, 0):>{w}d}" for x, w in zip(labels, widths, strict=True))
            + f"{ok:>6d}/{len(mine)}{old:>14d}/{len(mine)}"
        )
    print()
    print(f"{'order':14s}{'right':>10s}{'old overlap rule':>18s}")
    for order in ORDERS:
        mine = [r for r in runs if r.order == order]
        ok = sum(r.right for r in mine)
        old = sum(r.old_right for r in mine)
        print(f"{order:14s}{ok:>6d}/{len(mine)}{old:>14d}/{len(mine)}")
    ok = sum(r.right for r in runs)
    old = sum(r.old_right for r in runs)
    print(
        f"\nall: {ok}/{len(runs)} right ({ok / len(runs):.1%}); "
        f"old overlap rule {old}/{len(runs)} ({old / len(runs):.1%})"
    )
    old_said = Counter((r.case, f"{r.old_first}/{r.old_final}") for r in runs if not r.old_right)
    for (case, said), k in sorted(old_said.items()):
        print(f"  old rule wrong: {case:12s} said {said} (first alert/final) x{k}")
    seeds = {r.seed for r in runs}
    same = all(
        len({(r.first_alert, r.final) for r in runs if r.case == c and r.seed == s}) == 1
        for c in CASES
        for s in seeds
    )
    old_same = sum(
        len({(r.old_first, r.old_final) for r in runs if r.case == c and r.seed == s}) == 1
        for c in CASES
        for s in seeds
    )
    print(f"verdict independent of the order in every (case, seed): {same}")
    print(
        f"old overlap rule: the same verdict in every order in {old_same} of "
        f"{len(CASES) * len(seeds)} (case, seed)"
    )
    flaps = sum(r.resolved for r in runs if r.case != "benign")
    early = sum(r.early for r in runs)
    benign = sum(1 for r in runs if r.case == "benign" and r.first_alert is not None)
    print(f"slow-loop alerts resolved while the change persisted (flapping): {flaps}")
    print(f"slow-loop alerts on predictions made before the change (false alarms): {early}")
    print(f"benign runs with a slow-loop alert (false alarms): {benign}")


if __name__ == "__main__":
    main()
