"""The drift report: one self-contained HTML file built from what Driftline stores.

:func:`build_report` turns a model's references and history (:mod:`driftline.history`:
window summaries, alerts, performance points) into plain data; :func:`render_report`
turns that into ONE HTML file that opens with no network: the charting library
(Chart.js, vendored in ``driftline/report_assets``, MIT licence) and the data are
inlined, and a Content-Security-Policy allows no fetch of any kind, only the page's
own scripts (by hash).

What a person sees, top to bottom: the model's state (healthy, drifting, degraded)
and a summary; features ranked by drift with a search box (the first
:data:`TOP_SHOWN` listed, the rest behind a button, the first :data:`TOP_OPEN`
expanded), each with the reference vs current distribution on the reference's decile
groups (bars per category for categorical features), its scores and verdict, and its
drift score over time; output drift (class mix, confidence); the alert timeline with
diagnoses; accuracy vs estimated accuracy, label coverage and lag (or "no labels
yet"); data quality signals.

The same renderer draws the status page's per-model pages (:mod:`driftline.serve`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.contract.history import History, decode_window
from driftline.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from driftline.runtime.history import load_history, replay_history
from driftline.runtime.store import StateStore

__all__ = [
    "CHARTJS_LICENSE",
    "CHARTJS_VERSION",
    "ReportInput",
    "active_alerts",
    "build_report",
    "classify_state",
    "content_security_policy",
    "fmt_time",
    "page_css",
    "parse_since",
    "references_for",
    "render_report",
    "report_from_replay",
    "report_from_store",
    "write_report",
]

#: The vendored charting library (see docs/report.md).
CHARTJS_VERSION = "4.6.1"
CHARTJS_LICENSE = "MIT"
#: Features listed before "show all" (the search box finds the others).
TOP_SHOWN = 25
#: Features whose details are open when the report opens.
TOP_OPEN = 5
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
_OUTPUT_SERIES = {
    "__class__": "class mix (PSI)",
    "__confidence__": "confidence (PSI)",
    "__prediction__": "prediction (PSI)",
    "__top_class_share__": "top-class share above reference",
    "__low_confidence__": "low-confidence rate above reference",
}
_DRIFT_KINDS = ("input_drift", "output_drift")
_DEGRADED_KINDS = ("performance", "concept_drift", "data_quality")


def _asset(name: str) -> str:
    return (resources.files("driftline") / "report_assets" / name).read_text(encoding="utf-8")


def page_css() -> str:
    """The stylesheet shared by the report and the status page."""
    return _asset("report.css")


# ---------------------------------------------------------------------- formatting


def fmt_time(ms: int | None, with_seconds: bool = True) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM[:SS] UTC`` ("—" when unknown)."""
    if ms is None or ms < 0:
        return "—"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M") + " UTC"


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    v = float(x)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"


def _r(x: float, digits: int = 4) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


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


def _segment_key(seg: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={seg[k]}" for k in sorted(seg)) if seg else ""


def active_alerts(
    alerts: Sequence[Mapping[str, Any]],
    latest: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Alerts whose episode is still firing: the last alert of each (version, segment,
    kind) is a ``firing`` one, and no later window of that stream says otherwise.

    ``latest`` maps (version, segment) to the last window (``end`` and ``episodes``).
    """
    last: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for a in alerts:
        key = (a["model_version"], _segment_key(a.get("segment")), a["kind"])
        prev = last.get(key)
        order = (a["detected_at"], a["episode"], a["status"] == "resolved")
        if prev is None or order >= (
            prev["detected_at"],
            prev["episode"],
            prev["status"] == "resolved",
        ):
            last[key] = a
    out = []
    for (ver, seg, kind), a in last.items():
        if a["status"] != "firing":
            continue
        w = (latest or {}).get((ver, seg))
        if w is not None and w["end"] > a["detected_at"] and not w["episodes"].get(kind, True):
            continue  # a later window says the episode is over (its resolution was lost)
        out.append(dict(a))
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


def _perf_block(
    perf: Sequence[Mapping[str, Any]], ref: ReferenceProfile | None
) -> dict[str, Any] | None:
    if not perf:
        return None
    keys = ("accuracy", "estimated_accuracy", "coverage", "lag_seconds", "labels")
    out: dict[str, Any] = {"t": [p["at"] for p in perf]}
    for k in keys:
        out[k] = [p.get(k) for p in perf]
    out["reference_accuracy"] = ref.outputs.accuracy if ref is not None else None
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
        and _segment_key(a.get("segment")) == segment
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
            if t["statistic"] == "psi" or t["feature"] in _OUTPUT_SERIES:
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
    buckets = _buckets(n, points)
    t_axis = [times[b - 1] for _, b in buckets]

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
        for a, b in buckets:
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
        qrows.append(
            {
                "feature": feat,
                "statistic": stat,
                "label": _QUALITY_STATS[stat],
                "peak": _r(max(vals_q)),
                "latest": _r(vals_q[-1]),
                "threshold": _r(thr),
                "over": over,
            }
        )
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
        else:
            ep["end"] = a["detected_at"]
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
    return {
        "model": inp.model_id,
        "version": version,
        "segment": segment,
        "versions": versions,
        "segments": segments,
        "source": inp.source,
        "generated": inp.generated_ms,
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
        "outputs": outputs,
        "quality": qrows[:MAX_QUALITY_ROWS],
        "quality_more": max(0, len(qrows) - MAX_QUALITY_ROWS),
        "quality_checks": checks,
        "alerts": alerts[-MAX_ALERT_ROWS:],
        "alerts_more": max(0, len(alerts) - MAX_ALERT_ROWS),
        "episodes": ep_list,
        "perf": perf_block,
    }


# ---------------------------------------------------------------------- rendering


def _json_for_html(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``."""
    raw = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_CLIENT_FEATURE_KEYS = (
    "name",
    "verdict",
    "ratio",
    "threshold",
    "labels",
    "ref",
    "cur",
    "worst",
    "worst_at",
    "psi",
    "drift",
)


def _client_data(d: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the report data the charts need (the tables are already HTML)."""
    return {
        "t": d["t"],
        "last": d["last"],
        "features": [{k: f[k] for k in _CLIENT_FEATURE_KEYS} for f in d["features"]],
        "top_over_time": d["top_over_time"],
        "outputs": d["outputs"],
        "episodes": d["episodes"],
        "perf": d["perf"],
    }


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def content_security_policy(scripts: Sequence[str]) -> str:
    """A CSP that lets only these inline scripts run and forbids every fetch."""
    hashes = " ".join(f"'sha256-{_sha256(s)}'" for s in scripts)
    return (
        "default-src 'none'; "
        f"script-src {hashes or chr(39) + 'none' + chr(39)}; "
        "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    )


_STATE_TEXT = {
    "healthy": "healthy — no drift episode is firing",
    "drifting": "drifting — inputs or outputs moved away from the reference",
    "degraded": "degraded — data quality or accuracy is impaired",
    "unknown": "unknown — no window has closed yet",
}


def _badge(text: str, cls: str) -> str:
    return f'<span class="badge b-{_e(cls)}">{_e(text)}</span>'


def _alert_row(a: Mapping[str, Any]) -> str:
    top = ", ".join(
        f"{_e(t['feature'])} {_num(t['score'])}" for t in (a.get("top_features") or [])[:3]
    )
    seg = _segment_key(a.get("segment"))
    stat = (
        "—"
        if a["status"] == "resolved" and not a["statistic"] and not a["threshold"]
        else f"{_num(a['statistic'])} / {_num(a['threshold'])}"
    )
    return (
        "<tr>"
        f"<td>{_e(fmt_time(a['detected_at']))}</td>"
        f"<td>{_badge(a['status'], a['status'])}</td>"
        f"<td>{_badge(a['severity'], a['severity'])}</td>"
        f"<td>{_e(a['kind'])}{(' <small>' + _e(seg) + '</small>') if seg else ''}</td>"
        f"<td>{_e(a.get('feature') or '—')}</td>"
        f"<td>{_e(a['detector'])}</td>"
        f"<td class=num>{stat}</td>"
        f"<td>{_e(a.get('diagnosis') or '—')}</td>"
        f"<td>{top or '—'}</td>"
        f"<td class=num>{_e(a['episode'])}</td>"
        "</tr>"
    )


def alerts_table(alerts: Sequence[Mapping[str, Any]], newest_first: bool = True) -> str:
    """The alert timeline as an HTML table (also used by the status page)."""
    rows = list(reversed(alerts)) if newest_first else list(alerts)
    head = (
        "<thead><tr><th>detected (event time)</th><th>status</th><th>severity</th>"
        "<th>kind</th><th>feature</th><th>detector</th><th>statistic / threshold</th>"
        "<th>diagnosis</th><th>top features</th><th>episode</th></tr></thead>"
    )
    body = "".join(_alert_row(a) for a in rows)
    return f'<table class="alerts">{head}<tbody>{body}</tbody></table>'


def _feature_row(i: int, f: Mapping[str, Any]) -> str:
    hidden = " hidden" if i >= TOP_SHOWN else ""
    return (
        f'<tr class="frow" data-name="{_e(f["name"].lower())}" data-rank="{i}"{hidden}>'
        f"<td class=num>{i + 1}</td>"
        f'<td><a href="#feat-{i}">{_e(f["name"])}</a></td>'
        f"<td>{_e(f['kind'])}</td>"
        f"<td>{_badge(f['verdict'], f['verdict'])}</td>"
        f"<td class=num>{_num(f['latest'])}</td>"
        f"<td class=num>{_num(f['peak'])}</td>"
        f"<td class=num>{_num(f['threshold'])}</td>"
        f"<td class=num>{_num(f['p'])}</td>"
        f"<td class=num>{f['drifted_windows']} / {f['tested_windows']}</td>"
        "</tr>"
    )


def _feature_details(i: int, f: Mapping[str, Any]) -> str:
    hidden = " hidden" if i >= TOP_SHOWN else ""
    is_open = " open" if i < TOP_OPEN and f["verdict"] != "untested" else ""
    extra = ", ".join(f"{k} {_num(v)}" for k, v in f["extra"].items())
    worst = f"highest-PSI window ended {_e(fmt_time(f['worst_at']))}" if f["worst_at"] else ""
    hist_title = (
        "share of events on the reference's decile groups: reference, latest window "
        "and highest-PSI window"
        if f["kind"] == "numeric"
        else "share of events per category: reference, latest window and highest-PSI window"
    )
    return (
        f'<details class="feature" id="feat-{i}" data-index="{i}" '
        f'data-name="{_e(f["name"].lower())}"{hidden}{is_open}>'
        f"<summary><span class=rank>#{i + 1}</span> <b>{_e(f['name'])}</b> "
        f"{_badge(f['verdict'], f['verdict'])} "
        f"<span class=muted>PSI {_num(f['latest'])} (peak {_num(f['peak'])}, threshold "
        f"{_num(f['threshold'])}) · p {_num(f['p'])} · drifted in {f['drifted_windows']} of "
        f"{f['tested_windows']} windows</span></summary>"
        f'<p class="muted small">{_e(f["kind"])}; {_e(f["desc"])}'
        f"{'; ' + _e(extra) if extra else ''}{'; ' + worst if worst else ''}</p>"
        f'<div class="pair lazy" data-caption="{_e(hist_title)}"></div></details>'
    )


def _perf_section(d: Mapping[str, Any]) -> str:
    if not d["perf"]:
        return (
            '<div class="empty" id="no-labels"><b>No labels yet.</b> The slow loop has '
            "recorded no accuracy, label coverage or label lag for this model in this "
            "period: labels have not arrived or been joined yet, or the slow loop is not "
            "running. Drift verdicts above come from the fast loop alone.</div>"
        )
    acc = d["reference"]["id"] if d["reference"] else ""
    drop = (
        f'<p class="warn">Accuracy is more than {ACCURACY_DROP:.0%} below the reference\'s.</p>'
        if d["accuracy_drop"]
        else ""
    )
    return (
        f"{drop}"
        '<div class="pair">'
        "<figure><figcaption>accuracy (labelled) vs estimated accuracy</figcaption>"
        '<div class="chart"><canvas data-chart="accuracy" role="img" '
        f'aria-label="accuracy over time {_e(acc)}"></canvas></div></figure>'
        "<figure><figcaption>label coverage and label lag</figcaption>"
        '<div class="chart"><canvas data-chart="coverage" role="img" '
        'aria-label="label coverage and lag over time"></canvas></div></figure>'
        "</div>"
    )


def _quality_section(d: Mapping[str, Any]) -> str:
    if not d["quality"]:
        return (
            f'<p class="ok">All {d["quality_checks"]} data quality checks stayed within '
            "their margin in every window of this period.</p>"
        )
    rows = "".join(
        "<tr>"
        f"<td>{_e(q['feature'])}</td><td>{_e(q['label'])}</td>"
        f"<td class=num>{_num(q['latest'])}</td><td class=num>{_num(q['peak'])}</td>"
        f"<td class=num>{_num(q['threshold'])}</td><td class=num>{q['over']}</td>"
        "</tr>"
        for q in d["quality"]
    )
    more = (
        f'<p class="muted">{d["quality_more"]} more signals not listed.</p>'
        if d["quality_more"]
        else ""
    )
    return (
        '<table class="quality"><thead><tr><th>feature</th><th>signal</th>'
        "<th>latest</th><th>peak</th><th>margin</th><th>windows over</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}"
    )


def _summary_text(d: Mapping[str, Any]) -> str:
    feats = d["features"]
    parts = []
    if d["windows"] == 0:
        parts.append("No window has closed in this period yet.")
    else:
        parts.append(
            f"{d['windows']:,} windows ({d['events']:,} events) from "
            f"{_e(fmt_time(d['first']))} to {_e(fmt_time(d['last']))} (event time)."
        )
    if d["drifted_count"]:
        top = feats[0]
        parts.append(
            f"{d['drifted_count']} of {len(feats)} features drifted; most: "
            f"<b>{_e(top['name'])}</b> (peak PSI {_num(top['peak'])}, threshold "
            f"{_num(top['threshold'])})."
        )
    elif feats:
        parts.append(f"None of the {len(feats)} features drifted.")
    out_drift = [s for s in d["outputs"]["series"] if s["drifted_windows"]]
    if out_drift:
        parts.append("Output drift: " + ", ".join(_e(s["name"]) for s in out_drift) + ".")
    n_ep = len(d["episodes"])
    if n_ep:
        parts.append(f"{n_ep} alert episode{'s' if n_ep != 1 else ''}, {len(d['active'])} active.")
    else:
        parts.append("No alert in this period.")
    return " ".join(parts)


def render_report(data: Mapping[str, Any], *, nav_html: str = "") -> str:
    """The report as ONE self-contained HTML document (inline CSS, JS and data)."""
    d = data
    chart_js = _asset("chart.umd.min.js")
    app_js = _asset("report.js")
    csp = content_security_policy([chart_js, app_js])
    ref = d["reference"]
    title = f"Driftline report — {d['model']}" + (f" v{d['version']}" if d["version"] else "")
    feats = d["features"]
    n = len(feats)
    more_btn = (
        f'<button type="button" id="show-all">Show all {n} features</button>'
        if n > TOP_SHOWN
        else ""
    )
    meta_rows = [
        (
            "model",
            f"{d['model']} version {d['version'] or '—'}"
            + (f" segment {d['segment']}" if d["segment"] else ""),
        ),
        ("state", _STATE_TEXT[d["state"]]),
        (
            "reference",
            f"{ref['id']} ({ref['rows']:,} rows, {ref['source'] or 'no source recorded'}, "
            f"built {fmt_time(ref['created'])})"
            if ref
            else "none found",
        ),
        (
            "policy",
            f"window {ref['window_events']} events"
            + (f" / {ref['window_seconds']:g} s" if ref and ref["window_seconds"] else "")
            + f", one false alarm per {ref['false_alarm_events']:,.0f} events"
            if ref
            else "—",
        ),
        (
            "period",
            f"{fmt_time(d['first'])} → {fmt_time(d['last'])}"
            + (f" (since {fmt_time(d['since'])})" if d["since"] else ""),
        ),
        (
            "last window",
            (
                f"#{d['last_window']['window']}, {d['last_window']['count']} events, ended "
                f"{fmt_time(d['last_window']['end'])}"
                if d["last_window"]
                else "—"
            ),
        ),
        ("data", d["source"] or "—"),
        ("generated", fmt_time(d["generated"])),
    ]
    if len(d["versions"]) > 1:
        meta_rows.append(
            ("other versions", ", ".join(v for v in d["versions"] if v != d["version"]))
        )
    if len(d["segments"]) > 1:
        meta_rows.append(("segments", ", ".join(s or "(all)" for s in d["segments"])))
    notes = []
    if d["skipped"]:
        notes.append(f"{d['skipped']} unreadable history entries were skipped.")
    if d["truncated"]:
        notes.append("The history was cut at the reading limit: older windows are not shown.")
    if d["other_references"]:
        notes.append(
            "Some windows were tested against another reference ("
            + ", ".join(d["other_references"])
            + "); their distributions are not compared here."
        )
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta_rows)
    notes_html = "".join(f'<p class="warn">{_e(x)}</p>' for x in notes)
    active_html = alerts_table(d["active"]) if d["active"] else '<p class="ok">No active alert.</p>'
    alerts_html = (
        alerts_table(d["alerts"])
        + (
            f'<p class="muted">{d["alerts_more"]} older alerts not listed.</p>'
            if d["alerts_more"]
            else ""
        )
        if d["alerts"]
        else '<p class="ok" id="no-alerts">No alert in this period.</p>'
    )
    outputs = d["outputs"]
    out_figs = []
    if outputs.get("classes"):
        out_figs.append(
            "<figure><figcaption>predicted class mix: reference vs latest window"
            '</figcaption><div class="chart"><canvas data-chart="classes" role="img" '
            'aria-label="class mix"></canvas></div></figure>'
        )
    if outputs.get("confidence"):
        out_figs.append(
            "<figure><figcaption>confidence (top score) on the reference's decile groups"
            '</figcaption><div class="chart"><canvas data-chart="confidence" role="img" '
            'aria-label="confidence distribution"></canvas></div></figure>'
        )
    if outputs["series"]:
        out_figs.append(
            "<figure><figcaption>output drift scores per window</figcaption>"
            '<div class="chart"><canvas data-chart="outputs" role="img" '
            'aria-label="output drift over time"></canvas></div></figure>'
        )
    out_rows = "".join(
        f"<tr><td>{_e(s['name'])}</td><td class=num>{_num(s['latest'])}</td>"
        f"<td class=num>{_num(s['threshold'])}</td><td class=num>{s['drifted_windows']}</td></tr>"
        for s in outputs["series"]
    )
    out_table = (
        '<table class="outputs"><thead><tr><th>signal</th><th>latest</th>'
        f"<th>threshold</th><th>drifted windows</th></tr></thead><tbody>{out_rows}</tbody></table>"
        if out_rows
        else '<p class="muted">No output signal was tested in this period.</p>'
    )
    body = f"""
<header>
  {nav_html}
  <h1>{_e(title)} {_badge(d["state"], d["state"])}</h1>
  <table class="meta">{meta}</table>
  {notes_html}
</header>
<nav class="toc"><a href="#summary">Summary</a><a href="#features">Features</a>
<a href="#outputs">Outputs</a><a href="#alerts">Alerts</a><a href="#performance">Performance</a>
<a href="#quality">Data quality</a></nav>
<section id="summary">
  <h2>Summary</h2>
  <p id="summary-text">{_summary_text(d)}</p>
  <h3>Active alerts</h3>
  {active_html}
  <div class="pair">
    <figure><figcaption>features ranked by drift: peak PSI / threshold (≥ 1 is over the
    threshold)</figcaption><div class="chart tall"><canvas id="chart-ranking" role="img"
    aria-label="features ranked by drift"></canvas></div></figure>
    <figure><figcaption>top features: PSI / threshold per window</figcaption>
    <div class="chart tall"><canvas id="chart-top" role="img"
    aria-label="top features over time"></canvas></div></figure>
  </div>
  <figure><figcaption>alert episodes (event time)</figcaption><div class="chart short">
  <canvas id="chart-episodes" role="img" aria-label="alert episodes"></canvas></div></figure>
</section>
<section id="features">
  <h2>Features <small class="muted">{n} features, {d["drifted_count"]} drifted</small></h2>
  <div class="tools"><input type="search" id="feature-search" placeholder="Search features…"
   aria-label="search features" autocomplete="off"> <span id="search-count" class="muted"></span>
   {more_btn}</div>
  <table class="ranking"><thead><tr><th>#</th><th>feature</th><th>type</th><th>verdict</th>
  <th>PSI latest</th><th>PSI peak</th><th>threshold</th><th>p latest</th>
  <th>drifted windows</th></tr></thead><tbody>
  {"".join(_feature_row(i, f) for i, f in enumerate(feats))}
  </tbody></table>
  {"".join(_feature_details(i, f) for i, f in enumerate(feats))}
</section>
<section id="outputs">
  <h2>Output drift</h2>
  {out_table}
  <div class="pair">{"".join(out_figs)}</div>
</section>
<section id="alerts">
  <h2>Alert timeline <small class="muted">{len(d["alerts"])} alert events</small></h2>
  {alerts_html}
</section>
<section id="performance">
  <h2>Accuracy and labels</h2>
  {_perf_section(d)}
</section>
<section id="quality">
  <h2>Data quality</h2>
  {_quality_section(d)}
</section>
<footer>Generated by Driftline from its stored references and history.
Charts: Chart.js {CHARTJS_VERSION} ({CHARTJS_LICENSE} licence), inlined; this file needs
no network. Times are event times in UTC.</footer>
<pre id="js-errors" hidden></pre>
"""
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)}</title><style>{page_css()}</style></head>"
        f"<body>{body}"
        f'<script type="application/json" id="driftline-data">{_json_for_html(_client_data(d))}'
        "</script>"
        f"<script>{chart_js}</script><script>{app_js}</script></body></html>\n"
    )


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
) -> dict[str, Any]:
    """Report data for a model from Redis: its history and stored references.

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


def write_report(path: Path, data: Mapping[str, Any]) -> int:
    """Render and write the report; returns its size in bytes."""
    raw = render_report(data).encode("utf-8")
    path.write_bytes(raw)
    return len(raw)
