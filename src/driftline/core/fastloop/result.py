"""What processing a batch gives back: alerts, statistics for metrics, window summaries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from driftline.contract.events import (
    DriftAlert,
)
from driftline.core.reference import ReferenceProfile

__all__ = ["BatchResult", "Observation", "ObservationBlock", "Observations", "observation"]


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


class ObservationBlock(NamedTuple):
    """One window's statistics as columns: ``features[i]``'s ``tests[i]`` is ``values[i]``."""

    model_id: str
    model_version: str
    features: list[str]
    tests: list[str]
    values: list[float]


class Observations:
    """A batch's statistics for the metrics shell, one :class:`ObservationBlock` per
    closed window.

    A window has about 120 statistics: an object each was a tenth of closing it, and
    most of the collector's work. Iterating gives :class:`Observation` objects, made on
    demand, in the order the statistics were added.
    """

    __slots__ = ("blocks",)

    def __init__(self, items: Iterable[Observation] = ()) -> None:
        self.blocks: list[ObservationBlock] = []
        self.extend(items)

    def add(
        self,
        model_id: str,
        version: str,
        features: list[str],
        tests: list[str],
        values: list[float],
    ) -> None:
        """Add one window's statistics (lists of one length, not copied)."""
        self.blocks.append(ObservationBlock(model_id, version, features, tests, values))

    def extend(self, items: Iterable[Observation]) -> None:
        """Add statistics: another batch's (its blocks) or single observations."""
        if isinstance(items, Observations):
            self.blocks.extend(items.blocks)
            return
        for o in items:
            self.add(o.model_id, o.model_version, [o.feature], [o.test], [o.value])

    def __iadd__(self, items: Iterable[Observation]) -> Observations:
        self.extend(items)
        return self

    def __len__(self) -> int:
        return sum(len(b.values) for b in self.blocks)

    def __iter__(self) -> Iterator[Observation]:
        for b in self.blocks:
            for f, t, v in zip(b.features, b.tests, b.values, strict=True):
                yield observation(b.model_id, b.model_version, f, t, v)


@dataclass
class BatchResult:
    """What one batch produced: alerts, statistics for metrics, new warm-up references."""

    alerts: list[DriftAlert] = field(default_factory=list)
    observations: Observations = field(default_factory=Observations)
    new_references: list[ReferenceProfile] = field(default_factory=list)
    windows_closed: int = 0
    late_events: int = 0
    future_events: int = 0
    #: Per (model, version), the batch's late and future-dated events where either is
    #: not zero (:mod:`~driftline.core.fastloop.clock`; ``late_events`` and
    #: ``future_events`` are their sums): ``driftline_late_or_future_events_total``.
    late_future: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    #: One summary per closed window (plain data): the history behind reports and charts.
    windows: list[dict[str, Any]] = field(default_factory=list)
