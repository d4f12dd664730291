"""The open window of a stream: its sketches while a batch runs, and event time.

During a batch the open window lives in sketch banks (:class:`OpenWindow`): the
ModelState's sketches are read into them when the batch starts and written back when
it ends, so a window's events are counted by one vectorised update per chunk, and
closing a window zeroes the banks in place.

Event time: windows follow the order of events in the partition. Count windows close
every ``window_events`` events. Time windows are tumbling, aligned to multiples of
``window_seconds``, and close when an event at or after the window end arrives. An
event older than the open window is *late*, one more than :data:`FUTURE_TOLERANCE_MS`
ahead of the newest event seen is *future-dated*; both are counted and folded into
the open window (never dropped), and neither moves the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from driftline.core.fastloop.plan import Plan, SegmentArrays
from driftline.core.fastloop.result import BatchResult
from driftline.core.fastloop.state import ModelState
from driftline.core.reference import Policy
from driftline.core.sketches import CategoricalSketchBank, NumericSketchBank

__all__ = ["FUTURE_TOLERANCE_MS", "OpenWindow", "window_cut", "window_full"]

FUTURE_TOLERANCE_MS = 5 * 60 * 1000

S = TypeVar("S")


class OpenWindow:
    """The open window's sketches as banks (numeric and categorical columns of the
    plan) and its type-mismatch counts per feature."""

    def __init__(self, st: ModelState, plan: Plan) -> None:
        """Read ``st``'s window sketches and counts into banks on ``plan``'s columns."""
        self.plan = plan
        nums = [st.num.get(k) for k in plan.num_names]
        if plan.conf_col >= 0:
            nums.append(st.confidence)
        if plan.pred_col >= 0:
            nums.append(st.prediction)
        self.num = NumericSketchBank.of(plan.num_bins, nums)
        cats = [st.cat.get(k) for k in plan.cat_names]
        if plan.class_row >= 0:
            cats.append(st.classes)
        self.cat = CategoricalSketchBank.of(plan.cat_bins, cats)
        tm = st.type_mismatch
        self.mism = np.array([tm.get(k, 0) for k in plan.all_names], dtype=np.int64)

    def store(self, st: ModelState) -> None:
        """Write the window back into ``st``'s sketches and type-mismatch counts."""
        plan = self.plan
        nums = self.num.sketches()
        _put(st.num, plan.num_names, nums)
        if plan.conf_col >= 0 and st.confidence is not None:
            st.confidence = nums[plan.conf_col]
        if plan.pred_col >= 0 and st.prediction is not None:
            st.prediction = nums[plan.pred_col]
        cats = self.cat.sketches()
        _put(st.cat, plan.cat_names, cats)
        if plan.class_row >= 0 and st.classes is not None:
            st.classes = cats[plan.class_row]
        st.type_mismatch = dict(zip(plan.all_names, self.mism.tolist(), strict=True))

    def absorb(self, data: SegmentArrays, a: int, b: int) -> None:
        """Count events ``a:b`` into every sketch and type-mismatch counter."""
        plan = self.plan
        if plan.nc:
            self.num.update(data.x[:, a:b], data.located[:, a:b])
        for where, mm in data.mism:
            self.mism[where] += int(np.count_nonzero(mm[a:b]))
        if plan.kc:
            self.cat.update(data.codes[:, a:b])

    def reset(self) -> None:
        """The window closed: start the next one empty."""
        self.num.reset()
        self.cat.reset()
        self.mism.fill(0)


def _put(into: dict[str, S], names: list[str], sketches: list[S]) -> None:
    """The window's sketch of each watched feature (a feature ``into`` lacks stays out)."""
    for name, sketch in zip(names, sketches, strict=False):
        if name in into:
            into[name] = sketch


# ---------------------------------------------------------------------- event time


def window_full(st: ModelState, pol: Policy) -> bool:
    """Whether a count window holds its ``window_events``."""
    return pol.window_seconds <= 0 and st.window.count >= pol.window_events


def open_time_window(st: ModelState, pol: Policy, t: int) -> None:
    """Open the time window (aligned to ``window_seconds``) that holds time ``t``."""
    span = int(pol.window_seconds * 1000)
    st.window.open_ms = t - (t % span)


def window_cut(st: ModelState, pol: Policy, times: Sequence[int], start: int) -> int:
    """Index where the open window ends within ``times[start:]``."""
    if pol.window_seconds <= 0:
        return min(len(times), start + pol.window_events - st.window.count)
    span = int(pol.window_seconds * 1000)
    if st.window.open_ms < 0:
        open_time_window(st, pol, times[start])
    close_at = st.window.open_ms + span
    newest = st.max_event_ms
    for i in range(start, len(times)):
        t = times[i]
        future = newest >= 0 and t > newest + FUTURE_TOLERANCE_MS
        if t >= close_at and not future and st.window.count + (i - start) >= pol.min_window_events:
            return i
        if not future:
            newest = max(newest, t)
    return len(times)


def track_time(st: ModelState, data: SegmentArrays, a: int, b: int, result: BatchResult) -> None:
    """Event-time bookkeeping: late and future-dated events are counted, never dropped."""
    w = st.window
    t64 = data.t64
    if t64 is not None:
        t = t64[a:b]
        prev = st.max_event_ms
        newest = np.maximum.accumulate(t)
        before = np.empty_like(t)
        before[0] = prev
        np.maximum(newest[:-1], prev, out=before[1:])
        # Assuming no event is future-dated, the newest time before each event is the
        # running maximum; if that finds none, the assumption held.
        if not np.any((before >= 0) & (t > before + FUTURE_TOLERANCE_MS)):
            if w.open_ms >= 0:
                late = int(np.count_nonzero(t < w.open_ms))
                st.late_events += late
                result.late_events += late
            lo, hi = int(t.min()), int(newest[-1])
            st.max_event_ms = max(prev, hi)
            w.start_ms = lo if w.start_ms < 0 else min(w.start_ms, lo)
            w.end_ms = max(w.end_ms, hi)
            return
    for t_ in data.times[a:b]:
        if st.max_event_ms >= 0 and t_ > st.max_event_ms + FUTURE_TOLERANCE_MS:
            st.future_events += 1
            result.future_events += 1
            continue
        if w.open_ms >= 0 and t_ < w.open_ms:
            st.late_events += 1
            result.late_events += 1
        st.max_event_ms = max(st.max_event_ms, t_)
        w.start_ms = t_ if w.start_ms < 0 else min(w.start_ms, t_)
        w.end_ms = max(w.end_ms, t_)
