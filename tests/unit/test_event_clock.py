"""Event time that follows the data (issue 12 item 1; issue 16 rows 4 and 11).

Real cadences through the pure core: one event every 8m43s, daily batches, a week-long
gap, bursts, and streams whose first or some event is far in the future or the past.
Every closed window must carry the real times of its events, alerts the event clock at
the detecting event (never before an alert already published), late and future counts
must name exactly the odd events, and the result must not depend on batch boundaries.
"Stream" runs pass the processing clock (``now_ms``: the time the batch is processed,
here the time of its newest genuine event); "replay" runs pass none, as a replay of a
file does.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.contract.checks import (
    check_prediction,
    decode_prediction_fast,
)
from driftline.contract.columnar import ColumnarBatch, pack_events
from driftline.contract.events import (
    LIMITS,
)
from driftline.contract.keys import StateKey
from driftline.core.fastloop import BatchResult, ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.errors import ContractError
from driftline.offline.replay import report_from_replay
from support import assert_close

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
SEC, MIN, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
CADENCE = 8 * MIN + 43 * SEC  # the public dataset of issue 12
KEY = StateKey("churn", "1")
SIGNING_KEY = "test-signing-key-0123456789"
SRC = str(Path(__import__("driftline").__file__).parents[1])

Now = Callable[[Sequence[dict[str, Any]]], int] | None


@functools.cache
def reference(window_events: int = 500, window_seconds: float = 0.0, least: int = 50) -> Any:
    policy = Policy(
        window_events=window_events, window_seconds=window_seconds, min_window_events=least
    )
    data = SimulatedModel(seed=3).training_data(5_000)
    return build_reference(data, "churn", "1", policy=policy, seed=0, created_at=0)


def events_at(times: Sequence[int], shift: Shift | None = None, seed: int = 7) -> list[Any]:
    evs = list(SimulatedModel(seed=seed).events(len(times), shift=shift))
    for e, t in zip(evs, times, strict=True):
        e["timestamp"] = int(t)
    return evs


def arrival(genuine: Sequence[int]) -> Now:
    """The processing clock of a stream processed as it happens: the batch's newest
    genuine event time (``genuine[i]``: what event ``i``'s time should have been)."""

    def now(batch: Sequence[dict[str, Any]]) -> int:
        return max(genuine[int(e["prediction_id"].split("-")[1])] for e in batch)

    return now


class Run:
    """The core over ``events`` in calls of ``batch`` events."""

    def __init__(
        self, events: list[Any], ref: ReferenceProfile, batch: int = 5_000, now: Now = None
    ) -> None:
        self.states: dict[StateKey, ModelState] = {}
        self.total = BatchResult()
        for i in range(0, len(events), batch):
            call = events[i : i + batch]
            res = process_batch(
                call, self.states, lambda m, v: ref, now_ms=None if now is None else now(call)
            )
            self.total.alerts += res.alerts
            self.total.windows += res.windows
            self.total.late_events += res.late_events
            self.total.future_events += res.future_events

    @property
    def state(self) -> ModelState:
        return self.states[KEY]

    @property
    def spans(self) -> list[tuple[int, int, int]]:
        return [(w["start"], w["end"], w["count"]) for w in self.total.windows]

    def same_as(self, other: Run) -> None:
        assert [a.alert_id for a in self.total.alerts] == [a.alert_id for a in other.total.alerts]
        mine = [a.model_dump() for a in self.total.alerts]
        assert_close(mine, [a.model_dump() for a in other.total.alerts])
        assert_close(self.total.windows, other.total.windows)
        assert_close(self.state.to_bytes(), other.state.to_bytes())


def slots(times: Sequence[int], span: int, least: int) -> list[tuple[int, int, int]]:
    """The time windows a sorted stream should give: events grouped by aligned slot, a
    window closing when an event of a later slot arrives once it holds ``least``."""
    out: list[tuple[int, int, int]] = []
    cur: list[int] = []
    slot = None
    for t in times:
        if slot is not None and t >= slot + span and len(cur) >= least:
            out.append((cur[0], cur[-1], len(cur)))
            cur = []
            slot = None
        if slot is None:
            slot = t - t % span
        cur.append(t)
    return out


# ---------------------------------------------------------------------- real cadences


@pytest.fixture(scope="module")
def nine_minutes() -> tuple[list[int], list[Any]]:
    times = [T0 + i * CADENCE for i in range(50_000)]
    shift = Shift(start=30_000, sigmas=1.5)
    return times, events_at(times, shift)


def test_nine_minute_cadence_count_windows_have_real_times(nine_minutes: Any) -> None:
    times, events = nine_minutes
    replay = Run(events, reference())
    stream = Run(events, reference(), batch=700, now=arrival(times))
    assert replay.spans == [(times[k], times[k + 499], 500) for k in range(0, 50_000, 500)]
    assert (replay.state.late_events, replay.state.future_events) == (0, 0)
    assert (stream.total.late_events, stream.total.future_events) == (0, 0)
    firing = [a for a in replay.total.alerts if a.status == "firing"]
    assert firing and firing[0].kind == "input_drift"
    at = firing[0].detected_at
    assert at in set(times) and times[30_000] <= at <= times[32_000]
    assert times[0] <= firing[0].window.start <= at == firing[0].window.end
    stream.same_as(replay)


def test_nine_minute_cadence_time_windows(nine_minutes: Any) -> None:
    times, events = nine_minutes
    six_hours = reference(window_events=500, window_seconds=6 * 3600.0, least=20)
    replay = Run(events[:10_000], six_hours)
    assert replay.spans == slots(times[:10_000], 6 * HOUR, 20)
    assert len(replay.spans) > 200 and replay.state.late_events == 0
    Run(events[:10_000], six_hours, batch=333, now=arrival(times)).same_as(replay)


def test_daily_batches() -> None:
    # 200 predictions within a minute, once a day, for 40 days; hourly windows.
    times = [T0 + d * DAY + 9 * HOUR + j * 300 for d in range(40) for j in range(200)]
    ref = reference(window_seconds=3600.0, least=50)
    replay = Run(events_at(times), ref, batch=200)
    assert replay.spans == [(times[k], times[k + 199], 200) for k in range(0, 39 * 200, 200)]
    assert (replay.state.late_events, replay.state.future_events) == (0, 0)
    Run(events_at(times), ref, batch=1_000, now=arrival(times)).same_as(replay)


def test_a_week_long_gap() -> None:
    before = [T0 + i * SEC for i in range(7_200)]
    after = [before[-1] + 7 * DAY + i * SEC for i in range(7_200)]
    times = before + after
    ref = reference(window_seconds=600.0, least=50)
    replay = Run(events_at(times), ref)
    assert replay.spans == slots(times, 10 * MIN, 50)
    gap = [w for w in replay.spans if w[1] == before[-1]]
    assert gap == [(T0 + 6_600 * SEC, before[-1], 600)], "the window open at the gap keeps its time"
    assert replay.spans[len(before) // 600][0] == after[0]
    assert replay.state.max_event_ms == after[-1]
    Run(events_at(times), ref, batch=997, now=arrival(times)).same_as(replay)


def test_bursts() -> None:
    # 1,000 events in one second, then ten minutes of silence, twenty times.
    times = [T0 + b * 10 * MIN + j for b in range(20) for j in range(1_000)]
    ref = reference(window_seconds=60.0, least=50)
    replay = Run(events_at(times), ref, batch=1_500)
    assert replay.spans == [(times[k], times[k + 999], 1_000) for k in range(0, 19_000, 1_000)]
    Run(events_at(times), ref, batch=64, now=arrival(times)).same_as(replay)


# ---------------------------------------------------------------------- skewed events


def test_a_first_event_a_day_in_the_future_does_not_stop_windows() -> None:
    # Issue 16 row 11: before, the next 40,000 events were "late" and no window closed.
    genuine = [T0 + i * SEC for i in range(40_001)]
    times = [genuine[0] + DAY, *genuine[1:]]
    ref = reference(window_seconds=60.0, least=50)
    for now in (None, arrival(genuine)):  # a replay, then a stream processed live
        run = Run(events_at(times), ref, batch=1_000, now=now)
        assert (run.state.late_events, run.state.future_events) == (0, 1)
        expected = slots(genuine[1:], MIN, 50)  # the windows of the genuine events...
        first = expected[0]
        assert run.spans == [(first[0], first[1], first[2] + 1), *expected[1:]]  # ...+1
        assert len(run.spans) == 666 and run.state.max_event_ms == genuine[-1]
    head = events_at(times[:3_000])
    Run(head, ref, batch=7).same_as(Run(head, ref, batch=3_000))


def test_a_far_future_event_mid_stream() -> None:
    genuine = [T0 + i * SEC for i in range(20_000)]
    times = list(genuine)
    times[5_000] = genuine[5_000] + 30 * DAY
    ref = reference(window_seconds=60.0, least=50)
    stream = Run(events_at(times), ref, batch=500, now=arrival(genuine))
    assert (stream.state.late_events, stream.state.future_events) == (0, 1)
    assert stream.spans == slots(genuine, MIN, 50), "placed at the clock: no trace in the windows"
    replay = Run(events_at(times), ref, batch=500)
    # Without a processing clock the outlier closes the open window early and opens
    # one 30 days ahead; the next events are late, and once a window's worth of them
    # agree, the window moves back to them: one future event, nothing late.
    assert (replay.state.late_events, replay.state.future_events) == (0, 1)
    assert all(e < T0 + 20_000 * SEC for _, e, _ in replay.spans)
    assert len(replay.spans) in (len(stream.spans), len(stream.spans) + 1)


def test_a_far_past_event_is_late_and_changes_nothing_else() -> None:
    genuine = [T0 + i * SEC for i in range(5_000)]
    times = list(genuine)
    times[2_500] = 0  # 1970
    ref = reference(window_seconds=60.0, least=50)
    run = Run(events_at(times), ref, batch=333)
    assert (run.state.late_events, run.state.future_events) == (1, 0)
    expected = slots([t for t in times if t], MIN, 50)
    got = run.spans
    assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in expected]
    assert sum(c for _, _, c in got) == sum(c for _, _, c in expected) + 1  # folded, not lost


def test_a_whole_stream_ahead_of_the_processing_clock_still_closes_windows() -> None:
    # A producer whose clock runs a day fast: every event is future-dated and placed at
    # the processing clock, so windows follow processing time.
    genuine = [T0 + i * SEC for i in range(6_000)]
    times = [t + DAY for t in genuine]
    ref = reference(window_seconds=60.0, least=50)
    run = Run(events_at(times), ref, batch=100, now=arrival(genuine))
    assert run.state.future_events == 6_000 and run.state.late_events == 0
    # each batch is placed at its processing time; a new one closes the window
    nows = [genuine[k + 99] for k in range(0, 6_000, 100)]
    assert run.spans == [(t, t, 100) for t in nows[:-1]]


def test_count_windows_with_future_events_in_a_stream() -> None:
    genuine = [T0 + i * MIN for i in range(3_000)]
    times = list(genuine)
    for i in (10, 1_200, 2_999):
        times[i] += 365 * DAY
    run = Run(events_at(times), reference(), batch=250, now=arrival(genuine))
    assert run.state.future_events == 3 and run.state.late_events == 0
    assert all(e < T0 + 3_000 * MIN for _, e, _ in run.spans)
    assert Run(events_at(times), reference(), batch=3_000, now=arrival(genuine)).spans == run.spans


@pytest.mark.parametrize("batch", [1, 13, 500])
def test_decisions_do_not_depend_on_batch_boundaries(batch: int) -> None:
    genuine = [T0 + i * 2 * SEC for i in range(1_500)]
    times = list(genuine)
    times[0] += 2 * DAY  # a far-future first event
    times[500] = 5  # a far-past one
    times[1_000] += HOUR  # a future one
    times[1_100:1_150] = times[1_100:1_150][::-1]  # out of order within a window
    ref = reference(window_seconds=60.0, least=20)
    whole = Run(events_at(times), ref, batch=1_500)
    Run(events_at(times), ref, batch=batch).same_as(whole)
    # columnar batches of the same events: the same too
    cols = [ColumnarBatch.from_dict(b) for b in pack_events(events_at(times), max_rows=97)]
    Run(cols, ref, batch=max(1, batch // 50)).same_as(whole)


def test_state_survives_bytes_mid_run_after_skewed_events() -> None:
    genuine = [T0 + i * SEC for i in range(4_000)]
    times = [genuine[0] + DAY, *genuine[1:]]
    ref = reference(window_seconds=60.0, least=50)
    evs = events_at(times)
    states: dict[StateKey, ModelState] = {}
    windows: list[Any] = []
    for i in range(0, 4_000, 30):  # a restart every 30 events, mid late-run included
        res = process_batch(evs[i : i + 30], states, lambda m, v: ref)
        windows += res.windows
        states = {k: ModelState.from_bytes(s.to_bytes(), ref) for k, s in states.items()}
    assert_close(windows, Run(evs, ref).total.windows)


# ---------------------------------------------------------------------- range (row 4)


def test_timestamps_past_year_9999_are_refused_at_the_contract() -> None:
    event = events_at([T0])[0]
    for bad in (2**63, LIMITS.max_timestamp_ms + 1):
        assert "after 9999" in str(check_prediction({**event, "timestamp": bad}))
        with pytest.raises(ContractError):
            decode_prediction_fast(orjson.dumps({**event, "timestamp": bad}))
    assert check_prediction({**event, "timestamp": LIMITS.max_timestamp_ms}) is None


def test_a_state_holding_a_huge_time_keeps_working() -> None:
    # A state stored before the contract refused 2**63 (the crash loop of issue 16
    # row 4): the next batches run, and windows close again.
    ref = reference(window_seconds=60.0, least=50)
    st = ModelState.fresh(KEY, ref)
    st.max_event_ms = 2**63
    st.window.open_ms = 2**63 - 5
    st.window.start_ms = st.window.end_ms = 2**63
    states = {KEY: ModelState.from_bytes(st.to_bytes(), ref)}
    windows: list[Any] = []
    evs = events_at([T0 + i * SEC for i in range(3_000)])
    for i in range(0, 3_000, 500):
        windows += process_batch(evs[i : i + 500], states, lambda m, v: ref).windows
    assert len(windows) >= 45
    assert all(T0 <= w["start"] <= w["end"] < T0 + 3_000 * SEC for w in windows[1:])


def test_times_before_1970_count_as_1970() -> None:
    ref = reference(window_seconds=60.0, least=5)
    evs = events_at([T0 + i * SEC for i in range(200)])
    evs[0]["timestamp"] = "1969-12-31T23:00:00Z"
    states: dict[StateKey, ModelState] = {}
    res = process_batch(evs, states, lambda m, v: ref)
    assert [w["start"] for w in res.windows][0] == 0
    assert np.all(np.array([w["end"] for w in res.windows]) >= 0)


# ---------------------------------------------------------------------- history and report


def test_report_since_2d_on_the_nine_minute_stream(tmp_path: Path) -> None:
    """``report --since 2d`` counts back from the newest window: with real window times
    it finds the windows of the last two days (before: one window, the rest had no
    time), through the replay's history as through the CLI."""
    times = [T0 + i * CADENCE for i in range(4_000)]
    ref = reference(window_events=50)  # a window is 50 events: 7h16m of this stream
    path = tmp_path / "current.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events_at(times)))
    ends = [times[k + 49] for k in range(0, 4_000, 50)]
    since = ends[-1] - 2 * DAY
    recent = [k for k, end in enumerate(ends) if end >= since]
    assert 5 <= len(recent) < 10

    whole = report_from_replay(path, [ref])
    assert (whole["windows"], whole["first"], whole["last"]) == (80, times[0], ends[-1])
    data = report_from_replay(path, [ref], since="2d")
    assert data["since"] == since
    assert data["windows"] == len(recent) and data["events"] == 50 * len(recent)
    assert (data["first"], data["last"]) == (times[50 * recent[0]], ends[-1])
    assert data["t"] and all(t >= since for t in data["t"])

    (tmp_path / "churn.ref").write_bytes(ref.to_sealed(SIGNING_KEY))
    env = {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DRIFTLINE_REDIS__STATE_SIGNING_KEY": SIGNING_KEY,
    }
    args = ["report", "--events", "current.jsonl", "--reference", "churn.ref", "--out", "r.html"]
    cli = subprocess.run(
        [sys.executable, "-m", "driftline", *args, "--since", "2d"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert f", {len(recent)} windows," in cli.stderr


# ---------------------------------------------------------------------- alert times


def backfill_interleaved(n: int, chunk: int, lag: int) -> list[int]:
    """A live stream (one event a second) interleaved, ``chunk`` events at a time, with a
    backfill of the same cadence ``lag`` behind it: the times go back and forth."""
    live = iter(range(T0, T0 + n * SEC, SEC))
    back = iter(range(T0 - lag, T0 - lag + n * SEC, SEC))
    return [next(live) if (i // chunk) % 2 == 0 else next(back) for i in range(n)]


def shifted_then_back(times: Sequence[int], start: int, stop: int) -> list[Any]:
    """Events at ``times`` whose ``f03`` moves by one sd from ``start`` to ``stop``."""
    evs = events_at(times[:stop], Shift(start=start, sigmas=1.0)) + events_at(times[stop:], seed=8)
    for i, e in enumerate(evs):
        e["prediction_id"] = f"churn-{i}"
    return evs


def assert_alert_times_follow_the_clock(alerts: Sequence[Any], times: Sequence[int]) -> None:
    """Per model, alert times never go back; a resolve is never dated before its firing;
    each is an event's time, and the episode's span ends there."""
    seen = set(times)
    newest = -1
    fired: dict[str, int] = {}
    for a in alerts:
        assert a.detected_at >= newest, (a.kind, a.status, a.detected_at - newest)
        newest = a.detected_at
        assert a.detected_at in seen and a.window.start <= a.window.end <= a.detected_at
        if a.status == "firing":
            fired[a.kind] = a.detected_at
        elif a.status == "resolved":
            assert a.detected_at >= fired[a.kind]


@pytest.mark.parametrize("window_seconds", [0.0, 600.0])
def test_a_detection_on_a_backfilled_event_is_dated_at_the_event_clock(
    window_seconds: float,
) -> None:
    # Live events and a backfill six hours behind, 37 events at a time; the drift is
    # first seen on a backfilled event. Before, its alert said six hours earlier than
    # the alert before it (the event's own time); it is dated at the stream's newest
    # time at that event, as every later alert is.
    times = backfill_interleaved(16_000, 37, 6 * HOUR)
    ref = reference(window_seconds=window_seconds, least=20)
    events = shifted_then_back(times, 3_000, 9_000)
    replay = Run(events, ref, batch=700)
    kinds = [(a.kind, a.status) for a in replay.total.alerts]
    assert ("output_drift", "resolved") in kinds and ("input_drift", "firing") in kinds
    assert_alert_times_follow_the_clock(replay.total.alerts, times)
    assert (replay.state.late_events > 0) == (window_seconds > 0)
    clock = np.maximum.accumulate(times).tolist()
    stream = Run(events, ref, batch=333, now=arrival(clock))
    stream.same_as(replay)


def test_a_count_window_of_backfilled_events_alerts_at_the_event_clock() -> None:
    # Count windows of 500 events, every other one backfilled a day behind. A data
    # quality alert used to take its window's newest time: a backfilled window's alert
    # was dated a day before the drift alert published just before it.
    times = backfill_interleaved(8_000, 500, DAY)
    events = shifted_then_back(times, 1_000, 8_000)
    for e in events[4_500:5_000]:  # the tenth window (backfilled) loses f00
        e["features"]["f00"] = None
    run = Run(events, reference(), batch=1_000)
    quality = [a for a in run.total.alerts if a.kind == "data_quality"]
    assert quality and quality[0].status == "firing"
    assert (quality[0].window.start, quality[0].window.end) == (times[4_500], times[4_999])
    assert quality[0].detected_at == max(times[:5_000]) > quality[0].window.end
    assert_alert_times_follow_the_clock(run.total.alerts, times)


# ---------------------------------------------------------------------- late and future, seen


def test_late_and_future_counts_per_model_and_in_the_window_summaries() -> None:
    # Two models: churn has a backfill six hours behind and a few events a day ahead of
    # the processing clock; fraud is in order. Per batch, the result counts each model's
    # late and future-dated events (the metric's increments); a window summary carries
    # its stream's counts so far once there are some, and fraud's never do.
    times = backfill_interleaved(6_000, 37, 6 * HOUR)
    churn = events_at(times)
    ahead = {1_000, 2_500, 4_000}
    for i in ahead:
        churn[i]["timestamp"] = times[i] + DAY
    fraud = events_at(times[:3_000])  # in order: the live half of the same times
    live = sorted(t for t in times if t >= T0)
    for e, t in zip(fraud, live, strict=False):
        e["model_id"], e["timestamp"] = "fraud", t
    ref = reference(window_seconds=600.0, least=20)
    clock = np.maximum.accumulate(times).tolist()
    states: dict[StateKey, ModelState] = {}
    counted = {("churn", "1"): [0, 0], ("fraud", "1"): [0, 0]}
    windows: list[dict[str, Any]] = []
    for i in range(0, 6_000, 500):
        res = process_batch(
            churn[i : i + 500] + fraud[i // 2 : i // 2 + 250],
            states,
            lambda m, v: ref,
            now_ms=clock[min(i + 499, 5_999)],
        )
        for mv, (late, future) in res.late_future.items():
            assert late or future
            counted[mv][0] += late
            counted[mv][1] += future
        assert sum(n for n, _ in res.late_future.values()) == res.late_events
        assert sum(n for _, n in res.late_future.values()) == res.future_events
        windows += res.windows
    st = states[KEY]
    assert counted == {("churn", "1"): [st.late_events, st.future_events], ("fraud", "1"): [0, 0]}
    assert st.future_events == len(ahead) and st.late_events > 2_500
    assert all("late_events" not in w for w in windows if w["model_id"] == "fraud")
    mine = [w for w in windows if w["model_id"] == "churn"]
    assert 0 < mine[-1]["late_events"] <= st.late_events
    assert 0 < mine[-1]["future_events"] <= st.future_events
    for key in ("late_events", "future_events"):  # so far: never fewer than before
        seen = [w.get(key, 0) for w in mine]
        assert seen == sorted(seen)


def test_a_replay_says_how_many_events_were_late(tmp_path: Path) -> None:
    """``driftline replay`` over a JSONL file whose times go back and forth says in one
    line how many events were late and what became of them; a file in order says
    nothing of it."""
    ref = reference(window_seconds=600.0, least=20)
    (tmp_path / "churn.ref").write_bytes(ref.to_sealed(SIGNING_KEY))
    backfilled = events_at(backfill_interleaved(6_000, 37, 6 * HOUR))
    in_order = events_at([T0 + i * SEC for i in range(6_000)])
    env = {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DRIFTLINE_REDIS__STATE_SIGNING_KEY": SIGNING_KEY,
    }
    said = {}
    for name, evs in (("backfilled", backfilled), ("in_order", in_order)):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in evs))
        args = ["replay", "--events", path.name, "--reference", "churn.ref", "--out", "a.jsonl"]
        cli = subprocess.run(
            [sys.executable, "-m", "driftline", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stderr
        said[name] = cli.stderr
    late = Run(backfilled, ref).state.late_events
    assert late > 2_500
    line = f"driftline: {late:,} late events (older than the time window open when they came)"
    assert line in said["backfilled"] and "none moved the event clock" in said["backfilled"]
    assert "late events" not in said["in_order"]
