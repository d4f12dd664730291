"""The binary batch (``prediction_batch.v2``): a columnar batch whose numeric feature
columns travel as one block of little-endian numbers instead of JSON text.

A ``prediction_batch.v1`` record of 500 predictions of 20 numeric features holds 10 000
JSON numbers; parsing them is most of its decoding (docs/performance.md, "Round
eleven"). Here those columns are bytes that numpy views in place. Everything else (ids,
times, text features, predictions, scores, segment) stays JSON, in a header with the
fields and rules of ``prediction_batch.v1`` (schemas/prediction_batch.v2.json).

Layout (integers little-endian)::

    offset 0   8 bytes   magic b"DLPBv2\\r\\n" (not JSON: a reader of single events
                         refuses it rather than misreading it)
    offset 8   4 bytes   header length H (uint32)
    offset 12  H bytes   header: a JSON object (UTF-8), as prediction_batch.v1 except
                         that in "features" a column of the block is named by its type,
                         "f8" (float64; NaN is missing) or "i8" (int64), instead of
                         an array of values, and in "scores" by "f8"; and that a text
                         feature may be coded: {"codes": "u1" or "u2", "categories":
                         [its distinct values: strings, null for missing]}
               0-7 bytes spaces, so that the block starts at a multiple of 8
    then       the block: for each "f8"/"i8" feature in the header's order, then each
               "f8" score column in the header's order, its ``count`` values (8 bytes
               each); then for each coded feature in the header's order, its ``count``
               codes (uint8 or uint16, indexes into its categories) and zero bytes up to
               a multiple of 8; nothing follows

A batch decoded from either version reads the same: the monitor's results are
identical (tests/unit/test_binary_batch.py). :func:`encode_binary_batch` puts a column
in the block only when that holds: floats (``float64``) or integers that fit int64, with
no value of another type (and score columns of floats); and codes a text column (strings
and nulls only) whose values repeat (at most half as many distinct values as rows).
Booleans, mixed columns and ``float32`` arrays (whose values the SDK writes as their
shortest decimal) stay JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.batch import check_prediction_batch
from driftline.contract.checks import _MAX_STRING, _kind, mapping_problem
from driftline.contract.columnar import CodedColumn, ColumnarBatch, plain_values
from driftline.contract.events import (
    BATCH_FORMAT,
    LIMITS,
    _loaded,
    _short,
    json_problem,
)
from driftline.errors import DecodeError, ValidationError

__all__ = [
    "BINARY_MAGIC",
    "decode_binary_batch",
    "encode_binary_batch",
    "is_binary_batch",
]

#: The first bytes of every ``prediction_batch.v2`` record.
BINARY_MAGIC = b"DLPBv2\r\n"
_PREFIX = len(BINARY_MAGIC) + 4
#: The block's column types: the header's name for each, and how numpy reads it.
_DTYPES: dict[str, np.dtype[Any]] = {"f8": np.dtype("<f8"), "i8": np.dtype("<i8")}
#: Scores are probabilities: floats only.
_SCORE_DTYPES = {"f8": _DTYPES["f8"]}
#: A coded text column's codes: the header's name for each width.
_CODE_DTYPES: dict[str, np.dtype[Any]] = {"u1": np.dtype("u1"), "u2": np.dtype("<u2")}
_NONE_TYPE = type(None)
#: A block column as the decoder reads it: (field, name, dtype, categories of a coded one).
_Entry = tuple[str, str, str, list[Any] | None]
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def is_binary_batch(value: bytes) -> bool:
    """Whether a record value is a ``prediction_batch.v2`` (by its magic bytes)."""
    return value.startswith(BINARY_MAGIC)


# --------------------------------------------------------------------------- encoding


def _block_column(col: Any) -> tuple[str, NDArray[Any]] | None:
    """``(dtype name, values)`` when ``col`` can travel in the block unchanged in
    meaning, else None (it stays JSON)."""
    if isinstance(col, np.ndarray):
        if col.ndim != 1:
            return None
        if col.dtype == np.float64:
            arr = col.astype("<f8", copy=False)
        elif col.dtype.kind in "iu" and col.dtype.itemsize <= 8:
            if col.dtype.kind == "u" and col.size and int(col.max()) > _INT64_MAX:
                return None
            return "i8", col.astype("<i8")
        else:
            return None  # float32 (written as its shortest decimal), bool, text, objects
    elif isinstance(col, list) and col:
        types = set(map(type, col))
        if types == {int}:
            if not (_INT64_MIN <= min(col) and max(col) <= _INT64_MAX):
                return None
            return "i8", np.array(col, dtype="<i8")
        if not types <= {float, type(None)} or float not in types:
            return None  # text, booleans, mixed numbers (1 and 1.0 read differently)
        arr = np.array(col, dtype="<f8")  # None becomes NaN: missing in both versions
    else:
        return None
    if np.isinf(arr).any():
        # JSON has no infinity: version 1 writes it as null (missing); so does the block.
        arr = np.where(np.isinf(arr), np.nan, arr)
    return "f8", arr


def _coded_column(col: Any) -> tuple[dict[str, Any], NDArray[Any]] | None:
    """``(header entry, codes)`` when ``col`` is text (strings and nulls only) whose
    values repeat, else None (it stays JSON)."""
    if isinstance(col, np.ndarray):
        if col.ndim != 1 or col.dtype.kind not in "OU":
            return None
        values: list[Any] = col.tolist()
    elif isinstance(col, list):
        values = col
    else:
        return None
    types = set(map(type, values))
    if str not in types or not types <= {str, _NONE_TYPE}:
        return None
    categories = list(dict.fromkeys(values))
    if 2 * len(categories) > len(values) or len(categories) > 1 << 16:
        return None  # mostly distinct (ids, free text): codes would not pay
    dtype = "u1" if len(categories) <= 1 << 8 else "u2"
    index = {v: i for i, v in enumerate(categories)}
    codes = np.fromiter(map(index.__getitem__, values), _CODE_DTYPES[dtype], len(values))
    return {"codes": dtype, "categories": categories}, codes


def _header_columns(
    columns: Mapping[str, Any],
    count: Any,
    dtypes: Mapping[str, Any],
    blocks: list[NDArray[Any]],
    coded: list[NDArray[Any]] | None = None,
) -> dict[str, Any]:
    """The header's entries for ``columns`` (features or scores): a column that can
    travel in the block as one of ``dtypes`` is named by its dtype and its values are
    appended to ``blocks``; with ``coded``, a text column that can be coded gets its
    categories in the header and its codes appended to ``coded``; the others stay as
    they are (JSON)."""
    out: dict[str, Any] = {}
    for name, col in columns.items():
        # A column of the wrong length stays JSON: the decoder words it as v1 does.
        sized = isinstance(col, list | np.ndarray) and len(col) == count
        block = _block_column(col) if sized else None
        if block is not None and block[0] in dtypes:
            out[name] = block[0]
            blocks.append(block[1])
            continue
        codes = _coded_column(col) if sized and coded is not None else None
        if codes is not None and coded is not None:
            out[name] = codes[0]
            coded.append(codes[1])
        else:
            out[name] = col
    return out


def _padded(codes: NDArray[Any]) -> bytes:
    """A coded column's codes and zero bytes up to a multiple of 8."""
    raw = codes.tobytes()
    return raw + bytes(-len(raw) % 8)


def encode_binary_batch(envelope: Mapping[str, Any]) -> bytes:
    """A ``prediction_batch.v1`` envelope (a dict of columns, lists or numpy arrays)
    as a ``prediction_batch.v2`` record value.

    The numeric feature columns that can (see the module docstring) go into the block,
    then the score columns of floats; the rest of the envelope is the JSON header,
    written as version 1 writes it.

    Examples
    --------
    >>> env = {"format": "driftline.prediction_batch", "model_id": "m",
    ...        "model_version": "1", "count": 2, "prediction_ids": ["a", "b"],
    ...        "timestamps": [5, 9], "features": {"x": [1.5, None], "plan": ["p", "q"]},
    ...        "predictions": [0, 1]}
    >>> value = encode_binary_batch(env)
    >>> batch = decode_binary_batch(value)
    >>> batch.rows()[1]["features"]
    {'x': None, 'plan': 'q'}
    """
    count = envelope.get("count")
    blocks: list[NDArray[Any]] = []
    coded: list[NDArray[Any]] = []
    head: dict[str, Any] = {
        **envelope,
        "features": _header_columns(envelope["features"], count, _DTYPES, blocks, coded),
    }
    scores = envelope.get("scores")
    if isinstance(scores, Mapping):
        head["scores"] = _header_columns(scores, count, _SCORE_DTYPES, blocks)
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    pad = -(_PREFIX + len(header)) % 8
    return b"".join(
        (
            BINARY_MAGIC,
            len(header).to_bytes(4, "little"),
            header,
            b" " * pad,
            *(b.tobytes() for b in blocks),
            *map(_padded, coded),
        )
    )


# --------------------------------------------------------------------------- decoding


def _framing(value: bytes) -> tuple[dict[str, Any], int]:
    """The header (parsed, with the checks every JSON record gets) and where the block
    starts."""
    if len(value) > LIMITS.max_batch_bytes:
        raise ValidationError(f"batch is {len(value)} bytes, over {LIMITS.max_batch_bytes}")
    if len(value) < _PREFIX or not is_binary_batch(value):
        raise DecodeError("binary batch: shorter than its 12-byte prefix")
    size = int.from_bytes(value[8:_PREFIX], "little")
    end = _PREFIX + size
    start = end + (-end % 8)
    if start > len(value):
        raise DecodeError(f"binary batch: header of {size} bytes runs past the record")
    header = value[_PREFIX:end]
    if value[end:start].strip(b" "):
        raise DecodeError("binary batch: the padding before the block is not spaces")
    try:
        obj = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"binary batch header: {json_problem(header, exc)}") from None
    return _loaded(header, obj), start


def _split(
    obj: dict[str, Any], field: str
) -> tuple[dict[str, Any], list[tuple[str, str]], list[tuple[str, str, list[Any]]]]:
    """The JSON columns of the header's ``features`` or ``scores``, its block columns
    ``(name, dtype)`` and its coded columns ``(name, dtype, categories)``; the object's
    type, size and names are checked here, by v1's rule (the JSON columns' values by
    v1's checks, later), and a coded column's entry."""
    if field not in obj:
        if field == "scores":
            return {}, [], []
        raise ValidationError(f"{field}: field required")
    group = obj[field]
    problem = mapping_problem(field, group)
    if problem:
        raise ValidationError(problem)
    if group is None:  # scores: null
        return {}, [], []
    allowed = _DTYPES if field == "features" else _SCORE_DTYPES
    block: list[tuple[str, str]] = []
    coded: list[tuple[str, str, list[Any]]] = []
    json_columns: dict[str, Any] = {}
    for name, col in group.items():
        if type(col) is str:
            if col not in allowed:
                raise ValidationError(
                    f"{field}.{_short(name)}: a column of the block must be named "
                    f"{' or '.join(map(repr, allowed))}, got {_short(col)}"
                )
            block.append((name, col))
        elif type(col) is dict and field == "features":
            coded.append((name, *_coded_entry(f"{field}.{_short(name)}", col)))
        else:
            json_columns[name] = col
    return json_columns, block, coded


def _coded_entry(where: str, entry: dict[str, Any]) -> tuple[str, list[Any]]:
    """A coded column's ``(dtype, categories)``, checked (its codes are checked with the
    block)."""
    dtype, categories = entry.get("codes"), entry.get("categories")
    if (
        len(entry) != 2
        or type(dtype) is not str
        or dtype not in _CODE_DTYPES
        or type(categories) is not list
        or not categories
    ):
        raise ValidationError(
            f'{where}: a coded column is {{"codes": "u1" or "u2", '
            f'"categories": [1 or more strings or nulls]}}'
        )
    room = 1 << (8 * _CODE_DTYPES[dtype].itemsize)
    if len(categories) > room:
        raise ValidationError(f"{where}: {len(categories)} categories, {dtype!r} codes hold {room}")
    types = set(map(type, categories))
    if not types <= {str, _NONE_TYPE}:
        bad = next(c for c in categories if type(c) not in (str, _NONE_TYPE))
        raise ValidationError(f"{where}: a category must be a string or null, got {_kind(bad)}")
    if str in types and max(len(c) for c in categories if type(c) is str) > _MAX_STRING:
        raise ValidationError(f"{where}: string is longer than {_MAX_STRING} characters")
    return dtype, categories


def _block_columns(
    value: bytes,
    start: int,
    count: int,
    block: list[tuple[str, str, str]],
    types: dict[str, frozenset[type]],
) -> list[NDArray[Any]]:
    """The block's columns (``(field, name, dtype)`` each; its size checked by the
    caller) as read-only views of ``value``, checked. The Python types a JSON feature
    column of the same values would hold go into ``types``."""
    if all(dtype == "f8" for _, _, dtype in block):
        # One view and one pass of each check for the whole block (the common case).
        mat = np.frombuffer(value, _DTYPES["f8"], count * len(block), start)
        mat = mat.reshape(len(block), count)
        cols = list(mat)
    else:
        cols = [
            np.frombuffer(value, _DTYPES[dtype], count, start + 8 * count * i)
            for i, (_, _, dtype) in enumerate(block)
        ]
        mat = None
    floats = [i for i, (_, _, dtype) in enumerate(block) if dtype == "f8"]
    if floats:
        sub = mat if mat is not None else np.stack([cols[i] for i in floats])
        with np.errstate(invalid="ignore"):
            # NaN (missing) passes both comparisons; an infinity or a score outside
            # 0..1 fails one.
            low: list[bool] = np.any(sub < 0, axis=1).tolist()
            high: list[bool] = np.any(sub > 1, axis=1).tolist()
        infinite: list[bool] = np.isinf(sub).any(axis=1).tolist()
        gaps: list[bool] = np.isnan(sub).any(axis=1).tolist()
        for j, i in enumerate(floats):
            field, name, _ = block[i]
            where = f"{field}.{_short(name)}"
            if field == "scores" and (low[j] or high[j]):
                raise ValidationError(f"{where}: probability outside 0..1")
            if infinite[j]:
                raise ValidationError(f"{where}: value is infinite")
            if field == "features":
                types[name] = _FLOAT_OR_NONE if gaps[j] else _FLOAT
    for field, name, dtype in block:
        if field == "features" and dtype == "i8":
            types[name] = _INT
    return cols


def _code_bytes(count: int, dtype: str) -> int:
    """The bytes a coded column of ``count`` rows takes in the block (padding included)."""
    raw = count * _CODE_DTYPES[dtype].itemsize
    return raw + (-raw % 8)


def _coded_column_at(
    value: bytes,
    at: int,
    count: int,
    name: str,
    dtype: str,
    categories: list[Any],
    nbytes: int,
    types: dict[str, frozenset[type]],
) -> CodedColumn:
    """The coded column whose codes start at ``at``, checked; the Python types its
    values hold (those of the categories it uses) go into ``types``."""
    where = f"features.{_short(name)}"
    codes = np.frombuffer(value, _CODE_DTYPES[dtype], count, at)
    used = np.bincount(codes, minlength=len(categories))
    if len(used) > len(categories):
        raise ValidationError(
            f"{where}: code {int(codes.max())} is past its {len(categories)} categories"
        )
    end = at + count * _CODE_DTYPES[dtype].itemsize
    if value[end : at + nbytes].strip(b"\0"):
        raise DecodeError(f"binary batch: {where}: the padding after its codes is not zero bytes")
    types[name] = frozenset(type(categories[i]) for i in np.flatnonzero(used).tolist())
    return CodedColumn(codes, categories)


_FLOAT: frozenset[type] = frozenset({float})
_FLOAT_OR_NONE: frozenset[type] = frozenset({float, type(None)})
_INT: frozenset[type] = frozenset({int})


def decode_binary_batch(value: bytes, *, features: bool = True) -> ColumnarBatch:
    """Decode and check one ``prediction_batch.v2`` record.

    Refuses what :func:`driftline.contract.batch.decode_prediction_batch_fast` refuses
    of the same batch in version 1, with the same reasons, and a broken layout (a
    block of the wrong size, an infinite value) with its own. With ``features=False``
    (the label joiner, which reads no feature values) the block's size is checked but
    not its feature values, the batch returned has no features, and its scores are
    lists (as v1's).

    Raises
    ------
    DecodeError, ValidationError, UnsupportedVersion
        The record breaks the contract.
    """
    obj, start = _framing(value)
    if obj.get("format") != BATCH_FORMAT or type(obj.get("format")) is not str:
        raise ValidationError(
            f"format: must be {BATCH_FORMAT!r}" if "format" in obj else "format: field required"
        )
    json_features, feature_block, coded = _split(obj, "features")
    json_scores, score_block, _ = _split(obj, "scores")
    named_features, named_scores = obj["features"], obj.get("scores")
    obj["features"] = json_features if features else {}
    if named_scores is not None:
        obj["scores"] = json_scores or None
    types: dict[str, frozenset[type]] = {}
    reason = check_prediction_batch(obj, types)
    if reason is not None:
        raise ValidationError(reason)
    count: int = obj["count"]
    block = [("features", n, d) for n, d in feature_block] + [
        ("scores", n, d) for n, d in score_block
    ]
    code_sizes = [_code_bytes(count, d) for _, d, _ in coded]
    size = 8 * count * len(block) + sum(code_sizes)
    if len(value) - start != size:
        columns = f"{len(block) + len(coded)} columns of {count} rows"
        raise DecodeError(
            f"binary batch: the block holds {len(value) - start} bytes, its {columns} need {size}"
        )
    codes_at = start + 8 * count * len(block)
    if not features:
        feature_block_size = 8 * count * len(feature_block)
        block = block[len(feature_block) :]
        start += feature_block_size
    cols = _block_columns(value, start, count, block, types) if block else []
    read: dict[tuple[str, str], Any] = {
        (field, name): col for (field, name, _), col in zip(block, cols, strict=True)
    }
    if features:
        for (name, dtype, categories), nbytes in zip(coded, code_sizes, strict=True):
            read["features", name] = _coded_column_at(
                value, codes_at, count, name, dtype, categories, nbytes, types
            )
            codes_at += nbytes
    # In the header's order: the batch reads as its version 1 would (the names of
    # unknown features, first seen first, included).
    if features and (feature_block or coded):
        obj["features"] = {
            name: read["features", name] if type(col) is str or type(col) is dict else col
            for name, col in named_features.items()
        }
    if score_block:
        assert named_scores is not None  # it has block columns
        obj["scores"] = {
            name: (read["scores", name] if features else plain_values(read["scores", name]))
            if type(col) is str
            else col
            for name, col in named_scores.items()
        }
    return ColumnarBatch.from_dict(obj, types)
