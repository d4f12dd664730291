"""Replay: run the monitor's and the label joiner's pure cores over files, no servers.

The same :func:`driftline.core.fastloop.process_batch` as the stream worker,
and, when labels are given, the same :func:`driftline.core.slowloop.join_batch`
as the label joiner (pending predictions in :class:`~driftline.core.slowloop.MemoryRecords`,
a dict with the Redis script's semantics), with no Kafka and no Redis, so "what would
Driftline have said?" has one answer: input and output drift, data quality, and from
labels accuracy, concept drift, performance alerts and the diagnosis.

Events that break the contract are counted and listed with their reason, never used.
Labels join in event time: before each batch of predictions is handed to the slow
loop, the labels whose time is not after the batch's newest prediction join it (a
label at the time of its prediction joins at once); the rest join after the last batch.
:func:`run_offline` is the whole run; :class:`OfflineRun` holds its alerts, windows,
performance and refusals; :func:`report_from_run` builds the drift report of a model.
"""

from __future__ import annotations

import bisect
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.config import LabelsSettings
from driftline.contract.checks import (
    check_label,
    decode_prediction_fast,
)
from driftline.contract.events import (
    DriftAlert,
    event_time_ms,
)
from driftline.contract.history import (
    History,
    decode_alert,
    decode_perf,
    decode_window,
    encode_perf,
    encode_window,
)
from driftline.contract.keys import StateKey
from driftline.core.fastloop import BatchResult, ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile
from driftline.core.slowloop import (
    DriftIndex,
    MemoryRecords,
    UnitState,
    join_batch,
    plan_lookups,
)
from driftline.core.slowloop import build_report as performance_report
from driftline.errors import ContractError, InputError
from driftline.offline.tables import read_events
from driftline.views.report.build import (
    ReportInput,
    build_report,
    parse_since,
    unknown_names_said,
)

__all__ = [
    "EventSource",
    "OfflineRun",
    "ReplayResult",
    "Replayer",
    "jsonl_events",
    "jsonl_labels",
    "read_events",
    "replay_file",
    "replay_history",
    "report_from_replay",
    "report_from_run",
    "run_offline",
]

#: ``(where, event or None, reason or None)``: one input row, valid or refused.
EventSource = Iterable[tuple[str, dict[str, Any] | None, str | None]]


@dataclass
class ReplayResult:
    """Alerts raised, final states and the count of refused lines."""

    alerts: list[DriftAlert] = field(default_factory=list)
    states: dict[StateKey, ModelState] = field(default_factory=dict)
    events: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    new_references: list[ReferenceProfile] = field(default_factory=list)


class Replayer:
    """Feeds events to the fast-loop core in batches, keeping state between batches.

    Batch boundaries do not change the result: the core is batch-size invariant.
    """

    def __init__(
        self,
        references: Mapping[tuple[str, str], ReferenceProfile],
        default_policy: Policy | None = None,
    ) -> None:
        self.references = dict(references)
        self.default_policy = default_policy
        self.result = ReplayResult()

    def lookup(self, model: str, version: str) -> ReferenceProfile | None:
        """Reference for (model, version), falling back to the model's ``default``."""
        return self.references.get((model, version)) or self.references.get((model, "default"))

    def feed(self, events: list[dict[str, Any]]) -> BatchResult:
        """Process one batch of decoded events."""
        res = process_batch(
            events, self.result.states, self.lookup, default_policy=self.default_policy
        )
        for ref in res.new_references:
            self.references[(ref.model_id, ref.model_version)] = ref
        self.result.alerts.extend(res.alerts)
        self.result.new_references.extend(res.new_references)
        self.result.events += len(events)
        return res

    def feed_lines(self, lines: Iterable[tuple[int, bytes]], batch: int = 5000) -> ReplayResult:
        """Decode and process ``(line number, bytes)`` pairs in batches."""
        buf: list[dict[str, Any]] = []
        for lineno, raw in lines:
            try:
                buf.append(decode_prediction_fast(raw))
            except ContractError as exc:
                self.result.refused.append((lineno, f"{exc.stage}: {exc}"))
                continue
            if len(buf) >= batch:
                self.feed(buf)
                buf = []
        if buf:
            self.feed(buf)
        return self.result


def replay_file(
    path: Path, references: Mapping[tuple[str, str], ReferenceProfile], batch: int = 5000
) -> ReplayResult:
    """Replay a JSONL file of prediction events against the given references."""
    return Replayer(references).feed_lines(read_events(path), batch=batch)


# --------------------------------------------------------------------------- sources


def jsonl_events(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """The prediction events of a JSONL file, each checked by the contract."""
    for lineno, raw in read_events(path):
        try:
            yield f"line {lineno}", decode_prediction_fast(raw), None
        except ContractError as exc:
            yield f"line {lineno}", None, f"{exc.stage}: {exc}"


def jsonl_labels(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """The label events of a JSONL file (``prediction_id``, ``model_id``, ``label``,
    ``timestamp``), each checked by the contract."""
    import orjson

    for lineno, raw in read_events(path):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield f"line {lineno}", None, f"decode: not JSON: {exc}"
            continue
        reason = check_label(obj)
        yield f"line {lineno}", (obj if reason is None else None), reason


# --------------------------------------------------------------------------- the run


@dataclass
class OfflineRun:
    """What a replay of files produced: both loops' alerts, windows, performance."""

    #: Every alert, fast loop (input, output, data quality) and slow loop (concept
    #: drift, performance), in the order the cores raised them.
    alerts: list[DriftAlert] = field(default_factory=list)
    #: Window summaries per model, as the history stores them.
    windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Performance points per model (accuracy, estimated accuracy, coverage, lag).
    perf: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: ``(where, reason)`` of every input row or label that was not used.
    refused: list[tuple[str, str]] = field(default_factory=list)
    events: int = 0
    labels: int = 0
    #: Label outcomes of the join: joined, duplicate, expired, orphan, invalid.
    label_outcomes: dict[str, int] = field(default_factory=dict)
    #: Every reference used, by reference id (warm-up references included).
    references: dict[str, ReferenceProfile] = field(default_factory=dict)
    fast: ReplayResult = field(default_factory=ReplayResult)
    slow: UnitState | None = None
    #: The events carried no time (a table without a timestamp column): each event's
    #: time is its row's number (0, 1, 2, ...), which the report and the terminal
    #: show as ``row N`` rather than as a date in 1970.
    untimed: bool = False
    #: Where a table went back in time (``line 1,002``: its first row earlier than the
    #: row before it); its rows were replayed in time order. None: in order.
    out_of_order: str | None = None

    def order_note(self) -> str | None:
        """One line saying that the table's rows were replayed in time order, not in the
        table's (None: the table was in time order)."""
        if self.out_of_order is None:
            return None
        return (
            f"the rows are not in time order ({self.out_of_order} is earlier than the row "
            "before it): they were replayed in time order"
        )

    def late_future_note(self) -> str | None:
        """One line counting the late and future-dated events of the run's streams and
        what became of them (None: there were none)."""
        late = sum(st.late_events for st in self.fast.states.values())
        future = sum(st.future_events for st in self.fast.states.values())
        if not late and not future:
            return None
        parts = [
            f"{late:,} late events (older than the time window open when they came)",
            f"{future:,} future-dated events (far ahead of the events around them)",
        ]
        said = " and ".join(p for n, p in zip((late, future), parts, strict=True) if n)
        return (
            f"{said}: each was counted in the open window, and none moved the event "
            'clock (docs/architecture.md, "Event time")'
        )

    def unknown_features_note(self) -> str | None:
        """One line naming the features the events carried that their reference has
        not (the data-quality signal on unknown features counts them); None: none."""
        names: dict[str, None] = {}
        more = False
        for st in self.fast.states.values():
            names.update(dict.fromkeys(st.unknown_names))
            more = more or st.unknown_names_more
        if not names:
            return None
        return (
            f"features not in the reference (no test reads them, a data-quality alert): "
            f"{unknown_names_said(list(names), more)}"
        )

    def models(self) -> list[str]:
        """Model ids seen, sorted."""
        seen = set(self.windows) | {a.model_id for a in self.alerts} | set(self.perf)
        seen |= {k.model_id for k in self.fast.states}
        return sorted(seen)

    def history(self, model_id: str) -> History:
        """The model's history (windows, alerts, performance) as the report reads it."""
        alerts = [decode_alert(a.to_json()) for a in self.alerts if a.model_id == model_id]
        return History.build(self.windows.get(model_id, []), alerts, self.perf.get(model_id, []))

    def performance(self, model: str | None = None) -> dict[str, Any]:
        """Performance per model and version (as ``driftline labels --report`` gives it)."""
        if self.slow is None:
            return {}
        return performance_report(self.slow.perf.values(), model=model)

    def refusal_summary(self, limit: int = 3) -> str:
        """Counts of refusal reasons, the most frequent first, with where they were first.

        Reasons that differ only in the values they quote (``'01.01.2026 00:00'``) are
        one reason, shown with the first row's values."""
        counts: dict[str, list[Any]] = {}
        for where, reason in self.refused:
            head = reason.split(" (")[0]
            key = _QUOTED.sub(_elide_value, head)
            hit = counts.setdefault(key, [0, where, head])
            hit[0] += 1
        top = sorted(counts.items(), key=lambda kv: -kv[1][0])
        parts = []
        for key, (n, where, first) in top[:limit]:
            values = [m[2] or m[3] for m in _QUOTED.finditer(first) if not m[1]]
            shown = f"{where}: {', '.join(values)}" if n > 1 and values else where
            parts.append(f"{n:,} x {key if n > 1 else first} (first at {shown})")
        if len(top) > limit:
            parts.append(f"{len(top) - limit} other reasons")
        return "; ".join(parts)


#: A quoted name or value in a refusal reason: ``column 'age'`` names a column and
#: ``scores.'yes'`` a class (kept), any other quoted text is a value, and so is the
#: number of ``probability 34.8 outside 0..1``.
_QUOTED = re.compile(r"(column |\.)?('[^']*')|(?<=probability )(-?\d[\d.e+-]*)")


def _elide_value(m: re.Match[str]) -> str:
    if m[1]:
        return m[0]
    return "'…'" if m[2] is not None else "…"


class _SlowLoop:
    """The label joiner's core driven like the worker drives it, records in memory."""

    def __init__(self, settings: LabelsSettings, lookup: Callable[[str, str], Any]) -> None:
        self.settings = settings
        self.lookup = lookup
        self.unit = UnitState()
        self.records = MemoryRecords()
        self.drift = DriftIndex()
        # Predictions taken at a time. A replay's batches are thousands of rows that may
        # span days, where a worker's fetch holds seconds of traffic. Fed as one, a batch's
        # predictions are all counted before any of its labels join, so the windows closing
        # inside it read a low label coverage (a table whose every row has its label gave
        # 5-12%), and its newest time moves the label horizon past its first rows. Steps of
        # a fifth of a window keep both to what a worker sees, and a stream whose every
        # prediction has its label closes its windows at a step's end: coverage 100%.
        self.step_rows = max(1, settings.window_labels // 5)

    def feed(
        self,
        preds: Sequence[dict[str, Any]],
        labels: Sequence[dict[str, Any]],
        alerts: Sequence[DriftAlert],
        run: OfflineRun,
    ) -> None:
        for a in alerts:  # the worker follows the alert topic for the diagnosis
            self.drift.observe(a.model_dump(mode="json"))
        plan = plan_lookups(preds, labels, self.unit, self.settings)
        found = self.records.lookup(plan)
        res = join_batch(
            preds, labels, plan, found, self.unit, self.lookup, self.drift, self.settings
        )
        self.records.apply(res)
        run.alerts.extend(res.alerts)
        for model, points in res.points.items():
            run.perf.setdefault(model, []).extend(decode_perf(encode_perf(p)) for p in points)
        for (_, outcome), n in res.labels.items():
            run.label_outcomes[outcome] = run.label_outcomes.get(outcome, 0) + n
        for idx, reason, _event in res.rejected:
            where = f"label {idx}" if idx >= 0 else "a held label"
            run.refused.append((where, f"join: {reason}"))

    def finish(self, run: OfflineRun) -> None:
        """The replay has ended: a label still held waits for a prediction that no
        longer comes. A worker makes it an orphan once its model's predictions pass its
        time; here it is refused as a label without its prediction is, never lost."""
        for h in self.unit.held:
            run.label_outcomes["orphan"] = run.label_outcomes.get("orphan", 0) + 1
            run.refused.append((f"label of {h.prediction_id}", "no such prediction"))
        self.unit.held = []


def _progress(what: str) -> Callable[[int, bool], None]:
    if not sys.stderr.isatty():
        return lambda n, done: None
    t0 = time.monotonic()

    def show(n: int, done: bool) -> None:
        rate = n / max(time.monotonic() - t0, 1e-6)
        print(
            f"driftline: {what}: {n:,} events ({rate:,.0f}/s)",
            end="\n" if done else "\r",
            file=sys.stderr,
            flush=True,
        )

    return show


def _slow_steps(
    preds: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]], rows: int
) -> list[tuple[Sequence[dict[str, Any]], list[dict[str, Any]]]]:
    """``preds`` in steps of ``rows``, each with the labels due by its end: a label of one
    of the step's predictions, or (a label of an earlier or unknown prediction) the first
    step whose newest prediction is not older than the label."""
    if len(preds) <= rows:
        return [(preds, list(labels))]
    steps = [preds[i : i + rows] for i in range(0, len(preds), rows)]
    step_of: dict[tuple[str, str], int] = {}
    newest: list[int] = []
    top = -(2**62)
    for k, step in enumerate(steps):
        for e in step:
            step_of[(e["model_id"], e["prediction_id"])] = k
            top = max(top, _label_time(e))
        newest.append(top)
    due: list[list[dict[str, Any]]] = [[] for _ in steps]
    for lab in labels:
        found = step_of.get((lab["model_id"], lab["prediction_id"]))
        if found is None:
            found = min(bisect.bisect_left(newest, _label_time(lab)), len(steps) - 1)
        due[found].append(lab)
    return list(zip(steps, due, strict=True))


def _label_time(lab: dict[str, Any]) -> int:
    ts = lab["timestamp"]
    return ts if type(ts) is int else event_time_ms(ts)


def run_offline(
    events: EventSource,
    references: Mapping[tuple[str, str], ReferenceProfile],
    *,
    labels: EventSource | None = None,
    labels_settings: LabelsSettings | None = None,
    inline_labels: list[dict[str, Any]] | None = None,
    batch: int = 5000,
    default_policy: Policy | None = None,
    progress: bool = True,
) -> OfflineRun:
    """Run the fast loop over ``events`` and, with ``labels``, the slow loop too.

    Parameters
    ----------
    events
        ``(where, prediction event, refusal reason)`` rows (:func:`jsonl_events`, or
        :meth:`driftline.offline.roles.Resolved.events` for tables).
    references
        ``(model_id, version) -> reference`` (``version="default"``: the fallback).
    labels
        Label events in the same form; a label without ``timestamp`` gets its
        prediction's time. ``None``: no slow loop.
    inline_labels
        A list that reading ``events`` fills with label events at their predictions'
        times (a table's label column): each batch takes those its rows added, so the
        events need not be read ahead. Turns the slow loop on.
    labels_settings
        The slow loop's settings (horizon, windows, ADWIN); defaults otherwise.
    batch
        Events per core call (results do not depend on it).
    progress
        Show progress on stderr when it is a terminal.

    Returns
    -------
    OfflineRun
    """
    if batch < 1:
        raise InputError("batch must be at least 1")
    run = OfflineRun()
    replayer = Replayer(references, default_policy)
    run.fast = replayer.result
    slow = None
    pending: list[dict[str, Any]] = []
    untimed: list[dict[str, Any]] = []
    if labels is None and inline_labels is not None:
        labels = []
    if labels is not None:
        slow = _SlowLoop(labels_settings or LabelsSettings(), replayer.lookup)
        run.slow = slow.unit
        for where, lab, reason in labels:
            if lab is None:
                run.refused.append((where, reason or "invalid label"))
            elif lab.get("timestamp") is None:
                untimed.append(lab)
            else:
                pending.append(lab)
        run.labels = len(pending) + len(untimed)
    pred_time: dict[tuple[str, str], int] = {}
    show = _progress("replay") if progress else (lambda n, done: None)

    def feed(buf: list[dict[str, Any]]) -> None:
        res = replayer.feed(buf)
        run.alerts.extend(res.alerts)
        for w in res.windows:
            run.windows.setdefault(w["model_id"], []).append(decode_window(encode_window(w)))
        if slow is None:
            return
        newest = max(_label_time(e) for e in buf)
        due = []
        while queue and _label_time(queue[0]) <= newest:  # the queue is in time order
            due.append(queue.popleft())
        if inline_labels:  # the labels of this batch's rows, at their rows' times
            due.extend(inline_labels)
            run.labels += len(inline_labels)
            inline_labels.clear()
        steps = _slow_steps(buf, due, slow.step_rows)
        for i, (preds, labs) in enumerate(steps):
            slow.feed(preds, labs, res.alerts if i == 0 else (), run)

    if untimed:  # labels without a time take their prediction's: read the events first
        rows = list(events)
        for _, e, _ in rows:
            if e is not None:
                pred_time[(e["model_id"], e["prediction_id"])] = _label_time(e)
        for lab in untimed:
            t = pred_time.get((lab["model_id"], lab["prediction_id"]))
            if t is None:
                run.refused.append((f"label of {lab['prediction_id']}", "no such prediction"))
            else:
                pending.append({**lab, "timestamp": t})
        events = rows
    pending.sort(key=_label_time)
    queue = deque(pending)
    buf: list[dict[str, Any]] = []
    for where, e, reason in events:
        if e is None:
            run.refused.append((where, reason or "invalid event"))
            continue
        buf.append(e)
        if len(buf) >= batch:
            feed(buf)
            buf = []
            show(replayer.result.events, False)
    if buf:
        feed(buf)
    if slow is not None and queue:
        slow.feed([], list(queue), [], run)
    if slow is not None:
        slow.finish(run)
    show(replayer.result.events, True)
    run.events = replayer.result.events
    run.references = {r.reference_id: r for r in replayer.references.values()}
    return run


# --------------------------------------------------------------------------- history, report


def replay_history(
    events: Path,
    references: Mapping[tuple[str, str], ReferenceProfile],
    *,
    batch: int = 5000,
) -> tuple[dict[str, History], dict[str, ReferenceProfile]]:
    """History of every model in a JSONL file of prediction events, by replay (no Redis).

    Runs the same core as the worker and keeps each batch's window summaries and
    alerts, encoded and decoded exactly as the Redis path does. Returns the history
    per model id and every reference used (by reference id), including warm-up
    references built during the replay.
    """
    run = run_offline(jsonl_events(events), references, batch=batch, progress=False)
    return {m: run.history(m) for m in run.models()}, run.references


def report_from_run(
    run: OfflineRun,
    *,
    model_id: str | None = None,
    version: str | None = None,
    segment: str | None = None,
    since: str | None = None,
    source: str = "replay",
) -> dict[str, Any]:
    """Report data of one model of an offline run (see :func:`report_from_replay`).

    Raises
    ------
    InputError
        The run holds several models and ``model_id`` is not given, or none at all.
    """
    models = run.models() or sorted({r.model_id for r in run.references.values()})
    if model_id is None:
        if len(models) != 1:
            raise InputError(
                f"{source} holds models {', '.join(models) or 'none'}: choose one with --model"
            )
        model_id = models[0]
    hist = run.history(model_id)
    newest = hist.windows[-1]["end"] if hist.windows else None
    inp = ReportInput(
        model_id=model_id,
        history=hist,
        references={rid: r for rid, r in run.references.items() if r.model_id == model_id},
        version=version,
        segment=segment,
        since_ms=parse_since(since, newest),
        source=source,
        untimed=run.untimed,
        performance=run.performance(model_id).get(model_id, {}),
    )
    return build_report(inp)


def report_from_replay(
    events: Path,
    references: Sequence[ReferenceProfile],
    *,
    model_id: str | None = None,
    version: str | None = None,
    segment: str | None = None,
    since: str | None = None,
) -> dict[str, Any]:
    """Report data built by replaying a JSONL file of prediction events (no Redis).

    Raises
    ------
    InputError
        The file holds several models and ``model_id`` is not given, or none at all.
    """
    refs = {(r.model_id, r.model_version): r for r in references}
    run = run_offline(jsonl_events(events), refs, progress=False)
    return report_from_run(
        run,
        model_id=model_id,
        version=version,
        segment=segment,
        since=since,
        source=f"replay of {events.name}",
    )
