"""Prediction data column by column: the batched envelope and fast column extraction.

The monitor's core (:mod:`driftline.core.fastloop`) works on columns: one float64 array per
numeric feature, one array of category codes per categorical feature. Events arrive in
two shapes and both end up as :class:`Columns` of one stream (model, version, segment)
in partition order:

* single prediction events (plain dicts, the JSON wire form): :class:`EventColumns`
  reads each feature across the events with one ``operator.itemgetter`` call per event
  and a transposition (``zip``) instead of one ``dict.get`` per value, and works out the
  Python types of each column in one C-level pass, so a column of numbers becomes a
  float64 array without a per-value Python test;
* columnar batches (:data:`driftline.contract.events.BATCH_FORMAT`, many predictions per Kafka
  message, features as arrays): :class:`ColumnarBatch` / :class:`BatchColumns` hand the
  decoded arrays over as they are.

Both give the core exactly the values it would have read from the equivalent single
events (``tests/unit/test_columnar.py`` checks alert ids and states for the same
events sent both ways).

:func:`decode_records` is the worker's decoding step: it decodes a fetched batch of
Kafka records, checks the single events in bulk (the common all-valid case with a few
C-level passes per column, falling back to the exact per-event check when anything
looks wrong, so the verdicts are always :func:`driftline.contract.checks.check_prediction`'s)
and returns an :class:`EventFrame`, a plain list of the valid items that also carries
the columns already built, which :func:`driftline.core.fastloop.process_batch` reuses.
:func:`pack_events` turns rows into batched envelopes (what the SDK's ``send_batch``
sends).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from itertools import chain, islice, repeat
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.events import (
    BATCH_FORMAT,
    SCHEMA_VERSION,
    event_time_ms,
)
from driftline.contract.keys import KeyTuple, segment_key

__all__ = [
    "BINARY_CLASS_ALIASES",
    "BatchColumns",
    "ColumnarBatch",
    "Columns",
    "EventColumns",
    "EventFrame",
    "CodedColumn",
    "category_codes",
    "category_value",
    "group_items",
    "label_class",
    "numeric_column",
    "pack_events",
    "plain_values",
    "row_count",
    "stream_counts",
]

_NONE = type(None)
_NUMBER = frozenset({float, int})
_NUMBER_OR_NONE = frozenset({float, int, _NONE})
_TEXT_OR_NONE = frozenset({str, _NONE})
_TEXT_OR_NUMBER = frozenset({str, int, float})
#: Python types a feature value may have on the wire (what orjson produces).
_FEATURE_TYPES = frozenset({_NONE, bool, int, float, str})

_get_features = itemgetter("features")
_get_timestamp = itemgetter("timestamp")
_get_prediction = itemgetter("prediction")
_get_model = itemgetter("model_id")
_get_version = itemgetter("model_version")
_get_scores = methodcaller("get", "scores")
_get_segment = methodcaller("get", "segment")


# --------------------------------------------------------------------------- columns


def category_value(v: object) -> str | None:
    """How a raw value is seen as a category (booleans as ``true``/``false``)."""
    if v is None:
        return None
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


#: The names one binary class goes by, as :func:`category_value` gives them: a label's
#: name, and the names of the predictions' class it stands for (a label pipeline that
#: writes booleans for a model predicting 0/1, or sends 1.0 for 1).
BINARY_CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "true": ("1", "1.0"),
    "false": ("0", "0.0"),
    "1": ("true", "1.0"),
    "0": ("false", "0.0"),
    "1.0": ("1", "true"),
    "0.0": ("0", "false"),
    "True": ("true", "1", "1.0"),  # Python's text of a boolean
    "False": ("false", "0", "0.0"),
}


def label_class(name: str, classes: Container[str]) -> str:
    """The class of ``classes`` (the predictions' names) a label's class ``name`` is:
    itself, or the first of its :data:`BINARY_CLASS_ALIASES` among them, or itself."""
    if name in classes:
        return name
    return next((a for a in BINARY_CLASS_ALIASES.get(name, ()) if a in classes), name)


def numeric_column(
    values: Sequence[Any], types: AbstractSet[type]
) -> tuple[NDArray[np.float64], NDArray[np.bool_] | None]:
    """A feature column as float64, and where a value was present but not a number.

    ``int`` and ``float`` values are kept, ``None`` (missing) and anything else become
    NaN; the second array flags the latter (a type mismatch), or is ``None`` when there
    is none. ``types`` is the set of Python types in ``values``: with only numbers
    (and ``None``) the conversion is one C-level call.
    """
    n = len(values)
    if types <= _NUMBER_OR_NONE:
        arr = np.array(values, dtype=np.float64)  # None becomes NaN
        if float not in types or not (_NONE in types or np.isnan(arr).any()):
            return arr, None
        # Only a float NaN (never JSON, but a Python caller may pass one) is a mismatch.
        bad = [i for i in np.flatnonzero(np.isnan(arr)).tolist() if values[i] is not None]
    else:
        arr = np.fromiter(
            (v if (type(v) is float or type(v) is int) else math.nan for v in values),
            dtype=np.float64,
            count=n,
        )
        bad = [i for i in np.flatnonzero(np.isnan(arr)).tolist() if values[i] is not None]
    if not bad:
        return arr, None
    mism = np.zeros(n, dtype=np.bool_)
    mism[bad] = True
    return arr, mism


def category_codes(
    values: Sequence[Any],
    types: AbstractSet[type],
    lookup: Mapping[str | None, int],
    other: int,
    *,
    track: bool = True,
) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
    """Category codes of a column: ``lookup[category]``, ``other`` if unknown, -1 missing.

    A value is seen as :func:`driftline.contract.columnar.category_value` sees it (booleans as
    ``true``/``false``, numbers as their text). ``lookup`` maps the reference's
    categories to their index and ``None`` to -1. With ``track`` the second array flags
    values that are neither text, boolean nor missing (a type mismatch).
    """
    n = len(values)
    if types <= _TEXT_OR_NONE:
        return np.fromiter(map(lookup.get, values, repeat(other)), np.int64, n), None
    if not track and types <= _TEXT_OR_NUMBER:
        texts = map(str, values)
        return np.fromiter(map(lookup.get, texts, repeat(other)), np.int64, n), None
    codes = np.empty(n, dtype=np.int64)
    bad: list[int] = []
    for i, v in enumerate(values):
        c = category_value(v)
        codes[i] = -1 if c is None else lookup.get(c, other)
        if track and v is not None and not isinstance(v, str | bool):
            bad.append(i)
    if not bad:
        return codes, None
    mism = np.zeros(n, dtype=np.bool_)
    mism[bad] = True
    return codes, mism


def _confidence(scores: Sequence[Any]) -> NDArray[np.float64]:
    """The top score of each event (NaN without scores), as the core reads it."""
    n = len(scores)
    try:
        return np.fromiter(map(max, map(dict.values, scores)), np.float64, n)
    except (TypeError, ValueError):  # None, an empty or non-dict mapping: one by one
        return np.fromiter(
            (max(s.values()) if s else math.nan for s in scores), np.float64, count=n
        )


def _first_names(names: Iterable[str], limit: int) -> list[str]:
    """The distinct ``names``, first seen first, stopping at ``limit + 1``."""
    out: dict[str, None] = {}
    for n in names:
        out[n] = None
        if len(out) > limit:
            break
    return list(out)


class CodedColumn(Sequence[Any]):
    """A text column of a binary batch (:mod:`driftline.contract.binary_batch`): its
    distinct values once (``categories``: strings, or None for missing) and a code per
    row (``codes``, indexes into them). It reads as the list of its values; the core
    turns it into category codes by looking up each distinct value once
    (:meth:`BatchColumns.codes`)."""

    __slots__ = ("_values", "categories", "codes")

    def __init__(self, codes: NDArray[np.unsignedinteger[Any]], categories: list[Any]) -> None:
        self.codes = codes
        self.categories = categories
        self._values: list[Any] | None = None

    def values(self) -> list[Any]:
        """The column's values, one per row (made once, by one numpy take)."""
        if self._values is None:
            table = np.empty(len(self.categories), dtype=object)
            table[:] = self.categories
            self._values = table[self.codes].tolist()
        return self._values

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: Any) -> Any:
        return self.values()[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def __repr__(self) -> str:
        return f"CodedColumn({len(self.codes)} rows, {len(self.categories)} categories)"


def plain_values(col: Sequence[Any] | NDArray[Any]) -> Sequence[Any]:
    """A feature column as its JSON values: a numpy column (a binary batch's block,
    :mod:`driftline.contract.binary_batch`) as a list of Python numbers, NaN as
    ``None`` (missing), a :class:`CodedColumn` as its values; any other column as it
    is."""
    if isinstance(col, CodedColumn):
        return col.values()
    if not isinstance(col, np.ndarray):
        return col
    values: list[Any] = col.tolist()
    if col.dtype.kind == "f" and np.isnan(col).any():
        values = [None if v != v else v for v in values]  # NaN is the only v != v
    return values


class Columns:
    """The events of one stream in partition order, read column by column.

    Subclasses provide the raw columns; the types of each column are worked out once.
    Every value is what the equivalent single event would carry: a feature absent from
    an event reads as ``None``.
    """

    n: int

    def __init__(self) -> None:
        self._types: dict[str, frozenset[type]] = {}

    def column(self, name: str) -> Sequence[Any]:
        """The values of feature ``name``, one per event (``None`` where absent)."""
        raise NotImplementedError

    def types(self, name: str) -> frozenset[type]:
        """The Python types found in :meth:`column` (cached)."""
        found = self._types.get(name)
        if found is None:
            found = self._types[name] = frozenset(map(type, self.column(name)))
        return found

    def numeric(self, name: str) -> tuple[NDArray[np.float64], NDArray[np.bool_] | None]:
        """:func:`numeric_column` of feature ``name``: a column of numbers only is read
        into the array in one pass, without a list of it first."""
        types = self.types(name)
        if types <= _NUMBER:
            arr = np.fromiter(self._values(name), np.float64, self.n)
            if float not in types or not np.isnan(arr).any():
                return arr, None
        return numeric_column(self.column(name), types)

    def codes(
        self, name: str, lookup: Mapping[str | None, int], other: int
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
        """:func:`category_codes` of feature ``name`` (type mismatches tracked)."""
        return category_codes(self.column(name), self.types(name), lookup, other)

    def _values(self, name: str) -> Iterable[Any]:
        """The values of :meth:`column`, in order (an iterable is enough)."""
        return self.column(name)

    def unknown(self, expected: AbstractSet[str]) -> NDArray[np.int64] | None:
        """Per event, how many of its features are not in ``expected`` (None: none)."""
        raise NotImplementedError

    def unknown_names(self, expected: AbstractSet[str], limit: int) -> list[str]:
        """The names of the features not in ``expected``, first seen first; at most
        ``limit + 1`` (one more than ``limit`` says there are more)."""
        raise NotImplementedError

    def timestamps(self) -> Sequence[int | str]:
        """Event times as sent (epoch ms or RFC 3339 text)."""
        raise NotImplementedError

    def predictions(self) -> Sequence[Any]:
        """The predictions."""
        raise NotImplementedError

    def confidence(self) -> NDArray[np.float64]:
        """The top score of each event; NaN where an event has no scores."""
        raise NotImplementedError

    def has_scores(self) -> bool:
        """Whether any event may carry scores."""
        return True

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Events ``start:stop`` as single prediction events (plain dicts)."""
        raise NotImplementedError

    def tail(self, start: int) -> Columns:
        """The events from ``start`` on."""
        raise NotImplementedError


class EventColumns(Columns):
    """Columns over single events (mappings as :func:`orjson.loads` returns them).

    When every event carries the same feature names (the common case: one producer,
    one model), the columns come from one ``itemgetter`` call per event and a ``zip``;
    otherwise each requested column is read with ``dict.get`` per event.
    """

    def __init__(
        self,
        events: Sequence[Mapping[str, Any]],
        features: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.events = events
        self.n = len(events)
        self._feats: Sequence[Mapping[str, Any]] = (
            list(map(_get_features, events)) if features is None else features
        )
        # Filled by the bulk check when it computed them already (one stream only).
        self._timestamps: Sequence[int | str] | None = None
        self._predictions: Sequence[Any] | None = None
        self._confidence: NDArray[np.float64] | None = None
        self._keys: tuple[str, ...] | None = None
        self._cols: dict[str, Sequence[Any]] = {}
        self._absent: tuple[None, ...] | None = None
        self._uniform()

    def _uniform(self) -> None:
        feats = self._feats
        if not feats:
            self._keys = ()
            return
        keys = tuple(feats[0])
        if len(set(map(len, feats))) != 1:
            return
        try:
            # One C-level pass per column (faster than transposing row tuples).
            cols: dict[str, Sequence[Any]] = {k: list(map(itemgetter(k), feats)) for k in keys}
        except KeyError:  # same sizes, other names: read column by column
            return
        # Every event has len(keys) features, all of them named in keys: the same names.
        self._keys = keys
        self._cols = cols

    @property
    def uniform(self) -> bool:
        """Whether every event has the same feature names."""
        return self._keys is not None

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """The feature names shared by every event (None when they differ)."""
        return self._keys

    def column(self, name: str) -> Sequence[Any]:
        """The values of feature ``name``, one per event (``None`` where absent)."""
        col = self._cols.get(name)
        if col is not None:
            return col
        if self._keys is not None:  # uniform and absent everywhere
            if self._absent is None:
                self._absent = (None,) * self.n
            return self._absent
        col = self._cols[name] = [f.get(name) for f in self._feats]
        return col

    def unknown(self, expected: AbstractSet[str]) -> NDArray[np.int64] | None:
        """Per event, how many of its features are not in ``expected`` (None: none)."""
        if self._keys is not None:
            extra = sum(1 for k in self._keys if k not in expected)
            return np.full(self.n, extra, dtype=np.int64) if extra else None
        counts = [0 if f.keys() == expected else len(f.keys() - expected) for f in self._feats]
        return np.asarray(counts, dtype=np.int64) if any(counts) else None

    def unknown_names(self, expected: AbstractSet[str], limit: int) -> list[str]:
        """The names of the features not in ``expected``, first seen first (at most
        ``limit + 1``)."""
        if self._keys is not None:
            return [k for k in self._keys if k not in expected][: limit + 1]
        return _first_names((k for f in self._feats for k in f if k not in expected), limit)

    def timestamps(self) -> Sequence[int | str]:
        """Event times as sent."""
        if self._timestamps is not None:
            return self._timestamps
        return list(map(_get_timestamp, self.events))

    def predictions(self) -> Sequence[Any]:
        """The predictions."""
        if self._predictions is not None:
            return self._predictions
        return list(map(_get_prediction, self.events))

    def confidence(self) -> NDArray[np.float64]:
        """The top score of each event; NaN where an event has no scores."""
        if self._confidence is not None:
            return self._confidence
        return _confidence(list(map(_get_scores, self.events)))

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Events ``start:stop`` as plain dicts (copies)."""
        return [_plain(e) for e in self.events[start:stop]]

    def tail(self, start: int) -> EventColumns:
        """The events from ``start`` on."""
        return EventColumns(self.events[start:])


def _plain(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an event as plain dicts, its features too (an event that only reads
    like a dict, such as a typed one of :mod:`driftline.contract.typed`, included)."""
    out = dict(event)
    feats = out.get("features")
    if feats is not None and type(feats) is not dict:
        out["features"] = dict(feats.items())
    return out


# --------------------------------------------------------------------- columnar batch


class ColumnarBatch(Mapping[str, Any]):
    """A decoded, contract-valid batched envelope: many predictions of one stream.

    As a mapping it shows the envelope's routing fields (``model_id``,
    ``model_version``, ``segment``, ``count`` and ``timestamp``: the newest event time
    in epoch ms), so shell code that reads those from single events works on a batch
    unchanged. The columns are in :attr:`prediction_ids`, :attr:`timestamps`,
    :attr:`features`, :attr:`predictions` and :attr:`scores`.

    Examples
    --------
    >>> b = ColumnarBatch.from_dict({"format": "driftline.prediction_batch",
    ...     "model_id": "churn", "model_version": "3", "count": 2,
    ...     "prediction_ids": ["p1", "p2"], "timestamps": [5, 9],
    ...     "features": {"age": [41, None]}, "predictions": ["stay", "churn"]})
    >>> b["model_id"], b["timestamp"], len(b.rows())
    ('churn', 9, 2)
    """

    __slots__ = (
        "count",
        "features",
        "model_id",
        "model_version",
        "prediction_ids",
        "predictions",
        "scores",
        "segment",
        "timestamps",
        "feature_types",
        "_newest",
    )

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        prediction_ids: Sequence[str],
        timestamps: Sequence[int | str],
        features: Mapping[str, Sequence[Any]],
        predictions: Sequence[Any],
        scores: Mapping[str, Sequence[float | None]] | None = None,
        segment: Mapping[str, str] | None = None,
    ) -> None:
        self.model_id = model_id
        self.model_version = model_version
        self.prediction_ids = prediction_ids
        self.timestamps = timestamps
        self.features = features
        self.predictions = predictions
        self.scores = scores
        self.segment = segment or None
        self.count = len(prediction_ids)
        self.feature_types: dict[str, frozenset[type]] = {}
        self._newest: int | None = None

    @classmethod
    def from_dict(
        cls, obj: Mapping[str, Any], feature_types: dict[str, frozenset[type]] | None = None
    ) -> ColumnarBatch:
        """Wrap a decoded envelope (see :func:`driftline.contract.batch.check_prediction_batch`,
        which also gives ``feature_types``: the Python types of each feature column)."""
        batch = cls(
            model_id=obj["model_id"],
            model_version=obj["model_version"],
            prediction_ids=obj["prediction_ids"],
            timestamps=obj["timestamps"],
            features=obj["features"],
            predictions=obj["predictions"],
            scores=obj.get("scores"),
            segment=obj.get("segment"),
        )
        batch.feature_types = feature_types or {}
        return batch

    @property
    def key(self) -> KeyTuple:
        """The stream this batch belongs to."""
        return (self.model_id, self.model_version, segment_key(self.segment))

    @property
    def newest_ms(self) -> int:
        """The newest event time of the batch, in epoch ms."""
        newest = self._newest
        if newest is None:
            newest = self._newest = max(
                t if isinstance(t, int) else event_time_ms(t) for t in self.timestamps
            )
        return newest

    def _header(self) -> dict[str, Any]:
        return {
            "format": BATCH_FORMAT,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "segment": self.segment,
            "count": self.count,
            "timestamp": self.newest_ms,
        }

    def __getitem__(self, key: str) -> Any:
        return self._header()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("format", "model_id", "model_version", "segment", "count", "timestamp"))

    def __len__(self) -> int:
        return 6

    def get(self, key: str, default: Any = None) -> Any:
        """Routing field ``key`` (see the class docstring)."""
        return self._header().get(key, default)

    def rows(self) -> list[dict[str, Any]]:
        """The batch as single prediction events, in order."""
        return BatchColumns(self).rows(0, self.count)

    def to_envelope(self) -> dict[str, Any]:
        """The wire form (a dict for ``orjson.dumps``)."""
        env: dict[str, Any] = {
            "format": BATCH_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "count": self.count,
            "prediction_ids": list(self.prediction_ids),
            "timestamps": list(self.timestamps),
            "features": {k: list(plain_values(v)) for k, v in self.features.items()},
            "predictions": list(self.predictions),
        }
        if self.scores is not None:
            env["scores"] = {k: list(plain_values(v)) for k, v in self.scores.items()}
        if self.segment:
            env["segment"] = dict(self.segment)
        return env

    def __repr__(self) -> str:
        return (
            f"ColumnarBatch(model_id={self.model_id!r}, model_version={self.model_version!r}, "
            f"count={self.count}, features={len(self.features)})"
        )


#: Rows of consecutive batches read as one segment at most (whole batches; a batch
#: larger than this is a segment alone): as many as a fetch of single events holds by
#: default, so a segment's arrays (columns, bins, detector channels) stay in the caches.
RUN_ROWS = 5000


class BatchColumns(Columns):
    """Columns of consecutive :class:`ColumnarBatch` es of one stream (from row ``start``).

    Consecutive batches are read as one segment, so the core converts each column once
    for all of them (a batch of 500 rows alone would pay the per-column costs often);
    :meth:`runs` cuts a long run into segments of at most :data:`RUN_ROWS` rows.
    """

    @classmethod
    def runs(cls, batches: Sequence[ColumnarBatch]) -> list[BatchColumns]:
        """``batches`` (consecutive, one stream) as segments of whole batches, each of
        at most :data:`RUN_ROWS` rows or one batch."""
        out: list[BatchColumns] = []
        run: list[ColumnarBatch] = []
        rows = 0
        for b in batches:
            if run and rows + b.count > RUN_ROWS:
                out.append(cls(run))
                run, rows = [], 0
            run.append(b)
            rows += b.count
        if run:
            out.append(cls(run))
        return out

    def __init__(self, batches: ColumnarBatch | Sequence[ColumnarBatch], start: int = 0) -> None:
        super().__init__()
        self.batches: list[ColumnarBatch] = (
            [batches] if isinstance(batches, ColumnarBatch) else list(batches)
        )
        self.start = start
        self.total = sum(b.count for b in self.batches)
        self.n = self.total - start
        self._cols: dict[str, Sequence[Any]] = {}

    def _join(self, parts: list[Sequence[Any]]) -> Sequence[Any]:
        if len(parts) == 1:
            seq = parts[0]
        else:
            seq = list(chain.from_iterable(parts))
        return seq[self.start :] if self.start else seq

    def column(self, name: str) -> Sequence[Any]:
        """The values of feature ``name`` (``None`` in rows of batches without it)."""
        col = self._cols.get(name)
        if col is None:
            parts: list[Sequence[Any]] = []
            for b in self.batches:
                c = b.features.get(name)
                parts.append(plain_values(c) if c is not None else (None,) * b.count)
            col = self._cols[name] = self._join(parts)
        return col

    def numeric(self, name: str) -> tuple[NDArray[np.float64], NDArray[np.bool_] | None]:
        """As :meth:`Columns.numeric`; a column that every batch carries in its binary
        block (or lacks: missing) is joined from the blocks, never read as values."""
        parts = [b.features.get(name) for b in self.batches]
        if not all(c is None or isinstance(c, np.ndarray) for c in parts) or all(
            c is None for c in parts
        ):
            return super().numeric(name)
        arrays = [
            np.full(b.count, math.nan) if c is None else c
            for b, c in zip(self.batches, parts, strict=True)
        ]
        arr = np.concatenate(arrays, dtype=np.float64, casting="unsafe")
        return (arr[self.start :] if self.start else arr), None

    def codes(
        self, name: str, lookup: Mapping[str | None, int], other: int
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
        """As :meth:`Columns.codes`; a column that every batch carries coded
        (:class:`CodedColumn`: text and nulls only) is coded by looking up each batch's
        distinct values once, never read as values."""
        parts = [b.features.get(name) for b in self.batches]
        if not all(isinstance(c, CodedColumn) for c in parts):
            return super().codes(name, lookup, other)
        arrays = [
            np.fromiter(map(lookup.get, c.categories, repeat(other)), np.int64)[c.codes]
            for c in parts
            if isinstance(c, CodedColumn)
        ]
        arr = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return (arr[self.start :] if self.start else arr), None

    def _values(self, name: str) -> Iterable[Any]:
        cached = self._cols.get(name)
        if cached is not None:
            return cached
        parts = [b.features.get(name) for b in self.batches]
        values = chain.from_iterable(
            (None,) * b.count if c is None else plain_values(c)
            for b, c in zip(self.batches, parts, strict=True)
        )
        return islice(values, self.start, None) if self.start else values

    def types(self, name: str) -> frozenset[type]:
        """The Python types in :meth:`column` (from the contract check when it saw them)."""
        found = self._types.get(name)
        if found is None:
            known = [b.feature_types.get(name) for b in self.batches]
            if all(t is not None for t in known):
                found = frozenset().union(*known)  # type: ignore[arg-type]
                if any(name not in b.features for b in self.batches):
                    found |= {type(None)}
                self._types[name] = found
            else:
                found = super().types(name)
        return found

    def unknown(self, expected: AbstractSet[str]) -> NDArray[np.int64] | None:
        """A batch's columns are present in every row: the same count for each."""
        extra = [sum(1 for k in b.features if k not in expected) for b in self.batches]
        if not any(extra):
            return None
        per_row = np.repeat(np.asarray(extra, dtype=np.int64), [b.count for b in self.batches])
        return per_row[self.start :]

    def unknown_names(self, expected: AbstractSet[str], limit: int) -> list[str]:
        """The names of the batches' features not in ``expected``, first seen first (at
        most ``limit + 1``)."""
        return _first_names(
            (k for b in self.batches for k in b.features if k not in expected), limit
        )

    def timestamps(self) -> Sequence[int | str]:
        """Event times as sent."""
        return self._join([b.timestamps for b in self.batches])

    def predictions(self) -> Sequence[Any]:
        """The predictions."""
        return self._join([b.predictions for b in self.batches])

    def has_scores(self) -> bool:
        """Whether a batch carries scores."""
        return any(b.scores is not None for b in self.batches)

    def confidence(self) -> NDArray[np.float64]:
        """The top score of each row; NaN where a row has none (all classes null)."""
        parts: list[NDArray[np.float64]] = []
        for b in self.batches:
            if not b.scores:
                parts.append(np.full(b.count, math.nan))
                continue
            mat = np.array(list(b.scores.values()), dtype=np.float64)  # null becomes NaN
            with np.errstate(invalid="ignore"):
                parts.append(np.fmax.reduce(mat, axis=0))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out[self.start :]

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Rows ``start:stop`` as single prediction events."""
        lo, hi = self.start + start, self.start + min(stop, self.n)
        out: list[dict[str, Any]] = []
        base = 0
        for b in self.batches:
            for i in range(max(lo - base, 0), min(hi - base, b.count)):
                out.append(_row(b, i))
            base += b.count
        return out

    def tail(self, start: int) -> BatchColumns:
        """Rows from ``start`` on."""
        return BatchColumns(self.batches, self.start + start)


def _cell(col: Sequence[Any], i: int) -> Any:
    """Value ``i`` of a feature column as its JSON value (a block's NaN is missing)."""
    v = col[i]
    if isinstance(col, np.ndarray):
        v = v.item()
        return None if v != v else v
    return v


def _row(b: ColumnarBatch, i: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "prediction_id": b.prediction_ids[i],
        "model_id": b.model_id,
        "model_version": b.model_version,
        "timestamp": b.timestamps[i],
        "features": {k: _cell(v, i) for k, v in b.features.items()},
        "prediction": b.predictions[i],
    }
    if b.scores is not None:
        scores = {c: x for c, v in b.scores.items() if (x := _cell(v, i)) is not None}
        if scores:
            event["scores"] = scores
    if b.segment:
        event["segment"] = dict(b.segment)
    return event


# --------------------------------------------------------------------------- grouping


class EventFrame(list[Any]):
    """A list of decoded items (event dicts and :class:`ColumnarBatch`) in partition
    order, which also carries their :class:`Columns` grouped by stream.

    It is an ordinary list to every reader; :func:`group_items` reuses the columns
    instead of building them again, as long as the list still looks as it did when
    they were attached (same length, same first and last item); a list changed since
    is grouped again.
    """

    _groups: dict[KeyTuple, list[Columns]] | None = None
    _shape: tuple[int, int, int] = (0, 0, 0)

    def _signature(self) -> tuple[int, int, int]:
        return (len(self), id(self[0]), id(self[-1])) if self else (0, 0, 0)

    @property
    def groups(self) -> dict[KeyTuple, list[Columns]] | None:
        """The cached columns by stream, or None (none attached, or the list changed)."""
        if self._groups is not None and self._shape == self._signature():
            return self._groups
        return None

    @groups.setter
    def groups(self, value: dict[KeyTuple, list[Columns]] | None) -> None:
        self._groups = value
        self._shape = self._signature()


def group_items(items: Sequence[Mapping[str, Any]]) -> dict[KeyTuple, list[Columns]]:
    """Items grouped by stream, in order: per stream, each run of consecutive single
    events becomes one :class:`EventColumns` and each run of batches one
    :class:`BatchColumns` per :data:`RUN_ROWS` rows (:meth:`BatchColumns.runs`)."""
    if isinstance(items, EventFrame) and items.groups is not None:
        return items.groups
    if not items:
        return {}
    kinds = set(map(type, items))
    if ColumnarBatch not in kinds:
        mids = list(map(_get_model, items))
        vers = list(map(_get_version, items))
        segs = list(map(_get_segment, items))
        if len(set(mids)) == 1 and len(set(vers)) == 1 and not any(segs):
            return {(mids[0], vers[0], ""): [EventColumns(items)]}
        runs: dict[KeyTuple, list[Mapping[str, Any]]] = {}
        for e, m, v, s in zip(items, mids, vers, segs, strict=True):
            k = (m, v, segment_key(s) if s else "")
            run = runs.get(k)
            if run is None:
                runs[k] = [e]
            else:
                run.append(e)
        return {k: [EventColumns(evs)] for k, evs in runs.items()}
    # Per stream, runs of single events and runs of batches, in order.
    parts: dict[KeyTuple, list[tuple[bool, list[Any]]]] = {}
    for it in items:
        is_batch = isinstance(it, ColumnarBatch)
        if is_batch:
            k = it.key  # type: ignore[attr-defined]
        else:
            seg = it.get("segment")
            k = (it["model_id"], it["model_version"], segment_key(seg) if seg else "")
        runs_: list[tuple[bool, list[Any]]] = parts.setdefault(k, [])
        if runs_ and runs_[-1][0] == is_batch:
            runs_[-1][1].append(it)
        else:
            runs_.append((is_batch, [it]))
    return {
        k: [
            c
            for is_batch, run in rs
            for c in (BatchColumns.runs(run) if is_batch else (EventColumns(run),))
        ]
        for k, rs in parts.items()
    }


def row_count(items: Sequence[Mapping[str, Any]]) -> int:
    """Predictions in ``items``: one per event, ``count`` per batch."""
    if isinstance(items, EventFrame) and items.groups is not None:
        return sum(c.n for parts in items.groups.values() for c in parts)
    return sum(it.count if isinstance(it, ColumnarBatch) else 1 for it in items)


def stream_counts(items: Sequence[Mapping[str, Any]]) -> dict[KeyTuple, int]:
    """Predictions per stream of ``items``, streams in order of first appearance.

    From the columns a decoded frame carries (no pass over the events), else from
    :func:`group_items`, which the core reuses.
    """
    return {k: sum(c.n for c in parts) for k, parts in group_items(items).items()}


# --------------------------------------------------------------------------- packing


def pack_events(events: Sequence[Mapping[str, Any]], max_rows: int = 500) -> list[dict[str, Any]]:
    """Single prediction events as batched envelopes (dicts ready for ``orjson.dumps``).

    Events are grouped by stream (model, version, segment), keeping their order within
    each stream, and cut into envelopes of at most ``max_rows``. A feature missing from
    some events of an envelope is ``null`` there. Scores missing from an event, or a
    class missing from its scores, are ``null``.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    runs: dict[KeyTuple, list[Mapping[str, Any]]] = {}
    for e in events:
        seg = e.get("segment")
        runs.setdefault((e["model_id"], e["model_version"], segment_key(seg)), []).append(e)
    out: list[dict[str, Any]] = []
    for run in runs.values():
        for lo in range(0, len(run), max_rows):
            out.append(_envelope(run[lo : lo + max_rows]))
    return out


def _envelope(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = rows[0]
    names: dict[str, None] = {}
    classes: dict[str, None] = {}
    for e in rows:
        names.update(dict.fromkeys(e["features"]))
        s = e.get("scores")
        if s:
            classes.update(dict.fromkeys(s))
    feats = [e["features"] for e in rows]
    env: dict[str, Any] = {
        "format": BATCH_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "model_id": first["model_id"],
        "model_version": first["model_version"],
        "count": len(rows),
        "prediction_ids": [e["prediction_id"] for e in rows],
        "timestamps": [e["timestamp"] for e in rows],
        "features": {k: [f.get(k) for f in feats] for k in names},
        "predictions": [e["prediction"] for e in rows],
    }
    if classes:
        scores = [e.get("scores") or {} for e in rows]
        env["scores"] = {c: [s.get(c) for s in scores] for c in classes}
    if first.get("segment"):
        env["segment"] = dict(first["segment"])
    return env
