"""Replay: run the monitor's pure core over a JSONL file of prediction events.

The same :func:`driftline.core.fastloop.monitor.process_batch` as the stream worker,
with no Kafka and no Redis, so "what would the monitor have said?" has one answer.
Events that break the contract are counted (and listed with their reason), never used.
:func:`replay_history` and :func:`report_from_replay` give the history and the drift
report of a file the same way (``driftline report --events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.contract.events import DriftAlert, decode_prediction_fast
from driftline.contract.history import History, decode_alert, decode_window, encode_window
from driftline.contract.keys import StateKey
from driftline.core.fastloop.monitor import BatchResult, ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile
from driftline.errors import ContractError
from driftline.views.report.build import ReportInput, build_report, parse_since

__all__ = [
    "ReplayResult",
    "Replayer",
    "read_events",
    "replay_file",
    "replay_history",
    "report_from_replay",
]


@dataclass
class ReplayResult:
    """Alerts raised, final states and the count of refused lines."""

    alerts: list[DriftAlert] = field(default_factory=list)
    states: dict[StateKey, ModelState] = field(default_factory=dict)
    events: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    new_references: list[ReferenceProfile] = field(default_factory=list)


def read_events(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` for each non-empty line of a JSONL file."""
    with path.open("rb") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                yield i, line.rstrip(b"\r\n")


class Replayer:
    """Feeds events to the core in batches, keeping state between batches.

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


def replay_history(
    events: Path,
    references: Mapping[tuple[str, str], ReferenceProfile],
    *,
    batch: int = 5000,
) -> tuple[dict[str, History], dict[str, ReferenceProfile]]:
    """History of every model in a JSONL file of prediction events, by replay (no Redis).

    Runs the same core as the worker (:class:`Replayer`) and keeps
    each batch's window summaries and alerts, encoded and decoded exactly as the Redis
    path does. Returns the history per model id and every reference used (by
    reference id), including warm-up references built during the replay.
    """
    replayer = Replayer(references)
    windows: dict[str, list[dict[str, Any]]] = {}
    alerts: dict[str, list[dict[str, Any]]] = {}

    def feed(buf: list[dict[str, Any]]) -> None:
        res = replayer.feed(buf)
        for w in res.windows:
            windows.setdefault(w["model_id"], []).append(decode_window(encode_window(w)))
        for a in res.alerts:
            alerts.setdefault(a.model_id, []).append(decode_alert(a.to_json()))

    buf: list[dict[str, Any]] = []
    for lineno, raw in read_events(events):
        try:
            buf.append(decode_prediction_fast(raw))
        except ContractError as exc:
            replayer.result.refused.append((lineno, f"{exc.stage}: {exc}"))
            continue
        if len(buf) >= batch:
            feed(buf)
            buf = []
    if buf:
        feed(buf)
    models = set(windows) | set(alerts) | {k.model_id for k in replayer.result.states}
    hist = {m: History.build(windows.get(m, []), alerts.get(m, [])) for m in models}
    refs = {r.reference_id: r for r in replayer.references.values()}
    return hist, refs


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
    ValueError
        The file holds several models and ``model_id`` is not given, or none at all.
    """
    refs = {(r.model_id, r.model_version): r for r in references}
    hists, used = replay_history(events, refs)
    models = sorted(hists) or sorted({r.model_id for r in references})
    if model_id is None:
        if len(models) != 1:
            raise ValueError(
                f"{events} holds models {', '.join(models) or 'none'}: choose one with --model"
            )
        model_id = models[0]
    hist = hists.get(model_id, History())
    newest = hist.windows[-1]["end"] if hist.windows else None
    since_ms = parse_since(since, newest)
    model_refs = {rid: r for rid, r in used.items() if r.model_id == model_id}
    inp = ReportInput(
        model_id=model_id,
        history=hist,
        references=model_refs,
        version=version,
        segment=segment,
        since_ms=since_ms,
        source=f"replay of {events.name}",
    )
    return build_report(inp)
