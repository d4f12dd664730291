"""The wire contract: prediction, label and alert events, and the reference envelope.

These pydantic models mirror the JSON Schemas in ``schemas/`` exactly; a test feeds
every example under ``schemas/examples/`` to both and checks they agree.

Size limits are part of the contract (see :data:`LIMITS`); an event over a limit is
refused like any other malformed event and goes to the dead-letter topic.

Unknown top-level fields are accepted and ignored, so adding an optional field is a
compatible change. A ``schema_version`` above :data:`SCHEMA_VERSION` is refused with
:class:`~driftline.errors.UnsupportedVersion`, since its meaning cannot be known.

The monitor's hot path uses :func:`decode_prediction_fast` / :func:`check_prediction`,
hand-written checks that accept and refuse exactly what the models do, returning the
plain dict. The schemas ship as package data; :func:`json_schema` loads one.
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
    "DriftAlert",
    "FeatureContribution",
    "LabelEvent",
    "PredictionBatch",
    "PredictionEvent",
    "MultivariateModel",
    "ReferenceEnvelope",
    "SCHEMA_NAMES",
    "check_label",
    "check_prediction",
    "decode_label",
    "decode_label_fast",
    "decode_prediction",
    "decode_prediction_fast",
    "event_time_ms",
    "json_schema",
    "make_alert_id",
    "names_are_valid",
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
SchemaVersion = Annotated[StrictInt, Field(ge=1)]


def _exact_int(v: object) -> object:
    # A lax Literal[1] also takes true and 1.0; the contract says an integer.
    if type(v) is not int:
        raise ValueError(f"expected the integer 1, got {type(v).__name__}")
    return v


#: The version literal 1, strictly: not true, not 1.0.
One = Annotated[Literal[1], BeforeValidator(_exact_int)]


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

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int | None) -> int | None:
        if v is not None and v > SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is newer than {SCHEMA_VERSION}")
        return v

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

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int | None) -> int | None:
        if v is not None and v > SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is newer than {SCHEMA_VERSION}")
        return v

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
AlertStatus = Literal["firing", "resolved"]
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


class ReferenceEnvelope(BaseModel):
    """The versioned envelope of a model's reference profile as stored in Redis.

    ``profile`` holds the per-feature and output profiles built by
    :mod:`driftline.core.reference`; its own layout is versioned by ``format_version``.
    An optional ``profile.multivariate`` holds the multivariate model
    (:class:`MultivariateModel`, checked when present).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["driftline.reference"] = "driftline.reference"
    format_version: One = 1
    reference_id: Id
    model_id: ModelId
    model_version: ModelId
    created_at: Annotated[StrictInt, Field(ge=0)]
    source: Annotated[StrictStr, StringConstraints(max_length=1024)]
    row_count: Annotated[StrictInt, Field(ge=0)]
    profile: dict[str, Any]

    @field_validator("profile")
    @classmethod
    def _check_multivariate(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "multivariate" in v:
            try:
                MultivariateModel.model_validate(v["multivariate"])
            except PydanticValidationError as exc:
                first = exc.errors(include_input=False, include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"multivariate.{where}: {first['msg']}") from None
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
    """Keys of ``obj`` and of its known nested objects (features, scores, segment)."""
    get = obj.get
    f, c, s = get("features"), get("scores"), get("segment")
    return (
        len(obj)
        + (len(f) if type(f) is dict else 0)
        + (len(c) if type(c) is dict else 0)
        + (len(s) if type(s) is dict else 0)
    )


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
    return _KINDS.get(type(v), type(v).__name__)


def _short(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


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


def _features_problem(v: object) -> str | None:
    if type(v) is not dict:
        return f"features: expected an object, got {_kind(v)}"
    if len(v) > _MAX_FEATURES:
        return f"features: {len(v)} features, over {_MAX_FEATURES}"
    if not _valid_names.issuperset(v):
        problem = _names_problem("features", v)
        if problem:
            return problem
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
    if v is None:
        return None
    if type(v) is not dict:
        return f"scores: expected an object or null, got {_kind(v)}"
    if not 0 < len(v) <= _MAX_CLASSES:
        return f"scores: {len(v)} classes, need 1 to {_MAX_CLASSES}"
    if not _valid_names.issuperset(v):
        problem = _names_problem("scores", v)
        if problem:
            return problem
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



# --- JSON Schemas ---------------------------------------------------------------------

#: The JSON Schemas shipped as package data (``driftline/schemas/<name>.json``).
SCHEMA_NAMES = (
    "prediction_event.v1",
    "prediction_batch.v1",
    "label_event.v1",
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
