"""Scenario 9: late, out-of-order, future-dated and duplicate events (exact counters).

The policy under test is :mod:`driftline.core.fastloop.clock`'s: windows follow
partition order; a time window is tumbling and aligned; an event older than the open
window is *late*; one more than ``FUTURE_TOLERANCE_MS`` ahead of the processing clock
(``now_ms``, passed by the worker) is *future-dated*; both are counted and folded into
the open window, never dropped, and neither moves the clock. Duplicates are NOT
removed: the fast loop counts a re-published identical event (same ``prediction_id``)
twice (docs/reliability.md). Real cadences, gaps and far-off events:
tests/unit/test_event_clock.py.

These run the pure core directly (the stream worker runs the same code, and
``test_monitor_stream``/``test_crash_points`` prove stream == replay).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from driftline.contract.keys import StateKey
from driftline.core.fastloop import ModelState, process_batch
from driftline.core.fastloop.clock import FUTURE_TOLERANCE_MS
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.demo.simulate import SimulatedModel
from driftline.offline.replay import Replayer, ReplayResult

T0 = 1_767_225_600_000  # aligned to 10 s
KEY = StateKey("churn", "1")
STEP = 10  # ms between simulated events: 1000 events per 10 s window


@pytest.fixture(scope="module")
def time_ref() -> ReferenceProfile:
    policy = Policy(window_seconds=10.0, min_window_events=50)
    return build_reference(
        SimulatedModel(seed=3).training_data(5_000),
        "churn",
        "1",
        policy=policy,
        seed=0,
        created_at=0,
    )


def _events(n: int) -> list[dict[str, Any]]:
    return list(SimulatedModel(seed=7).events(n, t0_ms=T0, step_ms=STEP))


def _run(ref: ReferenceProfile, events: list[dict[str, Any]], batch: int = 10_000) -> Replayer:
    r = Replayer({("churn", "1"): ref})
    for i in range(0, len(events), batch):
        r.feed(events[i : i + batch])
    return r


class Live:
    """The core as the worker runs it: each batch with the processing clock ``now``."""

    def __init__(self, ref: ReferenceProfile) -> None:
        self.ref = ref
        self.result = ReplayResult()  # alerts and states, kept as a replay keeps them

    def feed(self, events: list[dict[str, Any]], now: int) -> None:
        res = process_batch(events, self.result.states, lambda m, v: self.ref, now_ms=now)
        self.result.alerts.extend(res.alerts)


def _live(
    ref: ReferenceProfile, events: list[dict[str, Any]], now: int, batch: int = 10_000
) -> Live:
    r = Live(ref)
    for i in range(0, len(events), batch):
        r.feed(events[i : i + batch], now)
    return r


def _state(r: Replayer | Live) -> ModelState:
    return r.result.states[KEY]


def _windows(r: Replayer | Live, ref: ReferenceProfile) -> int:
    """Windows closed so far (from the open window's aligned start)."""
    st = _state(r)
    return (st.window.open_ms - T0) // int(ref.policy.window_seconds * 1000)


def test_in_order_baseline(time_ref: ReferenceProfile) -> None:
    r = _run(time_ref, _events(2_500))
    st = _state(r)
    assert (st.events, st.late_events, st.future_events) == (2_500, 0, 0)
    assert _windows(r, time_ref) == 2  # [0,10 s) and [10,20 s) closed; [20,30 s) open
    assert st.window.count == 500
    assert st.max_event_ms == T0 + 2_499 * STEP


def test_out_of_order_within_the_open_window_is_neither_late_nor_lost(
    time_ref: ReferenceProfile,
) -> None:
    evs = _events(2_500)
    shuffled = evs[:2_000] + evs[2_000:][::-1]  # the open window's events, reversed
    r = _run(time_ref, shuffled)
    st = _state(r)
    assert (st.events, st.late_events, st.future_events) == (2_500, 0, 0)
    assert st.window.count == 500 and _windows(r, time_ref) == 2
    assert st.max_event_ms == T0 + 2_499 * STEP


def test_late_events_are_counted_and_folded_into_the_open_window(
    time_ref: ReferenceProfile,
) -> None:
    evs = _events(2_500)
    late = [dict(e, prediction_id=f"late-{i}") for i, e in enumerate(evs[100:103])]  # t < 20 s
    r = _run(time_ref, evs + late)
    st = _state(r)
    assert st.late_events == 3 and st.future_events == 0
    assert st.events == 2_503
    assert st.window.count == 503, "folded into the open window, not dropped"
    assert _windows(r, time_ref) == 2, "a late event reopens nothing"
    assert st.max_event_ms == T0 + 2_499 * STEP, "and does not move the clock"


def test_future_dated_events_are_counted_and_do_not_move_the_clock(
    time_ref: ReferenceProfile,
) -> None:
    evs = _events(2_500)
    newest = T0 + 2_499 * STEP
    now = newest + 1_000  # processed a second after the newest event
    ahead = dict(evs[0], prediction_id="future", timestamp=now + FUTURE_TOLERANCE_MS + 1)
    r = _live(time_ref, [*evs, ahead], now)
    st = _state(r)
    assert (st.events, st.late_events, st.future_events) == (2_501, 0, 1)
    assert st.window.count == 501 and _windows(r, time_ref) == 2
    assert st.max_event_ms == newest

    # The next on-time event still lands in the same open window.
    r.feed([dict(evs[-1], prediction_id="next", timestamp=newest + STEP)], now)
    assert _state(r).window.count == 502 and _windows(r, time_ref) == 2


def test_future_is_judged_against_the_processing_clock_not_the_newest_event(
    time_ref: ReferenceProfile,
) -> None:
    # Before, an event more than 5 minutes after the newest one was future-dated, so a
    # stream with one event every 9 minutes froze its clock (issue 12). A gap of any
    # length moves the clock; only the processing clock says "future".
    evs = _events(2_500)
    newest = T0 + 2_499 * STEP
    later = newest + 9 * 60_000
    r = _live(time_ref, [*evs, dict(evs[0], prediction_id="later", timestamp=later)], later)
    st = _state(r)
    assert st.future_events == 0 and st.max_event_ms == later
    assert _windows(r, time_ref) == (later - T0) // 10_000


def test_an_event_within_the_future_tolerance_moves_the_clock(
    time_ref: ReferenceProfile,
) -> None:
    evs = _events(2_500)
    newest = T0 + 2_499 * STEP
    soon = dict(evs[0], prediction_id="soon", timestamp=newest + FUTURE_TOLERANCE_MS)
    r = _live(time_ref, [*evs, soon], newest)
    st = _state(r)
    assert st.future_events == 0
    assert st.max_event_ms == newest + FUTURE_TOLERANCE_MS
    assert _windows(r, time_ref) == (FUTURE_TOLERANCE_MS + 2_499 * STEP) // 10_000


def test_a_replay_has_no_processing_clock(time_ref: ReferenceProfile) -> None:
    """A file has no arrival times: an event an hour ahead moves the clock there."""
    evs = _events(2_500)
    newest = T0 + 2_499 * STEP
    ahead = dict(evs[0], prediction_id="ahead", timestamp=newest + 3_600_000)
    st = _state(_run(time_ref, [*evs, ahead]))
    assert (st.future_events, st.max_event_ms) == (0, newest + 3_600_000)


def test_duplicates_are_counted_twice_by_the_fast_loop(time_ref: ReferenceProfile) -> None:
    """Documented policy: no dedupe by prediction_id in the fast loop."""
    evs = _events(1_500)
    dup = copy.deepcopy(evs[1_200:1_300])  # re-published, byte-identical
    r = _run(time_ref, evs + dup)
    st = _state(r)
    assert st.events == 1_600
    assert st.window.count == 600, "each duplicate counts once more in its window"
    assert (st.late_events, st.future_events) == (0, 0)


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_time_policy_is_independent_of_batch_boundaries(
    time_ref: ReferenceProfile, batch: int
) -> None:
    evs = _events(2_500)
    newest = T0 + 2_499 * STEP
    now = newest + 1_000
    mixed = [
        *evs[:2_200],
        dict(evs[5], prediction_id="late"),
        dict(evs[6], prediction_id="fut", timestamp=now + FUTURE_TOLERANCE_MS + 5),
        *evs[2_200:2_300][::-1],
        *copy.deepcopy(evs[2_250:2_260]),
        *evs[2_300:],
    ]
    whole, split = _live(time_ref, mixed, now), _live(time_ref, mixed, now, batch=batch)
    a, b = _state(whole), _state(split)
    assert (a.events, a.late_events, a.future_events) == (2_512, 1, 1)
    assert (b.events, b.late_events, b.future_events) == (a.events, a.late_events, a.future_events)
    assert [x.alert_id for x in whole.result.alerts] == [x.alert_id for x in split.result.alerts]
    from support import assert_close

    assert_close(a.to_bytes(), b.to_bytes())
