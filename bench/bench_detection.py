"""Detection benchmark (issue 13): Driftline's fast loop beside textbook detectors.

One command prints, per case, the median detection delay and the runs detected within
2,500 events, and the false alarms on stationary streams, for every detector side by
side; then the episodes, the issue's bars, the calibration check, the per-event cost and
the calibration time.

    python bench/bench_detection.py                  # 20 runs per case (~6 min on 2 cores)
    python bench/bench_detection.py --quick          # 4 runs, short checks (~2 min)
    python bench/bench_detection.py --runs 50 --seed 7 --workers 2 --json out.json

Streams are our own, seeded (no external data; ``detection_cases.py``): 20,000
predictions with 5 numeric features of different shapes (normal, log-normal, Student t5,
Poisson, uniform) and 2 categorical ones, a binary prediction, and a change at event
10,000 (``CASES``). Each run builds its reference from 20,000 training rows of the same
generator (another seed). **Driftline** is the product with its defaults: the reference
from ``build_reference`` (its detector banks calibrated to ``false_alarm_events``), then
``process_batch`` over the stream in batches of 500; a feature is detected when an
``input_drift`` alert (``firing``, or ``updated`` during an open episode) first names it.
The textbook detectors (``detection_textbook.py``) see the same values:

* Page-Hinkley (``river.drift.PageHinkley(delta=0.1)``, its defaults otherwise, and
  Driftline's ``PageHinkley`` with the same parameters) on ``(x - mean_ref) / sd_ref``;
* KS (two-sample against the 20,000 reference values; scipy's asymptotic p-value, as
  ``ks_2samp`` uses at these sizes), PSI on 10 reference-decile bins, and chi-square
  (goodness of fit to the reference shares), each on a sliding window of the last 500
  events evaluated every 50 events; alarm at p < 0.001, PSI > 0.1;
* on the error stream of the concept-switch case (labels 200 events late): river's ADWIN
  (default delta 0.002), Driftline's ADWIN, Driftline's slow loop (its label join core)
  and a Driftline rate bank (``compile_rate`` on the reference error rate: not in the
  slow loop, shown as a candidate).

A detection is the first alarm on the changed feature at or after event 10,000; delay
is its index minus 10,000. False alarms are counted on stationary streams as alarm
episodes (a detector firing, a window test starting to reject, a feature starting to
drift in a Driftline alert) per 20,000-event run per feature the detector watches.
"""

from __future__ import annotations

import argparse
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

# Driftline's entry points, in one place.
from driftline.config import LabelsSettings
from driftline.contract.keys import StateKey
from driftline.core.detectors import ADWIN, FeatureBank, PageHinkley
from driftline.core.detectors.bank import BankLayout, CusumBank
from driftline.core.detectors.plans import FeaturePlan, compile_numeric, compile_rate
from driftline.core.fastloop import ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile, TrainingData, build_reference
from driftline.core.reference.banks import attach_banks
from driftline.core.slowloop import (
    DriftIndex,
    MemoryRecords,
    UnitState,
    join_batch,
    plan_lookups,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import detection_textbook as textbook  # noqa: E402
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
    X0_MEAN,
    X0_SD,
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
    driftline: ReferenceProfile
    error_plan: FeaturePlan | None
    base: textbook.Baseline
    seconds_build: float
    seconds_banks: float


def build(seed: int, run: int, budget: float, n_train: int = N_EVENTS) -> Reference:
    train = generate(stream_rng(seed, run, "train"), n_train, None)
    rows = [e["features"] for e in events_of(train)]
    preds = ["yes" if v > 0 else "no" for v in train.score.tolist()]
    data = TrainingData(features=rows, predictions=preds)
    policy = Policy(false_alarm_events=budget)
    t = time.process_time()
    ref = build_reference(data, "bench", "1", policy=policy, seed=run, created_at=0)
    t_build = time.process_time() - t
    # The banks' share of the build: calibrating them again on the built profiles (from
    # their bins: about the same work as from the columns).
    t = time.process_time()
    attach_banks(ref.features, ref.outputs, policy, run)
    t_banks = time.process_time() - t
    err = float(np.mean((train.score > 0) != train.label))
    error_plan = compile_rate("error", err, 0.5, n_ref=n_train, target_arl=budget, seed=run)
    return Reference(
        train=train,
        driftline=ref,
        error_plan=error_plan,
        base=textbook.baseline(train, (len(C0), len(C1))),
        seconds_build=t_build,
        seconds_banks=t_banks,
    )


def run_driftline(
    ref: Reference, s: Stream, sizes: Sequence[int] = (BATCH,), round_trip: bool = False
) -> dict[str, Any]:
    """The product's fast loop over the stream: per feature, the events where an
    ``input_drift`` alert first names it in an episode (its onsets); the episodes'
    firing and resolution events; output-drift firings; the alerts (for the checks)."""
    events = events_of(s)
    states: dict[StateKey, ModelState] = {}
    onsets: Alarms = {}
    firing: list[int] = []
    resolved: list[int] = []
    outputs = 0
    seen: dict[int, set[str]] = {}
    alerts: list[dict[str, Any]] = []
    prof = ref.driftline
    lookup: Callable[[str, str], Any] = lambda m, v: prof  # noqa: E731
    i = k = 0
    while i < len(events):
        m = sizes[k % len(sizes)]
        res = process_batch(events[i : i + m], states, lookup)
        if round_trip:
            states = {key: ModelState.from_bytes(st.to_bytes(), prof) for key, st in states.items()}
        i, k = i + m, k + 1
        for a in res.alerts:
            alerts.append(a.model_dump(mode="json"))
            at = (a.detected_at - T0) // STEP_MS
            if a.kind == "output_drift":
                outputs += a.status == "firing"
                continue
            if a.kind != "input_drift":
                continue
            if a.status == "resolved":
                resolved.append(at)
                continue
            if a.status == "firing":
                firing.append(at)
            mine = seen.setdefault(a.episode, set())
            for f in a.top_features:
                if f.feature not in mine:
                    mine.add(f.feature)
                    onsets.setdefault(f.feature, []).append(at)
    return {
        "fired": onsets,
        "firing": firing,
        "resolved": resolved,
        "output_firings": outputs,
        "alerts": alerts,
        "states": states,
    }


def check_batch_invariance(ref: Reference, s: Stream) -> bool:
    """The product gives the same alerts (ids and contents) and the same detector state
    whatever the batch boundaries, with every state sent through its stored bytes after
    every batch."""

    def feed(sizes: Sequence[int]) -> tuple[list[Any], list[Any]]:
        out = run_driftline(ref, s, sizes, round_trip=True)
        banks = [st.bank.state_fields() for st in out["states"].values() if st.bank]
        return out["alerts"], banks

    whole = feed([s.n])
    return whole == feed([1, 7, 333, 5_000, 2]) == feed([BATCH]) and bool(whole[0])


# ---------------------------------------------------------------- concept (labels)


def concept_detectors(ref: Reference, s: Stream) -> dict[str, list[int]]:
    """Alarms on the error stream, as event indices of the *label* (prediction + lag)."""
    err = ((s.score > 0) != s.label).astype(np.float64)
    out: dict[str, list[int]] = {}
    out["adwin_river"] = [j + LABEL_LAG for j in textbook.adwin_river(err)]
    out["adwin_driftline"] = (ADWIN().update_many(err) + LABEL_LAG).tolist()
    fired: list[int] = []
    if ref.error_plan is not None:
        # The rate unit counts values below its cut (0.5): an error is a 0 here.
        bank = FeatureBank(ref.error_plan)
        for i in range(0, s.n, BATCH):
            fired += (i + LABEL_LAG + bank.update_many(1.0 - err[i : i + BATCH])).tolist()
    out["rate_bank"] = fired
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


def one_run(args: tuple[int, int, float, Sequence[str]]) -> dict[str, Any]:
    """Every case of one run (one reference): alarms of every detector, plain data."""
    seed, run, budget, cases = args
    ref = build(seed, run, budget)
    out: dict[str, Any] = {"run": run, "build_s": [ref.seconds_build, ref.seconds_banks]}
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
        dl = run_driftline(ref, s)
        ph_river = textbook.page_hinkley_river(ref.base, s)
        ph_ours = {
            name: PageHinkley(delta=0.1).update_many(textbook.standardised(ref.base, s, i)).tolist()
            for i, name in enumerate(NUMERIC)
        }
        win = textbook.run_windows(ref.base, s)
        out[case] = {
            "driftline": {k: dl[k] for k in ("fired", "firing", "resolved", "output_firings")},
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
    ("driftline", "Driftline"),
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
            hits = c["driftline"]["fired"].get(feature, [])
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
            total += sum(len(v) for k, v in c["driftline"]["fired"].items())
            features += len(NUMERIC) + len(CATEGORICAL)
        elif det in ("ph_river", "ph_driftline"):
            total += sum(len(v) for v in c[det].values())
            features += len(NUMERIC)
        else:
            table = c["windows"][det]
            total += sum(len(v[0]) for v in table.values())
            features += len(table)
    return total / features if features else math.nan


def episodes_after(results: Sequence[Mapping[str, Any]], case: str) -> list[int]:
    """Per run: Driftline's input-drift episodes fired after the change."""
    return [sum(1 for h in r[case]["driftline"]["firing"] if h >= CHANGE) for r in results]


def resolve_delay(results: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """Per run of "back": events from the return (13,000) to the episode's resolution."""
    return [_first_at_or_after(r["back"]["driftline"]["resolved"], CHANGE + 3_000) for r in results]


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
        outs = [r["stationary"]["driftline"]["output_firings"] for r in results]
        summary["stationary_output_firings"] = outs
        print(f"{'  Driftline output-drift episodes per stationary run':54s}{np.mean(outs):>18.3f}")
    print("cells: median delay in events (runs detected within 2,500 / runs)")
    return summary


def print_episodes(results: Sequence[Mapping[str, Any]], cases: Sequence[str]) -> dict[str, Any]:
    print("\nDriftline input-drift episodes after the change (a persistent drift: exactly one):")
    out: dict[str, Any] = {}
    for case in cases:
        if case in ("stationary", "concept", "back"):
            continue
        eps = episodes_after(results, case)
        out[case] = eps
        one = sum(1 for x in eps if x == 1)
        print(f"{CASES[case].title:54s}{f'{one}/{len(eps)} runs one, max {max(eps)}':>30s}")
    if "back" in cases:
        delay = resolve_delay(results)
        eb = episodes_after(results, "back")
        out["back"] = {"resolve": delay, "episodes": eb}
        print(f"{CASES['back'].title + ': resolved after':54s}{cell(delay):>30s}")
        one = f"{sum(1 for x in eb if x == 1)}/{len(eb)}"
        print(f"{'  runs with exactly one episode':54s}{one:>30s}")
    return out


def print_concept(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    names = ("adwin_river", "adwin_driftline", "slow_loop", "rate_bank")
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
    print("(rate_bank: a Driftline rate bank on the error stream; the slow loop runs ADWIN)")
    return out


def print_bars(
    summary: Mapping[str, Any], episodes: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> bool:
    def med(case: str) -> float:
        got = [d for d in summary[case]["driftline"] if d is not None]
        return statistics.median(got) if got else math.inf

    checks = []
    if "mean05" in summary:
        checks.append(("0.5 sd: median delay <= 150", med("mean05"), med("mean05") <= 150))
    if "mean025" in summary:
        ds = summary["mean025"]["driftline"]
        share = sum(1 for d in ds if d is not None and d <= WITHIN) / len(ds)
        checks.append(("0.25 sd: >= 95% of runs within 2,500", share, share >= 0.95))
    for case, bar in (("category", 250), ("scale15", 450), ("ramp", 950)):
        if case in summary:
            checks.append((f"{CASES[case].title}: median <= {bar}", med(case), med(case) <= bar))
    if "stationary" in summary:
        fa = summary["stationary"]["driftline"]
        checks.append(("stationary: <= 0.05 false alarms per run per feature", fa, fa <= 0.05))
    persistent = [c for c in ("mean05", "mean025", "category", "scale15", "var15") if c in episodes]
    if persistent:
        ones = sum(1 for c in persistent for x in episodes[c] if x == 1)
        total = sum(len(episodes[c]) for c in persistent)
        checks.append(
            ("a persistent drift gives exactly one episode (runs)", ones / total, ones == total)
        )
    print("\nBars of issue 13 (Driftline, its defaults):")
    for title, value, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {title}: {value:.3g}")
    ph_same = all(
        r[c]["ph_river"] == r[c]["ph_driftline"]
        for r in results
        for c in r
        if isinstance(r[c], dict) and "ph_river" in r[c]
    )
    print(f"river's and Driftline's Page-Hinkley give identical detections: {ph_same}")
    return all(ok for _, _, ok in checks)


# ----------------------------------------------------------- calibration and cost


#: Events per stationary stream of the calibration check.
CALIBRATION_EVENTS = 500_000


def feature_values(ref: ReferenceProfile, s: Stream, name: str) -> np.ndarray:
    """A feature's values as its bank takes them: floats, or the reference's codes."""
    if name in NUMERIC:
        return s.x[NUMERIC.index(name)]
    j = CATEGORICAL.index(name)
    prof = ref.features[name]
    assert prof.kind == "categorical"
    index = {c: i for i, c in enumerate(prof.categories)}
    ours = np.asarray([index.get(c, len(prof.categories)) for c, _ in (C0, C1)[j]])
    return ours[s.c[j]].astype(np.float64)


def calibration_task(args: tuple[int, int, float, int]) -> dict[str, Any]:
    """Stationary runs of the product's banks (the reference's plans on the fast loop's
    kernel) at a budget small enough to measure: episodes opened per feature."""
    seed, run, budget, n_train = args
    ref = build(seed, 10_000 + run, budget, n_train=n_train)
    s = generate(stream_rng(seed, 10_000 + run, f"calib{n_train}"), CALIBRATION_EVENTS, None)
    fired: dict[str, int] = {}
    disabled = 0
    for name, prof in ref.driftline.features.items():
        plan = prof.bank
        if plan is None:
            continue
        disabled += plan.disabled
        det = FeatureBank(plan)
        xs = feature_values(ref.driftline, s, name)
        fired[name] = sum(det.update_many(xs[i : i + 5_000]).size for i in range(0, s.n, 5_000))
    return {
        "alarms": sum(fired.values()),
        "per_feature": fired,
        "events": s.n,
        "disabled": disabled,
    }


def calibration_check(pool: ProcessPoolExecutor, seed: int, runs: int) -> list[dict[str, Any]]:
    print(
        f"\nCalibration check (Driftline's banks, {runs} stationary streams of "
        f"{CALIBRATION_EVENTS:,} events per row, at budgets small enough to count):"
    )
    print(
        f"{'reference rows':>15s}{'budget (events)':>18s}{'expected alarms':>18s}"
        f"{'measured':>10s}{'ratio':>8s}{'rows disabled':>15s}"
    )
    out = []
    for n_train, budget in ((20_000, 20_000.0), (20_000, 200_000.0), (2_000, 20_000.0)):
        tasks = [(seed, r, budget, n_train) for r in range(runs)]
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


def _best_ns(
    make: Callable[[], Any], feed: Callable[[Any, int, int], None], n: int, batch: int
) -> float:
    best = math.inf
    for _ in range(3):
        det = make()
        t = time.process_time()
        for i in range(0, n, batch):
            feed(det, i, i + batch)
        best = min(best, time.process_time() - t)
    return best / n * 1e9


def cost(seed: int, budget: float, quick: bool) -> dict[str, Any]:
    """CPU per event per feature: Driftline's banks against Page-Hinkley; calibration time."""
    rng = np.random.default_rng(seed)
    n = 200_000 if quick else 1_000_000
    x = rng.normal(0.0, 1.0, n)
    train = generate(stream_rng(seed, 0, "cost"), N_EVENTS, None)
    rows = [e["features"] for e in events_of(train)]
    ref = build_reference(TrainingData(features=rows), "cost", "1", seed=seed, created_at=0)
    num = ref.features["x0"].bank
    cat = ref.features["c1"].bank
    assert num is not None and cat is not None
    codes = feature_values(ref, generate(stream_rng(seed, 1, "cost"), n, None), "c1")
    xs0 = X0_MEAN + X0_SD * x
    out: dict[str, Any] = {}
    print("\nCost, CPU ns per event per feature (stationary data, best of 3):")
    for batch in (500, 5_000):
        for label, make, col in (
            ("numeric bank (FeatureBank)", lambda: FeatureBank(num), xs0),
            (f"categorical bank ({len(C1)} categories)", lambda: FeatureBank(cat), codes),
            ("PageHinkley.update_many", lambda: PageHinkley(delta=0.25, alpha=1.0), x),
        ):
            ns = _best_ns(make, lambda d, a, b, col=col: d.update_many(col[a:b]), n, batch)
            out[f"{label}, batch {batch}"] = ns
            print(f"  {label + f', batch {batch}':62s}{ns:8.0f}")
    out["stacked_20_numeric_ns"] = stacked_kernel_ns(seed, quick)
    print(
        f"  {'the fast loop kernel: 20 numeric features stacked, batch 500':62s}"
        f"{out['stacked_20_numeric_ns']:8.0f}"
    )
    zipf = 1.0 / np.arange(1, 51)
    zipf /= zipf.sum()
    names50 = [f"k{i}" for i in range(50)]
    data50 = TrainingData(features=[{"c": names50[k]} for k in rng.choice(50, 20_000, p=zipf)])
    t = time.process_time()
    ref50 = build_reference(data50, "cost", "1", seed=seed, created_at=0)
    secs50 = time.process_time() - t
    plan50 = ref50.features["c"].bank
    assert plan50 is not None
    prof50 = ref50.features["c"]
    assert prof50.kind == "categorical"
    index = {c: i for i, c in enumerate(prof50.categories)}
    codes50 = np.asarray([index[names50[k]] for k in rng.choice(50, n, p=zipf)], np.float64)
    ns50 = _best_ns(
        lambda: FeatureBank(plan50), lambda d, a, b: d.update_many(codes50[a:b]), n, 5_000
    )
    out["categorical_50_ns_per_event_batch_5000"] = ns50
    out["categorical_50_build_seconds"] = secs50
    out["categorical_50_channels"] = len(plan50.groups)
    print(
        f"  {'categorical bank (50 categories, Zipf), batch 5000':62s}"
        f"{ns50:8.0f}   ({len(plan50.groups)} channels, reference build {secs50:.2f} s)"
    )
    ref_rows = rng.normal(0.0, 1.0, (20, 20_000))
    t = time.process_time()
    for i in range(20):
        compile_numeric(f"f{i}", ref_rows[i], n_ref=20_000, target_arl=budget * 20, seed=seed)
    secs = time.process_time() - t
    out["calibration_seconds_20_numeric_features"] = secs
    print(f"  calibration at reference build, 20 numeric features of 20,000 rows: {secs:.2f} s CPU")
    return out


def stacked_kernel_ns(seed: int, quick: bool) -> float:
    """The fast loop's kernel as the monitor runs it: 20 numeric features' banks stacked
    in one CusumBank, channels from a value matrix, batches of 500."""
    rng = np.random.default_rng(seed)
    features, m = 20, 500
    plans = [
        compile_numeric(f"f{i}", rng.normal(0, 1, 20_000), n_ref=20_000, target_arl=2e7, seed=i)
        for i in range(features)
    ]
    layout = BankLayout.of([p for p in plans if p is not None])
    x = rng.normal(0.0, 1.0, (features, m))
    codes = np.zeros((0, m), dtype=np.int64)
    best = math.inf
    for _ in range(3):
        bank = CusumBank(layout)
        t = time.process_time()
        reps = 100 if quick else 400
        for _ in range(reps):
            bank.update_many(layout.channels(x, codes))
        best = min(best, (time.process_time() - t) / reps)
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
    parser.add_argument("--skip", default="", help="comma-separated: calibration,cost")
    parser.add_argument("--json", default="", help="write every figure to this file")
    args = parser.parse_args()
    runs = args.runs or (4 if args.quick else 20)
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    skip = set(args.skip.split(","))
    print(
        f"{runs} runs x {len(cases)} cases, seed {args.seed}, budget "
        f"false_alarm_events={args.budget:,.0f}, {args.workers} workers"
    )
    pol = Policy()
    print(
        f"Driftline defaults: shifts {pol.shifts}, scale_shifts {pol.scale_shifts}, "
        f"category_shifts {pol.category_shifts}, resolve_at {pol.resolve_at}, clip {pol.clip}"
    )
    started = time.time()
    report: dict[str, Any] = {"runs": runs, "seed": args.seed, "budget": args.budget}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        tasks = [(args.seed, r, args.budget, cases) for r in range(runs)]
        results = list(pool.map(one_run, tasks))
        report["results"] = results
        report["summary"] = print_table(results, cases)
        report["episodes"] = print_episodes(results, cases)
        if "concept" in cases:
            report["concept"] = print_concept(results)
        report["bars_pass"] = print_bars(report["summary"], report["episodes"], results)
        builds = np.asarray([r["build_s"] for r in results])
        print(
            f"reference build CPU per run: {builds[:, 0].mean():.2f} s, of which the detector "
            f"banks' calibration about {builds[:, 1].mean():.2f} s (7 features + outputs)"
        )
        if "ks_vs_scipy" in results[0]:
            print(
                f"windowed KS p-values against scipy.stats.ks_2samp: largest gap "
                f"{results[0]['ks_vs_scipy']:.1e}"
            )
        if "batch_invariant" in results[0]:
            print(
                "Driftline: same alerts and detector state for batches of 20,000 / "
                f"1,7,333,5000,2 / 500, states through their bytes: {results[0]['batch_invariant']}"
            )
        if "calibration" not in skip:
            report["calibration"] = calibration_check(pool, args.seed, 4 if args.quick else 12)
    if "cost" not in skip:
        report["cost"] = cost(args.seed, args.budget, args.quick)
    print(f"\nwall time {time.time() - started:.0f} s")
    if args.json:
        with open(args.json, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY))


if __name__ == "__main__":
    main()
