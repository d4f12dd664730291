"""What one batch of the join produces (:class:`JoinResult`), and the label and
prediction outcomes it counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from driftline.contract.events import (
    DriftAlert,
)

__all__ = [
    "LABEL_OUTCOMES",
    "PREDICTION_OUTCOMES",
    "JoinResult",
    "Outcome",
    "PerfObservation",
]

Outcome = Literal["joined", "duplicate", "expired", "orphan", "invalid"]
LABEL_OUTCOMES: tuple[Outcome, ...] = ("joined", "duplicate", "expired", "orphan", "invalid")
PREDICTION_OUTCOMES = ("stored", "duplicate", "too_old", "invalid")


@dataclass(frozen=True)
class PerfObservation:
    """A number for the metrics shell (model, version, metric, value)."""

    model_id: str
    model_version: str
    metric: str
    value: float


@dataclass
class JoinResult:
    """What one batch produced. The shell commits ``puts``/``tombs``/``dirty`` state at once."""

    #: key name -> {digest: record}: new pending predictions (the key's TTL is extended).
    puts: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    #: key name -> digests joined in this batch (set to the tombstone if the key exists).
    tombs: dict[str, list[bytes]] = field(default_factory=dict)
    #: key name -> event time after which it is useless (for its TTL; puts' keys only).
    expire_after: dict[str, int] = field(default_factory=dict)
    #: key name -> model (the shell derives the minimum TTL from the model's horizon).
    key_model: dict[str, str] = field(default_factory=dict)
    alerts: list[DriftAlert] = field(default_factory=list)
    #: (index of the label in the batch or -1, reason, rebuilt event of a held label):
    #: dead letters of the "join" stage.
    rejected: list[tuple[int, str, dict[str, Any] | None]] = field(default_factory=list)
    labels: dict[tuple[str, str], int] = field(default_factory=dict)
    predictions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (model, label lag in seconds) of each joined label.
    lags: list[tuple[str, float]] = field(default_factory=list)
    observations: list[PerfObservation] = field(default_factory=list)
    #: One performance point per closed window, per model (history.encode_perf fields).
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (model, version) -> current diagnosis, for those that changed or were evaluated.
    diagnoses: dict[tuple[str, str], str | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def count(self, what: str, model: str, outcome: str, n: int = 1) -> None:
        """Add to an outcome counter of labels or predictions."""
        table = self.labels if what == "labels" else self.predictions
        table[(model, outcome)] = table.get((model, outcome), 0) + n
