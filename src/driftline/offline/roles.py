"""The roles and types of a table's columns: said by the user, inferred, always shown.

A training export holds more than features: an id, a time, the model's prediction and
class probabilities, the true label. :func:`resolve` gives every column one role
(``id``, ``timestamp``, ``prediction``, ``score``, ``label``, ``feature`` or
``excluded``) and a type (``numeric``, ``categorical``, ``boolean``, ``datetime``),
from what the user said (:class:`ColumnMap`: flags, a mapping file, keyword
arguments) and, for the rest, from the column names and values. :meth:`Resolved.describe`
prints the outcome as a table; nothing is decided silently:

* names: ``prediction_id``/``id`` (else a single ``*_id``) is the id and other ``*_id``
  columns are excluded; ``timestamp``/``ts``/``time``/``event_time``/``datetime`` the
  time, else the one column of date-times if only one holds them; ``target``/``label``/
  ``y``/``y_true``/``y_test``/``actual``/``ground_truth``/``true_label`` (and plurals)
  the label; ``prediction``/``pred``/``y_pred``/``predicted`` (and plurals,
  ``predicted_label``, ``y_hat``, ...:
  :mod:`.column_names`) the prediction; ``proba_*``/
  ``prob_*``/``probability_*``/``score.*``/``score_*``/``scores.*`` class probabilities
  (the class is the rest of the name), and a lone ``probability``/``proba``/``score``
  column is the probability of the positive class of a binary model. Two candidates for
  one role are an error that names both. The row index pandas writes (``Unnamed: 0``
  from ``to_csv`` with its default ``index=True``, ``__index_level_0__`` in Parquet,
  ``index``/``level_0`` from ``reset_index``) is excluded: row numbers grow with the
  data, so as a feature they would drift by construction.
* types: all booleans -> ``boolean``; all numbers -> ``numeric``; date-times ->
  ``datetime`` (not a feature); mostly strings -> ``categorical``. A column of mostly
  numbers with some other values is numeric with *bad values*: an error naming the
  line and column, unless the column is declared (``types``) or such rows are set
  aside (``on_bad_value="dlq"``: counted, listed, never used). Ambiguities (integer
  codes, a few numbers among strings, naive times) are noted in the table.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np

from driftline.contract.columnar import label_class
from driftline.errors import InputError
from driftline.offline.column_map import ColumnMap, Refusal
from driftline.offline.column_names import (
    ID_NAMES,
    LABEL_NAMES,
    LONE_SCORE_NAMES,
    PANDAS_INDEX,
    PREDICTION_NAMES,
    TIME_LIKE,
    TIME_NAMES,
    class_of_suffixed_score,
    named_like_a_label,
    named_like_an_output,
    pick,
    score_class,
)
from driftline.offline.options import no_column, option
from driftline.offline.resolved import (
    Kind,
    Resolved,
    in_class_order,
    is_number,
    label_as_class,
    label_keys,
)
from driftline.offline.table_base import ColumnStats, Table
from driftline.offline.times import TIME_TEXT, epoch_times, infer_layout

__all__ = ["ColumnMap", "Refusal", "Resolved", "resolve"]

OnBadValue = Literal["error", "dlq"]

#: Integer columns with at most this many distinct values are noted as possible codes.
_CODES = 10


def _kind(
    name: str, st: ColumnStats, declared: str | None, output: bool = False
) -> tuple[Kind, str]:
    """A column's type and a note; ``output``: the prediction or the label, whose few
    integers are classes or values as the task says (:func:`_task`), not codes."""
    present = st.present
    if declared in ("numeric", "categorical"):
        return declared, "declared"  # type: ignore[return-value]
    if declared is not None:
        raise InputError(
            f"{option('types', f'{name}={declared}')}: a type is numeric or categorical"
        )
    if present == 0:
        return "numeric", "every value is missing"
    if st.bools == present:
        return "boolean", ""
    if st.numbers == present:
        if st.grouped is not None:
            return "numeric", f"numbers with thousands separators ({st.grouped}), read as such"
        if st.integers == present and len(st.distinct) <= _CODES and not output:
            vals = ", ".join(sorted(st.distinct, key=lambda s: float(s))[:5])
            return "numeric", (
                f"{len(st.distinct)} distinct integers ({vals}): codes? "
                f"{option('types', f'{name}=categorical')}"
            )
        return "numeric", ""
    if st.times == present or (
        st.strings == present and st.distinct and all(TIME_TEXT.match(s) for s in st.distinct)
    ):
        return "datetime", ""
    if st.numbers * 2 >= present:
        return "numeric", "has values that are not numbers"
    note = ""
    if st.numbers:
        note = f"{st.numbers:,} numbers among {present - st.numbers:,} strings, read as categories"
    return "categorical", note


def resolve(
    table: Table,
    cmap: ColumnMap | None = None,
    *,
    labels: bool = False,
    classes: Sequence[str] = (),
    known_features: Collection[str] = (),
) -> Resolved:
    """Give every column of ``table`` a role and a type (see the module docstring);
    ``labels``: a table of labels (no features, and notes worded for labels);
    ``classes``: the model's classes where they are known beyond the table (a
    reference's), which names such as ``churn_proba`` may name; ``known_features``:
    the reference's features, never taken as the label for their names.

    Raises
    ------
    InputError
        A named column is not in the table, two columns could fill one role, a bad
        value in a numeric column (with ``on_bad_value="error"``), a bad declaration.
    """
    cm = cmap or ColumnMap()
    src = table.source
    names = table.names
    if cm.on_bad_value not in ("error", "dlq"):
        raise InputError(f"on_bad_value is error or dlq, not {cm.on_bad_value!r}")
    if cm.task not in (None, "classification", "regression"):
        raise InputError(f"task is classification or regression, not {cm.task!r}")

    def known(col: str, what: str) -> str:
        if col not in names:
            shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
            raise InputError(f"{src}: no column {col!r} ({what}); the columns are: {shown}")
        return col

    given_scores: dict[str, str] = {}
    if isinstance(cm.scores, Mapping):
        given_scores = {str(k): known(v, "scores") for k, v in cm.scores.items()}
    elif cm.scores is not None:
        for col in cm.scores:
            known(col, "scores")
            given_scores[score_class(col) or col] = col
    for col in [*cm.exclude, *(cm.features or ()), *cm.types]:
        known(col, "features/exclude/types")
    res = Resolved(table, labels=labels, known_classes=in_class_order(set(classes)))
    res.label_map = label_keys(cm.label_map)
    taken: set[str] = set(given_scores.values()) | set(cm.exclude)
    for col in cm.exclude:
        res.excluded[col] = "excluded"
    for role in ("id", "timestamp", "prediction", "label"):
        v = getattr(cm, role)
        if v:
            setattr(res, role, known(v, option(role)))
            taken.add(v)
    free = [n for n in names if n not in taken and n not in (cm.features or ())]
    # A log of several models' events names each row's model (the event's own fields).
    low = {n.lower(): n for n in free}
    res.model, res.version = low.get("model_id"), low.get("model_version")
    free = [n for n in free if n not in (res.model, res.version)]
    ids_given = cm.id is not None
    if not ids_given:
        res.id = pick("id", free, ID_NAMES, src)
        if res.id is None:
            others = [n for n in free if n.lower().endswith("_id")]
            if len(others) == 1:
                res.id = others[0]
    for role, cands in (
        ("timestamp", TIME_NAMES),
        ("prediction", PREDICTION_NAMES),
        ("label", LABEL_NAMES),
    ):
        if getattr(cm, role) is None:
            setattr(res, role, pick(role, [n for n in free if n != res.id], cands, src))
    if not labels and res.prediction is None and cm.prediction is None:
        _paired_outputs(
            res, cm, [n for n in free if n not in (res.id, res.timestamp)], known_features
        )
    elif not labels and res.label is None and cm.label is None and cm.features is None:
        _label_on_the_predictions_scale(
            res, cm, [n for n in free if n not in (res.id, res.timestamp)], known_features
        )
    if res.timestamp is None and cm.timestamp is None:
        _lone_date_time(res, cm, free)
    if labels and res.label is None and cm.label is None:
        named = [n for n in free if n not in (res.id, res.timestamp) and named_like_a_label(n)]
        if len(named) == 1:
            res.label = named[0]
            res.remarks.append(
                f"{named[0]} read as the label: named like one "
                f"({option('labels-columns', 'label=COLUMN')} names another)"
            )
        else:
            _lone_label(res, free)
    roles = {res.id, res.timestamp, res.prediction, res.label, res.model, res.version} - {None}
    if cm.scores is None:
        for n in free:
            cls = score_class(n)
            if cls is not None and n not in roles:
                if cls in given_scores:
                    raise InputError(
                        f"{src}: columns {given_scores[cls]!r} and {n!r} both "
                        f"hold class {cls!r}: name them with {option('scores', 'CLASS=COLUMN')}"
                    )
                given_scores[cls] = n
        _scores_named_by_class(res, free, roles, given_scores, classes)
        lone = [n for n in free if n.lower() in LONE_SCORE_NAMES and n not in roles]
        # 'score' is as often a feature (a credit score, another system's risk score)
        # or a raw margin: a probability only where its values are
        plain = [
            n for n in lone if n.lower() in _FEATURE_LIKE_SCORES and not _unit_values(table, n)
        ]
        lone = [n for n in lone if n not in plain]
        for n in plain:
            res.remarks.append(
                f"{n} read as a feature: named like a probability, but its values are not "
                f"within 0..1 ({option('scores', f'CLASS={n}')} if it is one)"
            )
        if len(lone) > 1:
            raise InputError(
                f"{src}: columns {lone} could each be the probability: "
                f"name it with {option('scores', 'CLASS=COLUMN')}"
            )
        if lone and not given_scores:
            given_scores[""] = lone[0]  # the class is worked out below
    roles |= set(given_scores.values())
    for n in names:
        if n in roles or n in res.excluded:
            continue
        if cm.features is not None:
            if n in cm.features:
                res.features.append(n)
            else:
                res.excluded[n] = f"not in {option('features')}"
        elif n.lower().endswith("_id"):
            res.excluded[n] = "an identifier (name ends in _id)"
        elif PANDAS_INDEX.match(n):
            res.excluded[n] = f"the row index pandas wrote ({option('features')} to keep it)"
        else:
            res.features.append(n)
    # Types.
    for n in names:
        if n in res.excluded and n not in cm.types:
            continue
        output = n in (res.prediction, res.label)
        declared = cm.types.get(n)
        if declared == "numeric" and n in table.text_codes:
            table.as_numbers(n)  # codes with leading zeros declared numbers: as such
        st = table.stats(n)
        if declared is None and n in table.categories and n in res.features:
            declared = "categorical"  # as the data's own types say
        kind, note = _kind(n, st, declared, output)
        if note == "declared" and n not in cm.types:
            note = "a category by its dtype"
        elif declared is None and n in table.text_codes and kind == "categorical":
            note = (
                f"written with leading zeros ({table.text_codes[n]}): a code, read as text "
                f"({option('types', f'{n}=numeric')} reads numbers)"
            )
        if n in res.features and kind != "datetime" and len(st.distinct) == 1 < st.present:
            # Not codes: a value that never changes (in training data, any other value
            # later is out of range, a data-quality alert; in current data, a stuck
            # input). The note says only what this table shows.
            rows = "every row with a value" if st.missing else "every row"
            note = f"constant: {next(iter(st.distinct))} in {rows}"
        res.kinds[n] = kind
        if note and n != res.id:
            res.notes[n] = note
    for n in list(res.features):
        listed = cm.features is not None and n in cm.features
        if res.kinds[n] == "datetime":
            if listed:
                res.kinds[n] = "categorical"
                continue
            what = "date-times"
        elif not listed and n not in cm.types and _epoch_named(res.table, n):
            what = "epoch times"  # numbers that grow with the data: drift by construction
        else:
            continue
        res.features.remove(n)
        res.excluded[n] = f"{what} are not a feature (the event time? {option('timestamp', n)})"
        res.notes.pop(n, None)
    if not isinstance(cm.scores, Mapping):
        _scores_by_position(res, given_scores)
    _scores(res, given_scores)
    _task(res, cm)
    if (
        res.prediction is None
        and cm.prediction is None
        and not labels
        and res.task == "classification"
        and (res.scores or res.score_vector)
    ):
        res.argmax = True
    if not labels and res.label is None and cm.label is None and cm.features is None:
        _label_by_name(res, cm, known_features)
    _time_layout(res, cm)
    _time_notes(res)
    if res.id is None and cm.id is None and cm.features is None and not labels:
        _id_like_features(res)
    _output_notes(res, cm)
    _label_classes(res)
    _bad_values(res, cm)
    return res


#: How a model's output is named after what it predicts (``predicted_price`` beside
#: ``price``, ``churn_pred`` beside ``churn``).
_PAIR_PREFIXES = ("predicted_", "prediction_", "pred_", "predict_", "y_pred_")
_PAIR_SUFFIXES = ("_predicted", "_prediction", "_pred", "_hat")
#: How the other half of such a pair is named after the same stem (``segment`` beside
#: ``segment_pred``, or ``segment_true`` ...).
_PAIR_TRUTHS = ("{}", "{}_true", "true_{}", "{}_actual", "actual_{}", "{}_label")
#: A regression's label on its prediction's scale: correlated at least this much, its
#: mean within this many of the prediction's standard deviations, its spread within
#: this factor of the prediction's. A feature on the same scale (``list_price``
#: beside ``predicted_price``) fits too: then two fit and neither is moved.
_SCALE_CORRELATION = 0.5
_SCALE_MEAN_SD = 1.0
_SCALE_SPREAD = 3.0


def _pair_stems(name: str) -> list[str]:
    """What a column named as a prediction predicts (``predicted_price``, ``price_pred``:
    ``price``), any case; none for other names."""
    low = name.lower()
    stems = [low[len(p) :] for p in _PAIR_PREFIXES if low.startswith(p) and len(low) > len(p)]
    return stems + [low[: -len(x)] for x in _PAIR_SUFFIXES if low.endswith(x) and len(low) > len(x)]


def _paired_outputs(
    res: Resolved, cm: ColumnMap, free: Sequence[str], known_features: Collection[str]
) -> None:
    """No column is named as the prediction, but one is named as the prediction of
    another column (``predicted_price`` and ``price``, of one kind, neither a time):
    the pair is the prediction and the label, as a regression's export names them.
    Only one such pair, and a label found by its name must be its other half. Without
    a column named exactly so, a numeric one whose name holds the stem as whole words
    (``sale_price`` beside ``predicted_price``) is the label when it is the only such
    column and its values are on the prediction's scale (:func:`_on_the_scale`)."""
    low = {n.lower(): n for n in free}

    def kind(n: str) -> str:
        k = _kind(n, res.table.stats(n), None, output=True)[0]
        return "numeric" if k == "numeric" else k if k == "datetime" else "categories"

    pairs = []
    for n in free:
        for stem in _pair_stems(n):
            # the truth by the stem's name, or named as its truth (segment_true)
            for truth in (low.get(t.format(stem)) for t in _PAIR_TRUTHS):
                if truth is not None and truth != n and kind(n) == kind(truth) != "datetime":
                    pairs.append((n, truth))
    why = "the one column named as another's prediction"
    if not pairs and cm.label is None and res.label is None:
        loose = []
        for n in free:
            if kind(n) != "numeric":
                continue
            for stem in _pair_stems(n):
                words = _words(stem)
                named = [
                    t
                    for t in free
                    if t != n
                    and t not in known_features
                    and not _pair_stems(t)
                    and _holds_words(_words(t), words)
                    and kind(t) == "numeric"
                ]
                if len(named) == 1:
                    loose.append((n, named[0], _on_the_scale(res.table, n, named[0])))
        if len(loose) != 1 or loose[0][2] is None:
            if len(loose) == 1:
                res.remarks.append(
                    f"{loose[0][1]} read as a feature: named like what {loose[0][0]} "
                    "predicts, but its values are not on the prediction's scale "
                    f"({option('label', loose[0][1])} if it is the label)"
                )
            return
        pred, truth, corr = loose[0]
        pairs = [(pred, truth)]
        why = (
            f"{truth} is the one column named like what {pred} predicts and its values "
            f"are on the prediction's scale (correlation {corr:.2f})"
        )
    if len(pairs) != 1:
        return
    pred, truth = pairs[0]
    if cm.label is not None or res.label not in (None, truth):
        return
    res.prediction, res.label = pred, truth
    res.remarks.append(
        f"{pred} read as the prediction and {truth} as the label: {why} "
        f"({option('prediction', 'COLUMN')} and {option('label', 'COLUMN')} name others)"
    )


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def _holds_words(words: Sequence[str], part: Sequence[str]) -> bool:
    """Whether ``part`` is a run of whole words of ``words`` (``price`` of
    ``sale_price``, not of ``prices``)."""
    k = len(part)
    return 0 < k < len(words) and any(
        list(words[i : i + k]) == list(part) for i in range(len(words) - k + 1)
    )


def _on_the_scale(table: Table, pred: str, col: str) -> float | None:
    """The correlation of numeric columns ``pred`` and ``col`` where ``col`` is on the
    prediction's scale (:data:`_SCALE_CORRELATION` ...), else None."""
    p, v = table.floats(pred), table.floats(col)
    both = ~(np.isnan(p) | np.isnan(v))
    p, v = p[both], v[both]
    if p.size < 10:
        return None
    sp, sv = float(p.std()), float(v.std())
    if sp == 0.0 or sv == 0.0:
        return None
    corr = float(np.corrcoef(p, v)[0, 1])
    close = abs(float(v.mean()) - float(p.mean())) <= _SCALE_MEAN_SD * sp
    spread = 1 / _SCALE_SPREAD <= sv / sp <= _SCALE_SPREAD
    return corr if corr >= _SCALE_CORRELATION and close and spread else None


def _label_on_the_predictions_scale(
    res: Resolved, cm: ColumnMap, free: Sequence[str], known_features: Collection[str]
) -> None:
    """A regression's prediction was found by its name (``prediction``, ``y_pred``) and
    no label by its name: the one numeric column whose values are on the prediction's
    scale (:func:`_on_the_scale`; ``sale_price`` beside ``prediction``) is the label,
    and the roles table says so and how to keep it a feature. Two or more such columns
    are pointed out, not moved; columns named like the label are left to
    :func:`_label_by_name`."""
    pred = res.prediction
    if pred is None or cm.task == "classification" or cm.features is not None:
        return
    st = res.table.stats(pred)
    if _kind(pred, st, None, output=True)[0] != "numeric":
        return
    if st.integers == st.numbers and len(st.distinct) <= _CODES:
        return  # classes, or a regression of few values: nothing to measure a scale by
    cands = [
        n
        for n in free
        if n != pred
        and n not in known_features
        and n not in cm.types
        and not named_like_a_label(n)
        and not n.lower().endswith("_id")
        and not PANDAS_INDEX.match(n)
        and not TIME_LIKE.search(n)
        and _kind(n, res.table.stats(n), None)[0] == "numeric"
    ]
    if any(named_like_a_label(n) for n in free):
        return
    fits = [(n, c) for n in cands if (c := _on_the_scale(res.table, pred, n)) is not None]
    if len(fits) > 1:
        res.remarks.append(
            f"{', '.join(n for n, _ in fits)} read as features but each on the scale of "
            f"{pred}, as its label would be: name the label ({option('label', 'COLUMN')})"
        )
    if len(fits) != 1:
        return
    col, corr = fits[0]
    res.label = col
    res.remarks.append(
        f"{col} read as the label: the one column on the scale of {pred} "
        f"(correlation {corr:.2f}) and no column is named as the label "
        f"({option('label', 'COLUMN')} names another; {no_column('label')} keeps it a "
        "feature)"
    )


#: Rows a table needs before a feature whose every value differs is noted as an id.
_ID_LIKE_ROWS = 100


def _id_like_features(res: Resolved) -> None:
    """No column is named as the id, but a numeric feature holds a different integer in
    every row (``listing``, ``order_no``): most likely the id, and as a feature it drifts
    by construction (new ids are new values). Noted, not moved."""
    for n in res.features:
        st = res.table.stats(n)
        if (
            res.kinds.get(n) != "numeric"
            or st.present < _ID_LIKE_ROWS
            or st.missing
            or st.integers != st.present
        ):
            continue
        if np.unique(res.table.floats(n)).size == st.present:
            res.remarks.append(
                f"{n} read as a feature but every row has a different integer, as an id "
                f"has: {option('id', n)} reads it as the id ({option('exclude', n)} leaves "
                "it out)"
            )


def _label_by_name(res: Resolved, cm: ColumnMap, known_features: Collection[str]) -> None:
    """No column is named as the label (``target``, ``label``, ``y_true``, ...) but one
    feature is named like it (``is_fraud``, ``fraud_label``, ``segment_true``,
    ``actual_price``: :func:`.column_names.named_like_a_label`) and its values fit the
    model's output: a classifier's classes (of its prediction, scores or reference),
    every one of them; a regression's numbers, mostly within its predictions' range.
    It is the label, and the roles table says so and how to keep it a feature. Two
    such columns are left as they are, for the user to choose."""
    named = [
        n
        for n in res.features
        if named_like_a_label(n) and n not in known_features and n not in cm.types
    ]
    fits = [n for n in named if _fits_the_output(res, n)]
    if len(fits) != 1:
        if len(fits) > 1:
            res.remarks.append(
                f"{', '.join(fits)} read as features but each named like the label: "
                f"name it ({option('label', 'COLUMN')})"
            )
        return
    col = fits[0]
    res.features.remove(col)
    res.label = col
    kind, note = _kind(col, res.table.stats(col), None, output=True)
    res.kinds[col] = kind
    res.notes.pop(col, None)
    if note:
        res.notes[col] = note
    res.remarks.append(
        f"{col} read as the label: named like one, and its values are the model's "
        f"{'classes' if res.task == 'classification' else 'kind of values'} "
        f"({option('label', 'COLUMN')} names another; {no_column('label')} keeps it a "
        "feature)"
    )


def _fits_the_output(res: Resolved, col: str) -> bool:
    """Whether column ``col`` holds what the model outputs (see :func:`_label_by_name`)."""
    st = res.table.stats(col)
    if st.present == 0:
        return False
    if res.task == "regression":
        if res.prediction is None or res.kinds.get(col) != "numeric":
            return False
        pred, vals = res.table.floats(res.prediction), res.table.floats(col)
        pred, vals = pred[~np.isnan(pred)], vals[~np.isnan(vals)]
        if not pred.size or not vals.size:
            return False
        inside = (vals >= pred.min()) & (vals <= pred.max())
        return bool(inside.mean() >= 0.5)
    model = _model_classes(res)
    if not model or res.kinds.get(col) not in ("numeric", "boolean", "categorical"):
        return False
    if res.kinds[col] == "numeric" and st.integers != st.numbers:
        return False  # fractions are no classes
    labels = _class_names(res, col)
    if res.label_map:
        labels = [str(label_as_class(v, res.label_map)) for v in labels]
    return len(st.distinct) < 64 and all(label_class(v, model) in model for v in labels)


def _output_notes(res: Resolved, cm: ColumnMap) -> None:
    """Say when the outputs were not found and which features look like them: a model's
    own output read as a feature drifts with the model, and a missing prediction leaves
    output drift and accuracy out."""
    if res.labels:
        return
    if res.argmax:
        res.remarks.append(
            "no prediction column: the prediction is the class of the highest probability "
            f"({option('prediction', 'COLUMN')} names the model's own, if its cut-off is "
            "another)"
        )
    elif res.prediction is None and cm.prediction is None:
        res.remarks.append(
            "no prediction column (none is named prediction, pred, y_pred, predicted, ...): "
            f"output drift and accuracy need one ({option('prediction', 'COLUMN')})"
        )
    if cm.features is not None:
        return
    odd = [n for n in res.features if named_like_an_output(n)]
    if odd:
        res.remarks.append(
            f"{', '.join(odd)} read as features but named like a model output or the label: "
            f"name them ({option('prediction', 'COLUMN')}, {option('scores', 'CLASS=COLUMN')}, "
            f"{option('label', 'COLUMN')}) or exclude them ({option('exclude', odd[0])})"
        )


def _model_classes(res: Resolved) -> set[str]:
    """The classes the model names: its known classes, its score columns' classes and
    the values of its prediction column."""
    model = set(res.known_classes) | set(res.scores)
    if res.score_vector is not None:
        model |= set(res.score_vector[1])
    if res.prediction is not None:
        model |= set(_class_names(res, res.prediction))
    model.discard("")
    return model


def _label_classes(res: Resolved) -> None:
    """A classifier's labels that are none of the model's classes (those its prediction
    column, its scores or its reference name): the label joiner would count every one
    wrong, and accuracy would read 0%. Text labels of a model that predicts numbers (or
    the other way round, ``no``/``yes`` for ``0``/``1``), or labels that differ from its
    classes only in case, can never be right: an error that says how to map them.
    Other labels that match no class may be classes the model never predicts: a note."""
    if res.label is None or res.task != "classification":
        return
    model = _model_classes(res)
    labels = _class_names(res, res.label)
    if res.label_map:
        mapped = (label_as_class(v, res.label_map) for v in labels)
        labels = list(dict.fromkeys(str(v) for v in mapped))
    if not model or not labels or any(label_class(v, model) in model for v in labels):
        return
    shown = ", ".join(labels[:6]) + (", ..." if len(labels) > 6 else "")
    classes = in_class_order(model)
    said = (
        f"the labels in column {res.label!r} ({shown}) are none of the model's classes "
        f"({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''})"
    )
    mapping = ",".join(f"{v}=CLASS" for v in labels[:3])
    lower = {c.lower() for c in model}
    if all(is_number(v) for v in labels) != all(is_number(c) for c in model) or any(
        v.lower() in lower for v in labels
    ):
        pairs = ", ".join(f"{v!r}: ..." for v in labels[:3]) + (", ..." if len(labels) > 3 else "")
        raise InputError(
            f"{res.table.source}: {said}, so every label would count as wrong and accuracy "
            "read 0%: say which class each label is "
            f"({option('label-map', mapping)}), or write the labels as the classes the "
            f"model predicts (pandas: df[{res.label!r}] = df[{res.label!r}].map({{{pairs}}}))"
        )
    mapping = ",".join(f"{v}=CLASS" for v in labels[:3])
    res.remarks.append(
        f"{said}: accuracy counts each of them wrong ({option('label-map', mapping)} says "
        "which class each is)"
    )


def _class_names(res: Resolved, column: str | None = None) -> list[str]:
    col = column or res.prediction or res.label
    if col is None:
        return []
    st = res.table.stats(col)
    if st.bools:
        return ["false", "true"]
    names = in_class_order(st.distinct)
    if res.kinds.get(col) == "numeric" and st.integers == st.numbers:
        names = [str(int(float(s))) for s in names]
    return names


def _scores_named_by_class(
    res: Resolved,
    free: Sequence[str],
    roles: set[str | None],
    given: dict[str, str],
    known: Sequence[str],
) -> None:
    """Probability columns named by their class, where the class is one the prediction
    or the label column holds (or one of ``known``): a class and a probability's suffix
    (``churn_proba``), or two or more columns named exactly as classes and holding
    numbers within 0..1 that a row's probabilities can be: summing to 1 where they are
    every class's (``df[model.classes_] = model.predict_proba(X)``), to at most 1
    otherwise. Features scaled to 0..1 in a ``pd.DataFrame(X)`` are named ``0``,
    ``1``, ... too, as are a binary model's classes."""
    found = {c for col in (res.prediction, res.label) if col for c in res.table.stats(col).distinct}
    classes = sorted(found | set(known))
    if not classes:
        return
    open_cols = [n for n in free if n not in roles and n not in given.values()]
    named: list[tuple[str, str]] = []
    for n in open_cols:
        cls = class_of_suffixed_score(n, classes)
        if cls is not None:
            named.append((cls, n))
    bare = [n for n in open_cols if n in classes]
    if (
        len(bare) >= 2
        and all(_probabilities(res.table, n) for n in bare)
        and _a_distribution(res.table, bare, every_class=set(bare) >= set(classes))
    ):
        named += [(n, n) for n in bare]
    for cls, n in named:
        if cls in given:
            raise InputError(
                f"{res.table.source}: columns {given[cls]!r} and {n!r} both hold class "
                f"{cls!r}: name them with {option('scores', 'CLASS=COLUMN')}"
            )
        given[cls] = n


#: How far from 1 the sum of a row's probabilities may be, per class: each rounded to
#: 2 decimals in the export (``to_csv(float_format="%.2f")``) is off by up to 0.005.
#: Features that are not probabilities miss 1 by far more on some row.
_SUM_TOLERANCE_PER_CLASS = 0.005


def _a_distribution(table: Table, cols: Sequence[str], every_class: bool) -> bool:
    """Whether each row's values of ``cols`` (rows without a missing one) sum to 1, or
    (``every_class`` False: the columns of some of the classes) to at most 1, within
    what rounding each to 2 decimals can move them."""
    total = np.sum([table.floats(c) for c in cols], axis=0)
    total = total[~np.isnan(total)]
    tolerance = _SUM_TOLERANCE_PER_CLASS * len(cols) + 1e-9
    if every_class:
        return bool((np.abs(total - 1.0) <= tolerance).all())
    return bool((total <= 1.0 + tolerance).all())


def _probabilities(table: Table, col: str) -> bool:
    """Whether ``col`` holds numbers, each within 0..1 (missing values allowed)."""
    st = table.stats(col)
    if st.present == 0 or st.numbers != st.present or st.bools:
        return False
    v = table.floats(col)
    v = v[~np.isnan(v)]
    return bool(v.size) and bool(((v >= 0.0) & (v <= 1.0)).all())


#: Lone probability names that also name features (:func:`resolve`).
_FEATURE_LIKE_SCORES = ("score", "y_score")


def _unit_values(table: Table, col: str) -> bool:
    """Whether ``col`` holds numbers within 0..1, but for at most 1% of them (stray
    values are refused row by row)."""
    st = table.stats(col)
    if st.present == 0 or st.numbers != st.present or st.bools:
        return False
    v = table.floats(col)
    v = v[~np.isnan(v)]
    return bool(v.size) and float(((v < 0.0) | (v > 1.0)).mean()) <= 0.01


def _scores(res: Resolved, given: dict[str, str]) -> None:
    src = res.table.source
    if len(given) == 1 and _vector_score(res, next(iter(given.values()))):
        return
    if _class_names(res) == ["false", "true"]:
        # Boolean classes are named "true"/"false" (as events carry them); pandas and
        # Python spell them True/False, so --scores True=COL names the class "true".
        for cls in [c for c in given if c.lower() in ("true", "false") and c != c.lower()]:
            given[cls.lower()] = given.pop(cls)
    if "" in given:  # a lone probability column: the positive class of a binary model
        col = given.pop("")
        classes = _class_names(res) or res.known_classes
        numeric = all(is_number(c) for c in classes) or classes == ["false", "true"]
        how = ""
        if len(classes) == 2 and not numeric:
            # Classes by name ('churn', 'stay'): whose probability it is shows where the
            # prediction is that class exactly when the probability is above one half.
            whose = _class_above_half(res, col, classes)
            if whose is not None:
                classes = [c for c in classes if c != whose] + [whose]
                numeric, how = True, f" (above 0.5 where the prediction is {whose!r})"
        st = res.table.stats(col)
        first = st.first_non_number[1] if st.first_non_number else None
        if isinstance(first, str) and first.lstrip().startswith("["):
            # to_csv of a list column writes each list as text ("[0.06 0.93 0.01]")
            raise InputError(
                f"{src}: column {col!r} holds lists written as text ({first[:40]!r}), "
                "which a CSV cannot keep: save one column per class (proba_CLASS) or "
                "write Parquet, which keeps lists"
            )
        if len(classes) != 2 or not numeric:
            raise InputError(
                f"{src}: column {col!r} holds one probability but the classes are "
                f"{classes or 'unknown'}: say whose it is with {option('scores', f'CLASS={col}')}"
            )
        given[classes[1]] = col
        res.complement = (classes[0], col)
        res.notes[col] = f"probability of class {classes[1]!r}{how}; {classes[0]!r} gets 1 - it"
    elif len(given) == 1:
        # One class's probability of a binary model (sklearn's predict_proba[:, 1] saved
        # as proba_1, say), named or found by its name: the other class gets 1 - it, so
        # the score vector (and the confidence, its top) is the model's.
        classes = _class_names(res) or res.known_classes
        ((cls, col),) = given.items()
        if len(classes) == 2 and cls in classes:
            other = classes[0] if classes[1] == cls else classes[1]
            res.complement = (other, col)
            res.notes[col] = f"probability of class {cls!r}; {other!r} gets 1 - it"
    res.scores = given
    for cls, col in given.items():
        if res.kinds.get(col) not in ("numeric", None):
            raise InputError(f"{src}: score column {col!r} is {res.kinds[col]}, not numbers")
        res.kinds[col] = "numeric"
        _within_0_1(res, cls, col)


def _within_0_1(res: Resolved, cls: str, col: str) -> None:
    """A class's probability column must hold probabilities: percentages (``73.2``) or
    raw scores (logits, margins) would build a reference of nonsense confidences, and
    then every event would be refused ('probability 73.2 outside 0..1'). One line. A
    few stray values are left to the rows' own checks (refused, or set aside).

    Raises
    ------
    InputError
        More than 1% of the values of ``col`` outside 0..1.
    """
    v = res.table.floats(col)
    v = v[~np.isnan(v)]
    if not v.size or ((v < 0.0) | (v > 1.0)).mean() <= 0.01:
        return
    lo, hi = float(v.min()), float(v.max())
    if lo >= 0.0 and hi <= 100.0:
        fix = f"percentages? divide them by 100 (pandas: df[{col!r}] = df[{col!r}] / 100)"
    else:
        fix = (
            f"a raw score (a logit, a margin) is no probability: leave it out "
            f"({option('exclude', col)}) or name the probability columns "
            f"({option('scores', 'CLASS=COLUMN')})"
        )
    raise InputError(
        f"{res.table.source}: column {col!r} is read as the probability of class {cls!r} "
        f"but holds values from {lo:g} to {hi:g}, outside 0..1: {fix}"
    )


def _scores_by_position(res: Resolved, given: dict[str, str]) -> None:
    """Probability columns numbered ``proba_0`` ... ``proba_{k-1}`` where the model's
    classes are ``k`` others (``bronze``, ``gold``, ``silver``): scikit-learn's
    ``predict_proba`` columns, named by position, which are the classes in sorted order
    (its ``classes_``). Read by the names alone, no score would be a class's, and log
    loss and the Brier score would be nonsense. The classes are those of the prediction
    and label columns, or the reference's."""
    if len(given) < 2 or set(given) != {str(i) for i in range(len(given))}:
        return
    classes = set(res.known_classes)
    for col in (res.prediction, res.label):
        if col:
            classes |= set(_class_names(res, col))
    classes.discard("")
    if len(classes) != len(given) or classes == set(given):
        return
    order = in_class_order(classes)
    cols = [given.pop(str(i)) for i in range(len(order))]
    given.update(zip(order, cols, strict=True))
    for cls, col in zip(order, cols, strict=True):
        res.notes[col] = f"class {cls!r}, by position"
    res.remarks.append(
        f"{', '.join(cols)} read as the probabilities of {', '.join(order)}: numbered "
        "columns of predict_proba are the classes in sorted order (scikit-learn's "
        f"classes_); {option('scores', 'CLASS=COLUMN')} says otherwise"
    )


def _vector_score(res: Resolved, col: str) -> bool:
    """Whether ``col`` holds each row's probabilities as a list; then they are the
    classes' in sorted order, as scikit-learn's ``predict_proba`` gives them."""
    rows = res.table.lists(col)
    if rows is None:
        return False
    classes = _class_names(res) or res.known_classes
    if res.label and res.prediction and len(classes) < rows.shape[1]:
        # a class the model never predicted here still has its probability
        classes = in_class_order({*classes, *_class_names(res, res.label)})
    if len(classes) != rows.shape[1]:
        raise InputError(
            f"{res.table.source}: column {col!r} holds {rows.shape[1]} probabilities a row "
            f"but the classes are {classes or 'unknown'}: give one column per class "
            f"({option('scores', 'CLASS=COLUMN')})"
        )
    res.score_vector = (col, classes)
    res.kinds[col] = "numeric"
    res.notes[col] = (
        f"{len(classes)} probabilities a row, in the classes' sorted order "
        "(scikit-learn's classes_)"
    )
    return True


def _class_above_half(res: Resolved, col: str, classes: list[str]) -> str | None:
    """The class of a binary model predicted exactly where ``col`` is above 0.5, in
    every row that has both (the prediction is the argmax), or None."""
    pred = res.prediction
    if pred is None or res.kinds.get(col) != "numeric":
        return None
    vals = res.table.values([col, pred])
    above: set[str] = set()
    below: set[str] = set()
    for p, c in zip(vals[col], vals[pred], strict=True):
        if isinstance(p, int | float) and not isinstance(p, bool) and p == p and c is not None:
            (above if p > 0.5 else below if p < 0.5 else set()).add(str(c))
    if len(above) == 1 and len(below) == 1 and above != below and above | below == set(classes):
        return above.pop()
    return None


def _task(res: Resolved, cm: ColumnMap) -> None:
    if cm.task is not None:
        res.task = cm.task
        return
    p = res.prediction
    if p is None or res.scores or res.kinds.get(p) != "numeric":
        res.task = "classification"
        return
    st = res.table.stats(p)
    if st.integers == st.numbers and {float(v) for v in st.distinct} == {0.0, 1.0}:
        # Only 0 and 1 (scikit-learn's predict() of a binary model, saved without
        # predict_proba): two classes, not a regression that never says 0.5.
        res.task = "classification"
        res.notes[p] = (
            "0 and 1 only, no scores: read as two classes; "
            f"{option('task', 'regression')} if they are values"
        )
        return
    res.task = "regression"
    if st.integers == st.numbers and len(st.distinct) <= _CODES:
        res.notes[p] = (
            f"{len(st.distinct)} distinct integers and no scores: read as "
            f"regression; {option('task', 'classification')} if they are classes"
        )


def _epoch_named(table: Table, name: str) -> bool:
    """A column named like a time whose every value is an epoch time (seconds or
    milliseconds): ``created_at`` as ``1767225600``."""
    if not TIME_LIKE.search(name):
        return False
    st = table.stats(name)
    return st.present > 0 and st.numbers == st.present and epoch_times(table.floats(name))


def _lone_date_time(res: Resolved, cm: ColumnMap, free: Sequence[str]) -> None:
    """No column is named as a time (``timestamp``, ``ts``, ...) but one column holds
    date-times (``created_at``, ``scored_at``), or epoch times under a time's name: it
    is the event time, and the roles table says so. Two or more are left for the user
    to choose."""
    taken = {res.id, res.prediction, res.label}
    dates = [
        n
        for n in free
        if n not in taken
        and n not in cm.types
        and (_kind(n, res.table.stats(n), None)[0] == "datetime" or _epoch_named(res.table, n))
    ]
    if len(dates) == 1:
        res.timestamp = dates[0]
        res.remarks.append(
            f"{dates[0]} read as the labels' time: the one column of date-times "
            f"({option('labels-columns', 'timestamp=COLUMN')} names another)"
            if res.labels
            else f"{dates[0]} read as the event time: the one column of date-times "
            f"({option('timestamp', 'COLUMN')} names another)"
        )


def _lone_label(res: Resolved, free: Sequence[str]) -> None:
    """A labels table whose label column has no label's name (``outcome``,
    ``churned``): with the id (and the time) found, the one column left is the label."""
    rest = [n for n in free if n not in (res.id, res.timestamp) and not PANDAS_INDEX.match(n)]
    if res.id is not None and len(rest) == 1:
        res.label = rest[0]
        res.remarks.append(
            f"{rest[0]} read as the label: the one other column "
            f"({option('labels-columns', 'label=COLUMN')} names another)"
        )


def _time_layout(res: Resolved, cm: ColumnMap) -> None:
    """The layout of a time column of text that is not ISO 8601 (:mod:`.times`)."""
    ts = res.timestamp
    if ts is None or res.kinds.get(ts) != "categorical":
        return  # ISO 8601 text, datetimes or epoch numbers: read as they are
    col = res.table.values([ts])[ts]
    distinct = list(dict.fromkeys(v for v in col if isinstance(v, str)))
    if distinct:
        layout = infer_layout(distinct, cm.time_format, f"{res.table.source}: column {ts!r}")
        res.time_format = layout
        res.kinds[ts] = "datetime"
        res.notes[ts] = f"read as {layout}"


def _time_notes(res: Resolved) -> None:
    ts = res.timestamp
    if ts is None:
        res.remarks.append(
            "no time column: each label takes its prediction's time "
            f"({option('labels-columns', 'timestamp=COLUMN')} names one)"
            if res.labels
            else "no timestamp column: a replay takes the rows in order, and its times are "
            f"row numbers ({option('timestamp', 'COLUMN')} names one)"
        )
        return
    kind = res.kinds.get(ts)
    st = res.table.stats(ts)
    if kind == "numeric":
        top = max((float(s) for s in st.distinct), default=0.0)
        res.notes[ts] = "epoch seconds" if top < 1e11 else "epoch milliseconds"
    elif kind == "datetime":
        sample = next(iter(st.distinct), "")
        aware = bool(re.search(r"(?:[Zz]|[+-]\d{2}:?\d{2})$", sample)) or (
            st.times > 0 and _aware_first(res.table, ts)
        )
        if not aware:
            layout = f"{res.notes[ts]}, " if res.time_format else ""
            res.notes[ts] = f"{layout}no time zone: read as UTC"


def _aware_first(table: Table, col: str) -> bool:
    st = table.stats(col)
    if st.first_non_number is None:
        return False
    v = st.first_non_number[1]
    return getattr(v, "tzinfo", None) is not None


def _bad_values(res: Resolved, cm: ColumnMap) -> None:
    t = res.table
    for col, kind in res.kinds.items():
        if kind != "numeric" or col in res.excluded or col in (res.id, res.model, res.version):
            continue  # an id is text whatever it looks like: 1041 and "other-7" both name one
        if res.score_vector is not None and col == res.score_vector[0]:
            continue  # lists of numbers, read by Table.lists
        st = t.stats(col)
        if st.numbers == st.present:
            continue
        bad = np.flatnonzero(t.non_numbers(col))
        if not bad.size:
            continue
        first = int(bad[0])
        value = t.values([col])[col][first]
        why = f"{value!r} is not a number"
        if cm.on_bad_value == "error":
            raise InputError(
                f"{t.source}, {t.where(first)}, column {col!r}: {why} ({st.numbers:,} of "
                f"{st.present:,} values are numbers); fix the data, "
                f"declare the column ({option('types', f'{col}=categorical')}) or set such "
                f"rows aside ({option('on-bad-value', 'dlq')})"
            )
        values = t.values([col])[col]
        for r in bad.tolist():
            if r not in res.refused:
                res.refused[r] = Refusal(r, t.where(r), col, f"{values[r]!r} is not a number")
        res.notes[col] = f"{bad.size:,} rows with a value that is not a number set aside"
