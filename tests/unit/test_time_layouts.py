"""Time columns written as spreadsheets and locales write them, not ISO 8601.

A German Excel export writes ``31.01.2026 14:05``, an American one ``1/31/2026 2:05 PM``.
The layout is inferred when exactly one common layout reads every value, asked for when
day-first and month-first both read them, and given with ``--time-format`` /
``time_format=``. The oracle: the same rows with ISO 8601 times give the same run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftline.demo.simulate import Shift, SimulatedModel
from driftline.errors import InputError
from driftline.offline.notebook import build_reference, monitor
from driftline.offline.replay import OfflineRun
from driftline.offline.roles import ColumnMap, resolve
from driftline.offline.tables import table_from


def frame(n: int, start: str, freq: str, seed: int = 0, shift: bool = True) -> Any:
    """Rows of a simulated model (shifted half way), times as pandas holds them."""
    sim = SimulatedModel(n_numeric=3, seed=seed, model_id="m")
    rows = []
    for e in sim.events(n, shift=Shift(start=n // 2, feature="f01", sigmas=1.5) if shift else None):
        rows.append({"id": e["prediction_id"], **e["features"], "prediction": e["prediction"]})
    df = pd.DataFrame(rows)
    df["timestamp"] = pd.date_range(start, periods=n, freq=freq)
    df["label"] = np.where(np.arange(n) % 4 == 0, "other", df["prediction"])
    return df


@pytest.mark.parametrize(
    "layout",
    ["%d.%m.%Y %H:%M", "%m/%d/%Y %I:%M %p", "%d/%m/%Y %H:%M:%S", "%Y/%m/%d %H:%M", "%d-%m-%y"],
)
def test_a_common_layout_is_inferred_and_runs_as_iso_times(layout: str) -> None:
    train = frame(3000, "2026-01-01", "17min", shift=False)
    current = frame(3000, "2026-02-01", "1h" if "%H" in layout or "%I" in layout else "1D", 1)
    as_text = current.assign(timestamp=current["timestamp"].dt.strftime(layout))
    res = resolve(table_from(as_text))
    assert res.time_format == layout and res.kinds["timestamp"] == "datetime"
    assert f"read as {layout}" in res.describe()
    ref = build_reference(train, "m", "1", show=False)
    want = monitor(current, ref, show=False).run
    got = monitor(as_text, ref, show=False).run
    assert_same_run(got, want)
    assert got.alerts and got.labels == 3000


def assert_same_run(got: OfflineRun, want: OfflineRun) -> None:
    assert [a.alert_id for a in got.alerts] == [a.alert_id for a in want.alerts]
    assert got.labels == want.labels and got.label_outcomes == want.label_outcomes
    assert got.performance() == want.performance()
    assert not got.refused and not want.refused


def test_day_or_month_first_with_no_day_after_the_12th_is_asked() -> None:
    df = frame(500, "2026-03-01", "30min")  # ten days of March: every day <= 12
    as_text = df.assign(timestamp=df["timestamp"].dt.strftime("%d/%m/%Y %H:%M"))
    says = "could be day first or month first (no day after the 12th): say which with"
    with pytest.raises(InputError, match=re.escape(says)) as err:
        resolve(table_from(as_text))
    assert "--time-format '%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'" in str(err.value)
    given = resolve(table_from(as_text), ColumnMap(time_format="%m/%d/%Y %H:%M"))
    assert given.time_format == "%m/%d/%Y %H:%M"
    # read month first, the 3rd of October is at 00:00 of the 10th of March's row
    events = list(given.events("m", "1"))
    assert events[0][1] is not None
    assert events[0][1]["timestamp"] == pd.Timestamp("2026-01-03", tz="UTC").value // 10**6


def test_the_day_that_tells_the_layout_may_come_late_in_the_file() -> None:
    """A minute's data: its first 17,000 rows are in the first twelve days."""
    df = frame(20_000, "2026-03-01", "1min")
    as_text = df.assign(timestamp=df["timestamp"].dt.strftime("%d/%m/%Y %H:%M"))
    assert resolve(table_from(as_text)).time_format == "%d/%m/%Y %H:%M"


def test_a_time_no_layout_reads_is_one_line_naming_the_setting() -> None:
    df = frame(200, "2026-03-01", "30min")
    text = df.assign(timestamp="yesterday")
    with pytest.raises(InputError, match=re.escape("'yesterday' is not a time Driftline reads")):
        resolve(table_from(text))
    wrong = df.assign(timestamp=df["timestamp"].dt.strftime("%d.%m.%Y"))
    with pytest.raises(InputError, match=re.escape("is not in the layout '%Y-%m' (--time-format)")):
        resolve(table_from(wrong), ColumnMap(time_format="%Y-%m"))


def test_the_labels_table_reads_its_times_in_the_predictions_layout(tmp_path: Path) -> None:
    """A labels CSV written like the predictions' (one ambiguous layout, given once)."""
    train = frame(3000, "2026-01-01", "17min", shift=False)
    current = frame(2000, "2026-03-01", "5min", 2)  # one week: no day after the 12th
    layout = "%m/%d/%Y %H:%M"
    preds = current.drop(columns=["label"]).assign(
        timestamp=current["timestamp"].dt.strftime(layout)
    )
    labels = current[["id", "label"]].assign(
        timestamp=(current["timestamp"] + pd.Timedelta("2h")).dt.strftime(layout)
    )
    preds.to_csv(tmp_path / "preds.csv", index=False)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    ref = build_reference(train, "m", "1", show=False)
    got = monitor(
        tmp_path / "preds.csv", ref, labels=tmp_path / "labels.csv", time_format=layout, show=False
    ).run
    iso = current["timestamp"]
    want = monitor(
        current.drop(columns=["label"]),
        ref,
        labels=current[["id", "label"]].assign(timestamp=iso + pd.Timedelta("2h")),
        show=False,
    ).run
    assert_same_run(got, want)
    assert got.labels == 2000


def test_refusals_that_differ_in_their_values_are_one_reason(tmp_path: Path) -> None:
    run = OfflineRun()
    run.refused = [
        (f"line {i + 2}", f"column 'timestamp': timestamp {v!r} is not in the layout '%d.%m.%Y'")
        for i, v in enumerate(["31.02.2026", "yesterday", "0.0.0"])
    ]
    run.refused.append(("line 9", "column 'age': the value is missing"))
    assert run.refusal_summary() == (
        "3 x column 'timestamp': timestamp '…' is not in the layout '…' "
        "(first at line 2: '31.02.2026', '%d.%m.%Y'); "
        "1 x column 'age': the value is missing (first at line 9)"
    )


def test_probabilities_outside_0_1_are_one_reason_that_keeps_the_class() -> None:
    """Events whose probabilities are percentages were each a reason of their own, with
    the class elided and the value kept ("12 x scores.'…': probability 34.8 outside
    0..1 ...; 810 other reasons"). The class is a name and the number a value."""
    from driftline.contract.checks import check_prediction

    run = OfflineRun()
    for i, p in enumerate([34.8, 47.3, 91.0]):
        event = {
            "prediction_id": f"p{i}",
            "model_id": "churn",
            "model_version": "1",
            "timestamp": 1767225600000,
            "features": {"age": 41},
            "prediction": "yes",
            "scores": {"yes": p},
        }
        reason = check_prediction(event)
        assert reason is not None and str(p) in reason
        run.refused.append((f"line {i + 1}", reason))
    summary = run.refusal_summary()
    assert summary.startswith("3 x scores.'yes': probability … outside 0..1"), summary
    assert summary.endswith("(first at line 1: 34.8)"), summary
