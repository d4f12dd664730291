"""Replay: run the monitor's pure core over a JSONL file of prediction events.

The same :func:`driftline.monitor.process_batch` as the stream worker, with no Kafka
and no Redis, so "what would the monitor have said?" has one answer. Events that
break the contract are counted (and listed with their reason), never used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.contract.events import DriftAlert, decode_prediction_fast
from driftline.contract.keys import StateKey
from driftline.core.fastloop.monitor import BatchResult, ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile
from driftline.errors import ContractError

__all__ = ["ReplayResult", "Replayer", "read_events", "replay_file"]


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
