"""The drift report's data: references and history -> plain report data.

:func:`build_report` turns a model's references and history (window summaries,
alerts, performance points: :mod:`driftline.runtime.history`) into plain data that
:mod:`driftline.views.report.render` draws as one self-contained HTML file. What a
person sees, top to bottom: the model's state (healthy, drifting, degraded) and a
summary; features ranked by drift, each with the reference vs current distribution on
the reference's decile groups (bars per category for categorical features), its
scores and verdict, and its drift score over time; output drift (class mix,
confidence); the alert timeline with diagnoses; accuracy vs estimated accuracy, label
coverage and lag (or "no labels yet"); data quality signals.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from driftline.contract.history import History, alert_order, decode_window
from driftline.contract.keys import segment_key
from driftline.core.fastloop.episodes import DETECTOR as SEQUENTIAL_DETECTOR
from driftline.core.fastloop.episodes import JOINT_DETECTOR
from driftline.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from driftline.runtime.history import load_history
from driftline.runtime.store import StateStore

__all__ = [
    "alert_figures",
    "figure",
    "score_figure",
    "ReportInput",
    "active_alerts",
    "build_report",
    "classify_state",
    "fmt_event_time",
    "fmt_time",
    "parse_since",
    "references_for",
    "report_from_store",
    "unknown_names_said",
]

#: Features in the ranking chart and the "top features over time" chart.
TOP_CHART = 20
TOP_OVER_TIME = 6
#: Points budget of all per-feature time series together (keeps 300 features small).
SERIES_POINTS_BUDGET = 40_000
MAX_POINTS_PER_SERIES = 400
MIN_POINTS_PER_SERIES = 60
MAX_ALERT_ROWS = 500
MAX_QUALITY_ROWS = 50
#: Accuracy this far below the reference's means "degraded".
ACCURACY_DROP = 0.05

_QUALITY_STATS = {
    "missing_rate_excess": "missing rate above reference",
    "out_of_range_rate": "out of reference range",
    "nonfinite_rate": "non-finite values",
    "unseen_category_rate": "unseen categories",
    "type_mismatch_rate": "type mismatches",
    "unknown_feature_rate": "unknown features",
}
#: The multivariate detector's row in the window summaries (core/fastloop/multivariate.py).
_JOINT = "__multivariate__"
_UNKNOWN_FEATURES = "__unknown_features__"
#: What the units that are not features are called where people read alerts.
_SIGNAL_NAMES = {
    "__class__": "class mix",
    "__confidence__": "confidence",
    "__prediction__": "prediction",
    "__top_class_share__": "top-class share",
    "__low_confidence__": "low-confidence rate",
    _JOINT: "joint (multivariate)",
    _UNKNOWN_FEATURES: "unknown features",
}
#: The output signals' series in the report, by the signal's name and what it measures.
_OUTPUT_SERIES = {
    unit: f"{_SIGNAL_NAMES[unit]} {what}"
    for unit, what in (
        ("__class__", "(PSI)"),
        ("__confidence__", "(PSI)"),
        ("__prediction__", "(PSI)"),
        ("__top_class_share__", "above reference"),
        ("__low_confidence__", "above reference"),
    )
}


def signal_name(unit: str) -> str:
    """An alert's feature as a person reads it: a feature's own name, or what an output
    signal or a pseudo-feature (``__class__``: ``class mix``) stands for."""
    return _SIGNAL_NAMES.get(unit, unit)


#: A window test's statistic, as its figures are named.
_TEST_FIGURES = {"psi": "PSI", "ks": "KS", "js": "JS", "chi2": "chi2", "joint_change": "z"}
#: Data-quality rates: their short name, and whether the figure is an excess over the
#: reference's rate (in percentage points) rather than a share of the events.
_QUALITY_FIGURES = {
    "missing_rate_excess": ("missing", True),
    "out_of_range_rate": ("out of range", False),
    "nonfinite_rate": ("non-finite", False),
    "unseen_category_rate": ("unseen", False),
    "type_mismatch_rate": ("mismatched", False),
    "unknown_feature_rate": ("unknown", False),
}


#: How many names of unknown features a line shows.
UNKNOWN_NAMES_SHOWN = 10


def unknown_names_said(names: Sequence[str], more: bool = False) -> str:
    """The names of unknown features as a line shows them: the first
    :data:`UNKNOWN_NAMES_SHOWN`, and how many there are.

    Examples
    --------
    >>> unknown_names_said(["zip5", "promo"])
    'zip5, promo'
    >>> unknown_names_said([f"x{i}" for i in range(12)])
    'x0, x1, x2, x3, x4, x5, x6, x7, x8, x9 and 2 more (12)'
    >>> unknown_names_said(["a", "b"], more=True)
    'a, b and more'
    """
    shown = ", ".join(names[:UNKNOWN_NAMES_SHOWN])
    rest = len(names) - UNKNOWN_NAMES_SHOWN
    total = f"{len(names):,}{'+' if more else ''}"
    if rest > 0:
        return f"{shown} and {rest:,}{'+' if more else ''} more ({total})"
    return f"{shown} and more" if more else shown


def figure(detector: str, kind: str, statistic: str, value: Any) -> tuple[str, str]:
    """A detector's figure as people read it: (the name of what it measures, the value
    with its unit). Plain text (escape it for HTML). Bare, a cusum effect ``1.11`` read
    as a PSI, a rate as a distance.

    The sequential detector's effects are in standard deviations of the reference (a
    feature's mean, a category's share), named by what moved and which way, as the core
    reads it (``("mean up", "1.11 sd")``, ``("spread down", "0.8 sd")``,
    ``("share:eu down", "0.5 sd")``: module :mod:`driftline.core.fastloop.episodes`);
    a window test
    says which (``("PSI", "0.42")``, ``KS``, ``JS``, ``chi2``); a data-quality rate is a
    share of the events (``("out of range", "12%")``) or an excess over the reference's
    (``("missing", "+5 pts")``); the slow loop's are an accuracy (``("acc", "84.4%")``),
    a mean absolute error (``MAE``), a concept-drift detector's error level
    (``error``); the multivariate detector's a CUSUM level (``joint CUSUM``). Unknown:
    ``("", bare number)``.

    Examples
    --------
    >>> figure("window_accuracy", "performance", "", 0.844)
    ('acc', '84.4%')
    >>> figure("data_quality", "data_quality", "missing_rate_excess", 0.05)
    ('missing', '+5 pts')
    """
    n = _num(value)
    if n == "—":
        return "", n
    v = float(value)
    if detector == SEQUENTIAL_DETECTOR:
        return statistic, f"{n} sd"
    if detector == JOINT_DETECTOR:
        return "joint CUSUM", n
    if detector == "window_accuracy":
        return "acc", f"{v:.1%}"
    if detector == "window_mae":
        return "MAE", n
    if kind == "concept_drift":
        return "error", n
    if statistic in _QUALITY_FIGURES:
        name, excess = _QUALITY_FIGURES[statistic]
        return name, (f"{100 * v:+.3g} pts" if excess else f"{100 * v:.3g}%")
    if statistic in _TEST_FIGURES:
        return _TEST_FIGURES[statistic], n
    return "", n


def alert_figures(a: Mapping[str, Any]) -> tuple[str, str]:
    """An alert's statistic and threshold as every view shows them (the terminal line,
    the report's and the status page's alert tables): the statistic named and with its
    unit (:func:`figure`), the threshold with its unit; an accuracy says how far it is
    from its threshold (``acc 84.4% (6.1 pts below the threshold)``, ``90.5%``). Its
    statistic is its feature's top entry's (a window test's or a data-quality rate's
    name)."""
    top = a.get("top_features") or []
    statistic = next(
        (t.get("statistic", "") for t in top if t.get("feature") == a.get("feature")), ""
    )
    name, stat = figure(a["detector"], a["kind"], statistic, a["statistic"])
    _, thr = figure(a["detector"], a["kind"], statistic, a["threshold"])
    thr = thr.removeprefix("+")  # a margin over the reference, not a signed change
    if a["detector"] == "window_accuracy" and stat != "—" and thr != "—":
        # measured from the threshold shown beside it, not from the reference's accuracy
        # (the alert does not carry that): a bare "-6.6 pts" read as the drop from it
        d = 100 * (float(a["statistic"]) - float(a["threshold"]))
        stat += f" ({abs(d):.1f} pts {'below' if d < 0 else 'above'} the threshold)"
    return (f"{name} {stat}" if name else stat), thr


def score_figure(a: Mapping[str, Any], t: Mapping[str, Any]) -> str:
    """A top feature's score as every view shows it: the sequential detector's effect in
    sd with what moved (``mean up 1.95 sd``), else named by its own statistic (``PSI
    0.42``, ``missing +5 pts``, the multivariate attribution's ``z 3.1``), bare when that
    is unknown."""
    detector = SEQUENTIAL_DETECTOR if a["detector"] == SEQUENTIAL_DETECTOR else ""
    name, value = figure(detector, "", t.get("statistic", ""), t.get("score"))
    return f"{name} {value}" if name else value


_DRIFT_KINDS = ("input_drift", "output_drift")
_DEGRADED_KINDS = ("performance", "concept_drift", "data_quality")


# ---------------------------------------------------------------------- formatting


def fmt_time(ms: int | None, with_seconds: bool = True) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM[:SS] UTC`` ("—" when unknown)."""
    if ms is None or ms < 0:
        return "—"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M") + " UTC"


def fmt_event_time(ms: int | None, untimed: bool = False) -> str:
    """An event time as :func:`fmt_time` writes it; where the events carried no time
    (``untimed``: a table without a timestamp column, whose replay numbers the events
    by their rows), the row it is: ``row 1,234``, never a date in 1970."""
    if untimed and ms is not None and ms >= 0:
        return f"row {ms:,}"
    return fmt_time(ms)


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    v = float(x)
    if 10**digits <= abs(v) < 1e15:
        return f"{v:,.0f}"  # a price's MAE reads 39,558 and a mean 1,494, not 1.49e+03
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e15):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"


def _r(x: float, digits: int = 4) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


_SINCE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | None, newest_ms: int | None) -> int | None:
    """``--since``: an RFC 3339 / ISO date(-time), epoch ms, or a span like ``6h``/``7d``.

    A span counts back from the newest window in the history (``newest_ms``), so a
    report of an old replay means the same as one of a live model. Naive date-times
    are UTC.
    """
    if not text:
        return None
    t = text.strip()
    m = _SINCE_RE.match(t)
    if m:
        if newest_ms is None:
            return None
        return int(newest_ms - float(m.group(1)) * _UNITS[m.group(2)] * 1000)
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a date-time (2026-01-01T10:00Z), epoch ms, "
            "or a span (90m, 6h, 7d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


# ---------------------------------------------------------------------- state


def active_alerts(
    alerts: Sequence[Mapping[str, Any]],
    latest: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Alerts whose episode is still open: the last alert of each (version, segment,
    kind) is a ``firing`` or ``updated`` one (the latter: the episode's latest state, with
    every feature drifting), and no later window of that stream says otherwise.

    ``latest`` maps (version, segment) to the last window (``end`` and ``episodes``).
    Each alert gains ``since``: when its episode began firing (its earliest alert among
    ``alerts``), where the alert's own ``detected_at`` is its latest update.
    """
    last: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    began: dict[tuple[str, str, str, int], int] = {}
    for a in alerts:
        key = (a["model_version"], segment_key(a.get("segment")), a["kind"])
        prev = last.get(key)
        if prev is None or alert_order(a) >= alert_order(prev):
            last[key] = a
        if a["status"] != "resolved":
            ep = (*key, a["episode"])
            began[ep] = min(began.get(ep, a["detected_at"]), a["detected_at"])
    out = []
    for (ver, seg, kind), a in last.items():
        if a["status"] == "resolved":
            continue
        w = (latest or {}).get((ver, seg))
        if w is not None and w["end"] > a["detected_at"] and not w["episodes"].get(kind, True):
            continue  # a later window says the episode is over (its resolution was lost)
        out.append({**a, "since": began[(ver, seg, kind, a["episode"])]})
    return sorted(out, key=lambda a: a["detected_at"])


def classify_state(
    active: Sequence[Mapping[str, Any]], has_windows: bool, accuracy_drop: bool = False
) -> str:
    """``degraded`` (performance, concept drift or data quality alert firing, or
    accuracy below the reference's), ``drifting`` (input or output drift firing),
    ``healthy``, or ``unknown`` (no window yet)."""
    kinds = {a["kind"] for a in active}
    if accuracy_drop or kinds & set(_DEGRADED_KINDS):
        return "degraded"
    if kinds & set(_DRIFT_KINDS):
        return "drifting"
    return "healthy" if has_windows else "unknown"


# ---------------------------------------------------------------------- building


@dataclass
class ReportInput:
    """Everything a report is built from."""

    model_id: str
    history: History
    #: References by reference id (windows name the reference they were tested on).
    references: Mapping[str, ReferenceProfile]
    version: str | None = None
    segment: str | None = None
    since_ms: int | None = None
    #: Where the data came from, shown in the header (never a password).
    source: str = ""
    generated_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    #: The events carried no time (a table without a timestamp column, replayed in row
    #: order): their times are the rows' numbers, 0, 1, 2, ... (:func:`fmt_event_time`).
    untimed: bool = False
    #: The slow loop's performance of the model (its entry in
    #: :func:`driftline.core.slowloop.build_report`, as ``driftline labels --report``
    #: prints it): the per-class precision and recall of the chosen version.
    performance: Mapping[str, Any] = field(default_factory=dict)


def _group_labels(prof: NumericProfile) -> list[str]:
    edges, groups, nbins = prof.edges, prof.groups.tolist(), int(prof.counts.size)
    labels = []
    for i, g in enumerate(groups):
        nxt = groups[i + 1] if i + 1 < len(groups) else nbins
        lo = None if g == 0 else float(edges[g - 1])
        hi = None if nxt >= nbins else float(edges[nxt - 1])
        if lo is None and hi is None:
            labels.append("all")
        elif lo is None:
            labels.append(f"≤ {hi:.3g}")
        elif hi is None:
            labels.append(f"> {lo:.3g}")
        else:
            labels.append(f"{lo:.3g} – {hi:.3g}")
    return labels


def _shares(counts: Sequence[float] | np.ndarray) -> list[float | None] | None:
    arr = np.asarray(counts, dtype=np.float64)
    total = float(arr.sum())
    if arr.size == 0 or total <= 0:
        return None
    return [_r(float(x) / total) for x in arr]


def _ref_hist(prof: NumericProfile | CategoricalProfile) -> tuple[list[str], list[float | None]]:
    if isinstance(prof, NumericProfile):
        counts = np.add.reduceat(prof.counts, prof.groups) if prof.counts.size else prof.counts
        return _group_labels(prof), _shares(counts) or []
    return [*prof.categories, "(other)"], _shares(prof.counts) or []


def _buckets(n: int, points: int) -> list[tuple[int, int]]:
    """Consecutive index ranges cutting ``n`` windows into at most ``points`` buckets."""
    if n <= points:
        return [(i, i + 1) for i in range(n)]
    cuts = np.linspace(0, n, points + 1).round().astype(int).tolist()
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _gap_ms(wins: Sequence[Mapping[str, Any]], window_seconds: float) -> float:
    """How long a silence between two windows is a gap in the charts: time for a whole
    window without an event. A time window's length; for count windows, the median
    window's span (a quiet night between windows of a few minutes is a gap, the
    silence between two events of a busy stream is not)."""
    if window_seconds > 0:
        return window_seconds * 1000.0
    spans = [w["end"] - w["start"] for w in wins]
    return max(float(np.median(spans)), 1.0) if spans else math.inf


def _with_gaps(
    wins: Sequence[Mapping[str, Any]], buckets: Sequence[tuple[int, int]], gap_ms: float
) -> tuple[list[tuple[int, int] | None], list[int]]:
    """``buckets`` with a ``None`` between two whose windows are more than ``gap_ms``
    apart, and the time of each (a gap's: the middle of the silence): the charts break
    their lines there instead of drawing one across a time with no events."""
    slots: list[tuple[int, int] | None] = []
    times: list[int] = []
    for k, (a, b) in enumerate(buckets):
        if k:
            before = wins[buckets[k - 1][1] - 1]["end"]
            if wins[a]["start"] - before > gap_ms:
                slots.append(None)
                times.append((before + wins[a]["start"]) // 2)
        slots.append((a, b))
        times.append(wins[b - 1]["end"])
    return slots, times


def _pick_stream(
    windows: Sequence[Mapping[str, Any]], version: str | None, segment: str | None
) -> tuple[str | None, str, list[str], list[str]]:
    """The (version, segment) the report is about, and the others present."""
    versions = list(dict.fromkeys(w["model_version"] for w in reversed(windows)))
    if version is None:
        version = versions[0] if versions else None
    segs = list(
        dict.fromkeys(w["segment"] for w in reversed(windows) if w["model_version"] == version)
    )
    if segment is None:
        segment = "" if "" in segs or not segs else segs[0]
    return version, segment, versions, segs


def _joint_block(
    runs: Sequence[tuple[int, Mapping[str, Any]]],
    series: Callable[[str], tuple[list[float | None], list[int]]],
    alerts: Sequence[Mapping[str, Any]],
) -> dict[str, Any] | None:
    """The multivariate detector over time (level / threshold per bucket) and what its
    latest alert named; None when no window carries it."""
    if not runs:
        return None
    values, drift = series(_JOINT)
    last = next((a for a in reversed(alerts) if a.get("detector") == "multivariate"), None)
    peak = max((float(t["value"]) for _, t in runs if math.isfinite(t["value"])), default=0.0)
    return {
        "values": values,
        "drift": drift,
        "threshold": 1.0,
        "latest": _r(float(runs[-1][1]["value"])),
        "peak": _r(peak),
        "drifted_windows": sum(1 for _, t in runs if t["drifted"]),
        "windows": len(runs),
        "named": [f["feature"] for f in (last or {}).get("top_features", [])[:5]],
        "alert_at": last["detected_at"] if last else None,
    }


def _perf_block(
    perf: Sequence[Mapping[str, Any]], ref: ReferenceProfile | None
) -> dict[str, Any] | None:
    if not perf:
        return None
    keys = ("accuracy", "estimated_accuracy", "coverage", "lag_seconds", "labels", "mae")
    out: dict[str, Any] = {"t": [p["at"] for p in perf]}
    for k in keys:
        out[k] = [p.get(k) for p in perf]
    out["reference_accuracy"] = ref.outputs.accuracy if ref is not None else None
    out["reference_mae"] = ref.outputs.mae if ref is not None else None
    # A regression model's windows have an error, not an accuracy: its chart is the MAE.
    out["regression"] = any(v is not None for v in out["mae"]) and not any(
        v is not None for v in out["accuracy"]
    )
    return out


def build_report(inp: ReportInput) -> dict[str, Any]:
    """The report's content as plain data (what :func:`render_report` draws).

    Raises
    ------
    ValueError
        No reference for the windows of the chosen version, and no windows at all.
    """
    hist = inp.history
    version, segment, versions, segments = _pick_stream(hist.windows, inp.version, inp.segment)
    wins = [
        w
        for w in hist.windows
        if w["model_version"] == version
        and w["segment"] == segment
        and (inp.since_ms is None or w["end"] >= inp.since_ms)
    ]
    alerts = [
        a
        for a in hist.alerts
        if (version is None or a["model_version"] == version)
        and segment_key(a.get("segment")) == segment
        and (inp.since_ms is None or a["detected_at"] >= inp.since_ms)
    ]
    perf = [
        p
        for p in hist.perf
        if (version is None or p["model_version"] == version)
        and p.get("segment", "") == segment
        and (inp.since_ms is None or p["at"] >= inp.since_ms)
    ]
    ref_id = wins[-1]["reference"] if wins else None
    ref = inp.references.get(ref_id) if ref_id else None
    if ref is None:
        # No window yet (or its reference is gone): fall back to the version's reference.
        cands = [r for r in inp.references.values() if r.model_version == version]
        ref = cands[0] if cands else next(iter(inp.references.values()), None)
    if ref is None and not wins:
        raise ValueError(f"no reference and no history for model {inp.model_id!r}")
    if version is None and ref is not None:
        version = ref.model_version

    n = len(wins)
    times = [w["end"] for w in wins]
    tested: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    quality: dict[tuple[str, str], list[tuple[int, Mapping[str, Any]]]] = {}
    for i, w in enumerate(wins):
        for t in w["tests"]:
            if t["statistic"] == "psi" or t["feature"] in (*_OUTPUT_SERIES, _JOINT):
                tested.setdefault(t["feature"], []).append((i, t))
            elif t["statistic"] in _QUALITY_STATS:
                quality.setdefault((t["feature"], t["statistic"]), []).append((i, t))

    ref_wins = [
        i for i, w in enumerate(wins) if ref is not None and w["reference"] == ref.reference_id
    ]
    names = list(ref.features) if ref is not None else []
    for f in tested:
        if f not in names and not f.startswith("__"):
            names.append(f)
    n_features = max(1, len(names))
    points = max(
        MIN_POINTS_PER_SERIES,
        min(MAX_POINTS_PER_SERIES, SERIES_POINTS_BUDGET // n_features),
    )
    # a slot is a bucket of windows, or None: a gap (no event for a window's time),
    # a null in every series, which the charts draw as a break in the line
    gap_ms = _gap_ms(wins, ref.policy.window_seconds if ref is not None else 0.0)
    slots, t_axis = _with_gaps(wins, _buckets(n, points), gap_ms)

    def series(feature: str) -> tuple[list[float | None], list[int]]:
        """Max score per time bucket, and the buckets in which the feature drifted."""
        per_window: list[tuple[float, bool] | None] = [None] * n
        for i, t in tested.get(feature, []):
            v = float(t["value"])
            prev = per_window[i]
            if prev is None or v > prev[0]:
                per_window[i] = (v, bool(t["drifted"]))
        vals: list[float | None] = []
        drifted_at: list[int] = []
        for slot in slots:
            if slot is None:
                vals.append(None)
                continue
            a, b = slot
            chunk = [x for x in per_window[a:b] if x is not None and math.isfinite(x[0])]
            vals.append(_r(max(x[0] for x in chunk)) if chunk else None)
            if any(x[1] for x in chunk):
                drifted_at.append(len(vals) - 1)
        return vals, drifted_at

    def window_hist(i: int, key: str) -> list[float | None] | None:
        h = wins[i]["hist"].get(key)
        return _shares(h) if h else None

    def current_and_worst(key: str) -> dict[str, Any]:
        """Shares of the latest window and of the highest-PSI window on this reference."""
        with_hist = [i for i in ref_wins if wins[i]["hist"].get(key)]
        if not with_hist:
            return {"cur": None, "worst": None, "worst_at": None}
        have = set(with_hist)
        scored = [
            (float(t["value"]), i)
            for i, t in tested.get(key, [])
            if i in have and t["statistic"] == "psi" and math.isfinite(t["value"])
        ]
        wi = max(scored)[1] if scored else with_hist[-1]
        return {
            "cur": window_hist(with_hist[-1], key),
            "worst": window_hist(wi, key),
            "worst_at": wins[wi]["end"],
        }

    features: list[dict[str, Any]] = []
    for name in names:
        prof = ref.features.get(name) if ref is not None else None
        runs = tested.get(name, [])
        latest_t = runs[-1][1] if runs else None
        thr = float(latest_t["threshold"]) if latest_t else (prof.psi_threshold if prof else 0.0)
        peak_i, peak_t = (
            max(runs, key=lambda it: float(it[1]["value"]) if math.isfinite(it[1]["value"]) else -1)
            if runs
            else (None, None)
        )
        drifted_n = sum(1 for _, t in runs if t["drifted"])
        verdict = (
            "drifting"
            if latest_t is not None and latest_t["drifted"]
            else ("drifted" if drifted_n else ("stable" if runs else "untested"))
        )
        peak = float(peak_t["value"]) if peak_t is not None else None
        ratio = (peak / thr) if peak is not None and thr > 0 else (peak or 0.0)
        labels: list[str] = []
        ref_shares: list[float | None] = []
        cw: dict[str, Any] = {"cur": None, "worst": None, "worst_at": None}
        if prof is not None:
            labels, ref_shares = _ref_hist(prof)
            cw = current_and_worst(name)
        vals, drift = series(name)
        stat_extra = {}
        if latest_t is not None:
            for k in ("ks", "chi2", "js"):
                if latest_t.get(k) is not None:
                    stat_extra[k] = latest_t[k]
        desc = ""
        if isinstance(prof, NumericProfile):
            desc = (
                f"reference mean {_num(prof.mean)}, sd {_num(prof.std)}, "
                f"range [{_num(prof.min)}, {_num(prof.max)}], missing {prof.missing_rate:.1%}"
            )
        elif isinstance(prof, CategoricalProfile):
            desc = (
                f"{len(prof.categories)} reference categories + other, "
                f"missing {prof.missing_rate:.1%}"
            )
        features.append(
            {
                "name": name,
                "kind": prof.kind if prof is not None else "unknown",
                "verdict": verdict,
                "latest": _r(float(latest_t["value"])) if latest_t else None,
                "p": latest_t.get("p_value") if latest_t else None,
                "peak": _r(peak) if peak is not None else None,
                "peak_at": wins[peak_i]["end"] if peak_i is not None else None,
                "ratio": _r(ratio) if ratio is not None else 0.0,
                "threshold": _r(thr),
                "drifted_windows": drifted_n,
                "tested_windows": len(runs),
                "extra": stat_extra,
                "desc": desc,
                "labels": labels,
                "ref": ref_shares,
                **cw,
                "psi": vals,
                "drift": drift,
            }
        )
    order = {"drifting": 0, "drifted": 1, "stable": 2, "untested": 3}
    features.sort(key=lambda f: (order[f["verdict"]], -(f["ratio"] or 0.0), f["name"]))

    # -- outputs
    outputs: dict[str, Any] = {"series": [], "classes": None, "confidence": None}
    if ref is not None:
        out = ref.outputs
        outputs["task"] = out.task
        if out.classes is not None:
            outputs["classes"] = {
                "labels": [*out.classes.categories, "(other)"],
                "ref": _shares(out.classes.counts),
                **current_and_worst("__class__"),
            }
        if out.confidence is not None:
            outputs["confidence"] = {
                "labels": _group_labels(out.confidence),
                "ref": _shares(np.add.reduceat(out.confidence.counts, out.confidence.groups)),
                **current_and_worst("__confidence__"),
            }
        outputs["low_confidence_threshold"] = _r(out.low_confidence_threshold)
        outputs["low_confidence_rate"] = _r(out.low_confidence_rate)
        outputs["top_class_share"] = _r(out.top_class_share)
    for key, label in _OUTPUT_SERIES.items():
        runs = tested.get(key, [])
        if not runs:
            continue
        vals, drift = series(key)
        outputs["series"].append(
            {
                "key": key,
                "name": label,
                "values": vals,
                "drift": drift,
                "threshold": _r(float(runs[-1][1]["threshold"])),
                "latest": _r(float(runs[-1][1]["value"])),
                "drifted_windows": sum(1 for _, t in runs if t["drifted"]),
            }
        )

    # -- data quality
    qrows: list[dict[str, Any]] = []
    for (feat, stat), runs in quality.items():
        vals_q = [float(t["value"]) for _, t in runs if math.isfinite(t["value"])]
        if not vals_q:
            continue
        thr = float(runs[-1][1]["threshold"])
        over = sum(1 for v in vals_q if thr > 0 and v >= thr)
        row = {
            "feature": feat,
            "statistic": stat,
            "label": _QUALITY_STATS[stat],
            "peak": _r(max(vals_q)),
            "latest": _r(vals_q[-1]),
            "threshold": _r(thr),
            "over": over,
        }
        if feat == _UNKNOWN_FEATURES:
            # which features: the names the latest window that has them gives
            named = next((wins[i] for i, _ in reversed(runs) if wins[i].get("unknown_names")), None)
            if named is not None:
                row["names"] = named["unknown_names"]
                row["names_more"] = bool(named.get("unknown_names_more"))
        qrows.append(row)
    checks = len(qrows)
    qrows = sorted(
        (q for q in qrows if q["over"] > 0),
        key=lambda q: (-q["over"], -(q["peak"] or 0), q["feature"]),
    )

    # -- alerts and episodes
    latest_win = {(version or "", segment): wins[-1]} if wins else {}
    active = active_alerts(alerts, latest_win)
    episodes: dict[tuple[str, int], dict[str, Any]] = {}
    for a in alerts:
        ep = episodes.setdefault(
            (a["kind"], a["episode"]),
            {
                "kind": a["kind"],
                "episode": a["episode"],
                "start": None,
                "end": None,
                "severity": a["severity"],
                "feature": a["feature"],
            },
        )
        if a["status"] == "firing":
            ep["start"] = a["detected_at"]
            ep["severity"], ep["feature"] = a["severity"], a["feature"]
        elif a["status"] == "updated":  # the episode grew or became critical
            ep["severity"] = a["severity"]
        else:
            ep["end"] = a["detected_at"]
            ep["severity"] = a["severity"]
    t_lo = min([*times[:1], *(a["detected_at"] for a in alerts[:1])], default=None)
    t_hi = max([*times[-1:], *(a["detected_at"] for a in alerts[-1:])], default=None)
    active_keys = {(a["kind"], a["episode"]) for a in active}
    ep_list = []
    for ep_key, ep in sorted(episodes.items(), key=lambda kv: (kv[1]["start"] or 0, kv[0])):
        if ep["start"] is None:
            ep["start"] = inp.since_ms if inp.since_ms is not None else t_lo
        if ep["end"] is None:
            ep["open"] = ep_key in active_keys
            ep["end"] = t_hi
        ep_list.append(ep)

    perf_block = _perf_block(perf, ref)
    acc_drop = False
    if perf_block and ref is not None and ref.outputs.accuracy is not None:
        last_acc = next(
            (
                p.get("accuracy") if p.get("accuracy") is not None else p.get("estimated_accuracy")
                for p in reversed(perf)
                if p.get("accuracy") is not None or p.get("estimated_accuracy") is not None
            ),
            None,
        )
        acc_drop = last_acc is not None and last_acc < ref.outputs.accuracy - ACCURACY_DROP
    state = classify_state(active, bool(wins), acc_drop)

    drifted_feats = [f for f in features if f["verdict"] in ("drifting", "drifted")]
    top_over_time = [
        {"name": f["name"], "ratio": f["ratio"], "psi": f["psi"], "threshold": f["threshold"]}
        for f in features[:TOP_OVER_TIME]
        if f["psi"] and any(v is not None for v in f["psi"])
    ]
    joint = _joint_block(tested.get(_JOINT, []), series, alerts)
    if joint is not None:
        # The joint statistic is already over its threshold (1), next to the features'.
        top_over_time.append(
            {
                "name": "joint (multivariate)",
                "ratio": joint["peak"],
                "psi": joint["values"],
                "threshold": 1.0,
            }
        )
    return {
        "model": inp.model_id,
        "version": version,
        "segment": segment,
        "versions": versions,
        "segments": segments,
        "source": inp.source,
        "generated": inp.generated_ms,
        "untimed": inp.untimed,
        "since": inp.since_ms,
        "state": state,
        "active": active,
        "accuracy_drop": acc_drop,
        "reference": (
            {
                "id": ref.reference_id,
                "version": ref.model_version,
                "rows": ref.row_count,
                "source": ref.source,
                "created": ref.created_at,
                "window_events": ref.policy.window_events,
                "window_seconds": ref.policy.window_seconds,
                "false_alarm_events": ref.policy.false_alarm_events,
            }
            if ref is not None
            else None
        ),
        "windows": n,
        "events": sum(w["count"] for w in wins),
        "first": wins[0]["start"] if wins else None,
        "last": wins[-1]["end"] if wins else None,
        "last_window": (
            {k: wins[-1][k] for k in ("window", "start", "end", "count")} if wins else None
        ),
        "skipped": hist.skipped,
        "truncated": hist.truncated,
        "other_references": sorted(
            {w["reference"] for w in wins} - ({ref.reference_id} if ref else set())
        ),
        "t": t_axis,
        "features": features,
        "drifted_count": len(drifted_feats),
        "top_over_time": top_over_time,
        "joint": joint,
        "outputs": outputs,
        "quality": qrows[:MAX_QUALITY_ROWS],
        "quality_more": max(0, len(qrows) - MAX_QUALITY_ROWS),
        "quality_checks": checks,
        "alerts": alerts[-MAX_ALERT_ROWS:],
        "alerts_more": max(0, len(alerts) - MAX_ALERT_ROWS),
        "episodes": ep_list,
        "perf": perf_block,
        "per_class": _per_class(inp.performance, version, segment),
    }


def _per_class(
    performance: Mapping[str, Any], version: str | None, segment: str
) -> list[dict[str, Any]]:
    """Precision, recall and support per class of a classifier's version, from its
    labelled predictions (none for a segment: the slow loop keeps them per version)."""
    if segment or version is None:
        return []
    got = performance.get("versions", {}).get(version, {}).get("per_class", {})
    return [{"class": name, **pc} for name, pc in got.items()]


# ---------------------------------------------------------------------- sources


async def references_for(
    store: StateStore, model_id: str, versions: Sequence[str]
) -> dict[str, ReferenceProfile]:
    """The stored references of a model's versions (with the ``default`` fallback),
    by reference id. A corrupt reference raises :class:`~driftline.errors.StateCorrupt`."""
    out: dict[str, ReferenceProfile] = {}
    for v in dict.fromkeys(versions):
        found = await store.resolve_reference(model_id, v)
        if found is not None:
            ref = ReferenceProfile.from_bytes(found[1])
            out[ref.reference_id] = ref
    return out


async def report_from_store(
    store: StateStore,
    model_id: str,
    *,
    version: str | None = None,
    segment: str | None = None,
    since: str | None = None,
    max_windows: int = 5_000,
    source: str = "",
    performance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Report data for a model from Redis: its history and stored references;
    ``performance``: the slow loop's for the model (:attr:`ReportInput.performance`).

    Raises
    ------
    ValueError
        Neither history nor a reference exists for the model, or ``since`` is invalid.
    """
    newest = await store.read_history(model_id, "windows", count=1)
    newest_ms = None
    if newest:
        try:
            newest_ms = decode_window(newest[0][1])["end"]
        except ValueError:
            newest_ms = None
    since_ms = parse_since(since, newest_ms)
    hist = await load_history(store, model_id, since_ms=since_ms, max_windows=max_windows)
    versions = list(dict.fromkeys(w["model_version"] for w in reversed(hist.windows)))
    if version is not None:
        versions.insert(0, version)
    if not versions:
        versions = [v for v in await store.list_references(model_id) if v != "default"]
        versions = versions or ["default"]
    refs = await references_for(store, model_id, versions)
    if not refs and not hist.windows:
        raise ValueError(f"model {model_id!r} has no stored reference and no history")
    inp = ReportInput(
        model_id=model_id,
        history=hist,
        references=refs,
        version=version,
        segment=segment,
        since_ms=since_ms,
        source=source,
        performance=performance or {},
    )
    return build_report(inp)
