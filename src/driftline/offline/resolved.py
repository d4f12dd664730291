"""What :func:`~driftline.offline.roles.resolve` found in a table: each column's role and
type, the notes, the rows set aside, and the rows it gives as prediction and label
events or as training data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from driftline.contract.checks import check_label, check_prediction
from driftline.contract.columnar import category_value
from driftline.contract.values import class_value, plain
from driftline.core.reference import TrainingData
from driftline.errors import InputError
from driftline.offline.column_map import Refusal
from driftline.offline.column_names import (
    LONE_SCORE_NAMES,
    class_of_suffixed_score,
    score_class,
)
from driftline.offline.options import option
from driftline.offline.table_base import Table
from driftline.offline.times import time_ms

__all__ = ["Kind", "Resolved", "in_class_order", "is_number", "label_as_class", "label_keys"]

Kind = Literal["numeric", "categorical", "boolean", "datetime"]


@dataclass
class Resolved:
    """Every column's role and type, the notes, and the rows set aside."""

    table: Table
    id: str | None = None
    timestamp: str | None = None
    prediction: str | None = None
    label: str | None = None
    #: Columns naming each row's model and version (a log of several models' events).
    model: str | None = None
    version: str | None = None
    #: (model, version or None): the rows to read of a table of several models.
    only: tuple[str, str | None] | None = None
    #: A model's version where a row does not name one (its only reference's).
    model_versions: dict[str, str] = field(default_factory=dict)
    #: class -> column.
    scores: dict[str, str] = field(default_factory=dict)
    #: (class, of column): a class whose probability is ``1 - column`` (binary models).
    complement: tuple[str, str] | None = None
    #: (column, classes): one column holding each row's probabilities as a list, in the
    #: classes' order (``list(model.predict_proba(X))``, scikit-learn's ``classes_``).
    score_vector: tuple[str, list[str]] | None = None
    #: No prediction column: the prediction is the class of the highest probability.
    argmax: bool = False
    #: The model's classes as known beyond the table (a reference's), in class order.
    known_classes: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    kinds: dict[str, Kind] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    task: str = "classification"
    refused: dict[int, Refusal] = field(default_factory=dict)
    #: Notes about the table as a whole, printed under the columns.
    remarks: list[str] = field(default_factory=list)
    #: A table of labels (no features; a label without a time takes its prediction's).
    labels: bool = False
    #: The ``strptime`` layout of the time column's text (None: ISO 8601 or numbers).
    time_format: str | None = None
    #: Labels written otherwise than the classes, text (lower case) -> class
    #: (:attr:`ColumnMap.label_map`).
    label_map: dict[str, str] = field(default_factory=dict)
    #: Set by :meth:`events`: where the first row earlier than the row before it is
    #: (``line 1,002``), when the rows are not in time order (None: they are).
    out_of_order: str | None = None

    def role(self, name: str) -> str:
        """The role of column ``name``."""
        for role in ("id", "timestamp", "prediction", "label", "model", "version"):
            if getattr(self, role) == name:
                return role
        for cls, col in self.scores.items():
            if col == name:
                return f"score[{cls}]"
        if self.score_vector is not None and self.score_vector[0] == name:
            return f"scores[{','.join(self.score_vector[1])}]"
        return "feature" if name in self.features else "excluded"

    def roles(self) -> dict[str, Any]:
        """The columns that had a role, by role, as a reference built from this table
        records them (:attr:`~driftline.core.reference.ReferenceProfile.columns`): the
        id, time, prediction and label columns, and the columns of class
        probabilities named otherwise than :mod:`.column_names` finds them."""
        out: dict[str, Any] = {
            role: name
            for role, name in (
                ("id", self.id),
                ("timestamp", self.timestamp),
                ("prediction", self.prediction),
                ("label", self.label),
            )
            if name
        }
        # The class probabilities when their names alone would not find them again (a
        # lone ``probability``'s class is the table's to work out: True/False in one
        # table, 1/0 in the next); a binary model's other class (1 - it) is worked out.
        if any(
            score_class(col) is None
            and col.lower() not in LONE_SCORE_NAMES
            and col.lower() != cls.lower()  # named as its class: found again so
            and class_of_suffixed_score(col, [cls]) is None
            for cls, col in self.scores.items()
        ):
            out["scores"] = dict(self.scores)
        return out

    def describe(self) -> str:
        """The table of column -> role -> type (-> note) printed before any work."""
        t = self.table
        rows = [("column", "role", "type", "note")]
        for name in t.names:
            kind = self.kinds.get(name, "")
            note = self.notes.get(name) or self.excluded.get(name, "")
            rows.append((name, self.role(name), kind, note))
        if self.complement is not None:
            cls, col = self.complement
            rows.append((f"(1 - {col})", f"score[{cls}]", "numeric", "binary: the other class"))
        if self.argmax:
            rows.append(("(highest score)", "prediction", "categorical", "the most probable class"))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        if self.labels:
            lines = [f"driftline: {t.source}: {t.n_rows:,} labels"]
        else:
            lines = [
                f"driftline: {t.source}: {t.n_rows:,} rows, {len(self.features)} features, "
                f"task {self.task}"
            ]
        lines += ["  " + "  ".join(r[i].ljust(w[i]) for i in range(3)) + "  " + r[3] for r in rows]
        lines += [f"  note: {r}" for r in self.remarks]
        if self.refused:
            lines.append(f"  {len(self.refused):,} rows set aside (bad values)")
        return "\n".join(line.rstrip() for line in lines)

    # ------------------------------------------------------------------ outputs

    def _class_column(self, name: str) -> list[Any]:
        vals = self.table.values([name])[name]
        if self.kinds.get(name) == "numeric":
            st = self.table.stats(name)
            if st.integers == st.numbers:  # 1.0 from a column pandas made float: class 1
                return [v if v is None else int(v) for v in vals]
            return vals
        return [class_value(v) for v in vals]

    def _labels(self) -> list[Any]:
        """The label column's values as classes, through :attr:`label_map`."""
        assert self.label is not None
        vals = self._class_column(self.label)
        return [label_as_class(v, self.label_map) for v in vals] if self.label_map else vals

    def _predictions(self) -> list[Any] | None:
        """The prediction of every row: its column's, or with :attr:`argmax` the class
        of the highest probability (the first in class order on a tie, as scikit-learn's
        ``predict`` is the argmax of ``predict_proba``; None where a score is missing)."""
        if self.prediction:
            return self._class_column(self.prediction)
        if not self.argmax:
            return None
        scores = self._score_floats()
        if self.complement is not None:
            cls, col = self.complement
            scores[cls] = 1.0 - self.table.floats(col)
        classes = in_class_order(scores)
        matrix = np.column_stack([scores[c] for c in classes])
        best = np.argmax(np.nan_to_num(matrix, nan=-1.0), axis=1)
        best[np.isnan(matrix).any(axis=1)] = -1
        names: list[Any] = [int(c) if c.lstrip("-").isdigit() else c for c in classes]
        return [None if i < 0 else names[i] for i in best.tolist()]

    def _score_floats(self) -> dict[str, NDArray[np.float64]]:
        """Each class's probability column (the complement aside), NaN where missing."""
        t = self.table
        out = {c: t.floats(col) for c, col in self.scores.items()}
        if self.score_vector is not None:
            col, classes = self.score_vector
            rows = t.lists(col)
            assert rows is not None  # resolve found it
            out.update({c: rows[:, i] for i, c in enumerate(classes)})
        return out

    def training_data(self) -> TrainingData:
        """The rows (less those set aside) as columns for ``build_reference``.

        Raises
        ------
        InputError
            No row to build from: a file of its header alone, or every row set aside.
        """
        t = self.table
        keep = self._rows_read()
        if not keep.any():
            why = (
                f"all {len(self.refused):,} were set aside"
                if self.refused
                else "it has no rows"
                if not t.n_rows
                else "none is this model's"
            )
            raise InputError(f"{t.source}: no rows to build a reference from ({why})")
        idx = np.flatnonzero(keep).tolist() if not keep.all() else None

        def pick(vals: list[Any]) -> list[Any]:
            return vals if idx is None else [vals[i] for i in idx]

        columns: dict[str, Any] = {}
        types: dict[str, Any] = {}
        cats = [f for f in self.features if self.kinds[f] != "numeric"]
        cat_values = t.values(cats)
        for f in self.features:
            if self.kinds[f] == "numeric":
                columns[f] = t.floats(f)[keep]
                types[f] = "numeric"
            else:
                columns[f] = pick(cat_values[f])
                types[f] = "categorical"
        scores = {c: x[keep] for c, x in self._score_floats().items()}
        if self.complement is not None:
            cls, col = self.complement
            scores[cls] = 1.0 - t.floats(col)[keep]
        found = self._predictions()
        preds = pick(found) if found is not None else None
        labels = pick(self._labels()) if self.label else None
        if self.task == "regression" and preds is not None:
            preds = [float(p) if isinstance(p, int | float) else None for p in preds]
        return TrainingData(
            predictions=preds,
            labels=labels,
            columns=columns,
            column_types=types,
            score_columns=scores or None,
            task="regression" if self.task == "regression" else "classification",
        )

    def events(
        self, model_id: str, model_version: str
    ) -> Iterator[tuple[int, dict[str, Any] | None, dict[str, Any] | None, Refusal | None]]:
        """``(row, prediction event, label event, refusal)`` for every row, in time order.

        Each prediction event passes the contract's check (else the row is refused with
        the reason); the label event is ``None`` where the row has no label. Rows out of
        time order (days concatenated in another order, a shuffled export) are given in
        time order, rows of one time in table order (:attr:`out_of_order` says where
        the table first went back): a model sees its requests in time order, and a
        replay that met a past day after a later one would drop that day's
        predictions as older than the label horizon, their labels without them.
        """
        t = self.table
        want = [c for c in (self.id, self.timestamp) if c]
        cats = [f for f in self.features if self.kinds[f] != "numeric"]
        vals = t.values([*want, *cats])
        nums = {f: t.floats(f) for f in self.features if self.kinds[f] == "numeric"}
        # The reference holds a categorical feature's values as text (``4`` is the
        # category "4"), and the monitor counts a number there as a type mismatch.
        coded = [f for f in cats if self.kinds[f] == "categorical" and t.stats(f).numbers]
        cats = [f for f in cats if f not in coded]
        score_cols = self._score_floats()
        comp = (self.complement[0], t.floats(self.complement[1])) if self.complement else None
        preds = self._predictions()
        labels = self._labels() if self.label else None
        of_rows = self._row_models(model_id, model_version)
        ids = vals.get(self.id) if self.id else None
        times = vals.get(self.timestamp) if self.timestamp else None
        stamps, bad_times, order = self._time_order(times)
        for row in order:
            row_model, row_version = model_id, model_version
            if of_rows is not None:
                row_model, row_version = of_rows[row]
                if self._left_out(row_model, row_version):
                    continue  # another model's row: left out, and said so (keep_only)
            gone = self.refused.get(row)
            if gone is not None:
                yield row, None, None, gone
                continue
            try:
                pid = _id_text(ids[row]) if ids is not None else f"row-{row}"
            except ValueError as exc:
                yield row, None, None, Refusal(row, t.where(row), self.id, str(exc))
                continue
            if row in bad_times:
                yield row, None, None, Refusal(row, t.where(row), self.timestamp, bad_times[row])
                continue
            ts = stamps[row] if stamps is not None else row
            feats: dict[str, Any] = {}
            for f, arr in nums.items():
                x = float(arr[row])
                feats[f] = None if x != x else x
            for f in coded:  # number codes of a categorical feature: as its categories
                v = vals[f][row]
                feats[f] = category_value(v) if type(v) is int or type(v) is float else v
            for f in cats:
                feats[f] = vals[f][row]
            event: dict[str, Any] = {
                "prediction_id": pid,
                "model_id": row_model,
                "model_version": row_version,
                "timestamp": ts,
                "features": feats,
                "prediction": preds[row] if preds is not None else None,
            }
            sc = {c: float(a[row]) for c, a in score_cols.items() if a[row] == a[row]}
            if comp is not None and comp[1][row] == comp[1][row]:
                sc[comp[0]] = 1.0 - float(comp[1][row])
            if sc:
                event["scores"] = sc
            reason = check_prediction(event)
            if reason is not None:
                yield row, None, None, Refusal(row, t.where(row), None, reason)
                continue
            label_event = None
            if labels is not None and labels[row] is not None:
                label_event = {
                    "prediction_id": pid,
                    "model_id": row_model,
                    "label": labels[row],
                    "timestamp": ts,
                }
                if check_label(label_event) is not None:
                    label_event = None
            yield row, event, label_event, None

    def id_texts(self) -> list[str]:
        """The ids of the rows as their events carry them (rows without a readable id
        left out)."""
        if self.id is None:
            return []
        out = []
        for cell in self.table.values([self.id])[self.id]:
            try:
                out.append(_id_text(cell))
            except ValueError:
                continue  # refused when read, with its reason
        return out

    def repeated_id(self, model_id: str, model_version: str) -> tuple[str, str, str, int] | None:
        """The first id that two of the rows read share, where it is first and where
        again, and how many rows repeat an id of an earlier row; None: every row read
        has its own id (per model, as the label joiner keys its predictions)."""
        if self.id is None:
            return None
        ids = self.table.values([self.id])[self.id]
        of_rows = self._row_models(model_id, model_version)
        seen: dict[tuple[str, str], int] = {}
        first: tuple[str, int, int] | None = None
        repeats = 0
        for row, cell in enumerate(ids):
            model = model_id
            if of_rows is not None:
                model, version = of_rows[row]
                if self._left_out(model, version):
                    continue
            if row in self.refused:
                continue
            try:
                key = (model, _id_text(cell))
            except ValueError:
                continue  # refused when read, with its reason
            was = seen.setdefault(key, row)
            if was != row:
                repeats += 1
                if first is None:
                    first = (key[1], was, row)
        if first is None:
            return None
        pid, was, again = first
        return pid, self.table.where(was), self.table.where(again), repeats

    def _time_order(
        self, times: list[Any] | None
    ) -> tuple[list[int] | None, dict[int, str], Iterable[int]]:
        """Each row's time in epoch ms (``None`` without a time column: a row's time is
        its number), why a row's time could not be read, and the rows in time order
        (stable); sets :attr:`out_of_order`."""
        n = self.table.n_rows
        if times is None:
            return None, {}, range(n)
        scale = self._epoch_scale()
        stamps = [0] * n
        bad: dict[int, str] = {}
        for row in range(n):
            try:
                stamps[row] = time_ms(times[row], scale, self.time_format)
            except ValueError as exc:
                bad[row] = str(exc)
        keys = np.array(stamps, dtype=np.int64)
        read = np.ones(n, dtype=np.bool_)
        read[list(bad)] = False  # refused: their place does not matter
        rows = np.flatnonzero(read)
        back = np.flatnonzero(np.diff(keys[rows]) < 0)
        if not back.size:
            return stamps, bad, range(n)
        self.out_of_order = self.table.where(int(rows[back[0] + 1]))
        return stamps, bad, np.argsort(keys, kind="stable").tolist()

    def event_rows(
        self, model_id: str, model_version: str, labels: list[dict[str, Any]] | None = None
    ) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        """The rows as ``(where, prediction event, refusal)``; label events of the rows
        that have one are appended to ``labels`` (when given)."""
        for row, event, label, refusal in self.events(model_id, model_version):
            where = self.table.where(row)
            if refusal is not None:
                col = f"column {refusal.column!r}: " if refusal.column else ""
                yield where, None, f"{col}{refusal.reason}"
                continue
            if labels is not None and label is not None:
                labels.append(label)
            yield where, event, None

    def label_rows(self, model_id: str) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        """A table of labels as ``(where, label event, refusal)``: the id and label
        columns, and the time if there is one (else the label takes its prediction's)."""
        t = self.table
        if self.id is None or self.label is None:
            raise InputError(
                f"{t.source}: a labels table needs an id and a label column "
                f"(found id={self.id!r}, label={self.label!r}; "
                f"name them with {option('labels-columns', 'id=COL,label=COL')})"
            )
        vals = t.values([c for c in (self.id, self.timestamp) if c])
        labels = self._labels()
        scale = self._epoch_scale()
        of_rows = self._row_models(model_id, "")
        for row in range(t.n_rows):
            where = t.where(row)
            row_model = model_id
            if of_rows is not None:
                row_model, row_version = of_rows[row]
                if self._left_out(row_model, row_version):
                    continue  # another model's label: left out, and said so (keep_only)
            if labels[row] is None:
                # not labelled yet (an export of every prediction with its label, blank
                # where none came back), as a table's own label column: no label, and
                # the roles table says how many
                continue
            try:
                pid = _id_text(vals[self.id][row])
                ts = (
                    time_ms(vals[self.timestamp][row], scale, self.time_format)
                    if self.timestamp
                    else None
                )
            except ValueError as exc:
                yield where, None, str(exc)
                continue
            ev: dict[str, Any] = {
                "prediction_id": pid,
                "model_id": row_model,
                "label": labels[row],
                "timestamp": ts,
            }
            reason = check_label(ev) if ts is not None else None
            yield where, (ev if reason is None else None), reason

    def _row_models(self, model_id: str, model_version: str) -> list[tuple[str, str]] | None:
        """Each row's (model, version) in a table that names them: its cells, else
        ``model_id`` and the model's version (its only reference's, else
        ``model_version``). None: the table names neither."""
        cols = [c for c in (self.model, self.version) if c]
        if not cols:
            return None
        vals = self.table.values(cols)
        models = vals[self.model] if self.model else [None] * self.table.n_rows
        versions = vals[self.version] if self.version else [None] * self.table.n_rows
        out = []
        for m_cell, v_cell in zip(models, versions, strict=True):
            m = _text_or(m_cell, model_id)
            out.append((m, _text_or(v_cell, self.model_versions.get(m, model_version))))
        return out

    def _left_out(self, model: str, version: str) -> bool:
        """Whether :attr:`only` leaves out a row of ``model`` ``version``."""
        return self.only is not None and (
            model != self.only[0] or (self.only[1] is not None and version != self.only[1])
        )

    def keep_only(self, model_id: str, model_version: str | None) -> None:
        """Read only the rows of ``model_id`` (and ``model_version``, where the table
        names versions) of a table of several models; the roles table says how many of
        the others are left out. A table that names no model is all the model's.

        Raises
        ------
        InputError
            No row of that model.
        """
        if self.model is None and self.version is None:
            return
        self.only = (model_id, model_version if self.version else None)
        other = self.other_models()
        if sum(other.values()) == self.table.n_rows:
            shown = ", ".join(sorted(other)[:5]) + (", ..." if len(other) > 5 else "")
            raise InputError(
                f"{self.table.source}: no row of model {model_id!r}"
                f"{f' version {model_version!r}' if self.only[1] else ''} (its rows are "
                f"of {shown}): {option('model', 'MODEL')} names one of them"
            )
        if other:
            listed = ", ".join(f"{m}: {n:,}" for m, n in sorted(other.items())[:5])
            more = ", ..." if len(other) > 5 else ""
            self.remarks.append(
                f"{sum(other.values()):,} rows of other models left out ({listed}{more}): "
                f"the rows of {model_id!r} are read"
            )

    def rows_kept(self) -> int:
        """Rows read: the table's, less those set aside and other models'."""
        return int(self._rows_read().sum())

    def _rows_read(self) -> NDArray[np.bool_]:
        keep = np.ones(self.table.n_rows, np.bool_)
        if self.refused:
            keep[list(self.refused)] = False
        if self.only is not None:
            of_rows = self._row_models(self.only[0], self.only[1] or "")
            for row, (m, v) in enumerate(of_rows or ()):
                if self._left_out(m, v):
                    keep[row] = False
        return keep

    def other_models(self) -> dict[str, int]:
        """Rows of the models (``model`` or ``model vVERSION``) :attr:`only` leaves out."""
        if self.only is None:
            return {}
        out: dict[str, int] = {}
        for m, v in self._row_models(self.only[0], self.only[1] or "") or ():
            if self._left_out(m, v):
                key = m if m != self.only[0] else f"{m} v{v}"
                out[key] = out.get(key, 0) + 1
        return out

    def _epoch_scale(self) -> int:
        if not self.timestamp or self.kinds.get(self.timestamp) != "numeric":
            return 1
        return 1000 if "epoch seconds" in self.notes.get(self.timestamp, "") else 1


def _text_or(v: Any, default: str) -> str:
    """A model's or version's cell as text (``3.0`` from a float column: ``3``)."""
    v = plain(v)
    if v is None or v == "":
        return default
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _id_text(v: Any) -> str:
    v = plain(v)
    if v is None or v == "":
        raise ValueError("the id is missing")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# --------------------------------------------------------------------------- resolving


def in_class_order(names: Iterable[str]) -> list[str]:
    """Class names in order: numbers by value first, then text."""
    return sorted(names, key=lambda s: (float(s) if is_number(s) else 0.0, s))


def is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def label_keys(label_map: Mapping[Any, Any] | None) -> dict[str, str]:
    """A user's label map (:attr:`ColumnMap.label_map`) as :func:`label_as_class` reads
    it: text keys in lower case (labels match in any case), classes as text."""
    return {str(k).lower(): str(v) for k, v in (label_map or {}).items()}


def label_as_class(v: Any, label_map: Mapping[str, str]) -> Any:
    """A label through ``label_map`` (keys lower case): the class it names (an integer
    when it is written as one, as a model's 0/1 classes are), else the label as it is.

    Examples
    --------
    >>> label_as_class("Yes", {"yes": "1", "no": "0"}), label_as_class("maybe", {"yes": "1"})
    (1, 'maybe')
    >>> label_as_class(True, {"true": "churn"})
    'churn'
    """
    if v is None:
        return None
    key = ("true" if v else "false") if isinstance(v, bool) else str(v).lower()
    cls = label_map.get(key)
    if cls is None:
        return v
    return int(cls) if _INTEGER.fullmatch(cls) else cls


_INTEGER = re.compile(r"-?\d+")
