"""The batched envelope (``prediction_batch.v1``): its contract checks and decoding.

A batch carries many predictions of one stream in one Kafka message, features as
arrays (:data:`driftline.contract.events.BATCH_FORMAT`). The checks accept and refuse
exactly what :class:`~driftline.contract.events.PredictionBatch` and the JSON Schema do.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, repeat
from operator import is_
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from driftline.contract.checks import (
    _MAX_ID,
    _MAX_STRING,
    _epoch_problem,
    _id_problem,
    _kind,
    _rfc3339_fullmatch,
    _segment_problem,
    _version_problem,
    mapping_problem,
)
from driftline.contract.events import (
    BATCH_FORMAT,
    LIMITS,
    PredictionBatch,
    _load,
    _short,
    ids_have_control,
)
from driftline.errors import ValidationError

__all__ = [
    "check_prediction_batch",
    "decode_prediction_batch",
    "decode_prediction_batch_fast",
]

# --- columnar batches -----------------------------------------------------------------
#
# A batch's columns hold up to 10 000 values each, so the checks below never loop in
# Python over values: each column's set of Python types comes from one C-level pass
# (``set(map(type, column))``), string lengths and number ranges from ``max``/``min``
# over the right values. tests/unit/test_contract.py checks the verdicts against
# pydantic and the JSON Schema; tests/unit/test_columnar.py the length rule.

_NONE_TYPE = type(None)
_FEATURE_VALUE_TYPES = frozenset({_NONE_TYPE, bool, int, float, str})
_NUMBER_TYPES = frozenset({int, float})
_MAX_ROWS = LIMITS.max_batch_rows


def _max_text(values: list[Any], types: set[type]) -> int:
    """Longest string among ``values`` (whose set of types is ``types``)."""
    if types == {str}:
        return max(map(len, values))
    texts = compress(values, map(is_, map(type, values), repeat(str)))
    return max(map(len, texts), default=0)


def _column_problem(where: str, v: object, count: int) -> str | None:
    if type(v) is not list:
        return f"{where}: expected an array, got {_kind(v)}"
    if not 0 < len(v) <= _MAX_ROWS:
        return f"{where}: {len(v)} entries, need 1 to {_MAX_ROWS}"
    if len(v) != count:
        return f"{where}: {len(v)} entries, count is {count}"
    return None


def _batch_features_problem(
    v: object, count: int, seen: dict[str, frozenset[type]] | None
) -> str | None:
    problem = mapping_problem("features", v)
    if problem:
        return problem
    assert type(v) is dict
    for key, col in v.items():
        where = f"features.{_short(key)}"
        problem = _column_problem(where, col, count)
        if problem:
            return problem
        types = set(map(type, col))
        if not types <= _FEATURE_VALUE_TYPES:
            bad = next(x for x in col if type(x) not in _FEATURE_VALUE_TYPES)
            return f"{where}: value is {_kind(bad)}"
        if str in types and _max_text(col, types) > _MAX_STRING:
            return f"{where}: string is longer than {_MAX_STRING} characters"
        if seen is not None:
            seen[key] = frozenset(types)
    return None


def _batch_scores_problem(v: object, count: int) -> str | None:
    problem = mapping_problem("scores", v)
    if problem or v is None:
        return problem
    assert type(v) is dict
    for key, col in v.items():
        where = f"scores.{_short(key)}"
        problem = _column_problem(where, col, count)
        if problem:
            return problem
        types = set(map(type, col))
        if not types <= _NUMBER_TYPES | {_NONE_TYPE}:
            bad = next(x for x in col if x is not None and type(x) not in _NUMBER_TYPES)
            return f"{where}: expected numbers or nulls, got {_kind(bad)}"
        present = [x for x in col if x is not None] if _NONE_TYPE in types else col
        if present and not (min(present) >= 0 and max(present) <= 1):
            return f"{where}: probability outside 0..1"
    return None


def check_prediction_batch(
    obj: object, feature_types: dict[str, frozenset[type]] | None = None
) -> str | None:
    """Check a decoded columnar batch; ``None`` if valid, else a short reason.

    Accepts and refuses exactly what :class:`PredictionBatch` does (all columns of
    ``count`` entries included), with C-level passes over each column. If
    ``feature_types`` is given, it receives the set of Python types of each feature
    column (the monitor converts columns by them without looking again).

    Examples
    --------
    >>> ok = {"format": BATCH_FORMAT, "model_id": "m", "model_version": "1", "count": 1,
    ...       "prediction_ids": ["p1"], "timestamps": [0], "features": {"x": [1.5]},
    ...       "predictions": ["a"]}
    >>> check_prediction_batch(ok) is None
    True
    >>> check_prediction_batch({**ok, "features": {"x": [1.5, 2.5]}})
    "features.'x': 2 entries, count is 1"
    """
    if type(obj) is not dict:
        return f"expected a JSON object, got {_kind(obj)}"
    problem = _version_problem(obj.get("schema_version"))
    if problem:
        return problem
    if obj.get("format") != BATCH_FORMAT or type(obj.get("format")) is not str:
        return f"format: must be {BATCH_FORMAT!r}" if "format" in obj else "format: field required"
    problem = _id_problem(obj, "model_id") or _id_problem(obj, "model_version")
    if problem:
        return problem
    count = obj.get("count")
    if type(count) is not int or not 0 < count <= _MAX_ROWS:
        return "count: field required" if "count" not in obj else f"count: need 1 to {_MAX_ROWS}"
    for field in ("prediction_ids", "timestamps", "features", "predictions"):
        if field not in obj:
            return f"{field}: field required"
    ids = obj["prediction_ids"]
    problem = _column_problem("prediction_ids", ids, count) or ids_column_problem(ids)
    if problem:
        return problem
    ts = obj["timestamps"]
    problem = _column_problem("timestamps", ts, count) or times_column_problem(ts)
    if problem:
        return problem
    problem = _batch_features_problem(obj["features"], count, feature_types)
    if problem:
        return problem
    preds = obj["predictions"]
    problem = _column_problem("predictions", preds, count) or outputs_column_problem(
        "predictions", preds
    )
    if problem:
        return problem
    return _batch_scores_problem(obj.get("scores"), count) or _segment_problem(obj.get("segment"))


# The rules of the columns a prediction batch and a label batch share (non-empty lists,
# as the envelope checks leave them), each in C-level passes over the column.


def ids_column_problem(ids: Sequence[Any]) -> str | None:
    """Why a ``prediction_ids`` column breaks the contract, or ``None``."""
    if set(map(type, ids)) != {str} or not 0 < min(map(len, ids)) <= max(map(len, ids)) <= _MAX_ID:
        return "prediction_ids: need strings of 1 to 256 characters"
    if ids_have_control("".join(ids)):
        return "prediction_ids: must not contain a control character"
    return None


def times_column_problem(ts: list[Any]) -> str | None:
    """Why a ``timestamps`` column (epoch ms or RFC 3339 strings) breaks the contract."""
    types = set(map(type, ts))
    if not types <= {int, str}:
        return "timestamps: expected epoch ms or RFC 3339 strings"
    if int in types:
        ints = ts if types == {int} else [t for t in ts if type(t) is int]
        lo, hi = min(ints), max(ints)
        if lo < 0 or hi > LIMITS.max_timestamp_ms:
            return _epoch_problem("timestamps", lo if lo < 0 else hi)
    if str in types and not all(
        map(_rfc3339_fullmatch, compress(ts, map(is_, map(type, ts), repeat(str))))
    ):
        return "timestamps: not an RFC 3339 date-time"
    return None


def outputs_column_problem(where: str, values: list[Any]) -> str | None:
    """Why a column of predictions or labels (numbers or strings) breaks the contract."""
    types = set(map(type, values))
    if not types <= {str, int, float}:
        return f"{where}: expected numbers or strings"
    if str in types and _max_text(values, types) > _MAX_STRING:
        return f"{where}: string is longer than {_MAX_STRING} characters"
    return None


def _load_batch(data: bytes) -> dict[str, Any]:
    return _load(data, LIMITS.max_batch_bytes, "batch")


def decode_prediction_batch(data: bytes) -> PredictionBatch:
    """Decode and validate one columnar batch with the pydantic model (the oracle).

    Raises
    ------
    DecodeError, ValidationError, UnsupportedVersion
        The batch breaks the contract.
    """
    obj = _load_batch(data)
    try:
        return PredictionBatch.model_validate(obj)
    except PydanticValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationError(f"{where}: {first['msg']} ({exc.error_count()} errors)") from None


def decode_prediction_batch_fast(data: bytes) -> dict[str, Any]:
    """Decode and check one columnar batch, returning the plain dict (hot path).

    Refuses exactly what :func:`decode_prediction_batch` refuses, with the same
    exceptions.
    """
    obj = _load_batch(data)
    reason = check_prediction_batch(obj)
    if reason is not None:
        raise ValidationError(reason)
    return obj
