"""The contract's hand-written fast checks, for the workers' hot paths.

They accept and refuse exactly what the pydantic models of
:mod:`driftline.contract.events` do, on what ``orjson.loads`` returns, and return the
plain dict; tests/unit/test_contract.py checks them against the models and the JSON
Schemas.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from driftline.contract.events import (
    _RFC3339,
    LIMITS,
    SCHEMA_VERSION,
    _id_bad,
    _load,
    _model_id_bad,
    _short,
)
from driftline.errors import ValidationError

__all__ = [
    "check_label",
    "check_prediction",
    "decode_label_fast",
    "decode_prediction_fast",
    "mapping_problem",
    "model_id_ok",
    "names_are_valid",
]

# --- fast path ------------------------------------------------------------------------
#
# Hand-written checks that accept and refuse exactly what PredictionEvent and LabelEvent
# do, for the monitor's hot path. They take what orjson.loads returns, so only the exact
# built-in JSON types occur and a class identity test is both the fastest check and the
# right one (``bool`` is a subclass of ``int``, so ``isinstance(True, int)`` would lie).
# The happy path is inlined; helpers run only to word the reason of a refusal.
# tests/unit/test_contract.py checks them against pydantic and the JSON Schemas.

_MAX_ID = LIMITS.max_id_length
_MAX_NAME = LIMITS.max_name_length
_MAX_STRING = LIMITS.max_string_value_length
_MAX_SEGMENT_VALUE = LIMITS.max_segment_value_length
_MAX_FEATURES = LIMITS.max_features
_MAX_CLASSES = LIMITS.max_classes
_MAX_SEGMENT_KEYS = LIMITS.max_segment_keys
_MAX_TIMESTAMP = LIMITS.max_timestamp_ms
_rfc3339_fullmatch = _RFC3339.fullmatch

#: Names (feature, class and segment keys) already found valid. A model sends the same
#: few hundred names in every event, and orjson reuses one ``str`` object per key with
#: its hash cached, so ``set.issuperset(dict)`` checks all keys of an event in C. Only
#: valid names ever enter; the set is emptied when it grows past ``_NAME_CACHE_SIZE``.
_valid_names: set[str] = set()
_NAME_CACHE_SIZE = 65_536

_KINDS = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if type(v).__name__ == "ndarray":  # what a model returns: model.predict(x) is array([0])
        shape = getattr(v, "shape", ())
        hint = ": pass its value, x.item()" if getattr(v, "size", 0) == 1 else ""
        return f"a numpy array of shape {shape}{hint}"
    return _KINDS.get(type(v), type(v).__name__)


def _string_problem(v: object, min_length: int, max_length: int) -> str:
    if type(v) is not str:
        return f"expected a string, got {_kind(v)}"
    if len(v) < min_length:
        return "string is empty"
    return f"string is longer than {max_length} characters"


def _field_problem(obj: dict[str, Any], field: str, max_length: int) -> str:
    if field not in obj:
        return f"{field}: field required"
    return f"{field}: {_string_problem(obj[field], 1, max_length)}"


def _version_problem(v: object) -> str | None:
    if v is None:
        return None
    if type(v) is not int:
        return f"schema_version: expected an integer, got {_kind(v)}"
    if v < 1:
        return "schema_version: must be >= 1"
    if v > SCHEMA_VERSION:
        return f"schema_version: {v} is newer than {SCHEMA_VERSION}"
    return None


def _epoch_problem(field: str, v: int) -> str:
    """Why an integer event time is refused (negative, or past year 9999)."""
    if v < 0:
        return f"{field}: negative epoch milliseconds"
    return f"{field}: epoch milliseconds after 9999-12-31T23:59:59.999Z ({_MAX_TIMESTAMP})"


def _timestamp_problem(obj: dict[str, Any]) -> str | None:
    if "timestamp" not in obj:
        return "timestamp: field required"
    v = obj["timestamp"]
    if type(v) is int:
        return None if 0 <= v <= _MAX_TIMESTAMP else _epoch_problem("timestamp", v)
    if type(v) is str:
        # The pattern encodes the calendar, so a match always parses (tested).
        return None if _rfc3339_fullmatch(v) else "timestamp: not an RFC 3339 date-time"
    return f"timestamp: expected epoch ms or an RFC 3339 string, got {_kind(v)}"


def _label_problem(obj: dict[str, Any], field: str) -> str | None:
    if field not in obj:
        return f"{field}: field required"
    v = obj[field]
    if type(v) is str:
        if len(v) <= _MAX_STRING:
            return None
        return f"{field}: string is longer than {_MAX_STRING} characters"
    if type(v) is int or type(v) is float:
        return None
    return f"{field}: expected a number or a string, got {_kind(v)}"


def _names_problem(where: str, mapping: dict[Any, Any]) -> str | None:
    """Check the keys of ``mapping`` one by one, remembering the valid ones."""
    if len(_valid_names) > _NAME_CACHE_SIZE:
        _valid_names.clear()
    for key in mapping:
        if type(key) is not str or not 0 < len(key) <= _MAX_NAME:
            return f"{where}: key {_short(key)}: {_string_problem(key, 1, _MAX_NAME)}"
        _valid_names.add(key)
    return None


def mapping_problem(field: str, v: object) -> str | None:
    """Why the ``features`` or ``scores`` object of a single event or of a batch (either
    version) breaks the contract by its type, its size or its key names; its values are
    checked apart, by the caller."""
    if field == "scores":
        if v is None:
            return None
        if type(v) is not dict:
            return f"scores: expected an object or null, got {_kind(v)}"
        if not 0 < len(v) <= _MAX_CLASSES:
            return f"scores: {len(v)} classes, need 1 to {_MAX_CLASSES}"
    else:
        if type(v) is not dict:
            return f"features: expected an object, got {_kind(v)}"
        if len(v) > _MAX_FEATURES:
            return f"features: {len(v)} features, over {_MAX_FEATURES}"
    if _valid_names.issuperset(v):
        return None
    return _names_problem(field, v)


def _features_problem(v: object) -> str | None:
    problem = mapping_problem("features", v)
    if problem:
        return problem
    assert type(v) is dict
    for key, value in v.items():
        if value is None or type(value) in (bool, int, float):
            continue
        if type(value) is str:
            if len(value) <= _MAX_STRING:
                continue
            return f"features.{_short(key)}: string is longer than {_MAX_STRING} characters"
        return f"features.{_short(key)}: value is {_kind(value)}"
    return None


def _scores_problem(v: object) -> str | None:
    problem = mapping_problem("scores", v)
    if problem or v is None:
        return problem
    assert type(v) is dict
    for key, p in v.items():
        if type(p) is float or type(p) is int:
            if 0 <= p <= 1:
                continue
            return f"scores.{_short(key)}: probability {p} outside 0..1"
        return f"scores.{_short(key)}: expected a number, got {_kind(p)}"
    return None


def _segment_problem(v: object) -> str | None:
    if v is None:
        return None
    if type(v) is not dict:
        return f"segment: expected an object or null, got {_kind(v)}"
    if len(v) > _MAX_SEGMENT_KEYS:
        return f"segment: {len(v)} keys, over {_MAX_SEGMENT_KEYS}"
    if not _valid_names.issuperset(v):
        problem = _names_problem("segment", v)
        if problem:
            return problem
    for key, value in v.items():
        if type(value) is not str or not 0 < len(value) <= _MAX_SEGMENT_VALUE:
            return f"segment.{_short(key)}: {_string_problem(value, 1, _MAX_SEGMENT_VALUE)}"
    return None


def _prediction_problem(obj: dict[str, Any]) -> str:
    """The reason a prediction event that failed the inlined checks is refused."""
    problem = (
        _version_problem(obj.get("schema_version"))
        or _id_problem(obj, "prediction_id")
        or _id_problem(obj, "model_id")
        or _id_problem(obj, "model_version")
        or _timestamp_problem(obj)
        or (_features_problem(obj["features"]) if "features" in obj else "features: field required")
        or _label_problem(obj, "prediction")
        or _scores_problem(obj.get("scores"))
        or _segment_problem(obj.get("segment"))
    )
    # The inlined checks refused the event, so one of the above must name a problem.
    return problem or "invalid prediction event"


#: Model ids and versions already found valid (the same idea as ``_valid_names``): a
#: stream carries few, so the character and NFKC checks run once per id.
_valid_model_ids: set[str] = set()
_MODEL_FIELDS = frozenset({"model_id", "model_version"})


def model_id_ok(v: str) -> bool:
    """Whether ``v`` (a string of valid length) is a valid model id or version: no
    control character, no ``{`` or ``}``, in NFKC form. Valid ones are remembered."""
    if v in _valid_model_ids:
        return True
    if _model_id_bad(v) or not unicodedata.is_normalized("NFKC", v):
        return False
    if len(_valid_model_ids) > _NAME_CACHE_SIZE:
        _valid_model_ids.clear()
    _valid_model_ids.add(v)
    return True


def _id_problem(obj: dict[str, Any], field: str) -> str | None:
    v = obj.get(field)
    if type(v) is str and 0 < len(v) <= _MAX_ID:
        if field in _MODEL_FIELDS:
            if model_id_ok(v):
                return None
            if _model_id_bad(v):
                return f"{field}: must not contain a control character, '{{' or '}}'"
            return f"{field}: must be in Unicode NFKC form"
        if _id_bad(v) is None:
            return None
        return f"{field}: must not contain a control character"
    return _field_problem(obj, field, _MAX_ID)


def check_prediction(obj: object) -> str | None:
    """Check a decoded prediction event; ``None`` if valid, else a short reason.

    Accepts and refuses exactly what :class:`PredictionEvent` does, 4-5x faster than
    ``model_validate`` (bench/bench_decode.py). ``obj`` is what :func:`orjson.loads`
    returned.

    Examples
    --------
    >>> ok = {"prediction_id": "p1", "model_id": "churn", "model_version": "3",
    ...       "timestamp": 1767225600000, "features": {"age": 41}, "prediction": "stay"}
    >>> check_prediction(ok) is None
    True
    >>> check_prediction({**ok, "features": {"x": [1, 2]}})
    "features.'x': value is a list"
    """
    if type(obj) is not dict:
        return f"expected a JSON object, got {_kind(obj)}"
    # Each test below can only pass on a valid value; on any failure the helpers work
    # out and word the reason (the refusal path need not be fast).
    try:
        pid = obj["prediction_id"]
        mid = obj["model_id"]
        mver = obj["model_version"]
        ts = obj["timestamp"]
        feats = obj["features"]
        pred = obj["prediction"]
    except KeyError:
        return _prediction_problem(obj)
    get = obj.get
    sv = get("schema_version")
    if not (
        (sv is None or (type(sv) is int and 1 <= sv <= SCHEMA_VERSION))
        and type(pid) is str
        and type(mid) is str
        and type(mver) is str
        and 0 < len(pid) <= _MAX_ID
        and 0 < len(mid) <= _MAX_ID
        and 0 < len(mver) <= _MAX_ID
        and (
            (type(ts) is int and 0 <= ts <= _MAX_TIMESTAMP)
            or (type(ts) is str and _rfc3339_fullmatch(ts) is not None)
        )
        and (
            (type(pred) is str and len(pred) <= _MAX_STRING)
            or type(pred) is float
            or type(pred) is int
        )
        and type(feats) is dict
        and len(feats) <= _MAX_FEATURES
        and (mid in _valid_model_ids or model_id_ok(mid))
        and (mver in _valid_model_ids or model_id_ok(mver))
        and _id_bad(pid) is None
    ):
        return _prediction_problem(obj)
    # features: every key a valid name, every value a scalar, strings bounded
    if not _valid_names.issuperset(feats) and _names_problem("features", feats):
        return _prediction_problem(obj)
    for x in feats.values():  # the hot loop: the commonest case first
        c = type(x)
        if c is float:
            continue
        if c is str:
            if len(x) <= _MAX_STRING:
                continue
            return _prediction_problem(obj)
        if c is int or c is bool or x is None:
            continue
        return _prediction_problem(obj)
    scores = get("scores")
    if scores is not None:
        if type(scores) is not dict or not 0 < len(scores) <= _MAX_CLASSES:
            return _prediction_problem(obj)
        if not _valid_names.issuperset(scores) and _names_problem("scores", scores):
            return _prediction_problem(obj)
        for x in scores.values():
            c = type(x)
            if (c is float or c is int) and 0 <= x <= 1:
                continue
            return _prediction_problem(obj)
    segment = get("segment")
    if segment is not None:
        if type(segment) is not dict or len(segment) > _MAX_SEGMENT_KEYS:
            return _prediction_problem(obj)
        if not _valid_names.issuperset(segment) and _names_problem("segment", segment):
            return _prediction_problem(obj)
        for x in segment.values():
            if type(x) is not str or not 0 < len(x) <= _MAX_SEGMENT_VALUE:
                return _prediction_problem(obj)
    return None


def check_label(obj: object) -> str | None:
    """Check a decoded label event; ``None`` if valid, else a short reason.

    Accepts and refuses exactly what :class:`LabelEvent` does (see :func:`check_prediction`).
    """
    if type(obj) is not dict:
        return f"expected a JSON object, got {_kind(obj)}"
    return (
        _version_problem(obj.get("schema_version"))
        or _id_problem(obj, "prediction_id")
        or _id_problem(obj, "model_id")
        or _label_problem(obj, "label")
        or _timestamp_problem(obj)
    )


def decode_prediction_fast(data: bytes) -> dict[str, Any]:
    """Decode and check one prediction event, returning the plain dict (hot path).

    Refuses exactly what :func:`decode_prediction` refuses, with the same exceptions.
    The dict is what orjson produced: optional fields may be absent rather than ``None``,
    and unknown top-level fields are kept (ignore them) rather than dropped.

    Raises
    ------
    DecodeError, ValidationError, UnsupportedVersion
        The event breaks the contract; it belongs on the dead-letter topic.
    """
    obj = _load(data)
    reason = check_prediction(obj)
    if reason is not None:
        raise ValidationError(reason)
    return obj


def decode_label_fast(data: bytes) -> dict[str, Any]:
    """Decode and check one label event as a plain dict (see :func:`decode_prediction_fast`)."""
    obj = _load(data)
    reason = check_label(obj)
    if reason is not None:
        raise ValidationError(reason)
    return obj


def names_are_valid(names: Any) -> bool:
    """Whether every key of ``names`` (a set, dict or sequence) is a valid name.

    Valid names are remembered like the single-event checker does, so a batch of
    events with the same feature names checks them once.
    """
    if _valid_names.issuperset(names):
        return True
    if len(_valid_names) > _NAME_CACHE_SIZE:
        _valid_names.clear()
    found = list(names)
    for key in found:
        if type(key) is not str or not 0 < len(key) <= _MAX_NAME:
            return False
    _valid_names.update(found)
    return True
