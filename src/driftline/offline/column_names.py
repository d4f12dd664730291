"""The column names each role is recognised by (docs/your-data.md has the table).

:func:`driftline.offline.roles.resolve` gives a column a role by its name only when the
user has not said it: ``prediction_id``/``id`` the id; ``timestamp``/``ts``/``time``/
``event_time``/``datetime`` the time; ``target``/``label``/``y``/``y_true``/... the label,
else one feature named like it (``is_fraud``, ``fraud_label``, ``segment_true``:
:func:`named_like_a_label`) whose values fit the model's output;
``prediction``/``pred``/``y_pred``/``predicted``/... the prediction; ``proba_*``/
``prob_*``/``probability_*``/``score.*``/``score_*``/``scores.*`` class probabilities
(the class is the rest of the name), ``CLASS_proba``/``CLASS_prob``/... where CLASS
is one of the predicted or true classes, and columns named exactly as two or more
classes holding probabilities, and a lone ``probability``/``proba``/``score``
column (or scikit-learn's names of it) the positive class's probability of a binary
model; a column named as another's prediction (``predicted_price`` beside ``price``) and
that other are the prediction and the label (:mod:`.roles`). Other features whose name
reads like an output are pointed out, not moved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from driftline.errors import InputError
from driftline.offline.options import option

__all__ = [
    "ID_NAMES",
    "LABEL_NAMES",
    "LONE_SCORE_NAMES",
    "OUTPUT_WORDS",
    "PANDAS_INDEX",
    "PREDICTION_NAMES",
    "SCORE_PREFIXES",
    "TIME_LIKE",
    "TIME_NAMES",
    "named_like_a_label",
    "named_like_an_output",
    "pick",
    "score_class",
]

ID_NAMES = ("prediction_id", "id")
TIME_NAMES = ("timestamp", "ts", "time", "event_time", "datetime")
#: scikit-learn's examples call the truth ``y_test`` and the outputs ``y_pred``; a
#: frame built from them (``pd.DataFrame({"y_test": y_test, "predictions": ...})``)
#: often keeps the plural.
LABEL_NAMES = (
    "target",
    "label",
    "y",
    "y_true",
    "y_test",
    "actual",
    "ground_truth",
    "true_label",
    "labels",
    "targets",
)
PREDICTION_NAMES = (
    "prediction",
    "predictions",
    "pred",
    "preds",
    "y_pred",
    "predicted",
    "predicted_label",
    "predicted_class",
    "pred_label",
    "y_hat",
    "yhat",
)
#: Names that read as the truth beside a model's outputs: ``fraud_label``,
#: ``segment_true``, ``true_segment``, ``y_true_fraud``, ``actual_price``,
#: ``price_actual``, ``churn_target``, and ``is_fraud``/``is_churn``/... for the
#: things a binary model is usually trained to flag (``is_member`` is no such thing).
#: Taken as the label only where it fits the model's output (:mod:`.roles`).
_LABEL_LIKE = re.compile(
    r"^(?:(?:y_)?(?:true|actual)_.+"
    r"|.+_(?:true|actual|label|target)"
    r"|is_(?:fraud|fraudulent|churn|churned|churner|default|defaulted|spam|anomaly|outlier"
    r"))$"
)
#: Name parts of a model's output (not the truth): ``y_pred_label`` is no label.
_OUTPUT_PARTS = frozenset(
    {"pred", "preds", "prediction", "predictions", "predicted", "proba", "prob", "score", "hat"}
)


def named_like_a_label(name: str) -> bool:
    """Whether ``name`` reads as the truth (:data:`_LABEL_LIKE`, any case) and has no
    word of a model's output."""
    low = name.lower()
    parts = set(re.split(r"[^a-z0-9]+", low))
    return bool(_LABEL_LIKE.match(low)) and not parts & _OUTPUT_PARTS


#: Names of columns that hold times (``created_at``, ``event_date``, ``signup_ts``):
#: with epoch numbers in them they are times, not features (:func:`.times.epoch_times`).
TIME_LIKE = re.compile(
    r"(?:^|_)(?:at|time|ts|timestamp|date|datetime|epoch)$|^(?:date|time)", re.IGNORECASE
)
#: The row index pandas writes beside the data: ``to_csv`` (its default ``index=True``;
#: an unnamed first column, read as ``Unnamed: 0``), ``to_parquet`` of a frame whose
#: index is not a plain range, ``reset_index``.
PANDAS_INDEX = re.compile(r"^(?:Unnamed: \d+|__index_level_\d+__|index|level_0)$")
SCORE_PREFIXES = (
    "proba_",
    "proba.",
    "prob_",
    "probability_",
    "probability.",
    "score.",
    "score_",
    "scores.",
)
#: One probability column of a binary model: plain names and scikit-learn's usual ones
#: (``y_proba = model.predict_proba(X)[:, 1]``; ``y_score`` as ``roc_auc_score`` calls it).
LONE_SCORE_NAMES = (
    "probability",
    "probabilities",
    "proba",
    "prob",
    "score",
    "y_proba",
    "y_prob",
    "y_score",
    "pred_proba",
    "predict_proba",
    "predicted_proba",
    "predicted_probability",
    "y_pred_proba",
)
#: Name parts of columns that usually hold a model's output or the truth.
OUTPUT_WORDS = frozenset(
    {
        "pred",
        "preds",
        "prediction",
        "predictions",
        "predicted",
        "proba",
        "prob",
        "probability",
        "probabilities",
        "target",
        "targets",
        "label",
        "labels",
        "actual",
    }
)


def pick(role: str, free: Sequence[str], candidates: Sequence[str], source: str) -> str | None:
    """The one column of ``free`` whose name (any case) is among ``candidates``, or None.

    Raises
    ------
    InputError
        Two columns could fill the role: the message names both and the option that
        chooses.
    """
    low = {n.lower(): n for n in free}
    found = [low[c] for c in candidates if c in low]
    if len(found) > 1:
        raise InputError(
            f"{source}: columns {' and '.join(repr(f) for f in found)} could both be the "
            f"{role}: choose one with {option(role, found[0])} (and "
            f"{option('exclude', found[1])})"
        )
    return found[0] if found else None


def score_class(name: str) -> str | None:
    """The class a probability column's name gives (``proba_churn``: ``churn``), or None;
    ``True``/``False`` as ``true``/``false``, as events carry them."""
    low = name.lower()
    for p in SCORE_PREFIXES:
        if low.startswith(p) and len(name) > len(p):
            cls = name[len(p) :]
            return cls.lower() if cls.lower() in ("true", "false") else cls
    return None


#: Ends of a probability column's name after its class (``churn_proba``): read so only
#: when the rest of the name is one of the model's classes.
SCORE_SUFFIXES = ("_proba", "_prob", "_probability", "_probabilities", ".proba", ".prob")


def class_of_suffixed_score(name: str, classes: Sequence[str]) -> str | None:
    """The class of ``classes`` a probability column's name ends with a suffix after
    (``churn_proba`` with classes ``churn`` and ``stay``: ``churn``; any case), or None."""
    low = name.lower()
    for suffix in SCORE_SUFFIXES:
        if low.endswith(suffix) and len(low) > len(suffix):
            stem = low[: -len(suffix)]
            return next((c for c in classes if c.lower() == stem), None)
    return None


def named_like_an_output(name: str) -> bool:
    """Whether a word of ``name`` (``churn_pred``, ``label_v2``) is one of
    :data:`OUTPUT_WORDS`."""
    return bool(OUTPUT_WORDS.intersection(p for p in re.split(r"[^a-z0-9]+", name.lower()) if p))
