"""The report's content (ranking, verdicts, alerts, state) and its self-contained HTML."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import orjson
import pytest

from driftline.contract.history import History, decode_perf, encode_perf
from driftline.offline.replay import replay_history, report_from_replay
from driftline.views.report.build import (
    ReportInput,
    active_alerts,
    build_report,
    classify_state,
    parse_since,
)
from driftline.views.report.render import TOP_SHOWN, render_report
from report_scenarios import (
    T0,
    churn_events,
    churn_reference,
    perf_points,
    wide_events,
    wide_reference,
    write_jsonl,
)

MAX_REPORT_BYTES = 1_500_000


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("churn") / "events.jsonl", churn_events())
    hists, refs = replay_history(path, {("churn", "1"): churn_reference()})
    return hists["churn"], refs


@pytest.fixture(scope="module")
def churn_data(churn):
    hist, refs = churn
    return build_report(ReportInput("churn", hist, refs, source="test"))


def test_features_are_ranked_by_drift_with_verdicts(churn_data):
    d = churn_data
    names = [f["name"] for f in d["features"]]
    assert len(names) == 23
    assert names[:2] == ["f03", "plan"]
    f03 = d["features"][0]
    assert f03["verdict"] == "drifted"  # drifted, then recovered
    assert f03["peak"] > f03["threshold"] and f03["latest"] < f03["threshold"]
    assert all(f["verdict"] == "stable" for f in d["features"][2:])
    # reference vs current on the reference's decile groups
    assert len(f03["labels"]) == len(f03["ref"]) == len(f03["cur"]) == 10
    assert sum(f03["ref"]) == pytest.approx(1, abs=1e-3)
    plan = d["features"][1]
    assert plan["labels"] == ["basic", "pro", "enterprise", "(other)"]
    assert plan["worst"][2] > plan["ref"][2] + 0.2  # the highest-PSI window has more enterprise
    assert len(f03["psi"]) == len(d["t"]) == d["windows"] == 36


def test_state_alerts_and_episodes(churn_data):
    d = churn_data
    assert d["state"] == "healthy" and d["active"] == []
    kinds = {e["kind"] for e in d["episodes"]}
    assert "input_drift" in kinds
    ep = next(e for e in d["episodes"] if e["kind"] == "input_drift")
    assert T0 + 6000 * 10 <= ep["start"] < ep["end"] <= d["last"]
    assert [a["status"] for a in d["alerts"]].count("firing") >= 1
    assert d["outputs"]["classes"]["labels"][-1] == "(other)"
    assert d["perf"] is None


def test_since_cuts_the_period(churn):
    hist, refs = churn
    since = T0 + 120_000
    d = build_report(ReportInput("churn", hist, refs, since_ms=since))
    assert d["windows"] < 36 and all(t >= since for t in d["t"])
    assert d["features"][0]["verdict"] == "stable"  # only the recovered part is left


def test_active_alert_and_state_rules():
    def a(kind, status, t, ep=1):
        return {
            "model_version": "1",
            "segment": None,
            "kind": kind,
            "status": status,
            "detected_at": t,
            "episode": ep,
        }

    alerts = [
        a("input_drift", "firing", 10),
        a("input_drift", "resolved", 20),
        a("data_quality", "firing", 30),
    ]
    act = active_alerts(alerts)
    assert [x["kind"] for x in act] == ["data_quality"]
    assert classify_state(act, True) == "degraded"
    assert classify_state(active_alerts(alerts[:1]), True) == "drifting"
    # A later window that says the episode is over wins over a lost resolution.
    latest = {("1", ""): {"end": 40, "episodes": {"input_drift": False}}}
    assert active_alerts(alerts[:1], latest) == []
    assert classify_state([], False) == "unknown"
    assert classify_state([], True) == "healthy"
    assert classify_state([], True, accuracy_drop=True) == "degraded"
    # An update is the open episode's latest state: active, and the one shown.
    grown = [a("input_drift", "firing", 10), {**a("input_drift", "updated", 15), "feature": "x"}]
    assert [x["status"] for x in active_alerts(grown)] == ["updated"]
    assert active_alerts([*grown, a("input_drift", "resolved", 15)]) == []


def test_parse_since():
    assert parse_since(None, 10) is None
    assert parse_since("6h", 10 * 3_600_000) == 4 * 3_600_000
    assert parse_since("90m", 100 * 60_000) == 10 * 60_000
    assert parse_since("1767225600000", None) == 1_767_225_600_000
    assert parse_since("2026-01-01T00:00:00Z", None) == T0
    assert parse_since("2026-01-01", None) == T0
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", None)


def _inline_scripts(page: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", page, flags=re.S)


def test_html_is_self_contained_and_small(churn_data):
    page = render_report(churn_data)
    size = len(page.encode())
    assert size < MAX_REPORT_BYTES, size
    # Nothing to fetch: no external script, stylesheet, image, font or frame.
    assert not re.search(r"<(script|img|iframe|link)[^>]*\s(src|href)=", page)
    assert "@import" not in page and "url(" not in page.split("<script>")[0]
    # Only the page's own scripts may run (CSP by hash) and nothing may be fetched.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src &#x27;none&#x27;" in csp
    for script in _inline_scripts(page):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"sha256-{digest}" in csp
    assert "Chart.js v4" in page


def test_hostile_names_cannot_break_out(churn):
    hist, refs = churn
    evil = "</script><script>alert(1)</script>"
    for w in hist.windows:
        w["tests"].append(dict(w["tests"][0], feature=evil))
    d = build_report(ReportInput("m<b>", hist, refs, source=evil))
    page = render_report(d)
    assert evil not in page
    assert page.count("<script>") == 2  # Chart.js and the report's own code
    data = re.search(r'id="driftline-data">(.*?)</script>', page, flags=re.S).group(1)
    assert evil in [f["name"] for f in orjson.loads(data)["features"]]
    for w in hist.windows:
        w["tests"].pop()


def test_performance_section_and_no_labels_yet(churn):
    hist, refs = churn
    page = render_report(build_report(ReportInput("churn", hist, refs)))
    assert 'id="no-labels"' in page and "No labels yet" in page
    pts = [decode_perf(encode_perf(p)) for p in perf_points()]
    h2 = History.build(hist.windows, hist.alerts, pts)
    d = build_report(ReportInput("churn", h2, refs))
    assert d["perf"]["accuracy"][0] == pytest.approx(0.86)
    assert d["perf"]["accuracy"][-1] is None
    page = render_report(d)
    assert 'id="no-labels"' not in page and 'data-chart="accuracy"' in page


def test_accuracy_below_the_reference_means_degraded(churn):
    hist, refs = churn
    ref = next(iter(refs.values()))
    import dataclasses

    ref_acc = dataclasses.replace(ref, outputs=dataclasses.replace(ref.outputs, accuracy=0.85))
    pts = [decode_perf(encode_perf(p)) for p in perf_points(drop_after=4)]
    d = build_report(
        ReportInput(
            "churn", History.build(hist.windows, hist.alerts, pts), {ref.reference_id: ref_acc}
        )
    )
    assert d["accuracy_drop"] and d["state"] == "degraded"


def test_wide_model_stays_small_and_collapses(tmp_path):
    path = write_jsonl(tmp_path / "wide.jsonl", wide_events())
    d = report_from_replay(path, [wide_reference()])
    assert len(d["features"]) == 300
    top5 = {f["name"] for f in d["features"][:5]}
    assert top5 == {"feature_007", "feature_042", "feature_099", "feature_150", "feature_299"}
    page = render_report(d)
    assert len(page.encode()) < MAX_REPORT_BYTES
    assert page.count('class="frow"') == 300
    assert page.count("hidden>") >= 2 * (300 - TOP_SHOWN)
    assert 'id="show-all"' in page and 'id="feature-search"' in page


def test_replay_needs_a_model_when_the_file_has_several(tmp_path):
    events = churn_events(600) + [dict(e, model_id="other") for e in churn_events(600)]
    path = write_jsonl(tmp_path / "two.jsonl", events)
    with pytest.raises(ValueError, match="--model"):
        report_from_replay(path, [churn_reference()])
    d = report_from_replay(path, [churn_reference()], model_id="churn")
    assert d["model"] == "churn"
    # A model without a reference warms up on its first events; too few: nothing to show.
    with pytest.raises(ValueError, match="no reference and no history"):
        report_from_replay(path, [churn_reference()], model_id="other")


def test_cli_report_from_replay(tmp_path, capsys):
    from driftline.cli import main
    from driftline.config import load_settings

    ref_file = tmp_path / "churn.ref"  # a signed reference file (reference build --out)
    ref_file.write_bytes(churn_reference().to_sealed(load_settings().redis.state_signing_key))
    events = write_jsonl(tmp_path / "e.jsonl", churn_events(6000))
    out = tmp_path / "report.html"
    rc = main(["report", "--events", str(events), "--reference", str(ref_file), "--out", str(out)])
    assert rc == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "wrote" in capsys.readouterr().err
    assert main(["report", "--out", str(out)]) == 2
    assert Path(out).exists()


def test_the_vendored_chart_library_and_its_licence_ship_as_package_data():
    from importlib import resources

    from driftline.views.report.render import CHARTJS_VERSION

    assets = resources.files("driftline.views.report") / "assets"
    bundle = (assets / "chart.umd.min.js").read_text(encoding="utf-8")
    assert bundle.startswith(f"/*!\n * Chart.js v{CHARTJS_VERSION}\n")
    assert "</script" not in bundle.lower() and "<!--" not in bundle
    assert "sourceMappingURL" not in bundle
    assert "MIT License" in (assets / "chart.js.LICENSE.md").read_text(encoding="utf-8")
    assert (
        CHARTJS_VERSION in (Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text()
    )


def test_alerts_name_output_signals_as_people_read_them():
    """An output-drift alert on ``__low_confidence__`` with ``__class__`` among its top
    features read as those internal names in the report's and the status page's alert
    table; they read as what they stand for, and a feature keeps its own name (escaped)."""
    from driftline.views.report.build import signal_name
    from driftline.views.report.render import alerts_table

    alert = {
        "detected_at": 1767225600000,
        "status": "firing",
        "severity": "warning",
        "kind": "output_drift",
        "segment": None,
        "feature": "__low_confidence__",
        "detector": "cusum",
        "statistic": 0.3,
        "threshold": 0.25,
        "diagnosis": "output_drift",
        "top_features": [
            {"feature": "__class__", "score": 0.3},
            {"feature": "<b>age</b>", "score": 0.2},
        ],
        "episode": 1,
    }
    html = alerts_table([alert])
    assert "<td>low-confidence rate</td>" in html
    assert "class mix 0.3 sd; &lt;b&gt;age&lt;/b&gt; 0.2 sd" in html and "__" not in html
    assert signal_name("__multivariate__") == "joint (multivariate)"
    assert signal_name("tenure") == "tenure"


def test_the_data_quality_table_names_unknown_features_as_people_read_them():
    """A renamed feature raises the data-quality signal on ``__unknown_features__``: the
    report's data-quality table printed that internal name; it reads "unknown
    features", and a feature keeps its own name (escaped)."""
    from driftline.views.report.render import _quality_section

    row = {"label": "unknown", "latest": 1.0, "peak": 1.0, "threshold": 0.05, "over": 3}
    d = {
        "quality": [{**row, "feature": "__unknown_features__"}, {**row, "feature": "<b>x</b>"}],
        "quality_more": 0,
        "quality_checks": 8,
    }
    html = _quality_section(d)
    assert "<td>unknown features</td>" in html and "__" not in html
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in html


def test_a_time_without_events_is_a_gap_in_the_charts_not_a_line(tmp_path):
    """A day with no events between two busy periods: the charts drew a straight line
    across it (Chart.js ``spanGaps``), as if the windows of that day had been measured.
    Now the report's series carry a null in the silence (at its middle), and the charts
    break their lines at nulls; a stream without a silence has none."""
    events = churn_events(6_000)
    day = 86_400_000
    assert all(isinstance(e["timestamp"], int) for e in events)  # epoch ms
    for e in events[3_000:]:
        e["timestamp"] += day
    path = write_jsonl(tmp_path / "events.jsonl", events)
    hists, refs = replay_history(path, {("churn", "1"): churn_reference()})
    d = build_report(ReportInput("churn", hists["churn"], refs, source="test"))
    wins = hists["churn"].windows
    silence = [
        (a["end"], b["start"])
        for a, b in zip(wins, wins[1:], strict=False)
        if b["start"] - a["end"] > day / 2
    ]
    assert len(silence) == 1
    tested = [f for f in d["features"] if f["psi"]]
    assert tested
    gaps = [k for k, v in enumerate(tested[0]["psi"]) if v is None]
    assert len(gaps) == 1
    (k,) = gaps
    assert d["t"][k] == (silence[0][0] + silence[0][1]) // 2
    assert d["t"][k - 1] <= silence[0][0] and d["t"][k + 1] > silence[0][1]
    for f in tested:
        assert f["psi"][k] is None and f["psi"][k - 1] is not None, f["name"]
        assert all(i != k for i in f["drift"])
    for s in d["outputs"]["series"]:
        assert s["values"][k] is None and len(s["values"]) == len(d["t"])
    # a null breaks the line: no chart joins points across one
    js = (Path(render_report.__code__.co_filename).parent / "assets" / "report.js").read_text()
    assert "spanGaps: true" not in js and "spanGaps: false" in js
    # the same stream without the silence has no gap
    plain = write_jsonl(tmp_path / "plain.jsonl", churn_events(6_000))
    hists, refs = replay_history(plain, {("churn", "1"): churn_reference()})
    d = build_report(ReportInput("churn", hists["churn"], refs, source="test"))
    assert all(v is not None for f in d["features"] for v in f["psi"] if f["psi"])


def test_the_data_quality_table_names_which_features_are_unknown(tmp_path):
    """The data-quality row of unknown features said 'unknown features' and no name:
    which columns were they? Now the row names them (the first ten and how many), as
    the latest window that has them gives them, escaped."""
    from driftline.views.report.render import _quality_section

    events = churn_events(3_000)
    for i, e in enumerate(events[1_000:]):
        e["features"]["promo_code"] = "X"
        e["features"]["<i>odd</i>"] = 1.0
        if i >= 1_000:
            e["features"][f"tag_{(i - 1_000) % 12}"] = 1.0
    path = write_jsonl(tmp_path / "events.jsonl", events)
    hists, refs = replay_history(path, {("churn", "1"): churn_reference()})
    d = build_report(ReportInput("churn", hists["churn"], refs, source="test"))
    (row,) = [q for q in d["quality"] if q["feature"] == "__unknown_features__"]
    assert row["names"][:3] == ["promo_code", "<i>odd</i>", "tag_0"] and len(row["names"]) == 14
    html = _quality_section(d)
    assert (
        "<td>unknown features: promo_code, &lt;i&gt;odd&lt;/i&gt;, tag_0, tag_1, tag_2, "
        "tag_3, tag_4, tag_5, tag_6, tag_7 and 4 more (14)</td>"
    ) in html, html
    assert "<i>" not in html
