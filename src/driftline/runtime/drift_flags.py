"""``driftline_drift_active``: the paging rules' view of the drift episodes, with the
severity of the alert events.

One series per (model, version, kind) a worker holds: 1 while an episode of that kind
is firing, 0 once it resolved, labelled ``severity`` with the episode's severity, the
one its alert events on the alert topic carry (``warning`` or ``critical``; the cores
decide it: :mod:`driftline.core.fastloop.episodes`, :mod:`driftline.core.slowloop`).
The drift rules of deploy/prometheus/driftline-rules.yml take their ``severity`` from
the series, so Alertmanager and ``driftline alerts`` say the same for the same episode.

When an episode's severity rises (``warning`` to ``critical``, an ``updated`` alert),
the series with the old label is removed and one with the new label set: Prometheus
sees the warning alert resolve and the critical one start (the critical rules'
``for: 1m`` counts from the rise: docs/metrics.md, *Escalation*). A resolved
episode's series keeps the label it fired with and goes to 0.

Segments of one (model, version) fold into its series: firing while any segment's
episode fires, ``critical`` if any firing one is. A batch touches some segments only, so
the worker remembers every segment's last flags per partition and folds them all: a
batch of a quiet segment does not clear the flag another segment's episode holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Gauge

__all__ = ["DriftFlags", "Flag", "flags_of"]

#: (model, version, kind): a series of the gauge without its severity.
FlagKey = tuple[str, str, str]
#: (firing, severity) of a (model, version, kind).
Flag = tuple[bool, str]


class Episodic(Protocol):
    """An episode of either core (``DriftEpisode``, ``SlowEpisode``)."""

    @property
    def firing(self) -> bool: ...

    @property
    def severity(self) -> str: ...


def flags_of(
    streams: Iterable[tuple[str, str, Mapping[str, Episodic]]],
    exported: Callable[[str], bool],
) -> dict[FlagKey, Flag]:
    """The flags of streams' ``(model, version, {kind: episode})``, segments folded
    (module notes); models not ``exported`` (past the metrics' model limit) left out.

    Examples
    --------
    >>> from types import SimpleNamespace as Ep
    >>> segments = [
    ...     ("churn", "3", {"input_drift": Ep(firing=True, severity="warning")}),
    ...     ("churn", "3", {"input_drift": Ep(firing=True, severity="critical")}),
    ...     ("churn", "3", {"input_drift": Ep(firing=False, severity="warning")}),
    ... ]
    >>> flags_of(segments, lambda model: True)
    {('churn', '3', 'input_drift'): (True, 'critical')}
    """
    out: dict[FlagKey, Flag] = {}
    for model, version, episodes in streams:
        if not exported(model):
            continue
        for kind, ep in episodes.items():
            key = (model, version, kind)
            was = out.get(key)
            if was is None or (ep.firing and not was[0]):
                out[key] = (ep.firing, ep.severity)
            elif ep.firing and ep.severity == "critical":
                out[key] = (True, "critical")
    return out


@dataclass(frozen=True)
class _Seen:
    """An episode's flag as a batch left it (the state object may be replaced later)."""

    firing: bool
    severity: str


class DriftFlags:
    """The ``driftline_drift_active`` series one worker exports, per partition.

    Parameters
    ----------
    gauge
        The gauge (labels ``model``, ``version``, ``kind``, ``severity``).
    """

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        #: partition -> (model, version, kind) -> the severity its series is labelled with.
        self.series: dict[int, dict[FlagKey, str]] = {}
        #: partition -> (model, version, segment) -> its episodes' last (firing, severity).
        self.segments: dict[int, dict[tuple[str, str, str], dict[str, _Seen]]] = {}

    def export_streams(
        self,
        partition: int,
        streams: Iterable[tuple[str, str, str, Mapping[str, Episodic]]],
        exported: Callable[[str], bool],
    ) -> None:
        """Set the series of the ``(model, version, segment, {kind: episode})`` a batch
        of ``partition`` touched, each (model, version) folded over every segment of it
        seen on the partition (module notes)."""
        known = self.segments.setdefault(partition, {})
        touched: set[tuple[str, str]] = set()
        for model, version, segment, episodes in streams:
            known[(model, version, segment)] = {
                kind: _Seen(ep.firing, ep.severity) for kind, ep in episodes.items()
            }
            touched.add((model, version))
        folded = (
            (model, version, episodes)
            for (model, version, _), episodes in known.items()
            if (model, version) in touched
        )
        self.export(partition, flags_of(folded, exported))

    def export(self, partition: int, flags: Mapping[FlagKey, Flag]) -> None:
        """Set the series of ``flags`` (folded episodes of ``partition``)."""
        mine = self.series.setdefault(partition, {})
        for key, (firing, severity) in flags.items():
            was = mine.get(key)
            if was is not None and not firing:
                severity = was  # resolved: the series that fired goes to 0
            elif was is not None and was != severity:
                with contextlib.suppress(KeyError):
                    self.gauge.remove(*key, was)
            self.gauge.labels(*key, severity).set(1 if firing else 0)
            mine[key] = severity

    def release(self, partition: int) -> None:
        """Stop exporting ``partition``'s series (it moved to another worker)."""
        self.segments.pop(partition, None)
        for key, severity in self.series.pop(partition, {}).items():
            with contextlib.suppress(KeyError):
                self.gauge.remove(*key, severity)
