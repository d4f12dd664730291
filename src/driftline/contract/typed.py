"""Typed decoding of single prediction events: parse and check each record in C.

The monitor's single-event path was bound by per-event Python: ``orjson.loads`` built
a dict per event, then the contract checks and the column extraction touched every
value again. Here a record is decoded by a :mod:`msgspec` decoder whose type *is* the
prediction contract (``prediction_event.v1``: id lengths, timestamp forms, value
types, string lengths, probabilities, segment and score limits, no unknown field), so
parsing and checking are one C-level pass that builds no dict; the features become
the attributes of a struct, read into columns with one ``astuple`` per event and a
transposing ``zip`` (:class:`TypedColumns`).

The decoder of a feature layout (the names of an event's features) is learnt from the
first valid event that has it (:func:`layout_for`) and cached. Once a fetch of a layout
decoded cleanly, the layout also learns its *strict* form (:meth:`Layout.learn`):
every feature present, numbers only or text only as that fetch had them. A fetch the
strict form decodes has columns whose types are known without a scan of every value;
a fetch it refuses is decoded by the general form (nothing else changes), which then
runs alone for a while. A record the typed
decoder refuses is not refused here: it takes the exact path of
:func:`driftline.contract.decode.decode_record` (``orjson`` and
:func:`~driftline.contract.checks.check_prediction`), which either accepts it (a
record with a field the typed form leaves to that path, such as an unknown top-level
field or an integer beyond 64 bits) or refuses it with the usual reason. So the
verdicts and the values are always those of the per-record path:
``tests/unit/test_typed.py`` checks both against it, value for value, on valid,
broken and unusual records.

Rules a type cannot say are checked after decoding, over the whole fetch at once on the
fast path (:func:`_checked`): RFC 3339 strings, control characters in ids, model ids and
versions free of braces and in NFKC form, and no repeated JSON key (counted on the
fetch's bytes). A record that fails one takes the exact path, which words the refusal.

What the typed form leaves to the exact path (each is accepted or refused there, only
more slowly): unknown top-level fields (msgspec would skip them without checking their
JSON), integers outside the signed 64-bit range (orjson reads them as floats), string
timestamps (the RFC 3339 pattern is checked after decoding, here), features not in
any learnt layout.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from itertools import chain, compress, repeat
from operator import attrgetter, is_, is_not
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson
from msgspec import UNSET, Meta, UnsetType
from msgspec.structs import astuple
from numpy.typing import NDArray

from driftline.contract.checks import (
    model_id_ok,
)
from driftline.contract.columnar import (
    BatchColumns,
    ColumnarBatch,
    Columns,
    EventColumns,
    EventFrame,
    _confidence,
)
from driftline.contract.events import (
    LIMITS,
    RFC3339_PATTERN,
    SCHEMA_VERSION,
    ids_have_control,
)
from driftline.contract.keys import KeyTuple, segment_key
from driftline.errors import ContractError

__all__ = ["Layout", "TypedColumns", "decode_typed", "layout_for"]

# --------------------------------------------------------------------------- the contract as types

_Id = Annotated[str, Meta(min_length=1, max_length=LIMITS.max_id_length)]
_Name = Annotated[str, Meta(min_length=1, max_length=LIMITS.max_name_length)]
_Text = Annotated[str, Meta(max_length=LIMITS.max_string_value_length)]
# orjson reads integers past 64 bits as floats; msgspec would keep them as ints. Those
# (and unsigned ones past 2**63, which msgspec cannot bound) take the exact path.
_Int = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
_Value = _Int | float | _Text | bool | None
_Probability = Annotated[int, Meta(ge=0, le=1)] | Annotated[float, Meta(ge=0, le=1)]
_Scores = Annotated[dict[_Name, _Probability], Meta(min_length=1, max_length=LIMITS.max_classes)]
_SegmentValue = Annotated[str, Meta(min_length=1, max_length=LIMITS.max_segment_value_length)]
_Segment = Annotated[dict[_Name, _SegmentValue], Meta(max_length=LIMITS.max_segment_keys)]
_Version = Annotated[int, Meta(ge=1, le=SCHEMA_VERSION)]
# String timestamps are checked against the RFC 3339 pattern after decoding (msgspec's
# pattern search would let "$" match before a trailing newline).
_Timestamp = Annotated[int, Meta(ge=0, le=LIMITS.max_timestamp_ms)] | str
_Prediction = _Text | _Int | float

_UNSET_TYPE = type(UNSET)
_NONE = type(None)
_rfc3339_fullmatch = re.compile(RFC3339_PATTERN).fullmatch

#: Top-level fields of a prediction event, in the order a typed event lists them.
_FIELDS = (
    "prediction_id",
    "model_id",
    "model_version",
    "timestamp",
    "features",
    "prediction",
    "scores",
    "segment",
    "schema_version",
)
_FIELD_SET = frozenset(_FIELDS)


def _event_getitem(self: Any, key: str) -> Any:
    if key not in _FIELD_SET:
        raise KeyError(key)
    value = getattr(self, key)
    if value is UNSET:
        raise KeyError(key)
    return value


def _event_iter(self: Any) -> Iterator[str]:
    return (k for k in _FIELDS if getattr(self, k) is not UNSET)


def _mapping_eq(self: Any, other: object) -> bool:
    if isinstance(other, Mapping):
        return bool(dict(self.items()) == dict(other.items()))
    return NotImplemented  # type: ignore[no-any-return]


def _mapping_len(self: Any) -> int:
    return sum(1 for _ in self)


def _mapping_namespace(getitem: Any, iterate: Any) -> dict[str, Any]:
    """Methods that make a typed struct read like the dict ``orjson.loads`` returns
    (present keys only), so code written for event dicts works on it unchanged."""
    return {
        "__getitem__": getitem,
        "__iter__": iterate,
        "__len__": _mapping_len,
        "__contains__": Mapping.__contains__,
        "__eq__": _mapping_eq,
        "get": Mapping.get,
        "keys": Mapping.keys,
        "items": Mapping.items,
        "values": Mapping.values,
    }


class Layout:
    """The typed decoder of one feature layout (the feature names it knows).

    A record decodes when it is a contract-valid prediction event whose features are
    among :attr:`names` (absent ones read as missing) and that has no other top-level
    field. Features are struct attributes ``x0, x1, ...`` renamed to their wire names,
    so any valid name works, including ones that are not Python identifiers.
    """

    def __init__(self, names: Sequence[str], kinds: Sequence[str] | None = None) -> None:
        self.names = tuple(names)
        #: For a strict layout (:meth:`strict_for`): per feature, ``"number"`` or
        #: ``"text"``; the decoder then takes only events where every feature is there
        #: with a value of that kind, so its columns need no type scan.
        self.kinds = tuple(kinds) if kinds is not None else None
        self.known_types: dict[str, frozenset[type]] | None = None
        if self.kinds is not None:
            self.known_types = {
                n: _KIND_TYPES[k] for n, k in zip(self.names, self.kinds, strict=True)
            }
        #: The strict layout its columns allow (learnt from their types), if any.
        self.strict: Layout | None = None
        #: Batches to wait before learning a strict layout again (one failed).
        self.strict_wait = 0
        self.attr = {n: f"x{i}" for i, n in enumerate(self.names)}
        #: Position of each feature in the struct (its column in :func:`astuple`).
        self.index = {n: i for i, n in enumerate(self.names)}
        attr = self.attr
        wire = dict(zip(attr.values(), attr.keys(), strict=True))

        def features_getitem(obj: Any, key: str) -> Any:
            a = attr.get(key)
            if a is None:
                raise KeyError(key)
            value = getattr(obj, a)
            if value is UNSET:
                raise KeyError(key)
            return value

        def features_iter(obj: Any) -> Iterator[str]:
            return (wire[a] for a in wire if getattr(obj, a) is not UNSET)

        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = (
            [(a, _Value | UnsetType, UNSET) for a in attr.values()]
            if self.kinds is None
            else [(a, _KIND_VALUE[k]) for a, k in zip(attr.values(), self.kinds, strict=True)]
        )
        features = msgspec.defstruct(
            "Features",
            fields,
            rename=wire,
            forbid_unknown_fields=True,
            gc=False,
            namespace=_mapping_namespace(features_getitem, features_iter),
        )
        event = msgspec.defstruct(
            "TypedEvent",
            [
                ("prediction_id", _Id),
                ("model_id", _Id),
                ("model_version", _Id),
                ("timestamp", _Timestamp),
                ("features", features),
                ("prediction", _Prediction),
                ("scores", _Scores | None | UnsetType, UNSET),
                ("segment", _Segment | None | UnsetType, UNSET),
                ("schema_version", _Version | None | UnsetType, UNSET),
            ],
            forbid_unknown_fields=True,
            gc=False,
            namespace=_mapping_namespace(_event_getitem, _event_iter),
        )
        Mapping.register(features)
        Mapping.register(event)
        self.event_type = event
        self.decode: Callable[[bytes], Any] = msgspec.json.Decoder(event).decode

    def __repr__(self) -> str:
        return f"Layout({len(self.names)} features)"

    def learn(self, parts: Sequence[Columns]) -> None:
        """Learn the strict layout from the columns this layout decoded (a batch that
        passed every check): each feature in every event, numbers only or text only.
        None when a feature is missing somewhere or mixes kinds (or booleans, nulls)."""
        if self.kinds is not None:
            return
        if self.strict_wait:
            self.strict_wait -= 1
            return
        kinds: list[str] = []
        for name in self.names:
            found: set[type] = set()
            for p in parts:
                if not isinstance(p, TypedColumns) or p.missing(name):
                    self.strict = None
                    return
                found |= p.types(name)
            kind = next((k for k, t in _KIND_TYPES.items() if found and found <= t), None)
            if kind is None:
                self.strict = None
                return
            kinds.append(kind)
        if self.strict is None or self.strict.kinds != tuple(kinds):
            self.strict = Layout(self.names, kinds)

    def strict_failed(self) -> None:
        """The strict layout refused a batch: decode without it for a while."""
        self.strict = None
        self.strict_wait = _STRICT_WAIT


#: A strict layout's feature values by kind, and the types its columns may hold (a
#: superset of what they hold: the core reads numbers ``int`` or ``float`` alike).
_KIND_VALUE: dict[str, Any] = {"number": _Int | float, "text": _Text}
_KIND_TYPES: dict[str, frozenset[type]] = {
    "number": frozenset({int, float}),
    "text": frozenset({str}),
}
#: Batches decoded without the strict layout after it refused one.
_STRICT_WAIT = 16

# --------------------------------------------------------------------------- learnt layouts

#: Layouts by feature-name set, most recently used last (bounded).
_LAYOUTS: OrderedDict[frozenset[str], Layout] = OrderedDict()
_MAX_LAYOUTS = 64
#: Layouts a record is tried with before it takes the exact path.
_TRIES = 3
#: New layouts learnt per fetched batch at most (building one costs ~0.1 ms).
_LEARN_PER_BATCH = 4


def layout_for(names: Sequence[str]) -> Layout:
    """The (cached) layout of these feature names."""
    key = frozenset(names)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = Layout(names)
        _LAYOUTS[key] = lay
        if len(_LAYOUTS) > _MAX_LAYOUTS:
            _LAYOUTS.popitem(last=False)
    else:
        _LAYOUTS.move_to_end(key)
    return lay


def _recent() -> list[Layout]:
    """The most recently used layouts, newest first."""
    return list(reversed(_LAYOUTS.values()))[:_TRIES]


def _used(lay: Layout) -> None:
    key = frozenset(lay.names)
    if key in _LAYOUTS:
        _LAYOUTS.move_to_end(key)


# --------------------------------------------------------------------------- columns

_FEATURES = attrgetter("features")
_MODEL = attrgetter("model_id")
_VERSION = attrgetter("model_version")
_SEGMENT = attrgetter("segment")
_TIMESTAMP = attrgetter("timestamp")
_PREDICTION = attrgetter("prediction")
_SCORES = attrgetter("scores")


class TypedColumns(EventColumns):
    """:class:`EventColumns` over typed events of one :class:`Layout` (one stream).

    Every value is the one ``orjson.loads`` gives for the same record (the typed
    decoder keeps ``int``, ``float``, ``bool``, ``str`` and ``None`` apart); a feature
    absent from an event reads as ``None`` and is not counted as present (unknown
    features are counted per event, as for dicts). :meth:`rows` decodes the raw
    records again, so warm-up keeps the events exactly as sent.
    """

    def __init__(self, events: Sequence[Any], raw: Sequence[bytes], layout: Layout) -> None:
        Columns.__init__(self)
        self.events = events
        self.n = len(events)
        self.raw = raw
        self.layout = layout
        self._feats = list(map(_FEATURES, events))
        self._timestamps = None
        self._predictions = None
        self._confidence = None
        self._cols = {}
        self._absent = None
        self._present: dict[str, bool] = {}  # name -> present in every event
        self._keys = None
        self._raw_cols: list[tuple[Any, ...]] | None = None
        self._missing: dict[str, int] = {}  # name -> events without it

    def _raw_column(self, name: str) -> Sequence[Any]:
        # All columns at once: one ``astuple`` per event and a transposing ``zip`` cost
        # about half as much as one ``attrgetter`` pass per column (23 features).
        if self._raw_cols is None:
            self._raw_cols = list(zip(*map(astuple, self._feats), strict=True))  # type: ignore[arg-type]
            if not self._raw_cols:  # no event: an empty column per feature
                self._raw_cols = [()] * len(self.layout.names)
        return self._raw_cols[self.layout.index[name]]

    def _read(self, name: str) -> Sequence[Any]:
        if name not in self.layout.attr:
            self._types[name] = frozenset({_NONE})
            self._present[name] = False
            return (None,) * self.n
        col: Sequence[Any] = self._raw_column(name)
        known = self.layout.known_types
        if known is not None:  # the strict decoder saw every value: no scan
            self._types[name] = known[name]
            self._present[name] = True
            self._missing[name] = 0
            return col
        types = set(map(type, col))
        self._present[name] = _UNSET_TYPE not in types
        self._missing[name] = 0
        if _UNSET_TYPE in types:
            self._missing[name] = sum(map(is_, col, repeat(UNSET)))
            col = [None if v is UNSET else v for v in col]
            types.discard(_UNSET_TYPE)
            types.add(_NONE)
        self._types[name] = frozenset(types)
        return col

    def column(self, name: str) -> Sequence[Any]:
        """The values of feature ``name``, one per event (``None`` where absent)."""
        col = self._cols.get(name)
        if col is None:
            col = self._cols[name] = self._read(name)
        return col

    def feature_keys(self) -> int:
        """Features the events carry, summed (every column is read, as the core will)."""
        for name in self.layout.names:
            self.column(name)
        return self.n * len(self.layout.names) - sum(self._missing.values())

    def types(self, name: str) -> frozenset[type]:
        """The Python types found in :meth:`column`."""
        found = self._types.get(name)
        if found is None:
            self.column(name)
            found = self._types[name]
        return found

    def missing(self, name: str) -> int:
        """Events without feature ``name`` (one of the layout's)."""
        self.column(name)
        return self._missing.get(name, self.n)

    def _presence(self, name: str) -> NDArray[np.bool_]:
        if self.layout.known_types is not None:
            return np.ones(self.n, dtype=np.bool_)
        raw = self._raw_column(name)
        return np.fromiter(map(is_not, raw, repeat(UNSET)), np.bool_, self.n)

    def unknown(self, expected: AbstractSet[str]) -> NDArray[np.int64] | None:
        """Per event, how many of its features are not in ``expected`` (None: none)."""
        counts: NDArray[np.int64] | None = None
        for name in self.layout.names:
            if name in expected:
                continue
            present = self._presence(name)
            if counts is None:
                counts = np.zeros(self.n, dtype=np.int64)
            counts += present
        return counts if counts is not None and counts.any() else None

    def unknown_names(self, expected: AbstractSet[str], limit: int) -> list[str]:
        """The names of the features not in ``expected`` that some event carries, in the
        layout's order (at most ``limit + 1``)."""
        names = [n for n in self.layout.names if n not in expected and self._presence(n).any()]
        return names[: limit + 1]

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """The feature names every event carries (None when they differ).

        A layout may know more names than these events use (it was learnt from a
        wider event): a name absent from every event is not one of them.
        """
        if self._keys is None:
            names: list[str] = []
            for name in self.layout.names:
                present = self._presence(name)
                if present.all():
                    names.append(name)
                elif present.any():
                    return None
            self._keys = tuple(names)
        return self._keys

    @property
    def uniform(self) -> bool:
        """Whether every event has the same feature names."""
        return self.feature_names is not None

    def timestamps(self) -> Sequence[int | str]:
        """Event times as sent."""
        if self._timestamps is None:
            self._timestamps = list(map(_TIMESTAMP, self.events))
        return self._timestamps

    def predictions(self) -> Sequence[Any]:
        """The predictions."""
        if self._predictions is None:
            self._predictions = list(map(_PREDICTION, self.events))
        return self._predictions

    def confidence(self) -> NDArray[np.float64]:
        """The top score of each event; NaN where an event has no scores."""
        if self._confidence is None:
            scores = list(map(_SCORES, self.events))
            if _UNSET_TYPE in set(map(type, scores)):
                scores = [None if s is UNSET else s for s in scores]
            self._confidence = _confidence(scores)
        return self._confidence

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Events ``start:stop`` as the plain dicts ``orjson.loads`` gives."""
        return list(map(orjson.loads, self.raw[start:stop]))

    def tail(self, start: int) -> TypedColumns:
        """The events from ``start`` on."""
        return TypedColumns(self.events[start:], self.raw[start:], self.layout)


# --------------------------------------------------------------------------- decoding

_MARK = b'"driftline.prediction_batch"'
_LIMIT = LIMITS.max_event_bytes
_DECODE_ERRORS = (msgspec.DecodeError,)  # msgspec.ValidationError is a DecodeError
#: Give up typing a batch once this share of its records needed the exact path.
_GIVE_UP_SHARE = 0.5
_GIVE_UP_AFTER = 32

Slow = Callable[[bytes | None], Any]
Untyped = Callable[[Sequence[bytes | None]], tuple[Sequence[Any], list[tuple[int, ContractError]]]]


def _times_ok(events: Sequence[Any]) -> bool:
    ts = list(map(_TIMESTAMP, events))
    if str not in set(map(type, ts)):
        return True
    return all(map(_rfc3339_fullmatch, compress(ts, map(is_, map(type, ts), repeat(str)))))


# --------------------------------------------------------------------------- checks past the types
#
# Rules a msgspec type cannot say, checked over the whole fetch at once (C-level passes)
# on the fast path and per record otherwise. A record that fails one is not refused
# here: it takes the exact path, which words the refusal.

_PID = attrgetter("prediction_id")
_SEGMENTS = attrgetter("segment")
_VERSION_FIELD = attrgetter("schema_version")
_COLON, _QUOTE = ord(":"), ord('"')
#: Whitespace before a ':' (the count below needs none).
_WHITESPACE = np.array([ord(c) for c in " \t\n\r"], np.uint8)
#: Top-level fields every typed event has.
_REQUIRED_FIELDS = 6


def _ids_ok(events: Sequence[Any]) -> bool:
    """No control character in any prediction id; model ids and versions valid."""
    if ids_have_control("".join(map(_PID, events))):
        return False
    ids = set(map(_MODEL, events))
    ids.update(map(_VERSION, events))
    return all(map(model_id_ok, ids))


def _parsed_keys(events: Sequence[Any], features: int) -> int:
    """Keys of the events' objects: top level, ``features`` (counted by the caller),
    scores, segment."""
    n = len(events)
    scores = list(map(_SCORES, events))
    segments = list(map(_SEGMENTS, events))
    versions = list(map(_VERSION_FIELD, events))
    top = (_REQUIRED_FIELDS + 3) * n
    top -= sum(map(is_, chain(scores, segments, versions), repeat(UNSET)))
    nested = sum(map(len, filter(None, scores))) + sum(map(len, filter(None, segments)))
    return top + features + nested


def _keys_unique(data: bytes, events: Sequence[Any], features: int) -> bool:
    """Whether no object of ``data`` (the records of ``events``, joined) repeats a key.

    Every key token is followed by ``":`` when no whitespace precedes a colon, and
    ``":`` inside a string needs an escaped quote, so the count of ``":`` is at least
    the key tokens, which are at least the parsed keys: equality proves every key
    token was parsed, i.e. no key repeats (the argument of
    :func:`driftline.contract.events.duplicate_key`). False means "ask the exact path".
    """
    # numpy finds the byte before every ':' faster than bytes searches for each pair.
    raw = np.frombuffer(data, np.uint8)
    before = raw[np.flatnonzero(raw[1:] == _COLON)]
    if np.isin(before, _WHITESPACE).any():
        return False
    return int(np.count_nonzero(before == _QUOTE)) == _parsed_keys(events, features)


def _checked(events: Sequence[Any], data: bytes, features: int) -> bool:
    """The rules past the types hold for ``events`` (decoded from ``data``, carrying
    ``features`` features in all)."""
    return _times_ok(events) and _ids_ok(events) and _keys_unique(data, events, features)


def _features_of(event: Any) -> int:
    values = astuple(event.features)
    return len(values) - sum(map(is_, values, repeat(UNSET)))


def _learn(value: bytes | None, slow: Slow) -> Layout | None:
    """The layout of a valid single event (None if ``value`` is not one)."""
    try:
        item = slow(value)
    except ContractError:
        return None
    return layout_for(tuple(item["features"])) if type(item) is dict else None


def decode_typed(
    values: Sequence[bytes | None], slow: Slow, untyped: Untyped
) -> tuple[EventFrame, list[tuple[int, ContractError]]] | None:
    """Decode a fetched batch of single events with the learnt typed decoders.

    ``slow`` is the exact per-record decoder
    (:func:`driftline.contract.decode.decode_record`): every record the typed decoders
    refuse goes to it, so the valid items and the ``(index, error)`` of refused records
    are exactly what it gives, in order. ``untyped`` decodes a run of records without
    typing (the caller's bulk path); it takes the rest of a batch in which typing keeps
    failing. Returns None when the batch holds columnar batch records, or when typing
    failed from the start (the caller's path then runs); otherwise an
    :class:`EventFrame` whose typed events read like dicts, with its columns attached.
    """
    if not values:
        return None
    try:
        # One scan of the joined bytes is cheaper than a search per record.
        joined: bytes | None = b"".join(values)  # type: ignore[arg-type]
    except TypeError:  # a record without a value: the per-record path words it
        joined = None
    if joined is not None and _MARK in joined:
        return None  # batches (or a mix): read by the batch decoder
    if joined is not None and max(map(len, values)) <= _LIMIT:  # type: ignore[arg-type]
        recent = _recent()
        lay = recent[0] if recent else _learn(values[0], slow)
        if lay is not None:
            events, used = _decode_all(values, lay)  # type: ignore[arg-type]
            if events is not None:
                frame = _one_layout(events, values, used)
                assert frame.groups is not None
                parts = [c for cs in frame.groups.values() for c in cs]
                feats = sum(c.feature_keys() for c in parts if isinstance(c, TypedColumns))
                if _checked(events, joined, feats):
                    _used(lay)
                    if used is lay:
                        lay.learn(parts)
                    return frame, []
    return _per_record(values, slow, untyped)


def _decode_all(values: Sequence[bytes], lay: Layout) -> tuple[list[Any] | None, Layout]:
    """Every record decoded by ``lay``'s strict layout (its columns need no type scan)
    or else by ``lay``; None if a record fits neither."""
    strict = lay.strict
    if strict is not None:
        try:
            return list(map(strict.decode, values)), strict
        except _DECODE_ERRORS:
            lay.strict_failed()
    try:
        return list(map(lay.decode, values)), lay
    except _DECODE_ERRORS:
        return None, lay


def _one_layout(events: list[Any], values: Sequence[bytes | None], lay: Layout) -> EventFrame:
    frame = EventFrame(events)
    models = set(map(_MODEL, events))
    versions = set(map(_VERSION, events))
    if len(models) == 1 and len(versions) == 1 and not any(map(_SEGMENT, events)):
        raw: Sequence[bytes] = values  # type: ignore[assignment]
        frame.groups = {(models.pop(), versions.pop(), ""): [TypedColumns(events, raw, lay)]}
    else:
        frame.groups = _group(events, [lay] * len(events), values)
    return frame


def _per_record(
    values: Sequence[bytes | None], slow: Slow, untyped: Untyped
) -> tuple[EventFrame, list[tuple[int, ContractError]]] | None:
    items: list[Any] = []
    kinds: list[Layout | None] = []
    raw: list[bytes | None] = []
    bad: list[tuple[int, ContractError]] = []
    tries = _recent()
    learnt = exact = typed = 0
    for i, v in enumerate(values):
        if i >= _GIVE_UP_AFTER and exact > _GIVE_UP_SHARE * i:
            # Typing keeps failing here (say, a producer that adds top-level fields):
            # the rest of the batch takes the bulk path.
            if not typed:
                return None
            rest, rest_bad = untyped(values[i:])
            items.extend(rest)
            kinds.extend([None] * len(rest))
            raw.extend([None] * len(rest))
            bad.extend((i + j, exc) for j, exc in rest_bad)
            break
        event = _try_typed(v, tries)
        if event is not None:
            items.append(event)
            kinds.append(tries[0])
            raw.append(v)
            typed += 1
            continue
        exact += 1
        try:
            item = slow(v)
        except ContractError as exc:
            bad.append((i, exc))
            continue
        kind: Layout | None = None
        if type(item) is dict and learnt < _LEARN_PER_BATCH and type(v) is bytes:
            # A valid event of a layout not seen yet: learn it for the records to come.
            lay = layout_for(tuple(item["features"]))
            learnt += 1
            try:
                event = lay.decode(v)
            except _DECODE_ERRORS:  # e.g. an unknown top-level field: stays a dict
                event = None
            if event is not None:
                item, kind = event, lay
                tries = [lay, *(t for t in tries if t is not lay)][:_TRIES]
                typed += 1
        items.append(item)
        kinds.append(kind)
        raw.append(v)
    if not typed:
        return None
    frame = EventFrame(items)
    frame.groups = _group(items, kinds, raw)
    return frame, bad


def _try_typed(v: bytes | None, tries: list[Layout]) -> Any:
    """``v`` decoded by the first layout that takes it (moved to the front), or None."""
    if type(v) is not bytes or len(v) > _LIMIT or _MARK in v:
        return None
    for lay in tries:
        try:
            event = lay.decode(v)
        except _DECODE_ERRORS:
            continue
        if not _checked((event,), v, _features_of(event)):
            return None  # a rule past the types does not hold: the exact path words it
        if lay is not tries[0]:
            tries.remove(lay)
            tries.insert(0, lay)
        return event
    return None


def _stream(item: Any) -> KeyTuple:
    if isinstance(item, ColumnarBatch):
        return item.key
    seg = item.get("segment")
    return (item["model_id"], item["model_version"], segment_key(seg) if seg else "")


def _group(
    items: Sequence[Any], kinds: Sequence[Layout | None], raw: Sequence[bytes | None]
) -> dict[KeyTuple, list[Columns]]:
    """Per stream, in order: runs of single events and runs of batches, each as its
    :class:`Columns` (the parts the core walks in turn).

    A run of single events is cut exactly where the untyped path cuts it (at batches
    only), whatever layouts its events were typed with, so the core sees the same
    segments and sums in the same order: a run mixing layouts (or typed events and
    dicts) becomes one :class:`ChainColumns`.
    """
    runs: dict[KeyTuple, list[tuple[object, list[Any], list[Any]]]] = {}
    for item, kind, v in zip(items, kinds, raw, strict=True):
        tag: object = kind if kind is not None else type(item)
        parts = runs.setdefault(_stream(item), [])
        if parts and parts[-1][0] is tag:
            parts[-1][1].append(item)
            parts[-1][2].append(v)
        else:
            parts.append((tag, [item], [v]))
    out: dict[KeyTuple, list[Columns]] = {}
    for key, parts in runs.items():
        cols: list[Columns] = []
        singles: list[Columns] = []
        for tag, its, vs in parts:
            if tag is ColumnarBatch:
                if singles:
                    cols.append(_chain(singles))
                    singles = []
                cols.extend(BatchColumns.runs(its))
            elif isinstance(tag, Layout):
                singles.append(TypedColumns(its, vs, tag))
            else:
                singles.append(EventColumns(its))
        if singles:
            cols.append(_chain(singles))
        out[key] = cols
    return out


def _chain(parts: list[Columns]) -> Columns:
    return parts[0] if len(parts) == 1 else ChainColumns(parts)


class ChainColumns(Columns):
    """Consecutive :class:`Columns` of one stream read as one (their columns joined)."""

    def __init__(self, parts: Sequence[Columns]) -> None:
        super().__init__()
        self.parts = list(parts)
        self.n = sum(p.n for p in self.parts)

    def column(self, name: str) -> Sequence[Any]:
        """The values of feature ``name``, one per event (``None`` where absent)."""
        return list(chain.from_iterable(p.column(name) for p in self.parts))

    def types(self, name: str) -> frozenset[type]:
        """The Python types found in :meth:`column`."""
        found = self._types.get(name)
        if found is None:
            found = self._types[name] = frozenset().union(*(p.types(name) for p in self.parts))
        return found

    def unknown(self, expected: AbstractSet[str]) -> NDArray[np.int64] | None:
        """Per event, how many of its features are not in ``expected`` (None: none)."""
        counts = [p.unknown(expected) for p in self.parts]
        if all(c is None for c in counts):
            return None
        return np.concatenate(
            [
                np.zeros(p.n, np.int64) if c is None else c
                for p, c in zip(self.parts, counts, strict=True)
            ]
        )

    def unknown_names(self, expected: AbstractSet[str], limit: int) -> list[str]:
        """The parts' names of features not in ``expected``, first seen first (at most
        ``limit + 1``)."""
        names = dict.fromkeys(n for p in self.parts for n in p.unknown_names(expected, limit))
        return list(names)[: limit + 1]

    def timestamps(self) -> Sequence[int | str]:
        """Event times as sent."""
        return list(chain.from_iterable(p.timestamps() for p in self.parts))

    def predictions(self) -> Sequence[Any]:
        """The predictions."""
        return list(chain.from_iterable(p.predictions() for p in self.parts))

    def confidence(self) -> NDArray[np.float64]:
        """The top score of each event; NaN where an event has no scores."""
        return np.concatenate([p.confidence() for p in self.parts])

    def rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Events ``start:stop`` as plain dicts."""
        out: list[dict[str, Any]] = []
        at = 0
        for p in self.parts:
            lo, hi = max(start - at, 0), min(stop - at, p.n)
            if lo < hi:
                out.extend(p.rows(lo, hi))
            at += p.n
        return out

    def tail(self, start: int) -> Columns:
        """The events from ``start`` on."""
        rest: list[Columns] = []
        at = 0
        for p in self.parts:
            if at + p.n > start:
                rest.append(p.tail(max(start - at, 0)) if start > at else p)
            at += p.n
        return _chain(rest) if rest else EventColumns([])
