"""The pure core: detection, no false alarms, batch-size invariance, state round trip."""

from __future__ import annotations

import functools

import pytest

from driftline.contract.keys import StateKey
from driftline.core.fastloop import ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer
from support import assert_close

T0 = 1_767_225_600_000
STEP = 10


@functools.cache
def reference() -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    return build_reference(sim.training_data(20_000), "churn", "1", seed=0, created_at=0)


def replay(events, batch=1000, ref=None):
    r = Replayer({("churn", "1"): ref or reference()})
    for i in range(0, len(events), batch):
        r.feed(events[i : i + batch])
    return r.result


def test_half_sigma_shift_in_one_of_20_features_is_alerted_quickly():
    events = list(SimulatedModel(seed=11).events(12_000, shift=Shift(start=6_000, sigmas=0.5)))
    alerts = replay(events).alerts
    firing = [a for a in alerts if a.status == "firing" and a.kind == "input_drift"]
    assert firing, "no input_drift alert"
    first = firing[0]
    assert first.top_features[0].feature == "f03"
    delay = (first.detected_at - T0) // STEP - 6_000
    assert 0 <= delay <= 600, f"detected {delay} events after the shift"
    assert not [a for a in alerts if a.detected_at < T0 + 6_000 * STEP]


def test_categorical_shift_is_confirmed_by_windows():
    shift = Shift(
        start=3_000, feature="none", sigmas=0, cat_feature="region", category="apac", share=0.5
    )
    events = list(SimulatedModel(seed=5).events(6_000, shift=shift))
    alerts = replay(events).alerts
    drift = [a for a in alerts if a.kind == "input_drift" and a.status == "firing"]
    assert drift and drift[0].feature == "region"
    assert drift[0].detector == "window_ks_psi"
    assert drift[0].p_value is not None and drift[0].p_value < 1e-6


@pytest.mark.slow
def test_stationary_200k_events_raise_no_alert():
    sim = SimulatedModel(seed=21)
    r = Replayer({("churn", "1"): reference()})
    buf = []
    for e in sim.events(200_000):
        buf.append(e)
        if len(buf) == 5_000:
            r.feed(buf)
            buf = []
    assert r.result.events == 200_000
    assert r.result.alerts == []


def test_episode_fires_once_and_resolves_after_recovery():
    sim = SimulatedModel(seed=8)
    shifted = list(sim.events(6_000, shift=Shift(start=2_000, sigmas=1.5)))
    after = list(sim.events(6_000, start=6_000))
    alerts = [a for a in replay(shifted + after).alerts if a.kind == "input_drift"]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[0].episode == alerts[1].episode == 1
    assert alerts[0].alert_id != alerts[1].alert_id


def test_batch_boundaries_do_not_change_results():
    events = list(SimulatedModel(seed=2).events(8_000, shift=Shift(start=3_000, sigmas=1.0)))
    a = replay(events, batch=8_000)
    b = replay(events, batch=333)
    assert [x.model_dump() for x in a.alerts] == [x.model_dump() for x in b.alerts]
    key = StateKey("churn", "1")
    # Equal up to floating-point summation order inside vectorised detectors.
    assert_close(a.states[key].to_bytes(), b.states[key].to_bytes())


def test_state_round_trip_through_bytes_mid_stream():
    events = list(SimulatedModel(seed=4).events(6_000, shift=Shift(start=2_500, sigmas=1.0)))
    ref = reference()
    whole = replay(events)
    states: dict[StateKey, ModelState] = {}
    alerts = []
    for i in range(0, len(events), 700):
        res = process_batch(events[i : i + 700], states, lambda m, v: ref)
        alerts += res.alerts
        # Persist and reload every state between batches, as the worker does via Redis.
        states = {k: ModelState.from_bytes(s.to_bytes(), ref) for k, s in states.items()}
    assert [a.alert_id for a in alerts] == [a.alert_id for a in whole.alerts]
    key = StateKey("churn", "1")
    assert_close(states[key].to_bytes(), whole.states[key].to_bytes())


def test_data_quality_missing_and_type_mismatch():
    events = list(SimulatedModel(seed=9).events(3_000))
    for e in events[1_000:]:
        e["features"]["f05"] = None
        e["features"]["f06"] = "oops"
        e["features"]["extra"] = 1
    alerts = [a for a in replay(events).alerts if a.kind == "data_quality"]
    assert alerts and alerts[0].status == "firing"
    named = {f.feature: f.statistic for f in alerts[0].top_features}
    assert named.get("f05") == "missing_rate_excess"
    assert named.get("f06") == "type_mismatch_rate"
    assert "__unknown_features__" in named


def test_warm_up_reference_from_live_events():
    sim = SimulatedModel(seed=6)
    events = list(sim.events(4_000))
    r = Replayer({}, default_policy=Policy())
    r.feed(events)
    assert len(r.result.new_references) == 1
    ref = r.result.new_references[0]
    assert ref.source == "warm-up" and ref.row_count == 2_000
    assert r.result.alerts == []


def test_large_windows_do_not_alert_on_trivial_shifts():
    # 0.03 sd is statistically visible in 20k-event windows but below the PSI floor.
    big = build_reference(
        SimulatedModel(seed=3).training_data(50_000),
        "churn",
        "1",
        policy=Policy(window_events=20_000, ph_threshold=1e9),
        seed=0,
    )
    events = list(SimulatedModel(seed=12).events(60_000, shift=Shift(start=0, sigmas=0.03)))
    alerts = [a for a in replay(events, batch=5_000, ref=big).alerts if a.kind == "input_drift"]
    assert alerts == []
