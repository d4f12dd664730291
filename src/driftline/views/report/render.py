"""Rendering the drift report: plain report data -> ONE self-contained HTML file.

The charting library (Chart.js, vendored in ``assets/``, MIT licence) and the data are
inlined, and a Content-Security-Policy allows no fetch of any kind, only the page's own
scripts (by hash). The same renderer draws the status page's per-model pages
(:mod:`driftline.views.status`).
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from driftline.contract.keys import segment_key
from driftline.views.report.build import (
    ACCURACY_DROP,
    _num,
    alert_figures,
    fmt_event_time,
    fmt_time,
    score_figure,
    signal_name,
    unknown_names_said,
)

__all__ = [
    "CHARTJS_LICENSE",
    "CHARTJS_VERSION",
    "alerts_table",
    "content_security_policy",
    "page_css",
    "render_report",
    "write_report",
]


#: The vendored charting library (see docs/report.md).
CHARTJS_VERSION = "4.6.1"
CHARTJS_LICENSE = "MIT"
#: Features listed before "show all" (the search box finds the others).
TOP_SHOWN = 25
#: Features whose details are open when the report opens.
TOP_OPEN = 5


def _asset(name: str) -> str:
    return (resources.files("driftline.views.report") / "assets" / name).read_text(encoding="utf-8")


def page_css() -> str:
    """The stylesheet shared by the report and the status page."""
    return _asset("report.css")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


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
        "untimed": d["untimed"],
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


def _alert_row(a: Mapping[str, Any], untimed: bool = False) -> str:
    # "; ": a statistic can hold a comma ("mean up, spread up": one feature's reading).
    top = "; ".join(
        f"{_e(signal_name(t['feature']))} {_e(score_figure(a, t))}"
        for t in (a.get("top_features") or [])[:3]
    )
    seg = segment_key(a.get("segment"))
    figures = alert_figures(a)
    stat = (
        "—"
        if a["status"] == "resolved" and not a["statistic"] and not a["threshold"]
        else f"{_e(figures[0])} / {_e(figures[1])}"
    )
    return (
        "<tr>"
        f"<td>{_e(fmt_event_time(a['detected_at'], untimed))}</td>"
        f"<td>{_badge(a['status'], a['status'])}</td>"
        f"<td>{_badge(a['severity'], a['severity'])}</td>"
        f"<td>{_e(a['kind'])}{(' <small>' + _e(seg) + '</small>') if seg else ''}</td>"
        f"<td>{_e(signal_name(a['feature']) if a.get('feature') else '—')}</td>"
        f"<td>{_e(a['detector'])}</td>"
        f"<td class=num>{stat}</td>"
        f"<td>{_e(a.get('diagnosis') or '—')}</td>"
        f"<td>{top or '—'}</td>"
        f"<td class=num>{_e(a['episode'])}</td>"
        "</tr>"
    )


def alerts_table(
    alerts: Sequence[Mapping[str, Any]], newest_first: bool = True, untimed: bool = False
) -> str:
    """The alert timeline as an HTML table (also used by the status page); ``untimed``:
    the events carried no time, and a row number stands for it."""
    rows = list(reversed(alerts)) if newest_first else list(alerts)
    head = (
        f"<thead><tr><th>detected ({'row' if untimed else 'event time'})</th>"
        "<th>status</th><th>severity</th>"
        "<th>kind</th><th>feature</th><th>detector</th><th>statistic / threshold</th>"
        "<th>diagnosis</th><th>top features</th><th>episode</th></tr></thead>"
    )
    body = "".join(_alert_row(a, untimed) for a in rows)
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


def _feature_details(i: int, f: Mapping[str, Any], untimed: bool = False) -> str:
    hidden = " hidden" if i >= TOP_SHOWN else ""
    is_open = " open" if i < TOP_OPEN and f["verdict"] != "untested" else ""
    extra = ", ".join(f"{k} {_num(v)}" for k, v in f["extra"].items())
    worst = (
        f"highest-PSI window ended {_e(fmt_event_time(f['worst_at'], untimed))}"
        if f["worst_at"]
        else ""
    )
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
    first = (
        "<figure><figcaption>mean absolute error (labelled) vs the reference's</figcaption>"
        '<div class="chart"><canvas data-chart="mae" role="img" '
        f'aria-label="mean absolute error over time {_e(acc)}"></canvas></div></figure>'
        if d["perf"].get("regression")
        else "<figure><figcaption>accuracy (labelled) vs estimated accuracy</figcaption>"
        '<div class="chart"><canvas data-chart="accuracy" role="img" '
        f'aria-label="accuracy over time {_e(acc)}"></canvas></div></figure>'
    )
    return (
        f"{drop}"
        '<div class="pair">'
        f"{first}"
        "<figure><figcaption>label coverage and label lag</figcaption>"
        '<div class="chart"><canvas data-chart="coverage" role="img" '
        'aria-label="label coverage and lag over time"></canvas></div></figure>'
        "</div>"
        f"{_per_class_table(d.get('per_class') or [])}"
    )


def _pct(v: Any, undefined: str) -> str:
    # undefined, not 0: no prediction of the class (or no label of it) to count among
    return undefined if v is None else f"{v:.1%}"


def _per_class_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Precision and recall per class (the labelled predictions of the version), as
    ``driftline labels --report`` and the replay print them."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(r['class'])}</td>"
        f"<td class=num>{_pct(r['precision'], 'n/a (never predicted)')}</td>"
        f"<td class=num>{_pct(r['recall'], 'n/a (never the label)')}</td>"
        f"<td class=num>{r['support']:,}</td></tr>"
        for r in rows
    )
    return (
        '<table class="per-class" id="per-class"><caption>per class, labelled predictions '
        "(support: labels of the class)</caption><thead><tr><th>class</th><th>precision</th>"
        f"<th>recall</th><th>support</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _quality_section(d: Mapping[str, Any]) -> str:
    if not d["quality"]:
        return (
            f'<p class="ok">All {d["quality_checks"]} data quality checks stayed within '
            "their margin in every window of this period.</p>"
        )
    rows = "".join(
        "<tr>"
        f"<td>{_e(_quality_name(q))}</td><td>{_e(q['label'])}</td>"
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


def _quality_name(q: Mapping[str, Any]) -> str:
    """A data-quality row's feature; the unknown features' row names them."""
    name = signal_name(q["feature"])
    if q.get("names"):
        name += f": {unknown_names_said(q['names'], q.get('names_more', False))}"
    return name


def _summary_text(d: Mapping[str, Any]) -> str:
    feats = d["features"]
    parts = []
    if d["windows"] == 0:
        parts.append("No window has closed in this period yet.")
    else:
        parts.append(
            f"{d['windows']:,} windows ({d['events']:,} events) from "
            f"{_e(fmt_event_time(d['first'], d['untimed']))} to "
            f"{_e(fmt_event_time(d['last'], d['untimed']))} "
            + ("(rows: the table has no timestamp column)." if d["untimed"] else "(event time).")
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
    joint = d.get("joint")
    if joint and joint["drifted_windows"]:
        named = ", ".join(_e(f) for f in joint["named"])
        parts.append(
            f"Joint behaviour (multivariate) drifted in {joint['drifted_windows']} of "
            f"{joint['windows']} windows (peak {_num(joint['peak'])} times its threshold)"
            + (f"; it named {named}." if named else ".")
        )
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
            f"{fmt_event_time(d['first'], d['untimed'])} → "
            f"{fmt_event_time(d['last'], d['untimed'])}"
            + (f" (since {fmt_event_time(d['since'], d['untimed'])})" if d["since"] else "")
            + (" (rows of the table: it has no timestamp column)" if d["untimed"] else ""),
        ),
        (
            "last window",
            (
                f"#{d['last_window']['window']}, {d['last_window']['count']} events, ended "
                f"{fmt_event_time(d['last_window']['end'], d['untimed'])}"
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
    when = "rows of the table" if d["untimed"] else "event time"
    times = (
        "Times are rows of the table, which has no timestamp column"
        if d["untimed"]
        else "Times are event times in UTC"
    )
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta_rows)
    notes_html = "".join(f'<p class="warn">{_e(x)}</p>' for x in notes)
    active_html = (
        alerts_table(d["active"], untimed=d["untimed"])
        if d["active"]
        else '<p class="ok">No active alert.</p>'
    )
    alerts_html = (
        alerts_table(d["alerts"], untimed=d["untimed"])
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
    <figure><figcaption>top features: PSI / threshold per window (and the joint,
    multivariate statistic / its threshold)</figcaption>
    <div class="chart tall"><canvas id="chart-top" role="img"
    aria-label="top features over time"></canvas></div></figure>
  </div>
  <figure><figcaption>alert episodes ({when})</figcaption><div class="chart short">
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
  {"".join(_feature_details(i, f, d["untimed"]) for i, f in enumerate(feats))}
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
no network. {times}.</footer>
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


def write_report(path: Path, data: Mapping[str, Any]) -> int:
    """Render and write the report; returns its size in bytes."""
    raw = render_report(data).encode("utf-8")
    path.write_bytes(raw)
    return len(raw)
