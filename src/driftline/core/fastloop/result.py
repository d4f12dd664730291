"""What processing a batch gives back: alerts, statistics for metrics, window summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftline.contract.events import (
    DriftAlert,
)
from driftline.core.reference import ReferenceProfile

__all__ = ["BatchResult", "Observation", "observation"]


@dataclass(frozen=True)
class Observation:
    """A statistic for the metrics shell: model, version, feature, test, value."""

    model_id: str
    model_version: str
    feature: str
    test: str
    value: float


def observation(model_id: str, version: str, feature: str, test: str, value: float) -> Observation:
    """``Observation(...)`` without the frozen dataclass's per-field ``object.__setattr__``
    calls (a window makes about three per feature)."""
    obs = object.__new__(Observation)
    obs.__dict__.update(
        model_id=model_id, model_version=version, feature=feature, test=test, value=value
    )
    return obs


@dataclass
class BatchResult:
    """What one batch produced: alerts, statistics for metrics, new warm-up references."""

    alerts: list[DriftAlert] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    new_references: list[ReferenceProfile] = field(default_factory=list)
    windows_closed: int = 0
    late_events: int = 0
    future_events: int = 0
    #: One summary per closed window (plain data): the history behind reports and charts.
    windows: list[dict[str, Any]] = field(default_factory=list)
