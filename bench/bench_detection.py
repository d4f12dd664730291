"""Detection benchmark (issue 13): Driftline now, the proposed detectors, textbook detectors.

One command prints, per case, the median detection delay and the runs detected within
2,500 events, and the false alarms on stationary streams, for every detector side by
side; then the calibration check, the per-event cost and the calibration time.

    python bench/bench_detection.py                  # 20 runs per case (~4 min on 2 cores)
    python bench/bench_detection.py --quick          # 4 runs, short checks (~1 min)
    python bench/bench_detection.py --runs 50 --seed 7 --workers 2 --json out.json

Streams are our own, seeded (no external data; ``detection_cases.py``): 20,000
predictions with 5 numeric features of different shapes (normal, log-normal, Student t5,
Poisson, uniform) and 2 categorical ones, a binary prediction, and a change at event
10,000 (``CASES``). Each run builds its reference from 20,000 training rows of the same
generator (another seed). Driftline runs through its pure core with its current
defaults: the reference from ``build_reference``, then ``process_batch`` over the stream
in batches of 500. The proposed detectors are the prototype in ``bench/proto_detection.py``
(``bench/DETECTION.md``). The textbook detectors (``detection_textbook.py``) see the
same values:

* Page-Hinkley (``river.drift.PageHinkley(delta=0.1)``, its defaults otherwise, and
  Driftline's ``PageHinkley`` with the same parameters) on ``(x - mean_ref) / sd_ref``;
* KS (two-sample against the 20,000 reference values; scipy's asymptotic p-value, as
  ``ks_2samp`` uses at these sizes), PSI on 10 reference-decile bins, and chi-square
  (goodness of fit to the reference shares), each on a sliding window of the last 500
  events evaluated every 50 events; alarm at p < 0.001, PSI > 0.1;
* on the error stream of the concept-switch case (labels 200 events late): river's ADWIN
  (default delta 0.002), Driftline's ADWIN, Driftline's slow loop (its label join core)
  and the proposed Bernoulli CUSUM.

A detection is the first alarm on the changed feature at or after event 10,000; delay
is its index minus 10,000. False alarms are counted on stationary streams as alarm
episodes (a detector firing, or a window test starting to reject) per 20,000-event run
per feature the detector watches.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

# Driftline's entry points, in one place (issue 11's layout). When the fast-loop core is
# split by concept, only ``process_batch``'s module changes here.
from driftline.config import LabelsSettings
from driftline.core.detectors import ADWIN, PageHinkley
from driftline.core.fastloop import process_batch
from driftline.core.reference import Policy, TrainingData, build_reference
from driftline.core.slowloop import (
    DriftIndex,
    MemoryRecords,
    UnitState,
    join_batch,
    plan_lookups,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import detection_textbook as textbook  # noqa: E402
import proto_detection as proto  # noqa: E402
from detection_cases import (  # noqa: E402
    BATCH,
    C0,
    C1,
    CASES,
    CATEGORICAL,
    CHANGE,
    LABEL_LAG,
    N_EVENTS,
    NUMERIC,
    STEP_MS,
    T0,
    WITHIN,
    Stream,
    events_of,
    generate,
    stream_rng,
)
from detection_textbook import Alarms  # noqa: E402

# ------------------------------------------------------------------------- detectors


@dataclass
class Reference:
    """Everything built from one run's training rows."""

    train: Stream
    driftline: Any
    plans: dict[str, proto.FeaturePlan]
    error_plan: proto.FeaturePlan
    base: textbook.Baseline
    seconds_driftline: float
    seconds_proposed: float


def build(
    seed: int,
    run: int,
    budget: float,
    n_train: int = N_EVENTS,
    bank: proto.BankPolicy | None = None,
) -> Reference:
    train = generate(stream_rng(seed, run, "train"), n_train, None)
    t = time.process_time()
    rows = [e["features"] for e in events_of(train)]
    preds = ["yes" if v > 0 else "no" for v in train.score.tolist()]
    ref = build_reference(
        TrainingData(features=rows, predictions=preds), "bench", "1", seed=run, created_at=0
    )
    t_dl = time.process_time() - t
    t = time.process_time()
    per_feature = budget * (len(NUMERIC) + len(CATEGORICAL))
    plans = {
        name: proto.build_plan(
            name, train.x[i], kind="numeric", target_arl=per_feature, seed=run, policy=bank
        )
        for i, name in enumerate(NUMERIC)
    }
    for j, (name, cats) in enumerate(zip(CATEGORICAL, (C0, C1), strict=True)):
        values = [cats[k][0] for k in train.c[j].tolist()]
        plans[name] = proto.build_plan(
            name, values, kind="categorical", target_arl=per_feature, seed=run, policy=bank
        )
    t_pr = time.process_time() - t
    err = float(np.mean((train.score > 0) != train.label))
    error_plan = proto.build_rate_plan(
        "error", err, n_train, target_arl=budget, seed=run, policy=bank
    )
    return Reference(
        train=train,
        driftline=ref,
        plans=plans,
        error_plan=error_plan,
        base=textbook.baseline(train, (len(C0), len(C1))),
        seconds_driftline=t_dl,
        seconds_proposed=t_pr,
    )


def run_driftline(ref: Reference, s: Stream) -> tuple[Alarms, Alarms, int]:
    """Driftline's current core: input-drift firings (by top feature) and resolves."""
    events = events_of(s)
    states: dict[Any, Any] = {}
    fired: Alarms = {}
    resolved: Alarms = {}
    outputs = 0
    lookup: Callable[[str, str], Any] = lambda m, v: ref.driftline  # noqa: E731
    for i in range(0, len(events), BATCH):
        res = process_batch(events[i : i + BATCH], states, lookup)
        for a in res.alerts:
            at = (a.detected_at - T0) // STEP_MS
            if a.kind == "input_drift":
                into = fired if a.status == "firing" else resolved
                into.setdefault(a.feature or "?", []).append(at)
            elif a.status == "firing":
                outputs += 1
    return fired, resolved, outputs


def run_proposed(ref: Reference, s: Stream, batch: int = BATCH) -> tuple[Alarms, Alarms]:
    """The prototype banks: per feature, episode openings and resolutions."""
    fired: Alarms = {}
    resolved: Alarms = {}
    for name, plan in ref.plans.items():
        det = proto.FeatureDetector(plan)
        if name in NUMERIC:
            col = s.x[NUMERIC.index(name)]
        else:
            j = CATEGORICAL.index(name)
            col = plan.codes([c for c, _ in (C0, C1)[j]])[s.c[j]]  # our codes -> the plan's
        for i in range(0, s.n, batch):
            det.update_many(col[i : i + batch])
            for tr in det.transitions:
                if tr.kind == "fire":
                    fired.setdefault(name, []).append(tr.position)
                elif tr.kind == "resolve":
                    resolved.setdefault(name, []).append(tr.position)
    return fired, resolved


def check_batch_invariance(ref: Reference, s: Stream) -> bool:
    """The proposed banks give the same transitions and state whatever the batch
    boundaries, with the state sent through JSON after every batch."""

    def feed(sizes: Sequence[int]) -> list[Any]:
        out: list[Any] = []
        for name, plan in ref.plans.items():
            if name in NUMERIC:
                col = s.x[NUMERIC.index(name)]
            else:
                j = CATEGORICAL.index(name)
                col = plan.codes([c for c, _ in (C0, C1)[j]])[s.c[j]]
            det = proto.FeatureDetector(plan)
            i = k = 0
            while i < s.n:
                m = sizes[k % len(sizes)]
                det.update_many(col[i : i + m])
                out += det.transitions
                state = orjson.loads(orjson.dumps(det.to_dict()))
                det = proto.FeatureDetector.from_dict(plan, state)
                i, k = i + m, k + 1
            out.append(det.to_dict())
        return out

    return feed([s.n]) == feed([1, 7, 333, 5_000, 2]) == feed([BATCH])


# ---------------------------------------------------------------- concept (labels)


def concept_detectors(ref: Reference, s: Stream) -> dict[str, list[int]]:
    """Alarms on the error stream, as event indices of the *label* (prediction + lag)."""
    err = ((s.score > 0) != s.label).astype(np.float64)
    out: dict[str, list[int]] = {}
    out["adwin_river"] = [j + LABEL_LAG for j in textbook.adwin_river(err)]
    out["adwin_driftline"] = (ADWIN().update_many(err) + LABEL_LAG).tolist()
    codes = np.where(err > 0, 0, 1)
    bank = proto.FeatureDetector(ref.error_plan)
    fired = []
    for i in range(0, s.n, BATCH):
        bank.update_many(codes[i : i + BATCH])
        fired += [t.position + LABEL_LAG for t in bank.transitions if t.kind == "fire"]
    out["proposed"] = fired
    out["slow_loop"] = slow_loop(s)
    return out


def slow_loop(s: Stream) -> list[int]:
    """Driftline's label join core (defaults): concept_drift firings, by label index."""
    settings = LabelsSettings()
    unit, mem, drift_index = UnitState(), MemoryRecords(), DriftIndex()
    preds: list[dict[str, Any]] = [
        {
            "prediction_id": f"p{i}",
            "model_id": "bench",
            "model_version": "1",
            "timestamp": T0 + i * STEP_MS,
            "features": {},
            "prediction": "yes" if v > 0 else "no",
        }
        for i, v in enumerate(s.score.tolist())
    ]
    labels = [
        {
            "prediction_id": f"p{i}",
            "model_id": "bench",
            "label": "yes" if y else "no",
            "timestamp": T0 + (i + LABEL_LAG) * STEP_MS + 1,
        }
        for i, y in enumerate(s.label.tolist())
    ]
    fired: list[int] = []
    for lo in range(0, s.n + LABEL_LAG, BATCH):
        bp = preds[lo : lo + BATCH]
        bl = labels[max(0, lo - LABEL_LAG) : max(0, lo + BATCH - LABEL_LAG)]
        plan = plan_lookups(bp, bl, unit, settings)
        res = join_batch(
            bp, bl, plan, mem.lookup(plan), unit, lambda m, v: None, drift_index, settings
        )
        mem.apply(res)
        for a in res.alerts:
            if a.kind == "concept_drift" and a.status == "firing":
                fired.append((a.detected_at - T0) // STEP_MS)
    return fired


# ---------------------------------------------------------------------------- a run


def one_run(args: tuple[int, int, float, Sequence[str], proto.BankPolicy]) -> dict[str, Any]:
    """Every case of one run (one reference): alarms of every detector, plain data."""
    seed, run, budget, cases, bank = args
    ref = build(seed, run, budget, bank=bank)
    out: dict[str, Any] = {"run": run, "build_s": [ref.seconds_driftline, ref.seconds_proposed]}
    for case in cases:
        s = generate(stream_rng(seed, run, case), N_EVENTS, case)
        if case == "concept":
            out[case] = {
                "concept": concept_detectors(ref, s),
                "error_rates": [
                    float(np.mean(((s.score > 0) != s.label)[:CHANGE])),
                    float(np.mean(((s.score > 0) != s.label)[CHANGE:])),
                ],
            }
            continue
        dl_fired, dl_resolved, dl_out = run_driftline(ref, s)
        pr_fired, pr_resolved = run_proposed(ref, s)
        ph_river = textbook.page_hinkley_river(ref.base, s)
        ph_ours = {
            name: PageHinkley(delta=0.1).update_many(textbook.standardised(ref.base, s, i)).tolist()
            for i, name in enumerate(NUMERIC)
        }
        win = textbook.run_windows(ref.base, s)
        out[case] = {
            "driftline": {"fired": dl_fired, "resolved": dl_resolved, "output_firings": dl_out},
            "proposed": {"fired": pr_fired, "resolved": pr_resolved},
            "ph_river": ph_river,
            "ph_driftline": ph_ours,
            "windows": {
                k: {f: [r.episodes, r.first_after_change] for f, r in v.items()}
                for k, v in win.items()
            },
        }
    if run == 0:
        s = generate(stream_rng(seed, run, "kscheck"), N_EVENTS, "mean05")
        out["ks_vs_scipy"] = textbook.check_ks_against_scipy(ref.base, s)
        out["batch_invariant"] = check_batch_invariance(ref, s)
    return out


# --------------------------------------------------------------------------- summary


def _first_at_or_after(hits: Sequence[int], at: int = CHANGE) -> int | None:
    later = [h for h in hits if h >= at]
    return min(later) - at if later else None


DETECTORS = (
    ("driftline", "Driftline now"),
    ("proposed", "proposed"),
    ("ph_river", "PH river d=.1"),
    ("ph_driftline", "PH Driftline d=.1"),
    ("ks", "KS w500"),
    ("psi", "PSI w500"),
    ("chi2", "chi2 w500"),
)


def delays(results: Sequence[Mapping[str, Any]], case: str, det: str) -> list[int | None] | None:
    """Per run: the detection delay of ``det`` in ``case`` (None: not detected)."""
    feature = CASES[case].feature
    out: list[int | None] = []
    for r in results:
        c = r[case]
        if det == "driftline":
            # Any input-drift firing counts (the alert names the top feature).
            hits = [h for v in c["driftline"]["fired"].values() for h in v]
        elif det == "proposed":
            hits = c["proposed"]["fired"].get(feature, [])
        elif det in ("ph_river", "ph_driftline"):
            if feature not in NUMERIC:
                return None
            hits = c[det][feature]
        else:
            table = c["windows"][det]
            if feature not in table:
                return None
            first = table[feature][1]
            out.append(None if first is None else first - CHANGE)
            continue
        out.append(_first_at_or_after(hits))
    return out


def false_alarms(results: Sequence[Mapping[str, Any]], det: str) -> float:
    """Alarm episodes per stationary run per feature the detector watches."""
    total, features = 0, 0
    for r in results:
        c = r["stationary"]
        if det == "driftline":
            total += sum(len(v) for v in c["driftline"]["fired"].values())
            features += len(NUMERIC) + len(CATEGORICAL)
        elif det == "proposed":
            total += sum(len(v) for v in c["proposed"]["fired"].values())
            features += len(NUMERIC) + len(CATEGORICAL)
        elif det in ("ph_river", "ph_driftline"):
            total += sum(len(v) for v in c[det].values())
            features += len(NUMERIC)
        else:
            table = c["windows"][det]
            total += sum(len(v[0]) for v in table.values())
            features += len(table)
    return total / features if features else math.nan


def episodes_after(results: Sequence[Mapping[str, Any]], case: str, det: str) -> list[int]:
    """Per run: firings after the change (on the changed feature, for the proposed)."""
    out = []
    for r in results:
        c = r[case][det]["fired"]
        if det == "driftline":
            out.append(sum(1 for v in c.values() for h in v if h >= CHANGE))
        else:
            out.append(sum(1 for h in c.get(CASES[case].feature, []) if h >= CHANGE))
    return out


def resolve_delay(results: Sequence[Mapping[str, Any]], det: str) -> list[int | None]:
    """Per run of "back": events from the return (13,000) to the episode's resolution."""
    out: list[int | None] = []
    for r in results:
        res = r["back"][det]["resolved"]
        hits = [h for v in res.values() for h in v] if det == "driftline" else res.get("x0", [])
        out.append(_first_at_or_after(hits, CHANGE + 3_000))
    return out


def cell(ds: Sequence[int | None] | None) -> str:
    if ds is None:
        return "-"
    got = [d for d in ds if d is not None]
    within = sum(1 for d in got if d <= WITHIN)
    med = f"{statistics.median(got):.0f}" if got else "none"
    return f"{med} ({within}/{len(ds)})"


def print_table(results: Sequence[Mapping[str, Any]], cases: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    cols = [title for _, title in DETECTORS]
    print(f"\n{'case':54s}" + "".join(f"{c:>18s}" for c in cols))
    for case in cases:
        if case in ("stationary", "concept", "back"):
            continue
        row = {det: cell(delays(results, case, det)) for det, _ in DETECTORS}
        summary[case] = {det: delays(results, case, det) for det, _ in DETECTORS}
        print(f"{CASES[case].title:54s}" + "".join(f"{row[d]:>18s}" for d, _ in DETECTORS))
    if "stationary" in cases:
        fa = {det: false_alarms(results, det) for det, _ in DETECTORS}
        summary["stationary"] = fa
        print(f"{CASES['stationary'].title:54s}" + "".join(f"{fa[d]:>18.3f}" for d, _ in DETECTORS))
    print("cells: median delay in events (runs detected within 2,500 / runs)")
    return summary


def print_episodes(results: Sequence[Mapping[str, Any]], cases: Sequence[str]) -> dict[str, Any]:
    print("\nEpisodes after the change (persistent drifts should give exactly one):")
    print(f"{'case':54s}{'Driftline now':>24s}{'proposed':>24s}")
    out: dict[str, Any] = {}
    for case in cases:
        if case in ("stationary", "concept", "back"):
            continue
        a = episodes_after(results, case, "driftline")
        b = episodes_after(results, case, "proposed")
        out[case] = {"driftline": a, "proposed": b}

        def fmt(xs: list[int]) -> str:
            return f"{sum(1 for x in xs if x == 1)}/{len(xs)} one, max {max(xs)}"

        print(f"{CASES[case].title:54s}{fmt(a):>24s}{fmt(b):>24s}")
    if "back" in cases:
        a2 = resolve_delay(results, "driftline")
        b2 = resolve_delay(results, "proposed")
        ea = episodes_after(results, "back", "driftline")
        eb = episodes_after(results, "back", "proposed")
        out["back"] = {
            "resolve_driftline": a2,
            "resolve_proposed": b2,
            "episodes_driftline": ea,
            "episodes_proposed": eb,
        }
        print(f"{CASES['back'].title + ': resolved after':54s}{cell(a2):>24s}{cell(b2):>24s}")
        one_a = f"{sum(1 for x in ea if x == 1)}/{len(ea)}"
        one_b = f"{sum(1 for x in eb if x == 1)}/{len(eb)}"
        print(f"{'  runs with exactly one episode':54s}{one_a:>24s}{one_b:>24s}")
    return out


def print_concept(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    names = ("adwin_river", "adwin_driftline", "slow_loop", "proposed")
    rates = np.mean([r["concept"]["error_rates"] for r in results], axis=0)
    print(
        f"\nConcept switch (error rate {rates[0]:.3f} -> {rates[1]:.3f}; labels {LABEL_LAG} "
        "events late; delay counts from the switch to the label that detected it):"
    )
    print("".join(f"{n:>22s}" for n in names))
    out: dict[str, Any] = {}
    cells, fas = [], []
    for n in names:
        ds = [_first_at_or_after(r["concept"]["concept"][n]) for r in results]
        fa = [sum(1 for h in r["concept"]["concept"][n] if h < CHANGE) for r in results]
        out[n] = {"delays": ds, "false_alarms_first_half": fa}
        cells.append(cell(ds))
        fas.append(f"FA {sum(fa) / len(fa):.2f}/10k ev")
    print("".join(f"{c:>22s}" for c in cells))
    print("".join(f"{c:>22s}" for c in fas))
    same = all(
        r["concept"]["concept"]["adwin_river"] == r["concept"]["concept"]["adwin_driftline"]
        for r in results
    )
    print(f"river ADWIN and Driftline's ADWIN give identical detections: {same}")
    return out


def print_bars(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
    def med(case: str) -> float:
        got = [d for d in summary[case]["proposed"] if d is not None]
        return statistics.median(got) if got else math.inf

    checks = []
    if "mean05" in summary:
        checks.append(("0.5 sd: median delay <= 150", med("mean05"), med("mean05") <= 150))
    if "mean025" in summary:
        ds = summary["mean025"]["proposed"]
        share = sum(1 for d in ds if d is not None and d <= WITHIN) / len(ds)
        checks.append(("0.25 sd: >= 95% of runs within 2,500", share, share >= 0.95))
    for case, bar in (("category", 250), ("scale15", 450), ("ramp", 950)):
        if case in summary:
            checks.append((f"{CASES[case].title}: median <= {bar}", med(case), med(case) <= bar))
    if "stationary" in summary:
        fa = summary["stationary"]["proposed"]
        checks.append(("stationary: <= 0.05 false alarms per run per feature", fa, fa <= 0.05))
    print("\nBars of issue 13 (proposed detectors):")
    for title, value, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {title}: {value:.3g}")
    ph_same = all(
        r[c]["ph_river"] == r[c]["ph_driftline"]
        for r in results
        for c in r
        if isinstance(r[c], dict) and "ph_river" in r[c]
    )
    print(f"river's and Driftline's Page-Hinkley give identical detections: {ph_same}")


# ----------------------------------------------------------- calibration and cost


#: Events per stationary stream of the calibration check.
CALIBRATION_EVENTS = 500_000


def calibration_task(args: tuple[int, int, float, int, proto.BankPolicy]) -> dict[str, Any]:
    """Stationary runs of the proposed banks at a budget small enough to measure."""
    seed, run, budget, n_train, bank = args
    ref = build(seed, 10_000 + run, budget, n_train=n_train, bank=bank)
    s = generate(stream_rng(seed, 10_000 + run, f"calib{n_train}"), CALIBRATION_EVENTS, None)
    fired, _ = run_proposed(ref, s, batch=5_000)
    disabled = sum(
        1
        for p in ref.plans.values()
        for r, t in zip(p.role, p.threshold, strict=True)
        if r == proto.DETECT and not math.isfinite(t)
    )
    return {
        "alarms": sum(len(v) for v in fired.values()),
        "per_feature": {name: len(fired.get(name, [])) for name in ref.plans},
        "events": s.n,
        "disabled": disabled,
    }


def calibration_check(
    pool: ProcessPoolExecutor, seed: int, runs: int, bank: proto.BankPolicy
) -> list[dict[str, Any]]:
    print(
        f"\nCalibration check (proposed, {runs} stationary streams of {CALIBRATION_EVENTS:,} "
        "events per row, at budgets small enough to count):"
    )
    print(
        f"{'reference rows':>15s}{'budget (events)':>18s}{'expected alarms':>18s}"
        f"{'measured':>10s}{'ratio':>8s}{'rows disabled':>15s}"
    )
    out = []
    for n_train, budget in ((20_000, 20_000.0), (20_000, 200_000.0), (2_000, 20_000.0)):
        tasks = [(seed, r, budget, n_train, bank) for r in range(runs)]
        res = list(pool.map(calibration_task, tasks))
        alarms = sum(r["alarms"] for r in res)
        events = sum(r["events"] for r in res)
        expected = events / budget
        disabled = sum(r["disabled"] for r in res) / len(res)
        print(
            f"{n_train:>15,d}{budget:>18,.0f}{expected:>18.1f}{alarms:>10d}"
            f"{alarms / expected:>8.2f}{disabled:>15.1f}"
        )
        out.append(
            {
                "n_train": n_train,
                "budget": budget,
                "expected": expected,
                "alarms": alarms,
                "disabled_rows_per_reference": disabled,
                "per_feature": {
                    k: sum(r["per_feature"][k] for r in res) for k in res[0]["per_feature"]
                },
            }
        )
    print("(budget = expected events between false alarms of the whole stream, all 7 features)")
    first = out[0]
    share = first["expected"] / len(first["per_feature"])
    print(
        f"per feature, first row (expected {share:.1f} each): "
        + ", ".join(f"{k} {v}" for k, v in first["per_feature"].items())
    )
    return out


def cost(seed: int, budget: float, quick: bool) -> dict[str, Any]:
    """CPU per event per feature: the proposed bank against Page-Hinkley; calibration time."""
    rng = np.random.default_rng(seed)
    n = 200_000 if quick else 1_000_000
    x = rng.normal(0.0, 1.0, n)
    plan = proto.build_plan(
        "x", rng.normal(0.0, 1.0, 20_000), kind="numeric", target_arl=budget * 7, seed=seed
    )
    shares = [p for _, p in C1]
    cplan = proto.build_plan(
        "c",
        [C1[k][0] for k in rng.choice(len(C1), 20_000, p=shares)],
        kind="categorical",
        target_arl=budget * 7,
        seed=seed,
    )
    codes = cplan.codes([c for c, _ in C1])[rng.choice(len(C1), n, p=shares)]
    out: dict[str, Any] = {}
    print("\nCost, CPU ns per event per feature (stationary data, best of 3):")
    for batch in (500, 5_000):
        for label, make, col in (
            ("proposed numeric bank", lambda: proto.FeatureDetector(plan), x),
            (
                f"proposed categorical bank ({len(C1)} categories)",
                lambda: proto.FeatureDetector(cplan),
                codes,
            ),
            ("Driftline PageHinkley.update_many", lambda: PageHinkley(delta=0.25, alpha=1.0), x),
        ):
            best = math.inf
            for _ in range(3):
                det = make()
                t = time.process_time()
                for i in range(0, n, batch):
                    det.update_many(col[i : i + batch])
                best = min(best, time.process_time() - t)
            ns = best / n * 1e9
            out[f"{label}, batch {batch}"] = ns
            print(f"  {label + f', batch {batch}':62s}{ns:8.0f}")
    out["stacked_20_numeric_ns"] = stacked_kernel_ns(rng, quick)
    print(
        f"  {'kernel: 20 numeric features x 6 rows stacked, batch 500':62s}"
        f"{out['stacked_20_numeric_ns']:8.0f}"
    )
    zipf = 1.0 / np.arange(1, 51)
    zipf /= zipf.sum()
    names50 = [f"k{i}" for i in range(50)]
    t = time.process_time()
    plan50 = proto.build_plan(
        "c50",
        [names50[k] for k in rng.choice(50, 20_000, p=zipf)],
        kind="categorical",
        target_arl=budget * 7,
        seed=seed,
    )
    secs50 = time.process_time() - t
    codes50 = plan50.codes(names50)[rng.choice(50, n, p=zipf)]
    best = math.inf
    for _ in range(3):
        det50 = proto.FeatureDetector(plan50)
        t = time.process_time()
        for i in range(0, n, 5_000):
            det50.update_many(codes50[i : i + 5_000])
        best = min(best, time.process_time() - t)
    out["categorical_50_ns_per_event_batch_5000"] = best / n * 1e9
    out["categorical_50_calibration_seconds"] = secs50
    out["categorical_50_channels"] = plan50.n_groups
    print(
        f"  {'proposed categorical bank (50 categories, Zipf), batch 5000':62s}"
        f"{best / n * 1e9:8.0f}   ({plan50.n_groups} channels, calibration {secs50:.2f} s)"
    )
    ref_rows = rng.normal(0.0, 1.0, (20, 20_000))
    t = time.process_time()
    for i in range(20):
        proto.build_plan(f"f{i}", ref_rows[i], kind="numeric", target_arl=budget * 20, seed=seed)
    secs = time.process_time() - t
    out["calibration_seconds_20_numeric_features"] = secs
    print(f"  calibration at reference build, 20 numeric features of 20,000 rows: {secs:.2f} s CPU")
    return out


def stacked_kernel_ns(rng: np.random.Generator, quick: bool) -> float:
    """The bank's kernel as the core would run it: every numeric feature's detection rows
    in one matrix per batch (standardise, increments, fixed point, CUSUM, compare)."""
    features, rows, m = 20, 6, 500
    x = rng.normal(0.0, 1.0, (features, m))
    chan = np.repeat(np.arange(features), rows)
    a = np.tile([0.25, -0.25, 0.5, -0.5, 0.25, -0.25], features)
    b = np.tile([-0.03125, -0.03125, -0.125, -0.125, -0.03125, -0.03125], features)
    s0 = np.zeros(features * rows)
    h = np.full(features * rows, 15.0 * proto.SCALE)
    mean, sd = np.zeros((features, 1)), np.ones((features, 1))
    best = math.inf
    for _ in range(50 if quick else 200):
        t = time.process_time()
        z = np.clip((x - mean) / sd, -4.0, 4.0)
        q = np.rint((a[:, None] * z[chan] + b[:, None]) * proto.SCALE)
        c = np.cumsum(q, axis=1)  # integer-valued float64: exact below 2**53
        c += s0[:, None]
        low = np.minimum.accumulate(c, axis=1)
        np.minimum(low, 0.0, out=low)
        c -= low
        bool((c >= h[:, None]).any())
        best = min(best, time.process_time() - t)
    return best / (features * m) * 1e9


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 runs, short checks")
    parser.add_argument("--runs", type=int, default=None, help="runs per case (default 20)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--budget",
        type=float,
        default=Policy().false_alarm_events,
        help="false_alarm_events (default: the Policy default)",
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--shifts", default="", help="proposed: mean shifts, e.g. 0.25,0.5")
    parser.add_argument(
        "--resolve-at",
        type=float,
        default=None,
        help="proposed: return boundary as a fraction of the smallest shift",
    )
    parser.add_argument("--skip", default="", help="comma-separated: calibration,cost")
    parser.add_argument("--json", default="", help="write every figure to this file")
    args = parser.parse_args()
    runs = args.runs or (4 if args.quick else 20)
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    skip = set(args.skip.split(","))
    bank = proto.BankPolicy()
    if args.shifts:
        shifts = tuple(float(v) for v in args.shifts.split(","))
        bank = dataclasses.replace(bank, shifts=shifts)
    if args.resolve_at is not None:
        bank = dataclasses.replace(bank, resolve_at=args.resolve_at)
    print(
        f"{runs} runs x {len(cases)} cases, seed {args.seed}, budget "
        f"false_alarm_events={args.budget:,.0f}, {args.workers} workers"
    )
    print(f"proposed: {bank}")
    started = time.time()
    report: dict[str, Any] = {
        "runs": runs,
        "seed": args.seed,
        "budget": args.budget,
        "bank": dataclasses.asdict(bank),
    }
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        tasks = [(args.seed, r, args.budget, cases, bank) for r in range(runs)]
        results = list(pool.map(one_run, tasks))
        report["results"] = results
        report["summary"] = print_table(results, cases)
        report["episodes"] = print_episodes(results, cases)
        if "concept" in cases:
            report["concept"] = print_concept(results)
        print_bars(report["summary"], results)
        builds = np.asarray([r["build_s"] for r in results])
        print(
            f"reference build CPU per run: Driftline {builds[:, 0].mean():.2f} s, "
            f"proposed calibration {builds[:, 1].mean():.2f} s (7 features)"
        )
        if "ks_vs_scipy" in results[0]:
            print(
                f"windowed KS p-values against scipy.stats.ks_2samp: largest gap "
                f"{results[0]['ks_vs_scipy']:.1e}"
            )
        if "batch_invariant" in results[0]:
            print(
                "proposed: same transitions and state for batches of 20,000 / 1,7,333,5000,2 / "
                f"500 with JSON round trips: {results[0]['batch_invariant']}"
            )
        if "calibration" not in skip:
            report["calibration"] = calibration_check(
                pool, args.seed, 4 if args.quick else 12, bank
            )
    if "cost" not in skip:
        report["cost"] = cost(args.seed, args.budget, args.quick)
    print(f"\nwall time {time.time() - started:.0f} s")
    if args.json:
        with open(args.json, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY))


if __name__ == "__main__":
    main()
