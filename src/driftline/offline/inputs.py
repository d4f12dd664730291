"""Opening what the offline commands and the notebook API read: events and labels.

Prediction events come as a JSONL file of wire events (checked by the contract line
by line) or as a table (CSV, Parquet, flat JSONL, a data frame) whose columns are
mapped to an event's fields (:mod:`driftline.offline.roles`); labels come as a JSONL
file of label events or a table with an id and a label column (and a time).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from driftline.config import LabelsSettings
from driftline.core.reference import ReferenceProfile
from driftline.errors import InputError
from driftline.offline.column_names import ID_NAMES, LABEL_NAMES, PREDICTION_NAMES, TIME_NAMES
from driftline.offline.options import no_column, option
from driftline.offline.replay import (
    EventSource,
    OfflineRun,
    jsonl_events,
    jsonl_labels,
    run_offline,
)
from driftline.offline.resolved import label_as_class, label_keys
from driftline.offline.roles import ColumnMap, Resolved, resolve
from driftline.offline.table_base import Table, file_type
from driftline.offline.tables import (
    FILE_KINDS,
    file_paths,
    json_lines,
    read_events,
    read_jsonl_objects,
    table_from,
)

__all__ = ["is_event_file", "open_labels", "open_predictions", "replay_inputs"]


def is_event_file(data: Any, kind: str = "prediction") -> bool:
    """Whether ``data`` is a path to a JSONL file (or a ``.json`` file of JSON lines)
    of prediction (or label) events.

    Events carry a ``model_id`` and, predictions, a ``features`` object; labels a
    ``prediction_id`` and a ``label``. Other JSONL files are tables of flat rows.
    """
    paths = file_paths(data)
    if len(paths) > 1:
        return all(is_event_file(p, kind) for p in paths)
    if not paths:
        return False
    path = paths[0]
    ftype = FILE_KINDS.get(file_type(path)[0])
    if ftype != "jsonl" and not (ftype == "json" and path.is_file() and json_lines(path)):
        return False
    with closing(read_jsonl_objects(path)) as objects:
        first = next(objects, None)
    if first is None:
        return False
    obj = first[1]
    if not isinstance(obj, dict) or "model_id" not in obj:
        return False
    if kind == "label":
        return "prediction_id" in obj and "label" in obj
    return isinstance(obj.get("features"), dict)


def _event_files(data: Any, read: Callable[[Path], EventSource]) -> EventSource:
    """The events of one JSONL file, or of several one after another (a row's place
    names its file)."""
    paths = file_paths(data)
    if len(paths) == 1:
        yield from read(paths[0])
        return
    for path in paths:
        for where, event, reason in read(path):
            yield f"{path.name} {where}", event, reason


def open_predictions(
    data: Any,
    columns: ColumnMap | None,
    model_id: str | None,
    model_version: str | None,
    labels: list[dict[str, Any]] | None = None,
    classes: Sequence[str] = (),
    model_versions: Mapping[str, str] | None = None,
    recorded: Mapping[str, Any] | None = None,
    known_features: Collection[str] = (),
) -> tuple[EventSource, Resolved | None]:
    """The prediction events of ``data``; a table's label column fills ``labels``;
    ``classes``: the model's classes as its reference knows them; ``model_versions``:
    the version of each model whose rows do not name one (a table of several models);
    ``recorded``: the columns' roles in the table the reference was built from
    (:attr:`~driftline.core.reference.ReferenceProfile.columns`), read where the table
    has those columns and ``columns`` does not say otherwise; ``known_features``: the
    reference's features, read as features whatever their names.

    Raises
    ------
    InputError
        A table without ``model_id``/``model_version`` to give its events, or any
        problem of its columns (see :func:`driftline.offline.roles.resolve`).
    """
    if is_event_file(data):
        return _event_files(data, jsonl_events), None
    encoding = columns.encoding if columns is not None else None
    table = table_from(data, encoding=encoding)
    hint = f"{option('prediction', 'COLUMN')}, {option('label', 'COLUMN')}, ... name others"
    columns, told = _as_recorded(table, columns, recorded, _EVENT_ROLES, hint)
    res = resolve(table, columns, classes=classes, known_features=known_features)
    res.remarks.extend(told)
    if res.model is not None:  # every row names its model; its version, if not, is given
        res.model_versions = dict(model_versions or {})
        if model_id:
            res.keep_only(model_id, model_version)
        version = model_version or res.model_versions.get(model_id or "", "default")
        return res.event_rows(model_id or "", version, labels), res
    if not model_id or not model_version:
        raise InputError(
            f"{res.table.source} is a table: say which model its rows belong to "
            f"({option('model', 'MODEL')} and {option('version', 'VERSION')}, or one "
            f"{option('reference', 'FILE')})"
        )
    return res.event_rows(model_id, model_version, labels), res


def open_labels(
    data: Any,
    columns: ColumnMap | None,
    model_id: str | None,
    classes: Sequence[str] = (),
    recorded: Mapping[str, Any] | None = None,
) -> tuple[EventSource, Resolved | None]:
    """The label events of ``data`` (a JSONL file of label events, or a table);
    ``classes``: the model's classes as its reference knows them (a table's labels
    that are none of them are told); ``recorded``: as :func:`open_predictions`'s (the
    id and label columns only: a label's time is not its prediction's)."""
    if is_event_file(data, "label"):
        source = _event_files(data, jsonl_labels)
        given = columns.label_map if columns is not None else None
        return (_mapped_labels(source, given) if given else source), None
    cm = (columns or ColumnMap()).merged(ColumnMap(features=[]))
    table = table_from(data, encoding=cm.encoding)
    hint = f"{option('labels-columns', 'id=COLUMN,label=COLUMN')} names others"
    cm, told = _as_recorded(table, cm, recorded, ("id", "label"), hint)
    res = resolve(table, cm, labels=True, classes=classes)
    res.remarks.extend(told)
    unlabelled = table.stats(res.label).missing if res.label else 0
    if unlabelled:
        res.remarks.append(
            f"{unlabelled:,} rows without a label (not labelled yet?): left out, as rows "
            "without one in a table of predictions"
        )
    if res.model is not None:
        if model_id:
            res.keep_only(model_id, None)
        return res.label_rows(model_id or ""), res
    if not model_id:
        raise InputError(f"{res.table.source}: say which model the labels belong to (--model)")
    return res.label_rows(model_id), res


def _mapped_labels(source: EventSource, label_map: Mapping[str, str]) -> EventSource:
    """Label events with their labels through ``label_map`` (:attr:`ColumnMap.label_map`)."""
    lowered = label_keys(label_map)
    for where, event, reason in source:
        if event is not None:
            event = {**event, "label": label_as_class(event["label"], lowered)}
        yield where, event, reason


#: The roles a reference records that a table of predictions can take from it.
_EVENT_ROLES = ("id", "timestamp", "prediction", "label", "scores")
#: The names each role is found by without being told (:mod:`.column_names`).
_NAMED = {
    "id": ID_NAMES,
    "timestamp": TIME_NAMES,
    "prediction": PREDICTION_NAMES,
    "label": LABEL_NAMES,
}


def _as_recorded(
    table: Table,
    columns: ColumnMap | None,
    recorded: Mapping[str, Any] | None,
    roles: Sequence[str],
    hint: str,
) -> tuple[ColumnMap, list[str]]:
    """``columns`` with the reference's recorded roles where the user said nothing and
    the table has the column (a column the user gave another role keeps it), and the
    line that says so (a role found this way is not the table's names' guess, and the
    roles table should say why)."""
    given = columns or ColumnMap()
    if not recorded:
        return given, []
    names = set(table.names)
    used = {getattr(given, r) for r in ("id", "timestamp", "prediction", "label")}
    used |= set(given.exclude) | set(given.features or ())
    kw: dict[str, Any] = {}
    for role in roles:
        col = recorded.get(role)
        if role == "scores":
            if (
                given.scores is None
                and isinstance(col, Mapping)
                and col
                and all(c in names and c not in used for c in col.values())
            ):
                kw["scores"] = dict(col)
        elif getattr(given, role) is None and col in names and col not in used:
            kw[role] = col
    if not kw:
        return given, []
    # the line names what the columns' names alone would not have given
    news = [
        f"{role} {', '.join(v.values()) if isinstance(v, Mapping) else v}"
        for role, v in kw.items()
        if isinstance(v, Mapping)
        or not (v.lower() in _NAMED.get(role, ()) or (role == "id" and v.lower().endswith("_id")))
    ]
    lines = []
    if news:
        lines.append(f"as in the reference's training table: {', '.join(news)} ({hint})")
    return ColumnMap(**kw).merged(given), lines


def _compare_features(res: Resolved, ref: ReferenceProfile) -> None:
    """Note the table's features the reference lacks, and the reference's the table
    lacks: each raises a data-quality alert in the run, and the table of roles is where
    the user can see why before reading it."""
    known = set(ref.features)
    new = [f for f in res.features if f not in known]
    # Number codes the reference was built to read as categories (a pandas category,
    # --types COL=categorical) are read so again: the CSV of the same rows says only
    # that they are numbers.
    coded = [
        f
        for f in res.features
        if f in known
        and ref.features[f].kind == "categorical"
        and res.kinds[f] == "numeric"
        and res.notes.get(f) != "declared"
    ]
    for f in coded:
        # the CSV's text, as the reference holds it: a code 01234 is not '1234'
        res.table.as_text([f])
        res.kinds[f] = "categorical"
        res.notes[f] = "categorical, as in the reference"
    # Codes with leading zeros in a CSV file that a reference built before they were
    # read as text holds as numbers: read as numbers again, the reference's bins.
    numbers = [
        f
        for f in res.features
        if f in known
        and ref.features[f].kind == "numeric"
        and f in res.table.text_codes
        and res.kinds[f] == "categorical"
        and res.notes.get(f) != "declared"
    ]
    for f in numbers:
        res.table.as_numbers(f)
        res.kinds[f] = "numeric"
        res.notes[f] = (
            "numbers, as in the reference (built when codes with leading zeros were read "
            "as numbers; rebuild it to watch them as codes)"
        )
    read = set(res.features)
    gone = [f for f in ref.features if f not in read]
    if new:
        res.remarks.append(
            f"{', '.join(new)} not among the reference's features: the run raises a "
            f"data-quality alert on unknown features ({option('exclude', new[0])} leaves "
            "it out)"
        )
    if gone:
        res.remarks.append(
            f"{', '.join(gone)} of the reference's features not read from this table: "
            "every event misses it, a data-quality alert"
        )


def _unique_ids(res: Resolved, model_id: str, model_version: str, inline: bool) -> None:
    """Labels join their predictions by id: a table whose rows repeat ids (the files of
    several days, each numbering its rows from 0) would join a label to another row's
    prediction and count the others as duplicates, a wrong accuracy. One line instead.

    Raises
    ------
    InputError
        Two rows of a model share an id.
    """
    found = res.repeated_id(model_id, model_version)
    if found is None:
        return
    pid, was, again, n = found
    fix = f"name a column that is unique ({option('id', 'COLUMN')})"
    if inline:
        fix += (
            ", or, the labels being in the table itself, number the rows instead "
            f"({no_column('id')} and {option('exclude', res.id or '')})"
        )
    raise InputError(
        f"{res.table.source}: {n:,} rows repeat the id of an earlier row (id {pid!r}: "
        f"{was} and {again}), and labels join their predictions by id, so a label would "
        f"join another row's prediction: {fix}"
    )


def _unique_event_ids(data: Any) -> None:
    """:func:`_unique_ids` for JSONL event files: the files of several days that each
    number their events from ``p0`` would join a day's labels to another day's
    predictions. One pass over the files' ids first (a line that is not an event is left
    to the run, which refuses it with its reason).

    Raises
    ------
    InputError
        Two events of a model share a ``prediction_id``.
    """
    paths = file_paths(data)
    seen: dict[tuple[Any, Any], str] = {}
    first: tuple[Any, str, str] | None = None
    repeats = 0
    for path in paths:
        name = f"{path.name} " if len(paths) > 1 else ""
        for lineno, raw in read_events(path):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            ids = obj.get("prediction_ids")  # a batch record: one id per row
            if not isinstance(ids, list):
                ids = [obj.get("prediction_id")]
            for pid in ids:
                if not isinstance(pid, str | int):
                    continue
                key = (obj.get("model_id"), pid)
                where = f"{name}line {lineno}"
                was = seen.setdefault(key, where)
                if was != where:
                    repeats += 1
                    first = first or (pid, was, where)
    if first is not None:
        pid, was, again = first
        raise InputError(
            f"{repeats:,} events repeat the prediction_id of an earlier event (id {pid!r}: "
            f"{was} and {again}), and labels join their predictions by id, so a label "
            "would join another event's prediction: give every prediction its own id "
            "(the files of several days: put the day in it)"
        )


def _padded_ids(preds: Resolved, labels: Resolved) -> None:
    """Ids that are one number written with leading zeros in one table and without in
    the other (a text id ``'000123'`` beside a number ``123``) never join, and each
    label would be refused as without its prediction, with no word of why. One line
    instead, when no label's id is a prediction's as written but some are once the
    zeros are dropped.

    Raises
    ------
    InputError
        The two tables write the same ids with and without leading zeros.
    """
    pred_ids, label_ids = preds.id_texts(), labels.id_texts()
    if not pred_ids or not label_ids or not set(label_ids).isdisjoint(pred_ids):
        return

    def unpadded(ids: list[str]) -> set[str]:
        return {s.lstrip("0") or "0" for s in ids if s.isdigit()}

    if unpadded(pred_ids).isdisjoint(unpadded(label_ids)):
        return
    sides = {"predictions'": (preds, pred_ids), "labels'": (labels, label_ids)}
    padded = next(
        side for side, (_, ids) in sides.items() if any(len(s) > 1 and s[0] == "0" for s in ids)
    )
    plain = "labels'" if padded == "predictions'" else "predictions'"
    padded_ids = [s for s in sides[padded][1] if len(s) > 1 and s[0] == "0"]
    widths = {len(s) for s in padded_ids}
    if len(widths) == 1:
        col, side, to = sides[plain][0].id, plain, f"astype(str).str.zfill({widths.pop()})"
    else:
        col, side, to = sides[padded][0].id, padded, "astype('int64')"
    raise InputError(
        f"{labels.table.source}: none of the {len(label_ids):,} labels' ids is a "
        f"prediction's id, though the numbers are the same: the {padded} ids have leading "
        f"zeros ({padded_ids[0]!r}) and the {plain} none ({sides[plain][1][0]!r}), so no "
        f"label would join its prediction; write them alike (the {side} table: "
        f"df[{col!r}] = df[{col!r}].{to})"
    )


def replay_inputs(
    current: Any,
    references: Sequence[ReferenceProfile],
    *,
    columns: ColumnMap | None = None,
    labels: Any = None,
    label_columns: ColumnMap | None = None,
    model_id: str | None = None,
    model_version: str | None = None,
    labels_settings: LabelsSettings | None = None,
    batch: int = 5000,
    progress: bool = True,
    show: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> tuple[OfflineRun | None, Resolved | None]:
    """Open predictions (and labels) and run both loops: what ``driftline replay``,
    ``driftline report --events`` and :func:`driftline.monitor` share.

    A table's rows belong to ``model_id``/``model_version``, by default those of the
    only reference. Labels come from ``labels`` or, without it, from the table's label
    column; ``label_columns`` names the id, label and time columns of a labels table
    (default: inferred from their names). ``show`` receives the table of the columns'
    roles; ``dry_run`` stops there (the run is ``None``).

    Raises
    ------
    InputError
        No reference for a table's model, or any problem of the inputs.
    """
    by_key = {(r.model_id, r.model_version): r for r in references}
    versions: dict[str, list[str]] = {}
    for m, v in by_key:
        versions.setdefault(m, []).append(v)
    # a model's version where one reference gives it: for --model alone, and for the
    # rows of a table of several models that do not name theirs
    sole = {m: vs[0] for m, vs in versions.items() if len(vs) == 1}
    if len(references) == 1:
        model_id = model_id or references[0].model_id
        model_version = model_version or references[0].model_version
    elif model_id and not model_version:
        model_version = sole.get(model_id)
    table_labels: list[dict[str, Any]] = []
    ref = by_key.get((model_id or "", model_version or "")) or by_key.get(
        (model_id or "", "default")
    )
    classes = ref.outputs.classes.categories if ref and ref.outputs.classes else ()
    events, res = open_predictions(
        current,
        columns,
        model_id,
        model_version,
        table_labels if labels is None else None,
        classes=classes,
        model_versions=sole,
        recorded=ref.columns if ref is not None else None,
        known_features=tuple(ref.features) if ref is not None else (),
    )
    if res is not None:
        if ref is not None:
            _compare_features(res, ref)
        if show is not None:
            show(res.describe())
        if not by_key:
            raise InputError(f"{res.table.source}: give the reference to compare with")
        several = res.model is not None and res.only is None  # each row names its model
        if ref is None and not several:
            known = ", ".join(f"{m} v{v}" for m, v in sorted(by_key))
            raise InputError(
                f"no reference for model {model_id!r} version {model_version!r} among the "
                f"references given ({known})"
            )
    if dry_run:
        return None, res
    if res is not None and res.prediction is None and not res.argmax:
        # Every prediction event carries the model's output (the contract): a table
        # without one would have each of its rows refused.
        raise InputError(
            f"{res.table.source}: no prediction column, and every event the monitor reads "
            f"carries the model's prediction: name it with {option('prediction', 'COLUMN')}"
        )
    if res is not None and (labels is not None or res.label is not None):
        _unique_ids(res, model_id or "", model_version or "", inline=labels is None)
    elif res is None and labels is not None:
        _unique_event_ids(current)
    label_source: EventSource | None = None
    if labels is not None and res is not None and res.id is None:
        # its rows' ids are row numbers, which no labels table holds
        raise InputError(
            f"{res.table.source} has no id column (none is named prediction_id, id or "
            f"*_id), and separate labels join their predictions by id: give both tables "
            f"one ({option('id', 'COLUMN')}, {option('labels-columns', 'id=COLUMN')}), or "
            f"put the labels in {res.table.source} as its label column, which joins row by "
            "row"
        )
    if labels is not None:
        if columns is not None and (columns.time_format or columns.encoding or columns.label_map):
            # the labels are usually written as the predictions are: their times in the
            # same layout, their text in the same encoding; and --label-map is for them
            given = label_columns or ColumnMap()
            label_columns = given.merged(
                ColumnMap(
                    time_format=given.time_format or columns.time_format,
                    encoding=given.encoding or columns.encoding,
                    label_map=given.label_map or columns.label_map,
                )
            )
        label_source, lres = open_labels(
            labels, label_columns, model_id, classes, ref.columns if ref is not None else None
        )
        if lres is not None and show is not None:
            show(lres.describe())
        if lres is not None and res is not None:
            _padded_ids(res, lres)
    inline = table_labels if labels is None and res is not None and res.label else None
    run = run_offline(
        events,
        by_key,
        labels=label_source,
        inline_labels=inline,
        labels_settings=labels_settings,
        batch=batch,
        progress=progress,
    )
    run.untimed = res is not None and res.timestamp is None
    run.out_of_order = res.out_of_order if res is not None else None
    return run, res
