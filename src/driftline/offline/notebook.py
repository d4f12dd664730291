"""The notebook API: references and monitoring on DataFrames, with no servers.

:func:`build_reference` reads a training table (pandas or polars DataFrame, pyarrow
table, records, or a CSV/Parquet/Feather/JSON/JSONL path) with the same column roles as
``driftline reference build``; :func:`monitor` runs the same cores as ``driftline
replay`` over a current table (with labels when present) and returns a
:class:`MonitorResult`: alerts and per-window results as DataFrames, performance, and
the HTML report (:class:`Report`, shown inline in Jupyter).

Results are pandas DataFrames when pandas is installed (``pip install
'driftline[notebook]'``), else lists of dicts (one per row, the same columns).
"""

from __future__ import annotations

import html
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from driftline.config import LabelsSettings, load_settings
from driftline.contract.keys import segment_key
from driftline.core.reference import Policy, ReferenceProfile
from driftline.errors import InputError
from driftline.offline.build import build_from_table, small_reference_note
from driftline.offline.files import read_reference_file, write_reference_file
from driftline.offline.inputs import replay_inputs
from driftline.offline.options import python_spelling
from driftline.offline.replay import OfflineRun, report_from_run
from driftline.offline.roles import ColumnMap, Resolved
from driftline.views.report.render import render_report

__all__ = ["MonitorResult", "Reference", "Report", "build_reference", "monitor"]


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> Any:
    """A pandas DataFrame of ``rows`` when pandas is installed, else the rows."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=list(columns))


def _signing_key(key: bytes | str | SecretStr | None) -> bytes | str | SecretStr:
    return key if key is not None else load_settings().redis.signing_key()


class Reference:
    """A model's reference profile, and how the columns of its data were read.

    Built by :func:`build_reference` or read by :meth:`load`; saved as a signed
    reference file (the one ``driftline replay --reference`` reads) by :meth:`save`.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        columns: Resolved | None = None,
        column_map: ColumnMap | None = None,
    ) -> None:
        self.profile = profile
        self.columns = columns
        #: The roles the user named at :func:`build_reference` (``None``: read from a
        #: file); :func:`monitor` reads the current data with them unless told otherwise.
        self.column_map = column_map

    @property
    def model_id(self) -> str:
        """The model the reference belongs to."""
        return self.profile.model_id

    @property
    def model_version(self) -> str:
        """The model version (``default``: the fallback for every version)."""
        return self.profile.model_version

    @property
    def reference_id(self) -> str:
        """``model:version:digest``: equal for equal data, settings and model."""
        return self.profile.reference_id

    @property
    def features(self) -> list[str]:
        """The feature names, in stored order."""
        return list(self.profile.features)

    def describe(self) -> str:
        """How the columns were read (the table ``reference build`` prints)."""
        if self.columns is None:
            return f"reference {self.reference_id} ({len(self.features)} features)"
        return self.columns.describe()

    def save(self, path: str | Path, signing_key: bytes | str | SecretStr | None = None) -> Path:
        """Write the signed reference file (key: the settings' state signing key)."""
        p = Path(path)
        write_reference_file(p, self.profile, _signing_key(signing_key))
        return p

    @classmethod
    def load(
        cls, path: str | Path, signing_key: bytes | str | SecretStr | None = None
    ) -> Reference:
        """Read and check a signed reference file."""
        return cls(read_reference_file(Path(path), _signing_key(signing_key)))

    def __repr__(self) -> str:
        out = self.profile.outputs
        return (
            f"Reference({self.reference_id!r}, {len(self.features)} features, "
            f"{self.profile.row_count} rows, task {out.task})"
        )


def _column_map(
    columns: ColumnMap | Mapping[str, Any] | None, roles: Mapping[str, Any]
) -> ColumnMap:
    base = (
        columns
        if isinstance(columns, ColumnMap)
        else ColumnMap(**dict(columns))
        if columns
        else ColumnMap()
    )
    given = {k: v for k, v in roles.items() if v is not None}
    return base.merged(ColumnMap(**given)) if given else base


def build_reference(
    data: Any,
    model_id: str = "model",
    model_version: str = "1",
    *,
    columns: ColumnMap | Mapping[str, Any] | None = None,
    id: str | None = None,  # noqa: A002 - the role's name
    timestamp: str | None = None,
    prediction: str | None = None,
    label: str | None = None,
    scores: Mapping[str, str] | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    types: Mapping[str, str] | None = None,
    task: str | None = None,
    on_bad_value: str | None = None,
    time_format: str | None = None,
    encoding: str | None = None,
    label_map: Mapping[str, str] | None = None,
    window_events: int = 500,
    window_seconds: float = 0.0,
    false_alarm_events: float = 1_000_000.0,
    multivariate: bool = True,
    show: bool = True,
) -> Reference:
    """Build a reference from training data: a DataFrame, a table, records or a file.

    Parameters
    ----------
    data
        A pandas or polars DataFrame, a pyarrow Table, a list of dicts, a dict of
        columns, or a CSV/Parquet/Feather/JSON/JSONL path.
    model_id, model_version
        The model the reference belongs to.
    columns
        A :class:`~driftline.offline.roles.ColumnMap` (or a dict of its fields); the
        keyword arguments below override it.
    id, timestamp, prediction, label, scores, features, exclude, types, task, on_bad_value
        The column roles and types (see docs/your-data.md); anything not given is
        inferred from names and values.
    time_format
        The time column's layout in ``strptime`` codes (``"%d.%m.%Y %H:%M"``) when it is
        text that is not ISO 8601 and its layout cannot be inferred.
    encoding
        The text encoding of a CSV or TSV file (default UTF-8; ``"cp1252"`` for a
        "CSV" saved by Excel on Windows).
    label_map
        Labels written otherwise than the model's classes, text -> class (any case),
        e.g. ``{"no": "0", "yes": "1"}`` for a model that predicts 0 and 1.
    window_events, window_seconds, false_alarm_events
        The monitor's policy stored with the reference: events per window, the
        event-time window (0: none) and the expected events between false alarms.
    multivariate
        Also fit the multivariate model, which watches the features jointly
        (docs/multivariate.md); like ``driftline reference build --no-multivariate``
        when False.
    show
        Print how each column was read (column, role, type, note).

    Returns
    -------
    Reference

    Raises
    ------
    InputError
        A column named that is not there, two columns for one role, a bad value in a
        numeric column (unless ``on_bad_value="dlq"`` or the column is declared).

    Examples
    --------
    >>> rows = [{"age": 30 + i % 20, "plan": "pro" if i % 3 else "basic",
    ...          "prediction": "stay", "proba_stay": 0.8, "proba_leave": 0.2}
    ...         for i in range(200)]
    >>> ref = build_reference(rows, "churn", "1", show=False)
    >>> ref.features, ref.profile.outputs.task
    (['age', 'plan'], 'classification')
    """
    cm = _column_map(
        columns,
        dict(id=id, timestamp=timestamp, prediction=prediction, label=label, scores=scores,
             features=features, exclude=exclude, types=types, task=task,
             on_bad_value=on_bad_value, time_format=time_format, encoding=encoding,
             label_map=label_map),
    )  # fmt: skip
    policy = Policy(
        window_events=window_events,
        window_seconds=window_seconds,
        false_alarm_events=false_alarm_events,
        multivariate=multivariate,
    )
    with python_spelling():  # errors and notes name keyword arguments, not flags
        profile, res = build_from_table(data, model_id, model_version, columns=cm, policy=policy)
    if show:
        print(res.describe())
        note = small_reference_note(profile)
        if note is not None:
            print(f"note: {note}")
    return Reference(profile, res, cm)


def _as_profiles(reference: Any) -> list[ReferenceProfile]:
    items = reference if isinstance(reference, list | tuple) else [reference]
    out = []
    for r in items:
        if isinstance(r, Reference):
            out.append(r.profile)
        elif isinstance(r, ReferenceProfile):
            out.append(r)
        elif isinstance(r, str | Path):
            out.append(Reference.load(r).profile)
        else:
            raise InputError(f"not a reference: {type(r).__name__}")
    return out


class Report:
    """A drift report: its data, and the self-contained HTML page.

    In Jupyter it shows inline (in a frame, so its charts run); :meth:`save` writes
    the page that ``driftline report`` writes.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.html = render_report(self.data)

    def save(self, path: str | Path) -> Path:
        """Write the HTML page; returns its path."""
        p = Path(path)
        p.write_text(self.html, encoding="utf-8")
        return p

    def _repr_html_(self) -> str:
        doc = html.escape(self.html, quote=True)
        return (
            f'<iframe srcdoc="{doc}" style="width:100%;height:900px;border:0" '
            'sandbox="allow-scripts"></iframe>'
        )

    def __repr__(self) -> str:
        d = self.data
        return (
            f"Report(model {d['model']!r} v{d['version']}, {d['windows']} windows, "
            f"{len(d['alerts'])} alerts, state {d['state']})"
        )


_ALERT_COLUMNS = (
    "alert_id", "model_id", "model_version", "segment", "kind", "status", "severity",
    "feature", "detector", "statistic", "threshold", "p_value", "window_start",
    "window_end", "window_count", "detected_at", "episode", "diagnosis", "top_features",
    "reference",
)  # fmt: skip
_WINDOW_COLUMNS = (
    "model_id", "model_version", "segment", "window", "start", "end", "count", "reference",
    "feature", "statistic", "value", "threshold", "p_value", "drifted",
)  # fmt: skip
_PERF_COLUMNS = (
    "model_id", "model_version", "segment", "at", "accuracy", "estimated_accuracy",
    "coverage", "lag_seconds", "labels", "mae",
)  # fmt: skip


class MonitorResult:
    """What :func:`monitor` found: alerts, windows, performance, the report.

    Tables are pandas DataFrames when pandas is installed, else lists of dicts. Times
    are event times in epoch milliseconds (UTC).
    """

    def __init__(self, run: OfflineRun, source: str) -> None:
        self.run = run
        self.source = source

    @property
    def alerts(self) -> Any:
        """One row per alert (firing and resolved), in the order the cores raised them."""
        rows = []
        for a in self.run.alerts:
            d = a.model_dump(mode="json")
            w = d.pop("window")
            d.update(window_start=w["start"], window_end=w["end"], window_count=w["count"])
            d["segment"] = segment_key(a.segment)
            d["top_features"] = [t["feature"] for t in d["top_features"]]
            rows.append({c: d.get(c) for c in _ALERT_COLUMNS})
        return _frame(rows, _ALERT_COLUMNS)

    @property
    def windows(self) -> Any:
        """One row per window and test (feature or output statistic) of every model."""
        rows = []
        for model, wins in sorted(self.run.windows.items()):
            for w in wins:
                head = {c: w.get(c) for c in _WINDOW_COLUMNS[:8]}
                head["model_id"] = model
                for t in w["tests"]:
                    rows.append({**head, **{c: t.get(c) for c in _WINDOW_COLUMNS[8:]}})
        return _frame(rows, _WINDOW_COLUMNS)

    @property
    def performance(self) -> Any:
        """One row per performance point of the slow loop (empty without labels)."""
        rows = [
            {"model_id": model, **{c: p.get(c) for c in _PERF_COLUMNS[1:]}}
            for model, points in sorted(self.run.perf.items())
            for p in points
        ]
        return _frame(rows, _PERF_COLUMNS)

    @property
    def summary(self) -> dict[str, Any]:
        """Performance per model and version (accuracy, per class, ...), as a dict."""
        return self.run.performance()

    @property
    def refused(self) -> list[tuple[str, str]]:
        """``(where, reason)`` of every row that was not used."""
        return list(self.run.refused)

    def report(
        self,
        model_id: str | None = None,
        *,
        version: str | None = None,
        segment: str | None = None,
        since: str | None = None,
    ) -> Report:
        """The drift report of one model (the only one, by default)."""
        data = report_from_run(
            self.run,
            model_id=model_id,
            version=version,
            segment=segment,
            since=since,
            source=self.source,
        )
        return Report(data)

    def _repr_html_(self) -> str:
        return self.report()._repr_html_()

    def __repr__(self) -> str:
        firing = sum(1 for a in self.run.alerts if a.status == "firing")
        return (
            f"MonitorResult({self.run.events} events, {firing} alerts firing, "
            f"{sum(len(w) for w in self.run.windows.values())} windows, "
            f"{len(self.run.refused)} refused)"
        )


def monitor(
    current: Any,
    reference: Any,
    *,
    labels: Any = None,
    model_id: str | None = None,
    model_version: str | None = None,
    columns: ColumnMap | Mapping[str, Any] | None = None,
    id: str | None = None,  # noqa: A002 - the role's name
    timestamp: str | None = None,
    prediction: str | None = None,
    label: str | None = None,
    scores: Mapping[str, str] | Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    types: Mapping[str, str] | None = None,
    task: str | None = None,
    on_bad_value: str | None = None,
    time_format: str | None = None,
    encoding: str | None = None,
    label_map: Mapping[str, str] | None = None,
    label_columns: Mapping[str, str] | None = None,
    labels_settings: LabelsSettings | None = None,
    batch: int = 5000,
    show: bool = True,
) -> MonitorResult:
    """Run the monitor (and, with labels, the label joiner) over a current table.

    The same cores as ``driftline replay``: the same alerts, windows and performance.

    Parameters
    ----------
    current
        Predictions: a DataFrame, a table, records, a CSV/Parquet path (columns mapped
        as for :func:`build_reference`), or a JSONL file of prediction events; a list
        of paths is read as one table (or one stream of events), in order.
    reference
        A :class:`Reference`, a reference file path, or a list of them.
    labels
        Labels as a table (id and label columns, a time optional) or a JSONL file of
        label events. ``None``: the current table's label column, if it has one.
    model_id, model_version
        The model of a table's rows (default: the reference's).
    columns, id, timestamp, prediction, label, scores, features, exclude, types, task, on_bad_value
        The column roles of ``current``, as for :func:`build_reference` (the keywords
        override ``columns``). Default: the roles given to :func:`build_reference` when
        ``reference`` is the :class:`Reference` it returned (the current data usually
        has the training data's columns); else inferred from names and values.
    time_format, encoding, label_map
        As for :func:`build_reference`; a labels table (or JSONL file) without its own
        (``label_columns``) reads its times in the same layout, its text in the same
        encoding and its labels through the same map.
    label_columns
        The columns of a labels table by role, e.g. ``{"id": "customer_id", "label":
        "churned", "timestamp": "label_time"}`` (default: inferred from the names).
    labels_settings
        The slow loop's settings (default: those of the environment).
    batch
        Events per core call (results do not depend on it).
    show
        Print how the columns of a table were read.

    Returns
    -------
    MonitorResult
    """
    if columns is None and isinstance(reference, Reference):
        columns = reference.column_map
    cm = _column_map(
        columns,
        dict(id=id, timestamp=timestamp, prediction=prediction, label=label, scores=scores,
             features=features, exclude=exclude, types=types, task=task,
             on_bad_value=on_bad_value, time_format=time_format, encoding=encoding,
             label_map=label_map),
    )  # fmt: skip
    with python_spelling():
        run, res = replay_inputs(
            current,
            _as_profiles(reference),
            columns=cm,
            labels=labels,
            label_columns=ColumnMap.for_labels(label_columns) if label_columns else None,
            model_id=model_id,
            model_version=model_version,
            labels_settings=labels_settings or load_settings().labels,
            batch=batch,
            progress=False,
            show=print if show else None,
        )
    assert run is not None  # no dry run here
    source = res.table.source if res is not None else str(current)
    if run.refused and show:
        print(f"{len(run.refused)} rows refused: {run.refusal_summary()}", file=sys.stderr)
    for said in (run.order_note(), run.unknown_features_note()):
        if said and show:
            print(said, file=sys.stderr)
    return MonitorResult(run, f"monitor over {source}")
