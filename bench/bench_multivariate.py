"""Multivariate drift benchmark (issue 15): detection, false alarms, calibration, cost.

One command prints, per case, how often and how fast the multivariate detector fires
beside the univariate detectors on the same streams (Driftline's fast loop through its
pure core without the multivariate model, and the reference's calibrated per-feature
CUSUM banks run alone, ``FeatureBank``); the same through the fast loop (``process_batch`` with
a reference built as ``reference build`` builds it: the alert, its episode, the
univariate detectors beside it) and the issue's "done when" bars; the false alarms on
stationary streams; a calibration check at budgets small enough to count alarms; the
cost per event of the fast loop with and without the multivariate detector; and the
reference-build time for 20 and 300 features.

    python bench/bench_multivariate.py                 # 20 runs per case (~6 min on 2 cores)
    python bench/bench_multivariate.py --quick         # 5 runs, short checks (~1.5 min)
    python bench/bench_multivariate.py --runs 40 --seed 7 --workers 2 --json out.json

Streams: ``multivariate_cases.py`` (seeded Gaussian-copula streams of our own; the
change at event 10,000 of 20,000). Each run builds every reference from 20,000 training
rows of the same generator (another seed). A detection is the first firing at or
after event 10,000; its delay is its index minus 10,000. A univariate detector "fires"
when any feature's alert (Driftline now: any ``input_drift`` firing alert) or bank
(any feature's episode opening) starts after the change.

BLAS runs on one thread here (``OPENBLAS_NUM_THREADS=1`` unless set): on a shared
2-core machine threaded BLAS made the small products 3-10x slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from driftline.contract.columnar import ColumnarBatch, pack_events  # noqa: E402
from driftline.core.detectors import FeatureBank  # noqa: E402
from driftline.core.detectors.plans import FeaturePlan  # noqa: E402
from driftline.core.fastloop import process_batch  # noqa: E402
from driftline.core.multivariate import (  # noqa: E402
    CategoricalInput,
    MultivariateDetector,
    MultivariateProfile,
    NumericInput,
    attribute,
    fit_multivariate,
)
from driftline.core.reference import (  # noqa: E402
    CategoricalProfile,
    NumericProfile,
    Policy,
    ReferenceProfile,
    TrainingData,
    build_reference,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from multivariate_cases import (  # noqa: E402
    BATCH,
    CASES,
    CHANGE,
    N_EVENTS,
    NARROW,
    WIDE,
    WIDE_CASES,
    WITHIN,
    Layout,
    Stream,
    events_of,
    generate,
    rows_of,
    stream_rng,
)

# ---------------------------------------------------------------------------- building


@dataclass
class Built:
    """Everything built from one run's training rows."""

    layout: Layout
    #: The reference as ``reference build`` makes it (with the multivariate model).
    ref: ReferenceProfile | None
    #: The same without the multivariate model: the univariate detectors alone.
    uni: ReferenceProfile | None
    mv: MultivariateProfile
    plans: dict[str, FeaturePlan]
    seconds_reference: float
    seconds_multivariate: float


def inputs(
    train: Stream, layout: Layout, ref: ReferenceProfile | None
) -> tuple[list[NumericInput], list[CategoricalInput]]:
    """The multivariate inputs: the reference's bins and counts, the training columns."""
    nums: list[NumericInput] = []
    for j, name in enumerate(layout.numeric):
        if ref is not None:
            p = ref.features[name]
            assert isinstance(p, NumericProfile)
        else:
            from driftline.core.reference import numeric_profile

            p = numeric_profile(train.x[j])
        nums.append(NumericInput(name, train.x[j], p.edges, p.counts))
    cats: list[CategoricalInput] = []
    for name, values in train.cats.items():
        if ref is not None:
            c = ref.features[name]
            assert isinstance(c, CategoricalProfile)
        else:
            from driftline.core.reference import categorical_profile

            c = categorical_profile(values)
        cats.append(CategoricalInput(name, values, c.categories, c.counts))
    return nums, cats


def build(
    seed: int, run: int, layout: Layout, budget: float, univariate: bool, n_train: int = N_EVENTS
) -> Built:
    train = generate(stream_rng(seed, run, "train"), layout, n_train, None)
    n_features = len(layout.names)
    ref = uni = None
    plans: dict[str, FeaturePlan] = {}
    if univariate:
        # The production path: build_reference fits the multivariate model (the policy's
        # default) on the same rows and bins, its target budget * (features + 1).
        t = time.process_time()
        ref = build_reference(
            TrainingData(features=rows_of(train, layout)),
            "mv",
            "1",
            policy=Policy(false_alarm_events=budget),
            seed=run,
            created_at=0,
        )
        t_ref = time.process_time() - t
        assert ref.multivariate is not None
        uni = dataclasses.replace(ref, multivariate=None)
        mv = ref.multivariate
        # The reference's banks: calibrated at build to the budget split over the features.
        plans = {name: p.bank for name, p in ref.features.items() if p.bank is not None}
        return Built(layout, ref, uni, mv, plans, t_ref, math.nan)
    nums, cats = inputs(train, layout, None)
    t = time.process_time()
    # The multivariate detector counts as one more feature in the budget's split.
    fitted = fit_multivariate(nums, cats, target_arl=budget * (n_features + 1), seed=run)
    t_mv = time.process_time() - t
    assert fitted is not None
    return Built(layout, None, None, fitted, plans, math.nan, t_mv)


# ----------------------------------------------------------------------------- running


def run_multivariate(
    mv: MultivariateProfile, s: Stream, layout: Layout
) -> tuple[list[int], list[str], list[tuple[str, str, float, float]]]:
    """Fire positions of the multivariate detector; attribution at the first fire after
    the change (features, and the top pair)."""
    det = MultivariateDetector(mv)
    fires: list[int] = []
    top: list[str] = []
    pairs: list[tuple[str, str, float, float]] = []
    for a in range(0, s.n, BATCH):
        b = min(s.n, a + BATCH)
        z = mv.design.scores(
            {name: s.x[j, a:b] for j, name in enumerate(layout.numeric)},
            {k: v[a:b] for k, v in s.cats.items()},
            b - a,
        )
        for p in det.update_many(z).tolist():
            fires.append(a + p)
            if a + p >= CHANGE and not top:
                att = attribute(mv, det.recent())
                top = [f for f, _, _ in att.features[:3]]
                pairs = list(att.pairs[:1])
        det.close_window()
    return fires, top, pairs


def run_fast_loop(
    ref: ReferenceProfile, s: Stream, layout: Layout
) -> list[tuple[int, str, list[str]]]:
    """Driftline's input-drift firings through the fast loop's core, batches of 500:
    ``(event index, detector, the first two top_features)``."""
    events = events_of(s, layout)
    states: dict[Any, Any] = {}
    out: list[tuple[int, str, list[str]]] = []
    for a in range(0, len(events), BATCH):
        res = process_batch(events[a : a + BATCH], states, lambda m, v: ref)
        for al in res.alerts:
            if al.kind == "input_drift" and al.status == "firing":
                at = (al.detected_at - events[0]["timestamp"]) // 10
                out.append((at, al.detector, [f.feature for f in al.top_features[:2]]))
    return out


def run_banks(built: Built, s: Stream, layout: Layout) -> list[int]:
    """Positions where any feature's bank (the reference's, run alone) opened an episode
    (``update_many`` gives positions in its batch)."""
    plans, ref = built.plans, built.ref
    assert ref is not None
    out: list[int] = []
    for j, name in enumerate(layout.numeric):
        det = FeatureBank(plans[name])
        for a in range(0, s.n, BATCH):
            out.extend(a + int(p) for p in det.update_many(s.x[j, a : a + BATCH]))
    for name, values in s.cats.items():
        prof = ref.features[name]
        assert isinstance(prof, CategoricalProfile)
        index = {c: i for i, c in enumerate(prof.categories)}
        other = len(prof.categories)  # the reference's code for any other category
        codes = np.asarray([index.get(str(v), other) for v in values], dtype=np.float64)
        det = FeatureBank(plans[name])
        for a in range(0, s.n, BATCH):
            out.extend(a + int(p) for p in det.update_many(codes[a : a + BATCH]))
    return sorted(out)


def one_run(args: tuple[int, int, str, float, Sequence[str], bool]) -> dict[str, Any]:
    seed, run, layout_name, budget, cases, univariate = args
    layout = NARROW if layout_name == "narrow" else WIDE
    built = build(seed, run, layout, budget, univariate)
    out: dict[str, Any] = {
        "run": run,
        "seconds_reference": built.seconds_reference,
        "seconds_multivariate": built.seconds_multivariate,
        "k": built.mv.k,
        "d": built.mv.d,
        "channels": list(built.mv.channel_names),
        "cases": {},
    }
    for case in cases:
        s = generate(stream_rng(seed, run, case), layout, N_EVENTS, case)
        fires, top, pairs = run_multivariate(built.mv, s, layout)
        r: dict[str, Any] = {"mv": fires, "mv_top": top, "mv_pair": pairs}
        if univariate and built.ref is not None and built.uni is not None:
            r["now"] = [p for p, _, _ in run_fast_loop(built.uni, s, layout)]
            r["fast"] = run_fast_loop(built.ref, s, layout)
            r["bank"] = run_banks(built, s, layout)
        out["cases"][case] = r
    return out


# ----------------------------------------------------------------------------- tables


def first_after(positions: Sequence[int]) -> int | None:
    after = [p for p in positions if p >= CHANGE]
    return min(after) - CHANGE if after else None


def cell(delays: list[int | None]) -> str:
    got = [d for d in delays if d is not None and d < WITHIN]
    med = (
        statistics.median([d for d in delays if d is not None])
        if any(d is not None for d in delays)
        else None
    )
    m = "-" if med is None else f"{med:.0f}"
    return f"{m} ({len(got)}/{len(delays)})"


def fired_runs(runs: list[dict[str, Any]], case: str, key: str, after: bool) -> str:
    n = sum(1 for r in runs if any((p >= CHANGE) == after for p in r["cases"][case].get(key, [])))
    return f"{n}/{len(runs)}"


def print_detection(runs: list[dict[str, Any]], title: str, univariate: bool) -> None:
    print(
        f"\n## {title}: detection (median delay in events, runs detected within "
        f"{WITHIN:,} / runs)\n"
    )
    head = "| case | multivariate | top-2 features right |"
    if univariate:
        head += " univariate now fired after change | feature banks fired after change |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    cases = list(runs[0]["cases"])
    for case in cases:
        delays = [first_after(r["cases"][case]["mv"]) for r in runs]
        right = ""
        if case in ("corr_neg", "corr_zero"):
            ok = sum(1 for r in runs if set(r["cases"][case]["mv_top"][:2]) == {"x0", "x1"})
            right = f"{ok}/{sum(1 for d in delays if d is not None)}"
        elif case == "cat_link":
            ok = sum(1 for r in runs if set(r["cases"][case]["mv_top"][:2]) == {"x7", "tier"})
            right = f"{ok}/{sum(1 for d in delays if d is not None)}"
        row = f"| {CASES[case].title} | {cell(delays)} | {right} |"
        if univariate:
            row += (
                f" {fired_runs(runs, case, 'now', True)} | {fired_runs(runs, case, 'bank', True)} |"
            )
        print(row)
    print("\nFalse alarms (firings before the change, and over whole stationary runs), per run:\n")
    before = [sum(1 for p in r["cases"][c]["mv"] if p < CHANGE) for r in runs for c in cases]
    stat = [len(r["cases"]["stationary"]["mv"]) for r in runs if "stationary" in r["cases"]]
    print(
        f"- multivariate: {sum(before)} firings in {len(before)} pre-change halves "
        f"({sum(before) / max(1, len(before)) * 2:.3f} per 20k events); stationary runs: "
        f"{sum(stat)} in {len(stat)} ({sum(stat) / max(1, len(stat)):.3f} per run; bar <= 0.05)"
    )
    if univariate:
        for key, name in (("now", "univariate now"), ("bank", "feature banks")):
            st = [len(r["cases"]["stationary"][key]) for r in runs]
            print(
                f"- {name}: stationary runs {sum(st)} firings in {len(st)} "
                f"({sum(st) / len(st):.3f} per run, all features)"
            )


def print_mean_shift(runs: list[dict[str, Any]]) -> None:
    print(
        "\n## Mean shift in one feature: multivariate beside univariate "
        "(median delay, runs fired within 1,000 / runs)\n"
    )
    print("| case | multivariate | univariate now | feature banks | mv after the banks |")
    print("|---|---|---|---|---|")
    for case in ("mean_indep_05", "mean_indep_1", "mean_pair_05", "mean_pair_1"):
        if case not in runs[0]["cases"]:
            continue
        mv = [first_after(r["cases"][case]["mv"]) for r in runs]
        now = [first_after(r["cases"][case]["now"]) for r in runs]
        bank = [first_after(r["cases"][case]["bank"]) for r in runs]
        later = sum(
            1 for m, b in zip(mv, bank, strict=True) if m is not None and (b is None or m >= b)
        )
        fired = sum(1 for m in mv if m is not None)
        print(
            f"| {CASES[case].title} | {cell(mv)} | {cell(now)} | {cell(bank)} | {later}/{fired} |"
        )


def print_fast_loop(runs: list[dict[str, Any]]) -> None:
    """The issue's bars through the fast loop: the alert a user gets, beside the
    univariate detectors alone on the same streams (the same reference without its
    multivariate model)."""
    n = len(runs)
    print(
        "\n## Through the fast loop (process_batch, batches of 500, the reference as "
        "`reference build` makes it): input_drift alerts\n"
    )
    print(
        "| case | multivariate alert: median delay (within 1,000 / runs) | names the pair "
        "| univariate alone fired (whole run) | input_drift episodes opened after the "
        "change, with / without the multivariate detector |"
    )
    print("|---|---|---|---|---|")
    for case in runs[0]["cases"]:
        rs = [r["cases"][case] for r in runs]
        mv = [first_after([p for p, d, _ in c["fast"] if d == "multivariate"]) for c in rs]
        pair = {"corr_neg": {"x0", "x1"}, "corr_zero": {"x0", "x1"}, "cat_link": {"x7", "tier"}}
        named = ""
        if case in pair:
            hits = [
                set(top) == pair[case]
                for c in rs
                for p, d, top in c["fast"][:1]
                if d == "multivariate" and p >= CHANGE
            ]
            named = f"{sum(hits)}/{len(hits)}"
        uni_fired = sum(1 for c in rs if c["now"])
        with_mv = sum(1 for c in rs for p, _, _ in c["fast"] if p >= CHANGE)
        without = sum(1 for c in rs for p in c["now"] if p >= CHANGE)
        print(
            f"| {CASES[case].title} | {cell(mv)} | {named} | {uni_fired}/{n} | "
            f"{with_mv} / {without} in {n} runs |"
        )
    print("\nDone when (issue 15), measured here:\n")
    for case in ("corr_neg", "corr_zero"):
        if case not in runs[0]["cases"]:
            continue
        ok = 0
        for r in runs:
            c = r["cases"][case]
            d = first_after([p for p, det, _ in c["fast"] if det == "multivariate"])
            ok += int(d is not None and d < WITHIN and not c["now"])
        print(
            f"- {CASES[case].title}: multivariate alert within {WITHIN:,} events while "
            f"every univariate test stayed quiet in {ok}/{n} runs ({ok / n:.0%}; bar >= 95%)"
        )
    if "stationary" in runs[0]["cases"]:
        fa = [
            sum(1 for _, d, _ in r["cases"]["stationary"]["fast"] if d == "multivariate")
            for r in runs
        ]
        uni = [len(r["cases"]["stationary"]["now"]) for r in runs]
        print(
            f"- stationary 20k-event runs: {sum(fa)} multivariate alerts in {n} runs "
            f"({sum(fa) / n:.3f} per run; bar <= 0.05); univariate alone: {sum(uni) / n:.3f}"
        )
    shifts = [c for c in ("mean_indep_1", "mean_pair_05", "mean_pair_1") if c in runs[0]["cases"]]
    if shifts:
        one = sum(
            1
            for r in runs
            for c in shifts
            if len([p for p, _, _ in r["cases"][c]["fast"] if p >= CHANGE])
            <= max(1, len([p for p in r["cases"][c]["now"] if p >= CHANGE]))
        )
        print(
            f"- mean shift in one feature ({', '.join(shifts)}): the multivariate detector "
            f"added no input_drift episode to the univariate ones in {one}/{n * len(shifts)} "
            "runs (it joins the stream's open episode; docs/multivariate.md)"
        )


# ------------------------------------------------------------------------- calibration


def calibration_check(
    seed: int, refs: int, events: int, budgets: Sequence[float], n_train: int
) -> list[tuple[int, float, float, int, float]]:
    """Alarms on long stationary streams at small targets; the detector restarts after each."""
    out = []
    for target in budgets:
        alarms = 0
        total = 0
        disabled = 0
        for r in range(refs):
            train = generate(stream_rng(seed, 1000 + r, "cal-train"), NARROW, n_train, None)
            nums, cats = inputs(train, NARROW, None)
            mv = fit_multivariate(nums, cats, target_arl=target, seed=r)
            assert mv is not None
            disabled += int(mv.notes["rows_disabled"])
            det = MultivariateDetector(mv)
            done = 0
            while done < events:
                n = min(100_000, events - done)
                s = generate(stream_rng(seed, 2000 + r, f"cal-{done}"), NARROW, n, None)
                z = mv.design.scores(
                    {name: s.x[j] for j, name in enumerate(NARROW.numeric)}, s.cats, n
                )
                pos = 0
                while pos < n:
                    fired = det.update_many(z[:, pos:])
                    if fired.size == 0:
                        break
                    alarms += 1
                    pos += int(fired[0]) + 1
                    det = MultivariateDetector(mv)  # a fresh start after each alarm
                done += n
                total += n
        out.append((n_train, target, total / target, alarms, disabled / refs))
    return out


# -------------------------------------------------------------------------------- cost


def best_of(fn: Any, reps: int = 5) -> float:
    """Best CPU time of ``reps`` calls: on a shared machine wall time mostly measures
    the neighbours (BLAS runs on one thread here, so CPU time is this process's work)."""
    best = math.inf
    for _ in range(reps):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def cost(seed: int, quick: bool) -> tuple[list[tuple[str, float, float]], list[tuple[str, float]]]:
    """Microseconds per event: the fast loop's core without and with the multivariate
    detector (the same reference, its model removed), and the multivariate parts."""
    loop: list[tuple[str, float, float]] = []
    built = build(seed, 0, NARROW, 1e6, univariate=True)
    assert built.ref is not None and built.uni is not None
    n = 10_000 if quick else 20_000
    s = generate(stream_rng(seed, 0, "cost"), NARROW, n, None)
    loop += fast_loop_cost(built.ref, built.uni, s, NARROW, "22 features")
    wide_n = 1_000 if quick else 2_000
    wide_train = generate(stream_rng(seed, 0, "train"), WIDE, 5_000, None)
    wide_ref = build_reference(
        TrainingData(features=rows_of(wide_train, WIDE)), "mv", "1", seed=0, created_at=0
    )
    assert wide_ref.multivariate is not None
    wide = generate(stream_rng(seed, 0, "cost"), WIDE, wide_n, None)
    loop += fast_loop_cost(
        wide_ref, dataclasses.replace(wide_ref, multivariate=None), wide, WIDE, "300 features"
    )
    parts: list[tuple[str, float]] = []
    for layout, label in ((NARROW, "20 numeric + 2 categorical"), (WIDE, "300 numeric")):
        mv = built.mv if layout is NARROW else build(seed, 0, WIDE, 1e6, univariate=False).mv
        st = s if layout is NARROW else generate(stream_rng(seed, 0, "cost"), WIDE, n, None)
        parts += multivariate_cost(mv, st, layout, built.ref, label)
    return loop, parts


def fast_loop_cost(
    ref: ReferenceProfile, uni: ReferenceProfile, s: Stream, layout: Layout, label: str
) -> list[tuple[str, float, float]]:
    """``process_batch`` per event over batches of 500, without and with the model."""
    events = events_of(s, layout)
    batches = [events[a : a + BATCH] for a in range(0, s.n, BATCH)]
    packed = [ColumnarBatch.from_dict(pack_events(b)[0]) for b in batches]

    def run(r: ReferenceProfile, columnar: bool) -> None:
        states: dict[Any, Any] = {}
        for b in packed if columnar else batches:
            process_batch([b] if columnar else b, states, lambda m, v: r)

    out = []
    for columnar, how in ((False, "single events"), (True, "columnar batches")):
        # Interleaved, best of 7 each: the neighbours' load moves both alike.
        best = [math.inf, math.inf]
        for _ in range(7):
            for i, r in enumerate((uni, ref)):
                t = time.process_time()
                run(r, columnar)
                best[i] = min(best[i], time.process_time() - t)
        out.append((f"fast loop, {label}, {how}", best[0] / s.n * 1e6, best[1] / s.n * 1e6))
    return out


def multivariate_cost(
    mv: MultivariateProfile, st: Stream, layout: Layout, ref: ReferenceProfile, label: str
) -> list[tuple[str, float]]:
    """Microseconds per event of the multivariate parts, over batches of 500."""
    n = st.n
    raw = [
        (
            {nm: st.x[j, a : a + BATCH] for j, nm in enumerate(layout.numeric)},
            {k: v[a : a + BATCH] for k, v in st.cats.items()},
        )
        for a in range(0, n, BATCH)
    ]
    zs = [mv.design.scores(nu, ca, BATCH) for nu, ca in raw]
    bins = []
    for a in range(0, n, BATCH):
        bb = {
            nm: np.searchsorted(mv.design.edges[nm], st.x[j, a : a + BATCH])
            for j, nm in enumerate(layout.numeric)
            if nm in mv.design.edges
        }
        fin = {nm: np.ones(BATCH, dtype=bool) for nm in bb}
        codes = {}
        for k, v in st.cats.items():
            c = ref.features[k]
            assert isinstance(c, CategoricalProfile)
            index = {cat: i for i, cat in enumerate(c.categories)}
            codes[k] = (np.asarray([index.get(x, len(index)) for x in v[a : a + BATCH]]), index)
        bins.append((bb, fin, codes))

    def scores_raw() -> None:
        for nu, ca in raw:
            mv.design.scores(nu, ca, BATCH)

    def scores_bins() -> None:
        for bb, fin, codes in bins:
            mv.design.scores_from_bins(bb, fin, codes, BATCH)

    def detect() -> None:
        det = MultivariateDetector(mv)
        for z in zs:
            det.update_many(z)
            det.close_window()  # windows of 500 events, as the fast loop's default

    tag = f"{label}: d={mv.d}, k={mv.k}, channels {'+'.join(mv.channel_names)}"
    return [
        (
            f"multivariate, {tag}: scores from bins and codes (the fast loop's path)",
            best_of(scores_bins) / n * 1e6,
        ),
        (
            f"multivariate, {tag}: scores from raw values (standalone)",
            best_of(scores_raw) / n * 1e6,
        ),
        (
            f"multivariate, {tag}: channels + CUSUM + window sketch (windows of 500)",
            best_of(detect) / n * 1e6,
        ),
    ]


# -------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--wide-runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument(
        "--budget",
        type=float,
        default=1_000_000.0,
        help="false_alarm_events (expected events between false alarms)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="5 runs, short checks")
    ap.add_argument("--skip", default="", help="comma list of: narrow,wide,calibration,cost")
    ap.add_argument("--json", help="write the raw results here")
    a = ap.parse_args(argv)
    runs = 5 if a.quick else a.runs
    wide_runs = 3 if a.quick else a.wide_runs
    skip = set(filter(None, a.skip.split(",")))
    t0 = time.time()
    print(
        f"# Multivariate drift benchmark: seed {a.seed}, budget {a.budget:,.0f} events, "
        f"{runs} runs (wide: {wide_runs})"
    )
    results: dict[str, Any] = {}
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        if "narrow" not in skip:
            jobs = [(a.seed, r, "narrow", a.budget, list(CASES), True) for r in range(runs)]
            narrow = list(pool.map(one_run, jobs))
            results["narrow"] = narrow
            print_detection(narrow, "20 numeric + 2 categorical features", True)
            print_mean_shift(narrow)
            print_fast_loop(narrow)
        if "wide" not in skip:
            jobs = [
                (a.seed, r, "wide", a.budget, list(WIDE_CASES), False) for r in range(wide_runs)
            ]
            wide = list(pool.map(one_run, jobs))
            results["wide"] = wide
            w = wide[0]
            print_detection(
                wide,
                f"300 numeric features (d={w['d']}, k={w['k']}, channels "
                f"{'+'.join(w['channels'])}; multivariate only)",
                False,
            )
    if "calibration" not in skip:
        print("\n## Calibration check: stationary streams at targets small enough to count\n")
        print(
            "| reference rows | target ARL (events) | expected alarms | measured | ratio | "
            "rows disabled per reference |"
        )
        print("|---|---|---|---|---|---|")
        refs, events = (3, 200_000) if a.quick else (8, 500_000)
        checks = calibration_check(a.seed, refs, events, (20_000, 200_000), N_EVENTS)
        checks += calibration_check(a.seed, refs, events, (20_000,), 2_000)
        results["calibration"] = checks
        for n_train, target, expected, measured, disabled in checks:
            print(
                f"| {n_train:,} | {target:,.0f} | {expected:.0f} | {measured} | "
                f"{measured / expected:.2f} | {disabled:.1f} |"
            )
    if "cost" not in skip:
        print(
            "\n## Cost per event (CPU time, batches of 500, one BLAS thread; the fast loop: "
            "best of 7 interleaved, the parts: best of 5)\n"
        )
        loop, parts = cost(a.seed, a.quick)
        results["cost"] = {"loop": loop, "parts": parts}
        print("| process_batch | without (baseline) us | with multivariate us | added |")
        print("|---|---|---|---|")
        for what, without, with_mv in loop:
            print(f"| {what} | {without:.2f} | {with_mv:.2f} | {with_mv / without - 1:+.0%} |")
        print("\n| multivariate part alone | us per event |")
        print("|---|---|")
        for what, us in parts:
            print(f"| {what} | {us:.2f} |")
    for key, label in (("narrow", "20 numeric + 2 categorical"), ("wide", "300 numeric")):
        if key in results:
            rs = results[key]
            t_mv = [
                r["seconds_multivariate"] for r in rs if not math.isnan(r["seconds_multivariate"])
            ]
            t_ref = [r["seconds_reference"] for r in rs if not math.isnan(r["seconds_reference"])]
            if t_ref:
                print(
                    f"\nReference build, {label}: build_reference with the multivariate model "
                    f"median {statistics.median(t_ref):.2f} s CPU (max {max(t_ref):.2f})"
                )
            if t_mv:
                print(
                    f"\nReference build, {label}: multivariate fit + calibration median "
                    f"{statistics.median(t_mv):.2f} s CPU (max {max(t_mv):.2f})"
                )
    print(f"\n(total {time.time() - t0:.0f} s)")
    if a.json:
        with open(a.json, "wb") as fh:
            fh.write(orjson.dumps(results, option=orjson.OPT_SERIALIZE_NUMPY))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
