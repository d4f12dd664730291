"""``driftline_drift_active`` carries the severity of the alert events, so the paging
rules (which take their ``severity`` from it) and the alert topic agree.

Oracle: the alert events of the same run. After every batch of both cores, the series
a worker would export for a (model, version, kind) is 1 exactly while its last alert
is not ``resolved``, and is labelled with that alert's severity.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace as Ep
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from driftline.config import LabelsSettings
from driftline.contract.events import DriftAlert
from driftline.core.reference import build_reference
from driftline.core.slowloop import DriftIndex, MemoryRecords, UnitState, join_batch, plan_lookups
from driftline.demo.sea import SeaScenario, interleave
from driftline.offline.replay import Replayer
from driftline.runtime.drift_flags import DriftFlags, flags_of
from report_scenarios import churn_events, churn_reference

Series = dict[tuple[str, str, str, str], float]


def _gauge() -> Gauge:
    return Gauge(
        "driftline_drift_active",
        "test copy",
        ["model", "version", "kind", "severity"],
        registry=CollectorRegistry(),
    )


def _series(g: Gauge) -> Series:
    return {
        (s.labels["model"], s.labels["version"], s.labels["kind"], s.labels["severity"]): s.value
        for metric in g.collect()
        for s in metric.samples
    }


def _expected(alerts: Iterable[DriftAlert]) -> Series:
    """(model, version, kind, severity of the last alert) -> 1 unless it resolved."""
    last: dict[tuple[str, str, str], DriftAlert] = {}
    for a in alerts:
        last[(a.model_id, a.model_version, a.kind)] = a
    return {(*key, a.severity): 0.0 if a.status == "resolved" else 1.0 for key, a in last.items()}


def _agrees(g: Gauge, alerts: list[DriftAlert]) -> None:
    got = _series(g)
    for key, value in _expected(alerts).items():
        assert got.get(key) == value, (key, value, got)
        others = [k for k in got if k[:3] == key[:3] and k != key]
        assert not others, f"a series with another severity stays: {others}"


def test_the_monitors_series_follow_the_alerts_severity_through_an_escalation():
    """The churn stream's input-drift episode fires as a warning, becomes critical
    (an ``updated`` alert) and resolves; the series follows, batch by batch."""
    replayer = Replayer({("churn", "1"): churn_reference()})
    flags = DriftFlags(gauge := _gauge())
    events = churn_events()
    seen: set[tuple[str, str]] = set()
    for i in range(0, len(events), 1_000):
        replayer.feed(events[i : i + 1_000])
        states = replayer.result.states
        streams = ((k.model_id, k.model_version, st.episodes) for k, st in states.items())
        flags.export(0, flags_of(streams, lambda model: True))
        alerts = replayer.result.alerts
        _agrees(gauge, alerts)
        seen |= {(a.status, a.severity) for a in alerts if a.kind == "input_drift"}
    # The run went through both severities and the end of the episode.
    assert {("firing", "warning"), ("updated", "critical"), ("resolved", "critical")} <= seen
    flags.release(0)
    assert _series(gauge) == {}


@pytest.fixture(scope="module")
def sea_ref() -> Any:
    return build_reference(SeaScenario().training_data(5000), "sea", "1", seed=0, created_at=0)


def test_the_label_joiners_series_follow_the_concept_drift_and_performance_alerts(sea_ref):
    """The slow loop's episodes (SEA's concept switch) as the label joiner exports
    them: from the streams a batch changed (``dirty``)."""
    settings = LabelsSettings()
    preds, labels = SeaScenario(model_id="sea").events(8_000, concept_at=4_000)
    stream = interleave(preds, labels)
    unit, mem, drift, alerts = UnitState(), MemoryRecords(), DriftIndex(), []
    flags = DriftFlags(gauge := _gauge())
    for i in range(0, len(stream), 500):
        chunk = stream[i : i + 500]
        p = [e for k, e in chunk if k == "p"]
        lab = [e for k, e in chunk if k == "l"]
        plan = plan_lookups(p, lab, unit, settings)
        found = mem.lookup(plan)
        res = join_batch(p, lab, plan, found, unit, lambda m, v: sea_ref, drift, settings)
        mem.apply(res)
        alerts += res.alerts
        changed = [st for k in res.dirty if (st := unit.perf.get(k)) is not None]
        streams = ((st.model_id, st.version, st.episodes) for st in changed)
        flags.export(0, flags_of(streams, lambda model: True))
        _agrees(gauge, alerts)
    # Both episodes fire (and stay open to the end): each is paged as its alert says.
    assert {a.kind for a in alerts if a.status == "firing"} == {"concept_drift", "performance"}
    assert {k[2] for k, v in _series(gauge).items() if v == 1} == {"concept_drift", "performance"}


def test_a_model_past_the_metrics_limit_exports_nothing():
    streams = [("other", "1", {"input_drift": Ep(firing=True, severity="critical")})]
    assert flags_of(streams, lambda model: model != "other") == {}


def test_a_batch_of_a_quiet_segment_keeps_the_flag_another_segment_holds():
    """A segmented model: segment ``eu``'s episode fires, then a batch touches only the
    quiet segment ``us``. The model's series stays 1 (before, it went to 0 and
    Alertmanager resolved a page Driftline still held firing) until ``eu`` resolves; a
    released partition forgets its segments."""
    flags = DriftFlags(gauge := _gauge())
    key = ("churn", "3", "input_drift")
    firing = {"input_drift": Ep(firing=True, severity="critical")}
    quiet = {"input_drift": Ep(firing=False, severity="warning")}
    everyone = lambda model: True  # noqa: E731
    flags.export_streams(0, [("churn", "3", "eu", firing), ("churn", "3", "us", quiet)], everyone)
    assert _series(gauge) == {(*key, "critical"): 1.0}
    flags.export_streams(0, [("churn", "3", "us", quiet)], everyone)
    assert _series(gauge) == {(*key, "critical"): 1.0}
    flags.export_streams(0, [("churn", "3", "eu", quiet)], everyone)
    assert _series(gauge) == {(*key, "critical"): 0.0}
    flags.release(0)
    assert _series(gauge) == {} and flags.segments == {}
    flags.export_streams(1, [("churn", "3", "us", quiet)], everyone)
    assert _series(gauge) == {(*key, "warning"): 0.0}  # nothing of partition 0 is folded in
