"""The Kafka records the SDK writes: single events, columnar batches, packing.

:func:`encode_event` turns what a model server hands to ``send()`` (a pydantic event,
or a mapping with numpy/pandas values and ``datetime`` times: :mod:`.values`) into the
record's key and value, checked by the same contract check as the monitor's, so an
invalid event is refused where it is sent, with the reason. :func:`pack_records` packs
events of one stream into batch records (labels of one model into ``label_batch.v1``
records) under a size limit. A prediction batch is written as ``prediction_batch.v2``
(numeric feature columns as one binary block: :mod:`.binary_batch`) or, with
``binary=False``, as ``prediction_batch.v1`` (all JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from driftline.contract.batch import check_prediction_batch
from driftline.contract.binary_batch import decode_binary_batch, encode_binary_batch
from driftline.contract.checks import (
    check_label,
    check_prediction,
)
from driftline.contract.columnar import pack_events
from driftline.contract.events import (
    BATCH_FORMAT,
    SCHEMA_VERSION,
    LabelEvent,
    PredictionEvent,
)
from driftline.contract.keys import segment_key
from driftline.contract.label_batch import pack_label_events
from driftline.contract.values import (
    boolean_score_keys,
    class_key,
    class_value,
    event_time,
    infinite_features,
    plain,
    prepare_label,
    prepare_prediction,
    seconds_for_ms,
)
from driftline.errors import ContractError, ValidationError

__all__ = [
    "BATCH_FIELDS",
    "LABEL_FIELDS",
    "PREDICTION_FIELDS",
    "encode_batch",
    "encode_event",
    "pack_records",
    "stream_of",
]

PREDICTION_FIELDS = (
    "prediction_id",
    "model_id",
    "model_version",
    "timestamp",
    "features",
    "prediction",
)
LABEL_FIELDS = ("prediction_id", "model_id", "label", "timestamp")
BATCH_FIELDS = (
    "model_id",
    "model_version",
    "prediction_ids",
    "timestamps",
    "features",
    "predictions",
)


def encode_event(
    event: Any,
    model: type[PredictionEvent] | type[LabelEvent],
    keep: bool = False,
    infinite: list[str] | None = None,
) -> tuple[bytes, bytes, dict[str, Any] | None]:
    """``(key, value, event)`` for one prediction or label event, checked by the contract.

    A mapping may hold numpy and pandas values and ``datetime`` times: they become wire
    values. ``event`` is returned (the prepared dict) when ``keep``, for packing. The
    names of features whose value was infinite (sent as missing: JSON has none) are
    appended to ``infinite``.

    Raises
    ------
    ValidationError
        The reason the event cannot be valid (a missing field, a naive time, a value
        the contract refuses), worded as the monitor words it.
    """
    if isinstance(event, model):
        if infinite is not None and isinstance(event, PredictionEvent):
            infinite_features(dict(event.features), infinite)  # pydantic writes them null
        obj = {k: v for k, v in event.model_dump(mode="json").items() if v is not None}
    elif isinstance(event, Mapping):
        required = PREDICTION_FIELDS if model is PredictionEvent else LABEL_FIELDS
        missing = [name for name in required if name not in event]
        if missing:
            raise ValidationError(f"{', '.join(missing)}: field required")
        try:
            obj = (
                prepare_prediction(event, infinite)
                if model is PredictionEvent
                else prepare_label(event)
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        problem = check_prediction(obj) if model is PredictionEvent else check_label(obj)
        if problem is not None:
            raise ValidationError(problem)
    else:
        raise ValidationError(
            f"expected a mapping or a {model.__name__}, got {type(event).__name__}"
        )
    if keep and model is LabelEvent:
        obj = {name: obj[name] for name in LABEL_FIELDS}  # what a label batch carries
    return obj["model_id"].encode(), orjson.dumps(obj), obj if keep else None


def encode_batch(
    batch: Any, infinite: list[str] | None = None, *, binary: bool = True
) -> tuple[bytes, bytes, None]:
    """``(key, value, None)`` for a columnar batch: ``prediction_batch.v2`` (numeric
    feature columns as a binary block), or ``prediction_batch.v1`` if not ``binary``.

    Columns may be lists or numpy arrays (NaN in a float array is written as null,
    i.e. missing; so is an infinity, its feature's name appended to ``infinite``).
    ``format``, ``schema_version`` and ``count`` are filled in.

    Raises
    ------
    ValidationError
        Not a mapping, a field missing, no model id, or a pandas Series as a column
        (the monitor checks the rest).
    """
    if not isinstance(batch, Mapping):
        raise ValidationError(f"expected a mapping, got {type(batch).__name__}")
    missing = [name for name in BATCH_FIELDS if name not in batch]
    if missing:
        raise ValidationError(f"{', '.join(missing)}: field required")
    model_id = batch["model_id"]
    if not isinstance(model_id, str) or not model_id:
        raise ValidationError("model_id: expected a non-empty string")
    _no_series(batch)
    if infinite is not None and isinstance(batch["features"], Mapping):
        infinite += [str(k) for k, col in batch["features"].items() if _has_infinity(col)]
    times = np.asarray(batch["timestamps"])
    if times.size and times.dtype.kind in "iuf":
        # A column of epoch seconds would be taken as January 1970, silently.
        wrong = seconds_for_ms(times.min().item())
        if wrong is not None and seconds_for_ms(times.max().item()) is not None:
            raise ValidationError(wrong.replace("timestamp:", "timestamps:", 1))
    obj = {
        **batch,
        "format": BATCH_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "count": len(batch["prediction_ids"]),
        "prediction_ids": _plain_column(batch["prediction_ids"]),
        "timestamps": _times_column(batch["timestamps"]),
        "predictions": _plain_column(batch["predictions"], class_value),
    }
    if isinstance(batch["features"], Mapping):
        obj["features"] = {k: _plain_column(col) for k, col in batch["features"].items()}
    if isinstance(batch.get("scores"), Mapping):
        # Named as the predictions name them: {c: proba[:, j] for j, c in enumerate(classes_)}.
        obj["scores"] = {class_key(c): _plain_column(col) for c, col in batch["scores"].items()}
        if _booleans(batch["predictions"]):  # {"True": p, "False": 1 - p} as send() reads it
            obj["scores"] = boolean_score_keys(obj["scores"])
    try:
        value = _batch_value(obj, binary)
    except orjson.JSONEncodeError:
        # A list column from pandas' .tolist() (Int64, boolean, string) holds pd.NA, which
        # orjson cannot write; send() sends it as missing. Plained only then: lists of
        # plain values (the usual case) are not walked twice.
        for group in ("features", "scores"):
            if isinstance(obj.get(group), Mapping):
                obj[group] = {k: _plain_list(col) for k, col in obj[group].items()}
        value = _batch_value(obj, binary)
    # The monitor's own check, so a batch it would dead-letter whole is refused here,
    # with its reason, rather than buffered and reported as sent.
    if binary:
        try:
            decode_binary_batch(value)
        except ContractError as exc:
            raise ValidationError(str(exc)) from None
        return model_id.encode(), value, None
    problem = check_prediction_batch(orjson.loads(value))
    if problem is not None:
        raise ValidationError(problem)
    return model_id.encode(), value, None


def _times_column(col: Any) -> Any:
    """The timestamps column as the wire carries it: a column of times as ``send()``
    reads one (:func:`event_time`: an aware ``datetime``/``Timestamp`` as epoch ms; a
    ``datetime64`` or naive time refused with its reason), else as it is."""
    if isinstance(col, np.ndarray) and col.dtype.kind == "M":
        col = list(col[:1])  # no time zone: refused, as send() refuses one
    elif not (isinstance(col, list | np.ndarray) and len(col)):
        return _plain_column(col)
    elif not isinstance(col[0], datetime | np.datetime64):
        return _plain_column(col)
    try:
        return [event_time(v) for v in col]
    except ValueError as exc:
        raise ValidationError(str(exc).replace("timestamp", "timestamps", 1)) from None


def _batch_value(obj: dict[str, Any], binary: bool) -> bytes:
    """The record value of a prepared batch: ``prediction_batch.v2``, or ``v1``."""
    if binary:
        return encode_binary_batch(obj)
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def _plain_list(col: Any) -> Any:
    """A list column as plain values (:func:`plain`: ``pd.NA`` as null); others as
    they are."""
    return [plain(v) for v in col] if isinstance(col, list) else col


def _plain_column(col: Any, value: Any = plain) -> Any:
    """A numpy column as orjson can write it: text or objects (a DataFrame's string
    column, ``model.classes_[...]``) as a list of plain values (:func:`plain`; missing
    as null), a prediction column of booleans as the classes ``"true"``/``"false"``, a
    strided view (``proba[:, 1]``) as a contiguous copy."""
    if not isinstance(col, np.ndarray):
        return col
    if col.dtype.kind in ("OUSb" if value is class_value else "OUS"):
        return [value(v) for v in col.tolist()]
    return col if col.flags.c_contiguous else np.ascontiguousarray(col)


def _booleans(col: Any) -> bool:
    """Whether a prediction column holds booleans only (numpy or Python)."""
    if isinstance(col, np.ndarray):
        return bool(col.dtype.kind == "b")
    return isinstance(col, list) and bool(col) and all(isinstance(v, bool | np.bool_) for v in col)


def _no_series(batch: Mapping[str, Any]) -> None:
    """Refuse a pandas Series as a column, naming it: orjson cannot write one, and a
    nullable or datetime column needs a choice only its owner can make."""
    named = [(name, batch[name]) for name in ("prediction_ids", "timestamps", "predictions")]
    for group in ("features", "scores"):
        cols = batch.get(group)
        if isinstance(cols, Mapping):
            named += [(f"{group}.{k!r}", col) for k, col in cols.items()]
    for what, col in named:
        if not isinstance(col, list | np.ndarray) and hasattr(col, "to_numpy"):
            # A text or categorical column cannot take the numbers' float conversion.
            kind = getattr(getattr(col, "dtype", None), "kind", "O")
            how = (
                "of epoch milliseconds"
                if what == "timestamps"
                else "(numbers: .to_numpy(dtype=float, na_value=np.nan))"
                if kind in "iuf"
                else "(text, categories, booleans: .to_numpy(); None and NaN are missing)"
            )
            raise ValidationError(
                f"{what}: a pandas {type(col).__name__}: pass a list or numpy array {how}"
            )


def _has_infinity(col: Any) -> bool:
    if isinstance(col, np.ndarray):
        return col.dtype.kind == "f" and bool(np.isinf(col).any())
    if isinstance(col, list):
        return any(isinstance(x, float | np.floating) and math.isinf(x) for x in col)
    return False


def stream_of(event: Mapping[str, Any]) -> tuple[str, str, str]:
    """The stream of an event: (model, version, segment key); a label's (kept by
    :func:`encode_event`: no features) is its model's, ``(model, "", "")``."""
    if "features" not in event:
        return event["model_id"], "", ""
    return event["model_id"], event["model_version"], segment_key(event.get("segment"))


def pack_records(
    events: list[dict[str, Any]], limit: int, *, binary: bool = True
) -> list[tuple[bytes, int]]:
    """Events of one stream as batch record values of at most ``limit`` bytes each:
    ``prediction_batch.v2`` for predictions (``v1`` if not ``binary``),
    ``label_batch.v1`` for labels.

    Returns ``(value, rows)`` in order; a record over the limit is cut in halves (one
    event always fits: it is at most ``LIMITS.max_event_bytes``).
    """
    if "features" in events[0]:
        envelope = pack_events(events, max_rows=len(events))[0]
        value = encode_binary_batch(envelope) if binary else orjson.dumps(envelope)
    else:
        value = orjson.dumps(pack_label_events(events, max_rows=len(events))[0])
    if len(value) <= limit or len(events) == 1:
        return [(value, len(events))]
    half = len(events) // 2
    return pack_records(events[:half], limit, binary=binary) + pack_records(
        events[half:], limit, binary=binary
    )
