"""The multivariate detector in the fast loop (issue 15): alerts, one episode, state.

The reference has f01 following f00 (latent correlation +0.8, as the golden scenario
``fast_multivariate``); streams reverse or keep that, shift one feature, or lose values.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from driftline.contract.keys import StateKey
from driftline.core.fastloop import ModelState, process_batch
from driftline.core.fastloop.multivariate import FEATURE
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from support import couple

T0 = 1_767_225_600_000
STEP = 10


@functools.cache
def reference(multivariate: bool = True) -> ReferenceProfile:
    data = SimulatedModel(seed=3).training_data(20_000)
    couple(data.features, [0.8] * 20_000)
    policy = Policy(multivariate=multivariate)
    return build_reference(data, "churn", "1", policy=policy, seed=0, created_at=0)


def stream(seed: int, n: int, rho: Any, shift: Shift | None = None) -> list[dict[str, Any]]:
    events = list(SimulatedModel(seed=seed).events(n, shift=shift))
    couple([e["features"] for e in events], [rho(i) for i in range(n)])
    return events


def run(events: list[dict[str, Any]], batch: int = 700, reload: bool = False) -> Any:
    ref = reference()
    states: dict[StateKey, ModelState] = {}
    alerts, windows = [], []
    for i in range(0, len(events), batch):
        res = process_batch(events[i : i + batch], states, lambda m, v: ref)
        alerts += res.alerts
        windows += res.windows
        if reload:
            states = {k: ModelState.from_bytes(s.to_bytes(), ref) for k, s in states.items()}
    return alerts, windows, states


def at(alert: Any) -> int:
    return (alert.detected_at - T0) // STEP


def rows(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for w in windows for t in w["tests"] if t["feature"] == FEATURE]


def test_correlation_reversal_opens_one_episode_naming_the_pair() -> None:
    events = stream(31, 8_000, lambda i: 0.8 if i < 3_000 else -0.8)
    alerts, windows, _ = run(events)
    drift = [a for a in alerts if a.kind == "input_drift"]
    assert [(a.status, a.detector) for a in drift] == [("firing", "multivariate")]
    first = drift[0]
    assert 3_000 <= at(first) < 3_300
    assert {f.feature for f in first.top_features[:2]} == {"f00", "f01"}
    assert first.top_features[0].statistic == "joint_change"
    assert first.statistic >= first.threshold > 0 and first.p_value is None
    # The statistic over time, with its threshold, in every window summary.
    levels = rows(windows)
    assert len(levels) == len(windows) and {r["threshold"] for r in levels} == {1.0}
    assert max(r["value"] for r in levels[:5]) < 1.0 and levels[-1]["value"] >= 1.0
    assert levels[-1]["drifted"] and not levels[0]["drifted"]


def test_a_mean_shift_gives_one_episode_not_two() -> None:
    # A 1.5 sd shift of f00 also breaks its relation with f01: the multivariate detector
    # fires too, inside the episode the univariate detectors opened.
    events = stream(32, 8_000, lambda i: 0.8, Shift(start=3_000, feature="f00", sigmas=1.5))
    alerts, windows, _ = run(events)
    drift = [a for a in alerts if a.kind == "input_drift" and a.status == "firing"]
    assert len(drift) == 1 and drift[0].detector != "multivariate"
    assert max(r["value"] for r in rows(windows)) >= 1.0


def test_values_going_missing_are_data_quality_not_joint_drift() -> None:
    events = stream(33, 6_000, lambda i: 0.8)
    for e in events[2_000:]:
        e["features"]["f00"] = None  # f00 gone: its events leave the joint watch
        e["features"]["f05"] = "oops"
    alerts, windows, states = run(events)
    kinds = {(a.kind, a.detector) for a in alerts if a.status == "firing"}
    assert ("data_quality", "data_quality") in kinds
    assert not [a for a in alerts if a.detector == "multivariate"]
    (st,) = states.values()
    assert st.mv is not None and st.mv.n == 6_000
    assert max(r["value"] for r in rows(windows)[5:]) < 1.0


def test_episode_resolves_once_the_pair_moves_together_again() -> None:
    events = stream(34, 14_000, lambda i: -0.8 if 3_000 <= i < 6_000 else 0.8)
    alerts, _, states = run(events)
    drift = [a for a in alerts if a.kind == "input_drift"]
    # Issue 13's episodes: it resolves when the detector has returned (not when a
    # window test stays quiet), and the resolved alert carries the episode's summary.
    assert [(a.status, a.detector) for a in drift] == [
        ("firing", "multivariate"),
        ("resolved", "multivariate"),
    ]
    resolved = drift[1]
    assert at(resolved) >= 6_000 and resolved.episode == drift[0].episode
    assert resolved.feature == FEATURE and resolved.statistic >= resolved.threshold == 1.0
    (st,) = states.values()
    assert st.mv is not None and not st.mv.drifting


def test_batches_and_state_reloads_do_not_change_anything() -> None:
    events = stream(35, 6_000, lambda i: 0.8 if i < 2_500 else 0.0)
    want_alerts, want_windows, want_states = run(events, batch=6_000)
    for batch, reload in ((333, True), (1_234, False)):
        alerts, windows, states = run(events, batch=batch, reload=reload)
        assert [a.model_dump() for a in alerts] == [a.model_dump() for a in want_alerts]
        assert rows(windows) == rows(want_windows)
        (got,), (want,) = states.values(), want_states.values()
        assert got.mv is not None and want.mv is not None and got.mv.same_state(want.mv)


def test_states_carry_the_detector_only_with_a_model_and_older_states_load() -> None:
    events = stream(36, 1_200, lambda i: 0.8)
    _, _, states = run(events)
    (st,) = states.values()
    record = orjson.loads(st.to_bytes())
    assert "mv" in record and orjson.loads(record["mv"])["t"] == "mv_detector"
    # A state written before the detector existed (no "mv"): a fresh detector.
    del record["mv"]
    old = ModelState.from_bytes(orjson.dumps(record), reference())
    assert old.mv is not None and old.mv.n == 0
    plain = reference(multivariate=False)
    st2 = ModelState.fresh(st.key, plain)
    assert st2.mv is None and "mv" not in orjson.loads(st2.to_bytes())


def test_report_and_latest_record_show_the_joint_statistic(tmp_path: Any) -> None:
    from driftline.contract.history import latest_entry
    from driftline.offline.replay import replay_history
    from driftline.views.report.build import ReportInput, build_report
    from driftline.views.report.render import render_report
    from report_scenarios import write_jsonl

    events = stream(37, 6_000, lambda i: 0.8 if i < 2_000 else -0.8)
    path = write_jsonl(tmp_path / "events.jsonl", events)
    hists, refs = replay_history(path, {("churn", "1"): reference()})
    data = build_report(ReportInput("churn", hists["churn"], refs, source="test"))
    joint = data["joint"]
    assert joint["threshold"] == 1.0 and joint["windows"] == len(data["t"]) == 12
    assert joint["drifted_windows"] >= 7 and joint["peak"] >= 1.0
    assert set(joint["named"][:2]) == {"f00", "f01"}
    over_time = {s["name"]: s for s in data["top_over_time"]}
    assert over_time["joint (multivariate)"]["psi"] == joint["values"]
    page = render_report(data)
    assert "Joint behaviour (multivariate) drifted in" in page and "f00" in page
    # The status page reads the latest-window record: it carries the level
    # (tests/ui/test_status_ui.py reads it back from Redis through the page).
    record = orjson.loads(latest_entry(hists["churn"].windows[-1]))
    assert record["joint"]["drifted"] and record["joint"]["value"] >= 1.0


def _numbers(v: Any) -> int:
    """How many numbers a decoded JSON value holds."""
    if isinstance(v, dict):
        return sum(_numbers(x) for x in v.values())
    if isinstance(v, list):
        return sum(_numbers(x) for x in v)
    return int(isinstance(v, int | float) and not isinstance(v, bool))


def test_three_hundred_features_bounded_components_and_state() -> None:
    # 300 numeric features (and the simulator's two categoricals): the model keeps at
    # most 50 components, so the per-stream state grows with k^2 + d, not d^2.
    n = 300
    data = SimulatedModel(n, seed=4).training_data(4_000)
    couple(data.features, [0.8] * 4_000, n)
    ref = build_reference(data, "churn", "1", seed=0, created_at=0)
    model = ref.multivariate
    assert model is not None and model.d >= n and model.k == 50
    assert model.channel_names == ("t2", "spe")
    events = list(SimulatedModel(n, seed=5).events(5_000))
    couple([e["features"] for e in events], [0.8 if i < 1_000 else -0.8 for i in range(5_000)], n)
    states: dict[StateKey, ModelState] = {}
    alerts = []
    for i in range(0, len(events), 500):
        alerts += process_batch(events[i : i + 500], states, lambda m, v: ref).alerts
    assert [(a.kind, a.status, a.detector) for a in alerts] == [
        ("input_drift", "firing", "multivariate")
    ]
    assert 1_000 <= at(alerts[0]) < 5_000
    assert {f.feature for f in alerts[0].top_features[:2]} == {"f00", "f01"}
    (st,) = states.values()
    record = orjson.loads(orjson.loads(st.to_bytes())["mv"])
    k, d = model.k, model.d
    per_sketch = k * (k + 1) + k + d  # s2 is stored whole (k x k), s1 (k), sq (d)
    assert _numbers(record) <= 3 * per_sketch + 64 < d * d / 4
    back = ModelState.from_bytes(st.to_bytes(), ref)
    assert back.mv is not None and back.mv.same_state(st.mv)


def test_the_episode_stays_open_while_the_detector_is_away() -> None:
    # f10 shifts (events 2,000-4,999): the univariate banks open the input_drift
    # episode; the pair reverses during it (3,000-8,999): the multivariate detector
    # adds nothing to the open episode, but f10's return does not resolve it while the
    # pair is still away; it resolves once the pair moves together again.
    rho = lambda i: -0.8 if 3_000 <= i < 9_000 else 0.8  # noqa: E731
    shifted = stream(38, 14_000, rho, Shift(start=2_000, feature="f10", sigmas=1.5))
    events = shifted[:5_000] + stream(38, 14_000, rho)[5_000:]
    alerts, _, states = run(events)
    drift = [a for a in alerts if a.kind == "input_drift"]
    firing = [a for a in drift if a.status == "firing"]
    assert len(firing) == 1 and firing[0].detector == "cusum" and firing[0].feature == "f10"
    assert not [a for a in drift if a.detector == "multivariate" and a.status != "resolved"]
    resolved = [a for a in drift if a.status == "resolved"]
    assert len(resolved) == 1 and at(resolved[0]) >= 9_000
    (st,) = states.values()
    assert st.mv is not None and not st.mv.drifting
