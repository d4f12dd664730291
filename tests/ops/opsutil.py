"""Helpers shared by the operations tests: the metric registry as data, free ports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class MetricInfo:
    """One metric family declared in ``driftline.runtime.metrics.REGISTRY``."""

    name: str  # the family name as exposed (counters end in _total)
    type: str
    labels: tuple[str, ...]

    def sample_names(self) -> set[str]:
        """Every sample name this family can expose."""
        if self.type == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def registry_metrics() -> dict[str, MetricInfo]:
    """Every metric in driftline.runtime.metrics.REGISTRY, by exposed name."""
    from driftline.runtime.metrics import REGISTRY

    out: dict[str, MetricInfo] = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the registry is ours
        name = getattr(collector, "_name", "")
        if not name.startswith("driftline_"):
            continue  # the standard process, platform and GC collectors (STANDARD below)
        mtype = collector._type
        if mtype == "counter":
            name = f"{name}_total"
        out[name] = MetricInfo(name, mtype, tuple(collector._labelnames))
    return out


CATALOGUE = ROOT / "docs" / "metrics.md"
_ROW_RE = re.compile(r"^\| `(driftline_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \| (.*)\|$")
PLANNED = "**Planned**"


def catalogue_rows() -> dict[str, tuple[MetricInfo, str]]:
    """Rows of the catalogue table in docs/metrics.md: name -> (metric, meaning)."""
    rows: dict[str, tuple[MetricInfo, str]] = {}
    for line in CATALOGUE.read_text().splitlines():
        m = _ROW_RE.match(line)
        if m:
            labels = tuple(re.findall(r"`([a-z_]+)`", m.group(3)))
            rows[m.group(1)] = (MetricInfo(m.group(1), m.group(2), labels), m.group(4).strip())
    return rows


def planned_metrics() -> dict[str, MetricInfo]:
    """Catalogue rows marked **Planned**: named by rules or dashboards before the code
    exports them (the catalogue test fails once the code declares them, so the marker
    goes when the metric lands)."""
    rows = catalogue_rows().items()
    return {n: info for n, (info, meaning) in rows if meaning.startswith(PLANNED)}


#: Samples of the standard process, platform and garbage-collector collectors that
#: driftline.runtime.metrics registers (docs/metrics.md, "Standard collectors").
STANDARD = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_objects_collected_total",
    "python_gc_collections_total",
    "python_gc_objects_uncollectable_total",
}


def all_sample_names() -> set[str]:
    """Every sample name the registry can expose, the planned metrics' names, the
    standard collectors' and Prometheus' own ``up``."""
    names = {"up"} | STANDARD
    for info in [*registry_metrics().values(), *planned_metrics().values()]:
        names |= info.sample_names()
    return names


_METRIC_RE = re.compile(r"\b(driftline_[a-z0-9_]+|process_[a-z_]+|python_[a-z_]+|up)\b")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (``driftline_*`` and ``up``).

    A name directly followed by ``(`` is a function, not a metric; label names inside
    ``{...}`` and ``by (...)`` never start with ``driftline_``.
    """
    found = set()
    for m in _METRIC_RE.finditer(expr):
        rest = expr[m.end() :].lstrip()
        if m.group(1) == "up" and rest.startswith("("):
            continue
        found.add(m.group(1))
    return found - _KEYWORDS
