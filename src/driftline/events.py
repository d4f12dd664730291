"""The wire contract: prediction, label and alert events, and the reference envelope.

These pydantic models mirror the JSON Schemas in ``schemas/`` exactly; a test feeds
every example under ``schemas/examples/`` to both and checks they agree.

Size limits are part of the contract (see :data:`LIMITS`); an event over a limit is
refused like any other malformed event and goes to the dead-letter topic.

Unknown top-level fields are accepted and ignored, so adding an optional field is a
compatible change. A ``schema_version`` above :data:`SCHEMA_VERSION` is refused with
:class:`~driftline.errors.UnsupportedVersion`, since its meaning cannot be known.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from driftline.errors import DecodeError, UnsupportedVersion, ValidationError

__all__ = [
    "LIMITS",
    "SCHEMA_VERSION",
    "AlertWindow",
    "DriftAlert",
    "FeatureContribution",
    "LabelEvent",
    "PredictionEvent",
    "ReferenceEnvelope",
    "decode_label",
    "decode_prediction",
    "event_time_ms",
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


LIMITS = _Limits()

RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)

Id = Annotated[str, StringConstraints(min_length=1, max_length=LIMITS.max_id_length)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=LIMITS.max_name_length)]
StringValue = Annotated[StrictStr, StringConstraints(max_length=LIMITS.max_string_value_length)]
FeatureValue = StrictBool | StrictInt | StrictFloat | StringValue | None
Number = StrictInt | StrictFloat
Label = StrictInt | StrictFloat | StringValue
#: Event time: epoch milliseconds or an RFC 3339 string.
Timestamp = Annotated[StrictInt, Field(ge=0)] | Annotated[StrictStr, Field(pattern=RFC3339_PATTERN)]
Probability = Annotated[Number, Field(ge=0, le=1)]
SegmentValue = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=LIMITS.max_segment_value_length)
]
SchemaVersion = Annotated[StrictInt, Field(ge=1)]


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
    model_id: Id
    model_version: Id
    timestamp: Timestamp
    features: Annotated[dict[Name, FeatureValue], Field(max_length=LIMITS.max_features)]
    prediction: Label
    scores: Annotated[dict[Name, Probability], Field(min_length=1, max_length=LIMITS.max_classes)] | None = None
    segment: Annotated[dict[Name, SegmentValue], Field(max_length=LIMITS.max_segment_keys)] | None = None


class LabelEvent(_Event):
    """The true outcome of a prediction, arriving later."""

    prediction_id: Id
    model_id: Id
    label: Label
    timestamp: Timestamp


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

    alert_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    model_id: Id
    model_version: Id
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
    schema_version: Literal[1] = 1

    def to_json(self) -> bytes:
        """Encode as the wire form (orjson)."""
        return orjson.dumps(self.model_dump(mode="json"))


def make_alert_id(*parts: object) -> str:
    """Deterministic alert id: the same episode and status always give the same id.

    Consumers deduplicate on it; a replay of the same input produces the same ids.
    """
    raw = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class ReferenceEnvelope(BaseModel):
    """The versioned envelope of a model's reference profile as stored in Redis.

    ``profile`` holds the per-feature and output profiles built by
    :mod:`driftline.reference`; its own layout is versioned by ``format_version``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["driftline.reference"] = "driftline.reference"
    format_version: Literal[1] = 1
    reference_id: Id
    model_id: Id
    model_version: Id
    created_at: Annotated[StrictInt, Field(ge=0)]
    source: Annotated[str, StringConstraints(max_length=1024)]
    row_count: Annotated[StrictInt, Field(ge=0)]
    profile: dict[str, Any]


def _check_size(data: bytes) -> None:
    if len(data) > LIMITS.max_event_bytes:
        raise ValidationError(f"event is {len(data)} bytes, over {LIMITS.max_event_bytes}")


def _decode(data: bytes, model: type[_Event]) -> Any:
    _check_size(data)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise UnsupportedVersion(f"schema_version {version} > supported {SCHEMA_VERSION}")
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
