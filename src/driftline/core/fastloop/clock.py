"""Event time: where each event falls, when a window closes, late and future events.

The rules (docs/architecture.md, "Event time", says why):

1. **Processing clock.** The caller passes ``now_ms``, the time the batch is processed
   (the worker: its wall clock). An event stamped more than ``future_tolerance_ms``
   after it is *future-dated*: counted, folded into the open window (never dropped)
   and *placed* at the newest trusted event time (the event clock below), or at
   ``now_ms`` while there is none; it never moves the event clock. Without ``now_ms``
   (a replay of a file, which has no arrival times) no event is future-dated.
2. **Event clock** (``ModelState.max_event_ms``): the newest time of the events that
   are not future-dated. A gap of any length (minutes, days, a week) moves it.
3. **Count windows** close every ``window_events`` events. **Time windows** are
   tumbling, aligned to multiples of ``window_seconds``; the open window closes when an
   event placed at or after its end arrives and it holds ``min_window_events``, and the
   next window is the one that holds that event (empty windows in a gap are skipped).
4. **Late**: an event placed before the open time window is counted, folded into the
   open window, and moves neither the clock nor the window's start and end.
5. **A window that rests on one event.** When a time window's only on-time event
   (the one that opened it) is followed by ``min_window_events`` late events and
   nothing else, that one event was the outlier (far in the future of the stream): it
   is counted as future-dated instead, the late events are on time after all, and the
   window and the clock move back to them. So one far-future event cannot stop
   windows from closing, with or without a processing clock (a replay, or a stream
   whose data is older than its processing clock).
6. **A window's newest time must not stand alone.** When a window closes, an event
   newer by more than ``future_tolerance_ms`` than every other event of the window,
   before and after it, is an outlier: it is counted as future-dated and the window
   ends at its newest other event (without a processing clock nothing else catches an
   outlier that lands inside a window).
7. **Range.** Event times are clipped to ``[0, LIMITS.max_timestamp_ms]`` (the contract
   refuses others) so the arithmetic holds whatever a stored state contains.

A window's ``start_ms``/``end_ms`` are the earliest and newest placed times of its
on-time events, so every closed window has real times. ``data.clock`` holds the event
clock at each event (after it, and never before its placed time): what a detection at
that event is dated, so a late event's detection is not dated before events the stream
already saw (rules 5 and 6 move the clock back when they find its newest time was a
stray event). The decisions depend on the events, the state and ``now_ms`` only, never
on batch boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftline.core.fastloop.plan import MAX_TIME_MS, SegmentArrays
from driftline.core.fastloop.result import BatchResult
from driftline.core.fastloop.state import ModelState, WindowState
from driftline.core.reference import Policy

__all__ = [
    "FUTURE_TOLERANCE_MS",
    "ProcessingClock",
    "advance",
    "open_next_window",
    "settle_window_end",
]

#: Default tolerance of event times ahead of the processing clock (clock skew between
#: producers and the monitor); ``DRIFTLINE_MONITOR__FUTURE_TOLERANCE_SECONDS``.
FUTURE_TOLERANCE_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class ProcessingClock:
    """When the batch is processed (None: unknown, as in a replay) and how far ahead
    of that an event time may be before it is future-dated."""

    now_ms: int | None = None
    tolerance_ms: int = FUTURE_TOLERANCE_MS

    @property
    def horizon(self) -> int | None:
        """The latest event time that is not future-dated (None: no limit)."""
        return None if self.now_ms is None else self.now_ms + self.tolerance_ms


def advance(
    st: ModelState,
    pol: Policy,
    clock: ProcessingClock,
    data: SegmentArrays,
    start: int,
    result: BatchResult,
) -> int:
    """Place the events from ``start`` that join the open window; where it ends.

    Updates the event clock, the window's start and end, the late and future counts,
    and ``data.placed`` (each event's placed time) for the events ``start:end``, and
    returns ``end``: the index of the first event of the next window, or ``data.n``.
    The caller counts ``start:end`` into the window and, if ``end < n``, closes it.
    """
    _sanitise(st.window, st)
    if pol.window_seconds <= 0:
        end = min(data.n, start + pol.window_events - st.window.count)
        if not _in_order(st, clock, data, start, end, None):
            _walk(st, pol, clock, data, start, end, 0, result)
        return end
    span = int(pol.window_seconds * 1000)
    if st.window.open_ms < 0:
        t0 = _place(st, clock, int(data.t64[start]))
        st.window.open_ms = t0 - t0 % span
    if st.late_run == 0:
        end = _time_cut(st, pol, span, data, start)
        # The event that closes the window must not be future-dated either.
        if not _future(clock, data, end, min(end + 1, data.n)) and _in_order(
            st, clock, data, start, end, st.window.open_ms
        ):
            if end < data.n:
                data.placed[end] = data.t64[end]
            return end
    return _walk(st, pol, clock, data, start, data.n, span, result)


def open_next_window(st: ModelState, pol: Policy, data: SegmentArrays, at: int) -> None:
    """After a close: the time window that holds event ``at`` (its placed time)."""
    if pol.window_seconds > 0:
        span = int(pol.window_seconds * 1000)
        t = int(data.placed[at])
        st.window.open_ms = t - t % span


# ---------------------------------------------------------------------- the fast path


def _time_cut(st: ModelState, pol: Policy, span: int, data: SegmentArrays, start: int) -> int:
    """Where the open time window ends if ``start:`` are all on time (no future, no late)."""
    w = st.window
    need = start + max(0, pol.min_window_events - w.count)
    t = data.t64[need:]
    over = np.flatnonzero(t >= w.open_ms + span)
    return need + int(over[0]) if over.size else data.n


def _future(clock: ProcessingClock, data: SegmentArrays, a: int, b: int) -> bool:
    """Whether an event of ``a:b`` is future-dated."""
    horizon = clock.horizon
    return horizon is not None and b > a and int(data.t64[a:b].max()) > horizon


def _in_order(
    st: ModelState,
    clock: ProcessingClock,
    data: SegmentArrays,
    start: int,
    end: int,
    open_ms: int | None,
) -> bool:
    """Book events ``start:end`` at once when none is future-dated or late.

    Returns False (and books nothing) otherwise: the per-event walk then decides.
    """
    if end <= start:
        return True
    t = data.t64[start:end]
    if _future(clock, data, start, end):
        return False
    if open_ms is not None and int(t.min()) < open_ms:
        return False
    data.placed[start:end] = t
    _clock_run(st, data, start, end)
    w = st.window
    k = int(t.argmax())
    lo, hi = int(t.min()), int(t[k])
    st.max_event_ms = max(st.max_event_ms, hi)
    w.start_ms = lo if w.start_ms < 0 else min(w.start_ms, lo)
    if hi > w.end_ms:  # a new newest time: as the walk would, event by event
        w.top_before = max(w.end_ms, int(t[:k].max())) if k else w.end_ms
        w.after_top = int(t[k + 1 :].max()) if k + 1 < t.size else -1
        w.end_ms = hi
    else:
        w.after_top = max(w.after_top, hi)
    w.on_time += end - start
    return True


# ---------------------------------------------------------------------- event by event


def _walk(
    st: ModelState,
    pol: Policy,
    clock: ProcessingClock,
    data: SegmentArrays,
    start: int,
    stop: int,
    span: int,
    result: BatchResult,
) -> int:
    """The rules one event at a time, from ``start``; for time windows (``span``) it
    returns at the first event of the next window, else at ``stop``."""
    w = st.window
    times = data.t64
    horizon = clock.horizon
    least = max(pol.min_window_events, 1)
    for i in range(start, stop):
        raw = int(times[i])
        future = horizon is not None and raw > horizon
        t = _place(st, clock, raw) if future else raw
        data.placed[i] = t
        if span and t < w.open_ms:
            _late(st, t, least, span, result)
            data.clock[i] = max(st.max_event_ms, t)
            continue
        if span and t >= w.open_ms + span and w.count + (i - start) >= pol.min_window_events:
            _settle_late_run(st, result)
            return i
        _settle_late_run(st, result)
        if future:
            st.future_events += 1
            result.future_events += 1
        else:
            st.max_event_ms = max(st.max_event_ms, t)
            w.on_time += 1
        w.start_ms = t if w.start_ms < 0 else min(w.start_ms, t)
        _newest(w, t)
        data.clock[i] = max(st.max_event_ms, t)
    return stop


def _clock_run(st: ModelState, data: SegmentArrays, start: int, end: int) -> None:
    """The event clock at each of events ``start:end``, all on time and placed at their
    own times: the newest time so far, from the clock before them (before
    ``st.max_event_ms`` takes them in)."""
    run = data.clock[start:end]
    np.maximum.accumulate(data.t64[start:end], out=run)
    if st.max_event_ms > int(run[0]):
        np.maximum(run, st.max_event_ms, out=run)


def _newest(w: WindowState, t: int) -> None:
    """The window's newest time, and what came before and after it (rule 6)."""
    if t > w.end_ms:
        w.top_before, w.after_top, w.end_ms = w.end_ms, -1, t
    else:
        w.after_top = max(w.after_top, t)


def _place(st: ModelState, clock: ProcessingClock, raw: int) -> int:
    """Where an event stamped ``raw`` falls: its own time, or (future-dated) the clock."""
    horizon = clock.horizon
    if horizon is None or raw <= horizon:
        return raw
    if st.max_event_ms >= 0:
        return st.max_event_ms
    assert clock.now_ms is not None
    return min(max(clock.now_ms, 0), MAX_TIME_MS)


def _late(st: ModelState, t: int, least: int, span: int, result: BatchResult) -> None:
    """A late event (placed before the open time window)."""
    w = st.window
    if w.on_time > 1:
        st.late_events += 1
        result.late_events += 1
        return
    # The window rests on its opener alone: hold the verdict until the evidence is in.
    st.late_run += 1
    st.late_run_min = t if st.late_run == 1 else min(st.late_run_min, t)
    st.late_run_max = max(st.late_run_max, t) if st.late_run > 1 else t
    if st.late_run < least:
        return
    # Rule 5: the opener was the outlier; the window moves to the late events.
    st.future_events += w.on_time
    result.future_events += w.on_time
    w.on_time = st.late_run
    w.open_ms = st.late_run_min - st.late_run_min % span
    w.start_ms, w.end_ms = st.late_run_min, st.late_run_max
    w.top_before = w.after_top = -1
    st.max_event_ms = st.late_run_max
    st.late_run = 0


def settle_window_end(st: ModelState, clock: ProcessingClock, result: BatchResult) -> None:
    """Rule 6, as the open window closes: drop a newest time that stands alone."""
    w = st.window
    tol = clock.tolerance_ms
    alone = (
        w.after_top >= 0
        and w.end_ms - w.after_top > tol
        and (w.top_before < 0 or w.end_ms - w.top_before > tol)
    )
    if not alone:
        return
    end = max(w.top_before, w.after_top)
    if st.max_event_ms == w.end_ms:
        st.max_event_ms = end
    w.end_ms = end
    w.on_time -= 1
    st.future_events += 1
    result.future_events += 1


def _settle_late_run(st: ModelState, result: BatchResult) -> None:
    """An on-time event confirmed the window: the held late events were late."""
    if st.late_run:
        st.late_events += st.late_run
        result.late_events += st.late_run
        st.late_run = 0


def _sanitise(w: WindowState, st: ModelState) -> None:
    """Keep stored times inside the arithmetic's range (a state written before the
    contract refused huge timestamps may hold one)."""
    st.max_event_ms = min(st.max_event_ms, MAX_TIME_MS)
    w.open_ms = min(w.open_ms, MAX_TIME_MS)
    w.start_ms = min(w.start_ms, MAX_TIME_MS)
    w.end_ms = min(w.end_ms, MAX_TIME_MS)
