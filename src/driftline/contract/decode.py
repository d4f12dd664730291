"""Decoding fetched Kafka records into checked events and columns (the worker's step).

:func:`decode_records` decodes a fetched batch of Kafka records, checks the single
events in bulk (the common all-valid case with a few C-level passes per column, falling
back to the exact per-event check when anything looks wrong, so the verdicts are always
:func:`driftline.contract.checks.check_prediction`'s) and returns an
:class:`~driftline.contract.columnar.EventFrame`, a plain list of the valid items that
also carries the columns already built, which the monitor core reuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import chain, compress, repeat
from operator import is_, is_not, itemgetter, methodcaller
from typing import Any

import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.batch import (
    check_prediction_batch,
    decode_prediction_batch_fast,
    ids_column_problem,
)
from driftline.contract.binary_batch import decode_binary_batch, is_binary_batch
from driftline.contract.checks import (
    check_prediction,
    decode_prediction_fast,
    model_id_ok,
    names_are_valid,
)
from driftline.contract.columnar import (
    _FEATURE_TYPES,
    _NONE,
    _NUMBER,
    _TEXT_OR_NUMBER,
    ColumnarBatch,
    Columns,
    EventColumns,
    EventFrame,
    _get_scores,
    _get_segment,
    group_items,
)
from driftline.contract.events import (
    BATCH_FORMAT,
    LIMITS,
    RFC3339_PATTERN,
    SCHEMA_VERSION,
    duplicate_key,
)
from driftline.contract.keys import KeyTuple
from driftline.contract.typed import decode_typed
from driftline.errors import ContractError, DecodeError, ValidationError

__all__ = ["decode_join_record", "decode_record", "decode_records"]

# --------------------------------------------------------------------------- decoding


def decode_record(value: bytes | None) -> dict[str, Any] | ColumnarBatch:
    """Decode and check one record: a single event (dict) or a batch.

    A record is a batch when it is a JSON object whose ``format`` is
    :data:`driftline.contract.events.BATCH_FORMAT` (``prediction_batch.v1``) or starts
    with :data:`~driftline.contract.binary_batch.BINARY_MAGIC` (``prediction_batch.v2``);
    anything else is read as a single event.

    Raises
    ------
    DecodeError, ValidationError, UnsupportedVersion
        The record breaks the contract (exactly as
        :func:`driftline.contract.checks.decode_prediction_fast` for a single event and
        :func:`driftline.contract.batch.decode_prediction_batch_fast` for a batch).
    """
    if value is None:
        raise DecodeError("record has no value")
    if is_binary_batch(value):
        return decode_binary_batch(value)
    # Cheap test on the bytes first: only a record naming the batch format can be one.
    if b'"driftline.prediction_batch"' not in value:
        return decode_prediction_fast(value)
    if len(value) > LIMITS.max_batch_bytes:  # refused as a batch: names the batch limit
        return ColumnarBatch.from_dict(decode_prediction_batch_fast(value))
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return decode_prediction_fast(value)  # words the refusal
    if type(obj) is not dict or obj.get("format") != BATCH_FORMAT:
        return decode_prediction_fast(value)
    version = obj.get("schema_version")
    if type(version) is int and version > SCHEMA_VERSION:
        return ColumnarBatch.from_dict(decode_prediction_batch_fast(value))  # raises
    if duplicate_key(value, obj) is not None:
        return ColumnarBatch.from_dict(decode_prediction_batch_fast(value))  # raises
    types: dict[str, frozenset[type]] = {}
    reason = check_prediction_batch(obj, types)
    if reason is not None:
        raise ValidationError(reason)
    return ColumnarBatch.from_dict(obj, types)


class _Features(msgspec.Struct):
    """A record's ``features`` left as its JSON text: msgspec checks the text's syntax
    while skipping it (and the other fields), and builds no object of it."""

    features: msgspec.Raw = msgspec.Raw()


_features = msgspec.json.Decoder(_Features).decode


_FEATURES_KEY = b'"features":'
_JSON_SPACE = (b" ", b"\t", b"\n", b"\r")


def _text_at(value: bytes, features: msgspec.Raw) -> int:
    """Where a record's ``features`` text starts in it, or -1.

    Looked for after its key first (a comparison of the text, where a search for 100 kB
    in the record would cost more than the rest of the decoding); any other spelling is
    searched for.
    """
    at = value.find(_FEATURES_KEY)
    if at >= 0:
        at += len(_FEATURES_KEY)
        while value[at : at + 1] in _JSON_SPACE:
            at += 1
        if value.startswith(features, at):
            return at
    return value.find(features)


def decode_join_record(value: bytes | None) -> dict[str, Any] | ColumnarBatch:
    """Decode and check one record for a reader of everything but its features.

    The label joiner reads a prediction's id, time, model, prediction, scores and
    segment, never its features, which are about half of a record's bytes and most of
    its values. Here ``features`` must be a JSON object of valid JSON, and the rest of
    the record must pass :func:`decode_record`'s checks; the features' values are not
    parsed, and the event or batch returned has none.

    A record refused only for its features' values (a single event or a batch) is
    therefore joined: its predictions were made, and their labels are real. The monitor
    still refuses it, with its reason, to its dead-letter topic. Every record this
    refuses is refused by :func:`decode_record`, with its exact reason.

    Raises
    ------
    DecodeError, ValidationError, UnsupportedVersion
        As :func:`decode_record`, for the record's fields other than feature values.
    """
    if value is None:
        return decode_record(value)
    if is_binary_batch(value):
        return decode_binary_batch(value, features=False)
    batch = _MARK in value
    if len(value) > (LIMITS.max_batch_bytes if batch else LIMITS.max_event_bytes):
        return decode_record(value)
    try:
        features = _features(value).features
    except msgspec.DecodeError:  # not an object, not JSON, features not JSON: worded there
        return decode_record(value)
    at = _text_at(value, features) if memoryview(features)[:1].tobytes() == b"{" else -1
    if at < 0:
        return decode_record(value)
    # The record with ``{}`` for its features: every check but the features' runs on it,
    # the duplicate-key count included.
    rest = b"".join((value[:at], b"{}", value[at + len(features) :]))
    if not batch:
        try:
            return decode_prediction_fast(rest)
        except ContractError:
            return decode_record(value)  # refused there, with its exact reason
    try:
        obj = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return decode_record(value)
    if (
        type(obj) is not dict
        or obj.get("format") != BATCH_FORMAT
        or duplicate_key(rest, obj) is not None
        or check_prediction_batch(obj) is not None
    ):
        return decode_record(value)
    return ColumnarBatch.from_dict(obj)


def decode_records(
    values: Sequence[bytes | None],
) -> tuple[EventFrame, list[tuple[int, ContractError]]]:
    """Decode a fetched batch of record values, in order.

    Returns the valid items (an :class:`EventFrame` of events and
    :class:`ColumnarBatch`, with their columns built when possible) and
    ``(index, error)`` for each refused record, each error exactly what
    :func:`decode_record` raises for it.

    Single events are decoded by the typed decoders of
    :mod:`driftline.contract.typed` (parse and contract check in one C-level pass
    per record, no dict; the events read like the dicts :func:`decode_record` gives,
    equal to them). Records those refuse, and fetches holding columnar batches, take
    the path of :func:`_decode_untyped`.
    """
    typed = decode_typed(values, decode_record, _decode_untyped)
    if typed is not None:
        return typed
    return _decode_untyped(values)


def _decode_untyped(
    values: Sequence[bytes | None],
) -> tuple[EventFrame, list[tuple[int, ContractError]]]:
    """:func:`decode_records` without typed decoding: ``orjson`` and bulk checks.

    Single events are checked in bulk (:func:`_bulk_columns`): when every rule holds
    for every event, which a few C-level passes per column establish, nothing is
    checked event by event; otherwise each event gets the exact per-event check.
    """
    loads = orjson.loads
    limit = LIMITS.max_event_bytes
    fast = _all_singles(values)
    if fast is not None:
        groups = _bulk_columns(fast)
        if groups is not None and _keys_unique(values, fast):
            frame = EventFrame(fast)
            frame.groups = groups
            return frame, []
    items: list[Any] = []
    index: list[int] = []
    bad: list[tuple[int, ContractError]] = []
    batches = False
    for i, v in enumerate(values):
        if v is not None and len(v) <= limit and b'"driftline.prediction_batch"' not in v:
            try:
                obj = loads(v)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict:
                items.append(obj)
                index.append(i)
                continue
        try:
            item = decode_record(v)
        except ContractError as exc:
            bad.append((i, exc))
            continue
        batches = batches or isinstance(item, ColumnarBatch)
        items.append(item)
        index.append(i)
    if not batches:
        groups = _bulk_columns(items)
        if groups is not None and _keys_unique([values[i] for i in index], items):
            frame = EventFrame(items)
            frame.groups = groups
            return frame, bad
    frame = EventFrame()
    singles = [(it, i) for it, i in zip(items, index, strict=True) if type(it) is dict]
    if (
        batches
        and singles
        and _bulk_columns([it for it, _ in singles]) is not None
        and _keys_unique([values[i] for _, i in singles], [it for it, _ in singles])
    ):
        frame.extend(items)  # all valid; the core groups the mix itself
        return frame, bad
    for item, i in zip(items, index, strict=True):
        if type(item) is dict and not (
            _prediction_ok(item) and duplicate_key(values[i] or b"", item) is None
        ):
            v = values[i]
            assert v is not None
            try:
                item = decode_prediction_fast(v)  # raises: words the refusal
            except ContractError as exc:
                bad.append((i, exc))
                continue
        frame.append(item)
    bad.sort(key=lambda p: p[0])
    return frame, bad


_MARK = b'"driftline.prediction_batch"'


def _all_singles(values: Sequence[bytes | None]) -> list[dict[str, Any]] | None:
    """The decoded objects when every value is a JSON object small enough for a single
    event and none names the batch format (C-level passes); else None."""
    try:
        if not values or max(map(len, values)) > LIMITS.max_event_bytes:  # type: ignore[arg-type]
            return None
        if any(map(bytes.__contains__, values, repeat(_MARK))):  # type: ignore[arg-type]
            return None
        objs = list(map(orjson.loads, values))  # type: ignore[arg-type]
    except (TypeError, orjson.JSONDecodeError):  # a None value, a value that is not JSON
        return None
    return objs if set(map(type, objs)) == {dict} else None


def _prediction_ok(obj: dict[str, Any]) -> bool:
    version = obj.get("schema_version")
    if type(version) is int and version > SCHEMA_VERSION:
        return False
    return check_prediction(obj) is None


# ---------------------------------------------------------------------- bulk checking

_REQUIRED = itemgetter(
    "prediction_id", "model_id", "model_version", "timestamp", "features", "prediction"
)
_MAX_ID = LIMITS.max_id_length
_MAX_TIMESTAMP = LIMITS.max_timestamp_ms
_rfc3339_fullmatch = re.compile(RFC3339_PATTERN).fullmatch
_MAX_STRING = LIMITS.max_string_value_length


def _texts(values: Sequence[Any]) -> Iterator[Any]:
    """The values whose type is exactly ``str`` (C-level filtering)."""
    return compress(values, map(is_, map(type, values), repeat(str)))


def _model_ids_ok(col: Sequence[Any]) -> bool:
    return (
        set(map(type, col)) == {str}
        and min(map(len, col)) > 0
        and max(map(len, col)) <= _MAX_ID
        and all(map(model_id_ok, set(col)))
    )


_get_features = itemgetter("features")


def _keys_unique(values: Sequence[Any], objs: list[dict[str, Any]]) -> bool:
    """Whether no record repeats a key in one object, proved by counting colons over the
    whole fetch (see :func:`driftline.contract.events.duplicate_key`); False means "check
    each record", never a verdict. Call after :func:`_bulk_columns` accepted ``objs``."""
    joined = b"".join(values)
    if b"\\" in joined:
        return False
    keys = sum(map(len, objs)) + sum(map(len, map(_get_features, objs)))
    keys += sum(map(len, filter(None, map(_get_scores, objs))))
    keys += sum(map(len, filter(None, map(_get_segment, objs))))
    # numpy counts a fetch's colons ~5x faster than bytes.count (bench: 2.7 MB).
    colons = int(np.count_nonzero(np.frombuffer(joined, np.uint8) == _COLON))
    excess = colons - keys  # colons inside strings, or repeated keys
    if excess == 0:
        return True
    texts = list(chain.from_iterable(map(_TEXTS, objs)))
    return excess == "".join(_texts(texts)).count(":")


_COLON = ord(":")
_TEXTS = itemgetter("prediction_id", "model_id", "model_version", "timestamp", "prediction")


def _bulk_columns(objs: list[dict[str, Any]]) -> dict[KeyTuple, list[Columns]] | None:
    """Check decoded single events in bulk; their columns if all are valid, else None.

    Every rule of :func:`driftline.contract.checks.check_prediction` is checked column-wise with
    C-level passes; None means "look at each event" (some rule may fail), never a
    verdict, so the per-event check stays the only authority on refusals.
    """
    if not objs:
        return {}
    try:
        tops = list(map(_REQUIRED, objs))
    except (KeyError, TypeError):
        return None
    pid, mid, mver, ts, feats, pred = zip(*tops, strict=True)
    if not (ids_column_problem(pid) is None and _model_ids_ok(mid) and _model_ids_ok(mver)):
        return None
    versions = list(map(_get_schema_version, objs))
    if not (set(map(type, versions)) <= {_NONE, int} and set(versions) <= _VERSIONS_OK):
        return None
    ts_types = set(map(type, ts))
    if not ts_types <= {int, str}:
        return None
    if int in ts_types:
        ints = list(compress(ts, map(is_, map(type, ts), repeat(int))))
        if min(ints) < 0 or max(ints) > _MAX_TIMESTAMP:
            return None
    if str in ts_types and not all(map(_rfc3339_fullmatch, _texts(ts))):
        return None
    pred_types = set(map(type, pred))
    if not pred_types <= _TEXT_OR_NUMBER:
        return None
    if str in pred_types and max(map(len, _texts(pred))) > _MAX_STRING:
        return None
    if set(map(type, feats)) != {dict}:
        return None
    scores = list(map(_get_scores, objs))
    conf: NDArray[np.float64] | None = None
    if any(s is not None for s in scores):
        ok, conf = _scores_ok(scores)
        if not ok:
            return None
    segments = list(map(_get_segment, objs))
    if any(s is not None for s in segments) and not _segments_ok(segments):
        return None
    if len(set(mid)) == 1 and len(set(mver)) == 1 and not any(segments):
        # One stream (the common case): hand over what was read already.
        cols = EventColumns(objs, feats)
        cols._timestamps, cols._predictions, cols._confidence = ts, pred, conf
        groups: dict[KeyTuple, list[Columns]] = {(mid[0], mver[0], ""): [cols]}
    else:
        groups = group_items(objs)
    for parts in groups.values():
        for part in parts:
            assert isinstance(part, EventColumns)
            if not _features_ok(part):
                return None
    return groups


# With the types limited to None and int (1.0 and True are equal to 1 and hash alike,
# so the type test must come first), the values must be known versions.
_VERSIONS_OK = frozenset({None, *range(1, SCHEMA_VERSION + 1)})
_get_schema_version = methodcaller("get", "schema_version")


def _features_ok(cols: EventColumns) -> bool:
    keys = cols.feature_names
    if keys is None or len(keys) > LIMITS.max_features or not names_are_valid(keys):
        return False
    for name in keys:
        types = cols.types(name)
        if not types <= _FEATURE_TYPES:
            return False
        if str in types and max(map(len, _texts(cols.column(name)))) > _MAX_STRING:
            return False
    return True


def _present(values: list[Any]) -> list[Any]:
    return list(compress(values, map(is_not, values, repeat(None))))


def _scores_ok(scores: list[Any]) -> tuple[bool, NDArray[np.float64] | None]:
    """Whether the scores are valid, and (when every event has scores with the same
    number of classes) each event's top score, read off the same pass."""
    present = _present(scores)
    if set(map(type, present)) != {dict}:
        return False, None
    sizes = set(map(len, present))
    if min(sizes) < 1 or max(sizes) > LIMITS.max_classes:
        return False, None
    names: set[str] = set().union(*present)
    if not names_are_valid(names):
        return False, None
    values = list(chain.from_iterable(map(dict.values, present)))
    if not set(map(type, values)) <= _NUMBER:
        return False, None
    if not (min(values) >= 0 and max(values) <= 1):
        return False, None
    if len(sizes) != 1 or len(present) != len(scores):
        return True, None
    table = np.array(values, dtype=np.float64).reshape(len(scores), sizes.pop())
    top: NDArray[np.float64] = table.max(axis=1)
    return True, top


def _segments_ok(segments: list[Any]) -> bool:
    present = _present(segments)
    if set(map(type, present)) != {dict}:
        return False
    if max(map(len, present)) > LIMITS.max_segment_keys:
        return False
    names: set[str] = set().union(*present)
    if not names_are_valid(names):
        return False
    values = list(chain.from_iterable(map(dict.values, present)))
    if not values:
        return True
    if set(map(type, values)) != {str}:
        return False
    return min(map(len, values)) > 0 and max(map(len, values)) <= LIMITS.max_segment_value_length
