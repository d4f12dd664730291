"""The HTML report in headless Chromium: what is on screen, no script errors, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ui_fixtures import artifacts as artifacts
from ui_fixtures import browser as browser

from driftline.contract.history import History, decode_perf, encode_perf
from driftline.offline.replay import replay_history, report_from_replay
from driftline.views.report.build import ReportInput, build_report
from driftline.views.report.render import render_report
from report_scenarios import (
    churn_events,
    churn_reference,
    perf_points,
    wide_events,
    wide_reference,
    write_jsonl,
)

pytestmark = pytest.mark.integration

READY = "window.__driftlineReady === true || !!document.getElementById('js-errors')?.textContent"

#: Number of canvases that hold a drawn chart (pixels that are not transparent).
INKED = """(() => Array.from(document.querySelectorAll('canvas')).filter(c => {
  if (!c.width || !c.height) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
  return false;
}).length)()"""

VISIBLE_ROWS = "Array.from(document.querySelectorAll('tr.frow')).filter(r => !r.hidden).length"


def _open(browser, page: Path) -> None:
    browser.goto(page.resolve().as_uri(), READY)
    assert browser.eval("document.getElementById('js-errors').textContent") == ""
    assert browser.log.problems() == []


def _no_network(browser, page: Path) -> None:
    assert browser.log.requests == [page.resolve().as_uri()], browser.log.requests


@pytest.fixture(scope="module")
def churn_report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    path = write_jsonl(tmp / "events.jsonl", churn_events())
    d = report_from_replay(path, [churn_reference()])
    out = tmp / "report.html"
    out.write_text(render_report(d))
    return out


def test_report_shows_ranked_features_charts_and_alerts(browser, churn_report, artifacts):
    _open(browser, churn_report)
    _no_network(browser, churn_report)
    b = browser
    assert "churn" in b.eval("document.querySelector('h1').textContent")
    assert b.eval("document.querySelector('h1 .badge').textContent") == "healthy"
    assert b.eval(VISIBLE_ROWS) == 23
    names = b.eval(
        "Array.from(document.querySelectorAll('tr.frow td:nth-child(2)')).map(t => t.textContent)"
    )
    assert names[:2] == ["f03", "plan"]
    verdicts = b.eval(
        "Array.from(document.querySelectorAll('tr.frow .badge')).map(t => t.textContent)"
    )
    assert verdicts[:2] == ["drifted", "drifted"] and set(verdicts[2:]) == {"stable"}
    # Summary charts, the five open features (histogram + PSI) and the output charts.
    for cid in ("chart-ranking", "chart-top", "chart-episodes"):
        assert b.eval(f"document.getElementById('{cid}').dataset.drawn") == "1", cid
    assert b.eval("document.querySelectorAll('details.feature[open]').length") == 5
    assert b.eval(INKED) >= 3 + 10 + 3
    assert b.eval("document.querySelectorAll('#alerts tbody tr').length") >= 2
    assert "input_drift" in b.eval("document.querySelector('#alerts').textContent")
    assert "No labels yet" in b.eval("document.getElementById('no-labels').textContent")
    # The picture in docs/report.md (docs/images/report.png) is this one.
    b.screenshot(artifacts / "report-churn.png", full_page=True, max_height=1700)
    b.screenshot(artifacts / "report-churn-full.png", full_page=True)

    # The search box finds a feature by name; clearing it brings every row back.
    b.eval(
        "(() => { const s = document.getElementById('feature-search'); s.value = 'plan';"
        " s.dispatchEvent(new Event('input')); })()"
    )
    assert b.eval(VISIBLE_ROWS) == 1
    count = "document.getElementById('search-count').textContent"
    assert b.eval(count) == "1 of 23 features match"
    b.eval(
        "(() => { const s = document.getElementById('feature-search'); s.value = '';"
        " s.dispatchEvent(new Event('input')); })()"
    )
    assert b.eval(VISIBLE_ROWS) == 23
    # A collapsed feature draws its charts when a person opens it.
    before = b.eval(INKED)
    b.eval("document.querySelector('details.feature:not([open])').open = true")
    b.pump(0.3)
    assert b.eval(INKED) == before + 2
    assert b.log.problems() == []


def test_report_of_300_features_collapses_and_searches(browser, tmp_path, artifacts):
    path = write_jsonl(tmp_path / "wide.jsonl", wide_events())
    page = tmp_path / "wide.html"
    page.write_text(render_report(report_from_replay(path, [wide_reference()])))
    _open(browser, page)
    _no_network(browser, page)
    b = browser
    assert b.eval(VISIBLE_ROWS) == 25
    assert (
        b.eval(
            "Array.from(document.querySelectorAll('details.feature')).filter(d => !d.hidden).length"
        )
        == 25
    )
    b.eval("document.getElementById('show-all').click()")
    assert b.eval(VISIBLE_ROWS) == 300
    b.eval("document.getElementById('show-all').click()")
    assert b.eval(VISIBLE_ROWS) == 25
    b.eval(
        "(() => { const s = document.getElementById('feature-search'); s.value = 'feature_15';"
        " s.dispatchEvent(new Event('input')); })()"
    )
    shown = b.eval(
        "Array.from(document.querySelectorAll('tr.frow')).filter(r => !r.hidden)"
        ".map(r => r.querySelector('td:nth-child(2)').textContent).sort()"
    )
    assert shown == [f"feature_15{i}" for i in range(10)]
    # A feature far down the ranking opens and draws on demand.
    before = b.eval(INKED)
    b.eval("document.querySelector('details.feature[data-name=\"feature_153\"]').open = true")
    b.pump(0.3)
    assert b.eval(INKED) == before + 2
    b.screenshot(artifacts / "report-300-features.png")
    assert b.log.problems() == []


def test_report_with_labels_draws_accuracy_coverage_and_lag(browser, tmp_path, artifacts):
    path = write_jsonl(tmp_path / "e.jsonl", churn_events(6000))
    hists, refs = replay_history(path, {("churn", "1"): churn_reference()})
    h = hists["churn"]
    pts = [decode_perf(encode_perf(p)) for p in perf_points()]
    d = build_report(ReportInput("churn", History.build(h.windows, h.alerts, pts), refs))
    page = tmp_path / "labels.html"
    page.write_text(render_report(d))
    _open(browser, page)
    b = browser
    assert b.eval("document.getElementById('no-labels')") is None
    for chart in ("accuracy", "coverage"):
        assert (
            b.eval(f"document.querySelector('canvas[data-chart=\"{chart}\"]').dataset.drawn") == "1"
        )
    b.eval("document.getElementById('performance').scrollIntoView()")
    b.screenshot(artifacts / "report-labels.png")
    assert b.log.problems() == []


def test_a_script_error_would_be_caught(browser, tmp_path):
    """The harness itself: an exception in a page is reported (so 'no errors' means something)."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>"
    )
    browser.goto(page.resolve().as_uri())
    assert any("undefinedFunction" in p for p in browser.log.problems()), json.dumps(
        browser.log.problems()
    )


def test_a_table_without_timestamps_charts_rows_not_dates(browser, tmp_path):
    """A table without a timestamp column: the charts' time axis counts rows (the
    events' times are their rows' numbers), never dates in 1970."""
    import numpy as np
    import pandas as pd

    import driftline

    rng = np.random.default_rng(3)

    def table(n: int, shift: float) -> pd.DataFrame:
        age = rng.normal(40 + shift, 10, n)
        p = 1 / (1 + np.exp(-(age - 40) / 8))
        return pd.DataFrame({"age": age, "plan": rng.choice(["a", "b"], n),
                             "prediction": p > 0.5, "proba_True": p})  # fmt: skip

    ref = driftline.build_reference(table(3000, 0), "m", "1", show=False)
    current = table(3000, 8)
    page = tmp_path / "rows.html"
    driftline.monitor(current, ref, show=False).report().save(page)
    _open(browser, page)
    axis = browser.eval(
        "(() => { const x = Chart.getChart(document.getElementById('chart-top')).scales.x;"
        " return { title: x.options.title.text, ticks: x.ticks.map(t => [t.value, t.label]) };"
        " })()"
    )
    assert "row" in axis["title"] and "UTC" not in axis["title"]
    assert len(axis["ticks"]) >= 2
    assert axis["ticks"][0][0] >= 0 and axis["ticks"][-1][0] <= 2 * len(current)
    for value, label in axis["ticks"]:
        assert label == f"row {round(value):,}", (value, label)
