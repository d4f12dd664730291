"""The entry point: a batch of prediction events and the states in, verdicts out.

:func:`process_batch` groups the batch by stream (model, version, segment) and, per
stream, walks its events window by window: each chunk of events that falls in the
open window is counted into the window's sketches (:class:`~driftline.core.fastloop.
windows.OpenWindow`) and runs through the stream's detector banks
(:mod:`~driftline.core.fastloop.sequential`) and the multivariate detector
(:mod:`~driftline.core.fastloop.multivariate`), whose transitions step the input- and
output-drift episodes (:mod:`~driftline.core.fastloop.episodes`); when the window
closes its tests run (:mod:`~driftline.core.fastloop.window_tests`,
:mod:`~driftline.core.fastloop.outputs`, :mod:`~driftline.core.fastloop.quality`: history,
metrics, and the data-quality episode). A model without a reference first collects
:data:`WARMUP_EVENTS` events and builds one from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from driftline.contract.columnar import ColumnarBatch, Columns, group_items
from driftline.contract.events import (
    event_time_ms,
)
from driftline.contract.keys import StateKey, interned_key
from driftline.core.fastloop import multivariate
from driftline.core.fastloop.clock import (
    FUTURE_TOLERANCE_MS,
    ProcessingClock,
    advance,
    open_next_window,
    settle_window_end,
)
from driftline.core.fastloop.episodes import (
    at_window_close,
    input_away,
    on_transitions,
    reconcile,
    step_episode,
)
from driftline.core.fastloop.outputs import output_tests
from driftline.core.fastloop.plan import Plan, SegmentArrays, plan_for
from driftline.core.fastloop.quality import note_unknown_names, quality_tests
from driftline.core.fastloop.result import BatchResult
from driftline.core.fastloop.sequential import BankRun
from driftline.core.fastloop.state import ModelState
from driftline.core.fastloop.summary import window_summary
from driftline.core.fastloop.window_tests import (
    TestBlock,
    WindowStats,
    decide,
    decide_blocks,
    input_blocks,
)
from driftline.core.fastloop.windows import OpenWindow
from driftline.core.reference import (
    Policy,
    ReferenceProfile,
    build_reference,
    features_from_events,
)

__all__ = ["WARMUP_EVENTS", "RefLookup", "process_batch"]

#: Live events used to build a warm-up reference for a model that has none.
WARMUP_EVENTS = 2000

RefLookup = Callable[[str, str], ReferenceProfile | None]


def process_batch(
    items: Sequence[ColumnarBatch | Mapping[str, Any]],
    states: dict[StateKey, ModelState],
    references: RefLookup,
    *,
    default_policy: Policy | None = None,
    now_ms: int | None = None,
    future_tolerance_ms: int = FUTURE_TOLERANCE_MS,
) -> BatchResult:
    """Process validated prediction events in partition order. Pure: no I/O.

    Parameters
    ----------
    items
        Contract-valid prediction events (dicts) and columnar batches
        (:class:`~driftline.contract.columnar.ColumnarBatch`), mixed, in partition
        order. A batch of ``n`` predictions gives exactly the result of its ``n`` rows
        sent as single events (alert ids, states, window summaries).
    states
        Current state per key; updated in place and extended with new keys.
    references
        ``(model_id, version) -> ReferenceProfile | None`` (with default fallback).
    default_policy
        Policy for warm-up references of models without one.
    now_ms
        The processing clock: when the batch is processed (the worker passes its wall
        clock). An event stamped more than ``future_tolerance_ms`` later is
        future-dated (:mod:`driftline.core.fastloop.clock`). None (a replay of a file,
        which has no arrival times): no event is future-dated.
    future_tolerance_ms
        How far ahead of ``now_ms`` an event time may be (clock skew).

    Returns
    -------
    BatchResult
        Alerts raised, statistics for metrics, warm-up references to store, window
        summaries.
    """
    result = BatchResult()
    clock = ProcessingClock(now_ms, future_tolerance_ms)
    for kt, parts in group_items(items).items():
        key = interned_key(kt)
        ref = references(key.model_id, key.model_version)
        st = states.get(key)
        if st is None:
            st = ModelState.fresh(key, ref)
            st.origin = next((c.rows(0, 1)[0]["prediction_id"] for c in parts if c.n), "")
            states[key] = st
        elif ref is not None and st.reference_id != ref.reference_id:
            st.attach(ref)
        window: OpenWindow | None = None
        late, future = st.late_events, st.future_events
        for cols in parts:
            if ref is None:
                ref, rest = _warm_up(st, cols, default_policy or Policy(), result)
                if ref is None or rest is None:
                    continue
                cols = rest
            if cols.n == 0:
                continue
            if window is None:
                window = OpenWindow(st, plan_for(ref))
            _process_segment(st, ref, window, clock, cols, result)
        if window is not None:
            window.store(st)
        if st.late_events != late or st.future_events != future:
            _count_late_future(st, st.late_events - late, st.future_events - future, result)
    return result


def _count_late_future(st: ModelState, late: int, future: int, result: BatchResult) -> None:
    """Add a stream's late and future-dated events of the batch to its model version's."""
    mv = (st.key.model_id, st.key.model_version)
    had = result.late_future.get(mv, (0, 0))
    result.late_future[mv] = (had[0] + late, had[1] + future)


def _warm_up(
    st: ModelState, cols: Columns, policy: Policy, result: BatchResult
) -> tuple[ReferenceProfile | None, Columns | None]:
    """Collect the first :data:`WARMUP_EVENTS` events; then build the reference from them.

    Returns the reference (or None while warming up) and the events left to monitor.
    """
    take = WARMUP_EVENTS - len(st.warmup)
    st.warmup.extend(cols.rows(0, take))
    st.events += min(take, cols.n)
    if len(st.warmup) < WARMUP_EVENTS:
        return None, None
    data = features_from_events(st.warmup)
    created = max(_time_ms(e) for e in st.warmup)
    ref = build_reference(
        data,
        st.key.model_id,
        st.key.model_version,
        policy=policy,
        source="warm-up",
        created_at=created,
    )
    st.warmup = []
    st.attach(ref)
    result.new_references.append(ref)
    return ref, cols.tail(min(take, cols.n))


def _time_ms(e: Mapping[str, Any]) -> int:
    ts = e["timestamp"]
    if isinstance(ts, int):
        return ts
    return event_time_ms(ts)


def _process_segment(
    st: ModelState,
    ref: ReferenceProfile,
    window: OpenWindow,
    clock: ProcessingClock,
    cols: Columns,
    result: BatchResult,
) -> None:
    """One stream's events of the batch, window by window."""
    pol = ref.policy
    plan = window.plan
    data = SegmentArrays(plan, cols)
    banks = BankRun(st, plan, data)
    mv = multivariate.start(st, ref, plan, data)
    n = data.n
    start = 0
    reconciled = False
    while start < n:
        end = advance(st, pol, clock, data, start, result)
        if end > start and not reconciled:
            # At the event clock of the first event placed.
            reconcile(st, ref, plan, int(data.clock[start]), result)
            reconciled = True
        if end > start:
            _absorb(st, ref, window, data, banks, mv, start, end, result)
        if end < n or (pol.window_seconds <= 0 and st.window.count >= pol.window_events):
            _close_window(st, ref, window, clock, result)
            if end < n:
                open_next_window(st, pol, data, end)
        start = end


def _absorb(
    st: ModelState,
    ref: ReferenceProfile,
    window: OpenWindow,
    data: SegmentArrays,
    banks: BankRun,
    mv: multivariate.MultivariateRun | None,
    a: int,
    b: int,
    result: BatchResult,
) -> None:
    """Events ``a:b`` join the open window and run through the detector banks and the
    multivariate detector."""
    plan = window.plan
    w = st.window
    count_before, events_before = w.count, st.events
    w.count += b - a
    st.events += b - a
    if data.unknown is not None:
        # events that carry one (a rate of events, at most 1), not the names counted
        st.unknown_features += int(np.count_nonzero(data.unknown[a:b]))
        note_unknown_names(st, data.unknown_names)
    window.absorb(data, a, b)
    input_before = input_away(plan, st.bank)
    found = banks.update(a, b)
    joint = mv.absorb(a, b) if mv is not None else []
    if found or joint:
        on_transitions(
            st,
            ref,
            plan,
            found,
            joint,
            data.clock,
            a,
            events_before,
            count_before,
            input_before,
            result,
        )
    c = plan.conf_col
    if c >= 0 and st.confidence is not None:
        conf = data.x[c, a:b]
        if not data.finite[c]:
            conf = conf[np.isfinite(conf)]
        st.low_confidence += int(np.count_nonzero(conf < ref.outputs.low_confidence_threshold))


def _close_window(
    st: ModelState,
    ref: ReferenceProfile,
    window: OpenWindow,
    clock: ProcessingClock,
    result: BatchResult,
) -> None:
    """Test the open window, step the episodes, summarise it, open the next one."""
    w = st.window
    if w.count == 0:
        return
    settle_window_end(st, clock, result)
    plan: Plan = window.plan
    pol = ref.policy
    alpha = min(0.5, w.count / pol.false_alarm_events)
    stats = WindowStats(plan, window.num, window.cat, max(pol.min_window_events, 1))

    # -- input and output drift: the detector banks drive the episodes (escalation is
    # checked here); the window tests are history, metrics and the report's evidence.
    at_window_close(st, ref, plan, result)
    tests = input_blocks(st, stats)
    drifted = decide_blocks(tests, alpha, st.episode("input_drift"))
    otests = output_tests(st, ref, stats, window.cat)
    odrifted = decide(otests, alpha, st.episode("output_drift"))
    oblocks = TestBlock.of(otests)
    joint = multivariate.window_row(st)
    jtests = TestBlock.of([joint] if joint is not None else [])

    # -- data quality
    qtests = quality_tests(st, ref, plan, window)
    qdrifted = qtests.over(0.5 if st.episode("data_quality").firing else 1.0)
    step_episode(st, ref, "data_quality", qdrifted, result, "data_quality")

    # The window's statistics for the metrics shell, as columns (result.Observations).
    feats: list[str] = []
    names: list[str] = []
    values: list[float] = []
    for b in tests:
        b.observe(feats, names, values, extras=True)
    for b in (*oblocks, *jtests, qtests):  # their effects only
        b.observe(feats, names, values, extras=False)
    result.observations.add(st.key.model_id, st.key.model_version, feats, names, values)

    drifted_names = {*drifted, *(t.feature for t in (*odrifted, *qdrifted))}
    if joint is not None and (multivariate.holding(st) or joint.effect >= 1.0):
        drifted_names.add(joint.feature)
    all_tests = [*tests, *oblocks, qtests, *jtests]
    result.windows.append(
        window_summary(st, ref, plan, window, stats.grouped, all_tests, drifted_names)
    )
    result.windows_closed += 1
    w.index += 1
    w.count = w.on_time = 0
    w.start_ms = w.end_ms = w.top_before = w.after_top = -1
    window.reset()
    st.unknown_features = 0
    st.low_confidence = 0
