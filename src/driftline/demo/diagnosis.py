"""Seeded diagnosis scenarios: four causes of a change, the monitor's alerts in three orders.

Used by ``bench/bench_diagnosis.py`` (the confusion table) and the unit tests. A run is
a stream of river's SEA (``river.datasets.synth``, through :class:`.sea.SeaScenario`)
scored by a slightly wrong model (its boundary at ``x0 + x1 = 8.6`` where variant 0's
is 8: it errs, with little confidence, just above 8), a change at prediction
``change``, labels 200-300 predictions late, in one of four cases:

* ``concept``: the labelling rule switches (SEA variant 0 -> 2: ``x0 + x1 > 7``, so the
  model is now wrong, fairly confidently, between 7 and 8.6); inputs unchanged;
* ``benign``: the irrelevant input ``x2`` shrinks (covariate shift; accuracy unchanged);
* ``harmful``: ``x0`` and ``x1`` are pulled towards the model's boundary (a covariate
  shift to where the model is less sure and less right);
* ``concept+x2``: the concept switch and the irrelevant shift at once.

The monitor's core (``process_batch``, on a reference built from labelled training
rows) raises its input-drift alerts on the predictions; the joiner's core
(``join_batch``) joins the labels, and reads the monitor's alerts in one of three
orders: ``monitor-first`` (all before any label), ``joiner-first`` (only after every
label, then one empty batch, as the worker does when the alert topic brings news) and
``interleaved`` (each once the joiner reaches the label time it was raised at).

Beside each run, what the rule before issue 13 said on the same run
(:class:`OverlapRule`): a slow-loop alert whose window meets an input-drift interval
the joiner has read is ``covariate_shift_harmful``, else ``concept_drift``; an
input-drift episode is ``covariate_shift_harmful`` when the predictions labelled
*after* the joiner read it are clearly under the accuracy threshold, else
``input_drift_benign``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.config import LabelsSettings
from driftline.contract.keys import StateKey
from driftline.core.fastloop import ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.core.slowloop import (
    DriftIndex,
    JoinResult,
    MemoryRecords,
    PerfState,
    UnitState,
    join_batch,
    plan_lookups,
    stream_key,
)
from driftline.core.slowloop.diagnosis import overlap_diagnosis, wilson_upper
from driftline.core.slowloop.episodes import Rules
from driftline.demo.sea import SeaScenario, interleave

__all__ = ["CASES", "ORDERS", "OverlapRule", "Run", "run_case"]

#: Case -> the diagnosis it should get.
CASES: dict[str, str] = {
    "concept": "concept_drift",
    "benign": "input_drift_benign",
    "harmful": "covariate_shift_harmful",
    "concept+x2": "concept_drift",
}
ORDERS = ("monitor-first", "joiner-first", "interleaved")
MODEL_THRESHOLD = 8.6
SETTINGS = LabelsSettings(bucket_seconds=5.0, grace_seconds=30.0)


@dataclass
class Run:
    case: str
    order: str
    seed: int
    first_alert: str | None
    final: str | None
    input_alerts: int
    #: Slow-loop alerts that resolved (every change here persists: each is a flap).
    resolved: int = 0
    #: Slow-loop alerts about predictions made before the change (false alarms).
    early: int = 0
    #: What the rule before issue 13 said on the same run (:class:`OverlapRule`).
    old_first: str | None = None
    old_final: str | None = None

    @property
    def verdict(self) -> str:
        """What this run says: the first slow-loop alert's diagnosis and the final one
        must agree (benign: no slow-loop alert at all)."""
        if self.first_alert is not None and self.first_alert != self.final:
            return f"{self.first_alert}/{self.final}"
        return str(self.final)

    @property
    def right(self) -> bool:
        return _right(self.case, self.first_alert, self.final, self.early)

    @property
    def old_right(self) -> bool:
        """Whether the rule before issue 13 was right on this run."""
        return _right(self.case, self.old_first, self.old_final, self.early)


def _right(case: str, first: str | None, final: str | None, early: int) -> bool:
    want = CASES[case]
    if case == "benign":
        return first is None and final == want
    return early == 0 and first == want and final == want


class OverlapRule:
    """The diagnosis before issue 13, replayed beside the core on the same run.

    A slow-loop alert: ``covariate_shift_harmful`` if its window meets an input-drift
    interval the joiner has read when it fires, else ``concept_drift``. An input-drift
    episode: the predictions made during it and labelled after the joiner read it are
    tallied; with half a window of them, ``covariate_shift_harmful`` if their accuracy
    is clearly (upper Wilson bound) under the threshold, else ``input_drift_benign``.
    The current diagnosis: a firing slow-loop episode's, else the newest episode's.
    (The old code judged the episodes at each window close; here after each batch.)
    """

    def __init__(self, drift: DriftIndex) -> None:
        self.drift = drift
        self.tally: dict[str, list[int]] = {}
        self.verdicts: dict[str, str] = {}
        self.alerts: dict[str, str] = {}

    def joined(self, pred: Mapping[str, Any], label: Mapping[str, Any]) -> None:
        """One label joined to its prediction (tallied by the intervals read so far)."""
        right = int(pred["prediction"] == label["label"])
        for ep in self.drift.containing(pred["model_id"], pred["model_version"], pred["timestamp"]):
            t = self.tally.setdefault(ep, [0, 0])
            t[0] += 1
            t[1] += right

    def fired(self, alert: Any, st: PerfState) -> None:
        """A slow-loop alert fired: its diagnosis by overlap, as read now."""
        said = overlap_diagnosis(self.drift, st, alert.window.start, alert.window.end)
        self.alerts[f"{alert.kind}#{alert.episode}"] = said

    def judge(self, st: PerfState) -> None:
        """The input-drift episodes' verdicts, from the tallies."""
        thr = Rules(SETTINGS, JoinResult(), self.drift).threshold(st)
        if thr is None:
            return
        for ep, (n, k) in self.tally.items():
            if n >= max(20, SETTINGS.window_labels // 2):
                harmful = wilson_upper(k, n, SETTINGS.confidence_z) < thr
                self.verdicts[ep] = "covariate_shift_harmful" if harmful else "input_drift_benign"

    def current(self, st: PerfState) -> str | None:
        """What the old rule says about the stream now."""
        for kind in ("concept_drift", "performance"):
            ep = st.episodes.get(kind)
            if ep is not None and ep.firing:
                return self.alerts.get(f"{kind}#{ep.number}")
        if self.verdicts:
            newest = max(self.verdicts, key=lambda e: (int(e.rsplit("#", 1)[1]), e))
            return self.verdicts[newest]
        return None


def scenario(seed: int) -> SeaScenario:
    return SeaScenario(model_id="sea", seed=seed, model_threshold=MODEL_THRESHOLD)


def reference(seed: int) -> ReferenceProfile:
    sc = scenario(seed)
    return build_reference(
        sc.training_data(5000), "sea", "1", policy=Policy(window_events=500), seed=0, created_at=0
    )


def stream(case: str, seed: int, n: int, change: int) -> tuple[list[Any], list[Any]]:
    kw: dict[str, Any] = {"delay_events": 200, "jitter_events": 100}
    if case in ("concept", "concept+x2"):
        kw["concept_at"] = change
        kw["variant_after"] = 2
    if case in ("benign", "concept+x2"):
        kw["covariate_at"] = change
    if case == "harmful":
        kw["squeeze_at"] = change
    return scenario(seed).events(n, **kw)


def monitor_alerts(preds: Sequence[Mapping[str, Any]], ref: ReferenceProfile) -> list[Any]:
    """The monitor's input-drift alerts on the predictions (its pure core)."""
    states: dict[StateKey, ModelState] = {}
    out = []
    for i in range(0, len(preds), 1000):
        res = process_batch(preds[i : i + 1000], states, lambda m, v: ref)
        out += [a.model_dump(mode="json") for a in res.alerts if a.kind == "input_drift"]
    return out


def run(
    case: str,
    order: str,
    seed: int,
    ref: ReferenceProfile,
    preds: list[Any],
    labels: list[Any],
    inputs: list[Any],
    change: int,
) -> Run:
    """One run of the joiner's core, the monitor's alerts read in ``order``."""
    drift = DriftIndex()
    if order == "monitor-first":
        for a in inputs:
            drift.observe(a)
    pending = sorted(inputs, key=lambda a: a["detected_at"])
    unit, mem = UnitState(), MemoryRecords()
    slow: list[Any] = []
    resolved: list[Any] = []
    items = interleave(preds, labels)
    by_id = {p["prediction_id"]: p for p in preds}
    old = OverlapRule(drift)
    key = stream_key("sea", "1", "")

    def batch(p: list[Any], lab: list[Any]) -> None:
        plan = plan_lookups(p, lab, unit, SETTINGS)
        res = join_batch(p, lab, plan, mem.lookup(plan), unit, lambda m, v: ref, drift, SETTINGS)
        mem.apply(res)
        fired = [a for a in res.alerts if a.status == "firing"]
        slow.extend(fired)
        resolved.extend(a for a in res.alerts if a.status == "resolved")
        # Every label of these streams joins: labels come 200+ predictions late.
        for e in lab:
            old.joined(by_id[e["prediction_id"]], e)
        st = unit.perf.get(key)
        if st is not None:
            for a in fired:
                old.fired(a, st)
            old.judge(st)

    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        labs = [e for k, e in chunk if k == "l"]
        if order == "interleaved" and labs:
            now = labs[-1]["timestamp"]
            while pending and pending[0]["detected_at"] <= now:
                drift.observe(pending.pop(0))
        batch([e for k, e in chunk if k == "p"], labs)
    if order != "monitor-first":
        for a in pending if order == "interleaved" else inputs:
            drift.observe(a)
        batch([], [])  # the worker's pass when the alert topic brings news
    st = unit.perf[key]
    first = slow[0].diagnosis if slow else None
    old_first = old.alerts.get(f"{slow[0].kind}#{slow[0].episode}") if slow else None
    sc = scenario(seed)
    early = sum(1 for a in slow if (a.window.end - sc.t0_ms) // sc.step_ms < change)
    return Run(
        case,
        order,
        seed,
        first,
        st.current_diagnosis(),
        len(inputs),
        len(resolved),
        early,
        old_first,
        old.current(st),
    )


def run_case(case: str, seed: int, n: int = 20_000, change: int = 10_000) -> list[Run]:
    """One case on one seed, in every order (the streams and the monitor's alerts are
    computed once)."""
    ref = reference(seed)
    preds, labels = stream(case, seed, n, change)
    inputs = monitor_alerts(preds, ref)
    return [run(case, order, seed, ref, preds, labels, inputs, change) for order in ORDERS]
