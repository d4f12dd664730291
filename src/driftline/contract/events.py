"""The wire contract: prediction, label and alert events, and the reference envelope.

These pydantic models mirror the JSON Schemas in ``schemas/`` exactly; a test feeds
every example under ``schemas/examples/`` to both and checks they agree.

Size limits are part of the contract (see :data:`LIMITS`); an event over a limit is
refused like any other malformed event and goes to the dead-letter topic.

Unknown top-level fields are accepted and ignored, so adding an optional field is a
compatible change. A ``schema_version`` above :data:`SCHEMA_VERSION` is refused with
:class:`~driftline.errors.UnsupportedVersion`, since its meaning cannot be known.

The workers' hot paths use :mod:`driftline.contract.checks`, hand-written checks that
accept and refuse exactly what these models do, returning the plain dict.
The schemas ship as package data; :func:`json_schema` loads one.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from driftline.errors import DecodeError, UnsupportedVersion, ValidationError

__all__ = [
    "BATCH_FORMAT",
    "LIMITS",
    "SCHEMA_VERSION",
    "AlertWindow",
    "DetectorBank",
    "DriftAlert",
    "FeatureContribution",
    "LabelEvent",
    "PredictionBatch",
    "PredictionEvent",
    "MultivariateModel",
    "ReferenceEnvelope",
    "SCHEMA_NAMES",
    "decode_label",
    "decode_prediction",
    "event_time_ms",
    "json_schema",
    "make_alert_id",
]

#: The newest event schema version this build understands.
SCHEMA_VERSION = 1


class _Limits:
    """Size limits of the wire contract (also written into the JSON Schemas)."""

    max_event_bytes = 65_536
    max_features = 1_000
    max_id_length = 256
    max_name_length = 128
    max_string_value_length = 256
    max_segment_keys = 8
    max_segment_value_length = 64
    max_classes = 1_000
    #: Columnar batches (``prediction_batch.v1``): encoded size and rows per batch. The
    #: size fits Kafka's default ``message.max.bytes`` (1 MiB) with room for the record.
    max_batch_bytes = 1_000_000
    max_batch_rows = 10_000
    #: Largest event time in epoch milliseconds: 9999-12-31T23:59:59.999Z, the end of
    #: the last year RFC 3339 can write. Far below 2**53 and int64, so the core's time
    #: arithmetic (sums, differences, numpy int64) always holds.
    max_timestamp_ms = 253_402_300_799_999


LIMITS = _Limits()

# The RFC 3339 pattern encodes the calendar (days per month, leap years, years 0001-9999,
# hours 00-23, minutes and seconds 00-59, offsets up to 23:59), so the JSON Schema
# refuses 2026-02-30 exactly as the model does. It uses only syntax that ECMA-262,
# Python ``re`` and the Rust ``regex`` crate (pydantic) read alike: no look-around.
# Leap seconds (:60) are refused: Python's datetime cannot represent them.
_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001-9999
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # days 01-28 of any month
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"  # 29 and 30 of every month but February
    r"|(?:0[13578]|1[02])-31)"  # 31 of the long months
)
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
RFC3339_PATTERN = (
    rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
    r"[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)

# Ids are names chosen by operators and software, never text from data: a control
# character in one is a producer bug, and model ids and versions become Redis key names,
# where '{' and '}' would move the Redis Cluster hash tag. So (issue 16):
#   * no id holds a control character (C0, DEL, C1);
#   * model_id and model_version hold no '{' or '}' and are in Unicode NFKC form, so two
#     ids that read alike ('m1' and full-width 'ｍ１', NFC and NFD 'é') are never two
#     models; a non-NFKC id is refused, not silently rewritten (the producer would not
#     recognise its own id in alerts).
# The schemas say "not": {"pattern": <class>} (search semantics, so ECMA-262, Python and
# Rust read it alike; an anchored "$" would let Python accept a final newline). NFKC
# cannot be written in a JSON Schema: see schemas/README.md.
#: Characters no id may hold: C0 controls, DEL and C1 controls.
ID_FORBIDDEN = r"[\u0000-\u001F\u007F-\u009F]"
#: Characters model_id and model_version may not hold: controls and Redis hash-tag braces.
MODEL_ID_FORBIDDEN = r"[\u0000-\u001F\u007F-\u009F{}]"
_id_bad = re.compile(ID_FORBIDDEN).search
_model_id_bad = re.compile(MODEL_ID_FORBIDDEN).search
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def ids_have_control(text: str) -> bool:
    """Whether ``text`` (a column's ids joined) holds a character of ``ID_FORBIDDEN``.

    ASCII text, nearly every id, is checked by deleting its printable bytes: about ten
    times faster than the pattern's search over a batch's ids (docs/performance.md,
    "Round fourteen"); other text by the pattern.
    """
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _PRINTABLE_ASCII))
    return _id_bad(text) is not None


def _id_text(v: str) -> str:
    if _id_bad(v):
        raise ValueError("must not contain a control character")
    return v


def _model_id_text(v: str) -> str:
    if _model_id_bad(v):
        raise ValueError("must not contain a control character, '{' or '}'")
    if not unicodedata.is_normalized("NFKC", v):
        raise ValueError("must be in Unicode NFKC form")
    return v


# Strict: pydantic's lax ``str`` would also take ``bytes`` from a Python caller.
Id = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=LIMITS.max_id_length),
    AfterValidator(_id_text),
]
#: model_id and model_version: an :data:`Id` without braces, in NFKC form.
ModelId = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=LIMITS.max_id_length),
    AfterValidator(_model_id_text),
]
Name = Annotated[StrictStr, StringConstraints(min_length=1, max_length=LIMITS.max_name_length)]
StringValue = Annotated[StrictStr, StringConstraints(max_length=LIMITS.max_string_value_length)]
FeatureValue = StrictBool | StrictInt | StrictFloat | StringValue | None
Number = StrictInt | StrictFloat
Label = StrictInt | StrictFloat | StringValue
#: Event time: epoch milliseconds or an RFC 3339 string.
Timestamp = (
    Annotated[StrictInt, Field(ge=0, le=LIMITS.max_timestamp_ms)]
    | Annotated[StrictStr, Field(pattern=RFC3339_PATTERN)]
)
Probability = Annotated[Number, Field(ge=0, le=1)]
SegmentValue = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=LIMITS.max_segment_value_length)
]


def _known_version(v: int) -> int:
    if v > SCHEMA_VERSION:
        raise ValueError(f"schema_version {v} is newer than {SCHEMA_VERSION}")
    return v


#: A version this code reads: every envelope's ``schema_version`` (events and batches).
SchemaVersion = Annotated[StrictInt, Field(ge=1), AfterValidator(_known_version)]


def _exact_int(v: object) -> object:
    # A lax Literal[1] also takes true and 1.0; the contract says an integer.
    if type(v) is not int:
        raise ValueError(f"expected an integer, got {type(v).__name__}")
    return v


#: The version literal 1, strictly: not true, not 1.0.
One = Annotated[Literal[1], BeforeValidator(_exact_int)]
#: A reference profile's layout version (1: without detector banks; 2: with them).
LayoutVersion = Annotated[Literal[1, 2], BeforeValidator(_exact_int)]


Scores = Annotated[dict[Name, Probability], Field(min_length=1, max_length=LIMITS.max_classes)]
Segment = Annotated[dict[Name, SegmentValue], Field(max_length=LIMITS.max_segment_keys)]


def event_time_ms(ts: int | str) -> int:
    """Event time in epoch milliseconds from either wire form.

    Examples
    --------
    >>> event_time_ms("2026-01-01T00:00:01.5Z")
    1767225601500
    >>> event_time_ms(1767225601500)
    1767225601500
    """
    if isinstance(ts, int):
        return ts
    dt = datetime.fromisoformat(ts.replace("z", "Z").replace("t", "T"))
    if dt.tzinfo is None:  # pragma: no cover - the pattern demands an offset
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


class _Event(BaseModel):
    # extra="ignore": a new optional field from a newer producer is a compatible change.
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: SchemaVersion | None = None

    @field_validator("timestamp", check_fields=False)
    @classmethod
    def _parsable_time(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            event_time_ms(v)  # raises ValueError on an impossible date such as 2026-02-30
        return v

    @property
    def time_ms(self) -> int:
        """Event time in epoch milliseconds."""
        return event_time_ms(self.timestamp)  # type: ignore[attr-defined]


class PredictionEvent(_Event):
    """One prediction as a model server publishes it.

    Examples
    --------
    >>> e = PredictionEvent(prediction_id="p1", model_id="churn", model_version="3",
    ...                     timestamp=1767225600000, features={"age": 41, "plan": "pro"},
    ...                     prediction="stay", scores={"stay": 0.8, "leave": 0.2})
    >>> e.features["plan"]
    'pro'
    """

    prediction_id: Id
    model_id: ModelId
    model_version: ModelId
    timestamp: Timestamp
    features: Annotated[dict[Name, FeatureValue], Field(max_length=LIMITS.max_features)]
    prediction: Label
    scores: Scores | None = None
    segment: Segment | None = None


class LabelEvent(_Event):
    """The true outcome of a prediction, arriving later."""

    prediction_id: Id
    model_id: ModelId
    label: Label
    timestamp: Timestamp


#: The ``format`` of a columnar batch envelope (``prediction_batch.v1``).
BATCH_FORMAT = "driftline.prediction_batch"
_BatchLength = Field(min_length=1, max_length=LIMITS.max_batch_rows)


class PredictionBatch(BaseModel):
    """Many predictions of one model, version and segment, column by column.

    Row ``i`` is the prediction event with ``prediction_id = prediction_ids[i]``,
    ``timestamp = timestamps[i]``, ``features = {name: features[name][i]}``,
    ``prediction = predictions[i]`` and ``scores = {c: scores[c][i]}`` (null entries
    left out; a row whose entries are all null has no scores), plus the batch's
    ``model_id``, ``model_version`` and ``segment``. Every column has exactly ``count``
    entries: a rule JSON Schema cannot state, checked by this model and the fast
    checker (see ``schemas/README.md``).

    Examples
    --------
    >>> b = PredictionBatch(format=BATCH_FORMAT, model_id="churn", model_version="3",
    ...     count=2, prediction_ids=["p1", "p2"], timestamps=[1767225600000, 1767225600010],
    ...     features={"age": [41, None], "plan": ["pro", "basic"]},
    ...     predictions=["stay", "churn"], scores={"stay": [0.8, 0.3], "churn": [0.2, 0.7]})
    >>> b.features["plan"][1]
    'basic'
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal["driftline.prediction_batch"]
    schema_version: SchemaVersion | None = None
    model_id: ModelId
    model_version: ModelId
    count: Annotated[StrictInt, Field(ge=1, le=LIMITS.max_batch_rows)]
    prediction_ids: Annotated[list[Id], _BatchLength]
    timestamps: Annotated[list[Timestamp], _BatchLength]
    features: Annotated[
        dict[Name, Annotated[list[FeatureValue], _BatchLength]],
        Field(max_length=LIMITS.max_features),
    ]
    predictions: Annotated[list[Label], _BatchLength]
    scores: (
        Annotated[
            dict[Name, Annotated[list[Probability | None], _BatchLength]],
            Field(min_length=1, max_length=LIMITS.max_classes),
        ]
        | None
    ) = None
    segment: Segment | None = None

    @model_validator(mode="after")
    def _rows_line_up(self) -> PredictionBatch:
        columns: list[tuple[str, int]] = [
            ("prediction_ids", len(self.prediction_ids)),
            ("timestamps", len(self.timestamps)),
            ("predictions", len(self.predictions)),
        ]
        columns += [(f"features.{k}", len(v)) for k, v in self.features.items()]
        columns += [(f"scores.{k}", len(v)) for k, v in (self.scores or {}).items()]
        for where, n in columns:
            if n != self.count:
                raise ValueError(f"{where} has {n} entries, count is {self.count}")
        return self


AlertKind = Literal["input_drift", "output_drift", "concept_drift", "performance", "data_quality"]
AlertStatus = Literal["firing", "updated", "resolved"]
Severity = Literal["info", "warning", "critical"]
Diagnosis = Literal[
    "input_drift_benign",
    "covariate_shift_harmful",
    "concept_drift",
    "output_drift",
    "data_quality",
    "undetermined",
]


class AlertWindow(BaseModel):
    """The window of events an alert was computed from (event times, epoch ms)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Annotated[StrictInt, Field(ge=0)]
    end: Annotated[StrictInt, Field(ge=0)]
    count: Annotated[StrictInt, Field(ge=0)]


class FeatureContribution(BaseModel):
    """One entry of an alert's ranked ``top_features``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: Name
    score: Number
    #: Share of the alert's total drift score that this feature carries (0..1).
    contribution: Annotated[Number, Field(ge=0, le=1)]
    statistic: Name


class DriftAlert(BaseModel):
    """An alert event on the ``drift-alerts`` topic: one per episode and status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    model_id: ModelId
    model_version: ModelId
    segment: dict[Name, SegmentValue] | None = None
    kind: AlertKind
    status: AlertStatus
    severity: Severity
    feature: Name | None
    detector: Name
    statistic: Number
    threshold: Number
    p_value: Annotated[Number, Field(ge=0, le=1)] | None
    window: AlertWindow
    reference: Id
    detected_at: Annotated[StrictInt, Field(ge=0)]
    episode: Annotated[StrictInt, Field(ge=0)]
    diagnosis: Diagnosis | None = None
    top_features: list[FeatureContribution] = Field(default_factory=list, max_length=50)
    schema_version: One = 1

    def to_json(self) -> bytes:
        """Encode as the wire form (orjson)."""
        return orjson.dumps(self.model_dump(mode="json"))


def make_alert_id(*parts: object) -> str:
    """Deterministic alert id: the same episode and status always give the same id.

    Consumers deduplicate on it; a replay of the same input produces the same ids.
    """
    raw = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _int_in(*choices: int) -> Any:
    def check(v: object) -> object:
        if type(v) is not int or v not in choices:
            raise ValueError(f"expected one of the integers {choices}")
        return v

    return BeforeValidator(check)


Positive = Annotated[Number, Field(gt=0)]


class _MultivariateColumn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: Name
    category: StringValue | None
    scores: Annotated[list[Number], Field(min_length=2)]
    edges_fp: StrictStr = ""


class _MultivariateChannel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["t2", "spe"]
    dof: Positive
    mean: Number
    sd: Positive


class _MultivariateRows(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: list[Annotated[StrictInt, Field(ge=0)]]
    a: list[Number]
    b: list[Number]
    direction: list[Annotated[int, _int_in(1, -1)]]
    role: list[Annotated[int, _int_in(0, 1)]]
    #: null: a row its reference was too small to calibrate (never fires).
    threshold: list[Positive | None]


class MultivariateModel(BaseModel):
    """The multivariate model in a reference profile (``profile.multivariate``).

    Built by :mod:`driftline.core.multivariate`; versioned by its own
    ``format_version``. Absent from references built without it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: One
    settings: dict[str, Any]
    columns: Annotated[list[_MultivariateColumn], Field(min_length=2, max_length=2048)]
    components: Annotated[list[list[Number]], Field(min_length=1, max_length=64)]
    variances: Annotated[list[Positive], Field(min_length=1, max_length=64)]
    weights: list[Annotated[Number, Field(ge=0)]]
    channels: Annotated[list[_MultivariateChannel], Field(min_length=1, max_length=2)]
    rows: _MultivariateRows
    target_arl: Positive
    notes: dict[str, Any] = Field(default_factory=dict)


_Index = Annotated[StrictInt, Field(ge=0)]


class _BankGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=300)]
    channel: _Index
    mean: Number
    sd: Annotated[Number, Field(ge=0)]


class _BankRows(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: list[_Index]
    a: list[Number]
    b: list[Number]
    group: list[_Index]
    direction: list[Annotated[int, _int_in(1, -1)]]
    role: list[Annotated[int, _int_in(0, 1)]]
    shift: list[Number]
    #: null: a detection row its reference was too small to calibrate (never fires).
    threshold: list[Positive | None]


class DetectorBank(BaseModel):
    """One feature's or output's calibrated detector bank in a reference profile
    (``bank`` of a feature or output profile, ``outputs.low_confidence_bank``; layout 2).

    Built by :mod:`driftline.core.detectors.plans`, which also checks that the rows fit
    the groups and channels when a reference is loaded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=300)]
    kind: Literal["numeric", "categorical", "rate"]
    mean: Number
    std: Positive
    clip: Positive
    channel_codes: list[list[Annotated[StrictInt, Field(ge=-1)]]]
    cut: Number
    groups: Annotated[list[_BankGroup], Field(min_length=1)]
    rows: _BankRows
    theta: list[Annotated[Number, Field(ge=0)]]
    inflation: list[Annotated[Number, Field(ge=0)] | None]


def _bank_places(profile: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where a profile holds detector banks: (path, value)."""
    out: list[tuple[str, Any]] = []
    feats = profile.get("features")
    if isinstance(feats, dict):
        for name, f in feats.items():
            if isinstance(f, dict) and "bank" in f:
                out.append((f"features.{name}.bank", f["bank"]))
    outs = profile.get("outputs")
    if isinstance(outs, dict):
        for key in ("classes", "confidence", "prediction"):
            o = outs.get(key)
            if isinstance(o, dict) and "bank" in o:
                out.append((f"outputs.{key}.bank", o["bank"]))
        if "low_confidence_bank" in outs:
            out.append(("outputs.low_confidence_bank", outs["low_confidence_bank"]))
    return out


class ReferenceEnvelope(BaseModel):
    """The versioned envelope of a model's reference profile as stored in Redis.

    ``profile`` holds the per-feature and output profiles built by
    :mod:`driftline.core.reference`; its own layout is versioned by ``format_version``
    (absent: 1; 2 adds each feature's and output's calibrated detector bank,
    :class:`DetectorBank`). An optional ``profile.multivariate`` holds the multivariate
    model (:class:`MultivariateModel`). Both are checked when present.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["driftline.reference"] = "driftline.reference"
    format_version: LayoutVersion = 1
    reference_id: Id
    model_id: ModelId
    model_version: ModelId
    created_at: Annotated[StrictInt, Field(ge=0)]
    source: Annotated[StrictStr, StringConstraints(max_length=1024)]
    row_count: Annotated[StrictInt, Field(ge=0)]
    profile: dict[str, Any]

    @field_validator("profile")
    @classmethod
    def _check_parts(cls, v: dict[str, Any]) -> dict[str, Any]:
        parts: list[tuple[str, type[BaseModel], Any]] = [
            (where, DetectorBank, bank) for where, bank in _bank_places(v) if bank is not None
        ]
        if "multivariate" in v:
            parts.append(("multivariate", MultivariateModel, v["multivariate"]))
        for where, model, value in parts:
            try:
                model.model_validate(value)
            except PydanticValidationError as exc:
                first = exc.errors(include_input=False, include_url=False)[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"{where}.{loc}: {first['msg']}") from None
        return v


def json_problem(data: bytes, exc: Exception) -> str:
    """The reason a record orjson could not parse is refused.

    Bytes that are not UTF-8 say so (``invalid_utf8: ...``) rather than orjson's
    "surrogates not allowed", which names the wrong fault.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid_utf8: byte 0x{data[bad.start]:02x} at offset {bad.start} is not UTF-8"
    except AttributeError:  # not bytes: orjson's own words
        pass
    return f"not JSON: {exc}"


# --- duplicate keys -------------------------------------------------------------------
#
# JSON allows an object to repeat a key and orjson keeps the last value, so
# {"model_id": "a", ..., "model_id": "b"} would be read as model "b" by Driftline but as
# "a" by a parser that keeps the first. Such a record is refused. orjson cannot report
# duplicates, so counts on the raw bytes prove their absence cheaply; only a record
# the counts cannot clear is parsed a second time (by the json module) to find one.
#
# Why the counts are exact (never clear a record with a duplicate): every key token in
# the raw text is followed by exactly one structural ':' (after optional whitespace),
# and a parsed object holds at most one entry per key token. So
#   (1) with no backslash in the bytes (no escapes: parsed strings appear verbatim),
#       count(b":") >= key tokens + colons of the parsed strings counted, and key
#       tokens >= parsed keys; equality forces key tokens == parsed keys;
#   (2) with no whitespace before any ':', every key token ends in b'":' and any other
#       b'":' lies inside a string, so count(b'":') == parsed keys forces the same.
# The parsed keys counted are the top level and the known nested objects (features,
# scores, segment); any other nested object makes the counts disagree (slow path).

_KNOWN_TEXTS = ("prediction_id", "model_id", "model_version", "timestamp", "prediction")
_LOOSE_COLONS = (b" :", b"\t:", b"\n:", b"\r:")


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen.add(key)


def declared_keys(obj: dict[str, Any]) -> int:
    """Keys of ``obj`` and of its known nested objects (features, scores, segment, and
    a batch's coded feature columns)."""
    get = obj.get
    f, c, s = get("features"), get("scores"), get("segment")
    n = (
        len(obj)
        + (len(f) if type(f) is dict else 0)
        + (len(c) if type(c) is dict else 0)
        + (len(s) if type(s) is dict else 0)
    )
    if type(f) is dict and "format" in obj:
        # A binary batch's coded text columns are objects (binary_batch); a batch has
        # few columns, so the look costs little (single events skip it).
        n += sum(len(v) for v in f.values() if type(v) is dict)
    return n


def _known_colons(obj: dict[str, Any]) -> int:
    n = 0
    for name in _KNOWN_TEXTS:
        v = obj.get(name)
        if type(v) is str:
            n += v.count(":")
    return n


def duplicate_key(data: bytes, obj: dict[str, Any]) -> str | None:
    """A key repeated in one of the JSON objects of ``data`` (which parsed to ``obj``).

    ``None`` when every object's keys are distinct. Counting on the raw bytes clears
    almost every record at the cost of one pass; the others are parsed again.
    """
    keys = declared_keys(obj)
    if b"\\" not in data:
        excess = data.count(b":") - keys  # colons inside strings, or a repeated key
        if excess == 0 or excess == _known_colons(obj):
            return None
    if data.count(b'":') == keys and not any(c in data for c in _LOOSE_COLONS):
        return None
    try:
        json.loads(data, object_pairs_hook=_unique_pairs)
    except _Duplicate as dup:
        return dup.key
    except (ValueError, RecursionError):
        return "(nested too deeply to check)"
    return None


def _short(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _load(
    data: bytes, max_bytes: int = LIMITS.max_event_bytes, what: str = "event"
) -> dict[str, Any]:
    """Size check, JSON parse, object and duplicate-key checks and version gate shared
    by every decoder."""
    if len(data) > max_bytes:
        raise ValidationError(f"{what} is {len(data)} bytes, over {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(json_problem(data, exc)) from None
    return _loaded(data, obj)


def _loaded(data: bytes, obj: Any) -> dict[str, Any]:
    """The checks of :func:`_load` after the parse (``obj`` is what ``data`` parsed to)."""
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    dup = duplicate_key(data, obj)
    if dup is not None:
        raise DecodeError(f"duplicate key {_short(dup)} in a JSON object")
    version = obj.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise UnsupportedVersion(f"schema_version {version} > supported {SCHEMA_VERSION}")
    return obj


def _decode(data: bytes, model: type[_Event]) -> Any:
    obj = _load(data)
    try:
        return model.model_validate(obj)
    except PydanticValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationError(f"{where}: {first['msg']} ({exc.error_count()} errors)") from None


def decode_prediction(data: bytes) -> PredictionEvent:
    """Decode and validate one prediction event from its wire bytes.

    Raises
    ------
    DecodeError, ValidationError, UnsupportedVersion
        The event breaks the contract; it belongs on the dead-letter topic.
    """
    event: PredictionEvent = _decode(data, PredictionEvent)
    return event


def decode_label(data: bytes) -> LabelEvent:
    """Decode and validate one label event from its wire bytes (see :func:`decode_prediction`)."""
    event: LabelEvent = _decode(data, LabelEvent)
    return event


# --- JSON Schemas ---------------------------------------------------------------------

#: The JSON Schemas shipped as package data (``driftline/schemas/<name>.json``).
SCHEMA_NAMES = (
    "prediction_event.v1",
    "prediction_batch.v1",
    "prediction_batch.v2",
    "label_event.v1",
    "label_batch.v1",
    "drift_alert.v1",
    "reference_envelope.v1",
)


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (e.g. ``"prediction_event.v1"``) as shipped with the package.

    Examples
    --------
    >>> json_schema("label_event.v1")["$id"]
    'https://driftline.dev/schemas/label_event.v1.json'
    """
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no JSON Schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    resource = resources.files("driftline.contract") / "schemas" / f"{name}.json"
    schema: dict[str, Any] = orjson.loads(resource.read_bytes())
    return schema
