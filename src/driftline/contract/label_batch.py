"""Columnar label batches (``label_batch.v1``): the model, checks, decoding and packing.

A label batch carries many labels of one model in one Kafka message, column by column
(:data:`LABEL_BATCH_FORMAT`): row ``i`` is the label event with ``prediction_id =
prediction_ids[i]``, ``label = labels[i]`` and ``timestamp = timestamps[i]``, plus the
batch's ``model_id``. What the SDK sends by default, as it does with predictions
(``prediction_batch.v1``).

Two levels of refusal, so that nothing is lost and nothing is worded twice:

* the **envelope** (JSON, size, duplicate keys, version, ``format``, ``model_id``,
  ``count``, the columns being arrays of ``count`` entries): a batch that breaks it is
  refused whole, with the reason, as one dead letter;
* a **row** whose values break the label contract is refused alone, with exactly the
  reason a single label event with those values gets (:func:`check_label` on the row
  rebuilt as that event, which is also what is dead-lettered); the other rows are kept.

:func:`decode_label_records` decodes a fetch of the labels topic (single label events and
label batches mixed) into the labels in record order, checking a batch's rows with a few
C-level passes per column and row by row only when one of them fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from driftline.contract.batch import (
    ids_column_problem,
    outputs_column_problem,
    times_column_problem,
)
from driftline.contract.checks import (
    _MAX_ID,
    _MAX_STRING,
    _MAX_TIMESTAMP,
    _id_problem,
    _kind,
    _rfc3339_fullmatch,
    _version_problem,
    check_label,
    decode_label_fast,
)
from driftline.contract.events import (
    LIMITS,
    SCHEMA_VERSION,
    Id,
    Label,
    ModelId,
    SchemaVersion,
    Timestamp,
    _id_bad,
    _load,
    _loaded,
    event_time_ms,
)
from driftline.errors import ContractError, DecodeError, ValidationError

__all__ = [
    "LABEL_BATCH_FORMAT",
    "LabelBatch",
    "LabelRecords",
    "check_label_batch",
    "decode_label_records",
    "pack_label_events",
]

#: The ``format`` of a columnar label batch (``label_batch.v1``).
LABEL_BATCH_FORMAT = "driftline.label_batch"
_MAX_EVENT_BYTES = LIMITS.max_event_bytes
_MAX_ROWS = LIMITS.max_batch_rows
_COLUMNS = ("prediction_ids", "labels", "timestamps")
_BatchLength = Field(min_length=1, max_length=_MAX_ROWS)


class LabelBatch(BaseModel):
    """Many labels of one model, column by column (the oracle of the checks below).

    A batch is valid when its envelope and every row are; the joiner is kinder than
    this model: it keeps the valid rows of a batch whose envelope is valid.

    Examples
    --------
    >>> b = LabelBatch(format=LABEL_BATCH_FORMAT, model_id="churn", count=2,
    ...     prediction_ids=["p1", "p2"], labels=["stay", "churn"],
    ...     timestamps=[1767225600000, "2026-01-01T00:00:01Z"])
    >>> b.labels[1]
    'churn'
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal["driftline.label_batch"]
    schema_version: SchemaVersion | None = None
    model_id: ModelId
    count: Annotated[StrictInt, Field(ge=1, le=_MAX_ROWS)]
    prediction_ids: Annotated[list[Id], _BatchLength]
    labels: Annotated[list[Label], _BatchLength]
    timestamps: Annotated[list[Timestamp], _BatchLength]

    @field_validator("timestamps")
    @classmethod
    def _parsable_times(cls, v: list[int | str]) -> list[int | str]:
        for t in v:
            if isinstance(t, str):
                event_time_ms(t)  # an impossible date such as 2026-02-30 raises
        return v

    @model_validator(mode="after")
    def _rows_line_up(self) -> LabelBatch:
        for name in _COLUMNS:
            n = len(getattr(self, name))
            if n != self.count:
                raise ValueError(f"{name} has {n} entries, count is {self.count}")
        return self


def _envelope_problem(obj: dict[str, Any]) -> str | None:
    """Why a decoded label batch is refused whole, or ``None`` (rows not looked at)."""
    problem = _version_problem(obj.get("schema_version"))
    if problem:
        return problem
    fmt = obj.get("format")
    if type(fmt) is not str or fmt != LABEL_BATCH_FORMAT:
        return (
            f"format: must be {LABEL_BATCH_FORMAT!r}"
            if "format" in obj
            else "format: field required"
        )
    problem = _id_problem(obj, "model_id")
    if problem:
        return problem
    count = obj.get("count")
    if type(count) is not int or not 0 < count <= _MAX_ROWS:
        return "count: field required" if "count" not in obj else f"count: need 1 to {_MAX_ROWS}"
    for name in _COLUMNS:
        if name not in obj:
            return f"{name}: field required"
        col = obj[name]
        if type(col) is not list:
            return f"{name}: expected an array, got {_kind(col)}"
        if len(col) != count:
            return f"{name}: {len(col)} entries, count is {count}"
    return None


def _bad_rows(ids: list[Any], labels: list[Any], times: list[Any]) -> list[int]:
    """The rows that may break the contract, in order: a column passes whole with a few
    C-level passes, and only a column that does not is looked at value by value.
    ``check_label`` on the row decides (and words the reason)."""
    bad: set[int] = set()
    if ids_column_problem(ids):
        bad.update(
            i
            for i, v in enumerate(ids)
            if type(v) is not str or not 0 < len(v) <= _MAX_ID or _id_bad(v)
        )
    if outputs_column_problem("labels", labels):
        bad.update(
            i
            for i, v in enumerate(labels)
            if not ((type(v) is str and len(v) <= _MAX_STRING) or type(v) in (int, float))
        )
    if times_column_problem(times):
        bad.update(
            i
            for i, t in enumerate(times)
            if not (
                (type(t) is int and 0 <= t <= _MAX_TIMESTAMP)
                or (type(t) is str and _rfc3339_fullmatch(t))
            )
        )
    return sorted(bad)


def _batch_size(obj: object) -> int:
    """The labels a label batch refused whole held, as far as it shows: its longest
    column (what the record carries, whatever its ``count`` says), else its ``count``;
    1 for what is no label batch (a single event, bytes that are not JSON)."""
    if type(obj) is not dict or obj.get("format") != LABEL_BATCH_FORMAT:
        return 1
    sizes = [len(c) for name in _COLUMNS if type(c := obj.get(name)) is list]
    count = obj.get("count")
    if not sizes and type(count) is int and 0 < count <= _MAX_ROWS:
        sizes.append(count)
    return max(max(sizes, default=1), 1)


def _rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's rows as single label events (what the join reads, and the dead letter)."""
    mid = obj["model_id"]
    return [
        {"prediction_id": pid, "model_id": mid, "label": lab, "timestamp": t}
        for pid, lab, t in zip(obj["prediction_ids"], obj["labels"], obj["timestamps"], strict=True)
    ]


def check_label_batch(obj: object) -> str | None:
    """Check a decoded label batch whole; ``None`` if valid, else a short reason.

    Accepts and refuses exactly what :class:`LabelBatch` does. A row's reason is the
    one its single label event gets, after its index (``row 3: label: ...``).

    Examples
    --------
    >>> ok = {"format": LABEL_BATCH_FORMAT, "model_id": "m", "count": 1,
    ...       "prediction_ids": ["p1"], "labels": ["a"], "timestamps": [0]}
    >>> check_label_batch(ok) is None
    True
    >>> check_label_batch({**ok, "labels": [True]})
    'row 0: label: expected a number or a string, got a boolean'
    """
    if type(obj) is not dict:
        return f"expected a JSON object, got {_kind(obj)}"
    problem = _envelope_problem(obj)
    if problem:
        return problem
    rows = _rows(obj)
    for i in _bad_rows(obj["prediction_ids"], obj["labels"], obj["timestamps"]):
        problem = check_label(rows[i])
        if problem:
            return f"row {i}: {problem}"
    return None


@dataclass
class LabelRecords:
    """A fetch of the labels topic decoded, in record order.

    ``labels`` are the valid labels (plain dicts as a single label event decodes to;
    a batch's rows as :func:`_rows` builds them), ``origin[i]`` the index of the record
    label ``i`` came from, ``batches`` the indices of records that were label batches,
    and ``refused`` ``(record index, dead-letter value, error)`` for each refused
    record or row: the value is ``None`` for a whole record (its own bytes go to the
    dead-letter topic) and the row rebuilt as a single label event for a batch's row.
    """

    labels: list[dict[str, Any]] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    batches: set[int] = field(default_factory=set)
    refused: list[tuple[int, dict[str, Any] | None, ContractError]] = field(default_factory=list)
    #: Labels in the refused records and rows: a batch refused whole counts the labels
    #: it held (:func:`_batch_size`), any other refusal one.
    refused_labels: int = 0

    @property
    def count(self) -> int:
        """Labels read: the valid ones and those refused (a batch refused whole counts
        the labels it held)."""
        return len(self.labels) + self.refused_labels


def decode_label_records(values: Sequence[bytes | None]) -> LabelRecords:
    """Decode a fetch of label records (single label events and label batches mixed).

    A single event is decoded and checked as :func:`decode_label_fast` does; a label
    batch is refused whole when its envelope is malformed, else each row that breaks
    the contract is refused with the reason its single event gets, and the others kept.
    """
    out = LabelRecords()
    labels, origin = out.labels, out.origin
    loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
    for ri, value in enumerate(values):
        obj = None
        try:
            if value is None:
                raise DecodeError("record has no value")
            # One parse tells a batch from an event (cheaper than looking for the
            # format in the bytes); the refusals are those of decode_label_fast.
            try:
                obj = loads(value)
            except JSONDecodeError:
                decode_label_fast(value)  # raises, with the words of a single event
                raise  # pragma: no cover - what orjson refuses, _load refuses
            if type(obj) is not dict or obj.get("format") != LABEL_BATCH_FORMAT:
                if len(value) > _MAX_EVENT_BYTES:
                    decode_label_fast(value)  # raises: over the size of an event
                obj = _loaded(value, obj)
                problem = check_label(obj)
                if problem is not None:
                    raise ValidationError(problem)
                labels.append(obj)
                origin.append(ri)
                continue
            if len(value) > LIMITS.max_batch_bytes:
                _load(value, LIMITS.max_batch_bytes, "batch")  # raises: over a batch's size
            problem = _envelope_problem(_loaded(value, obj))
            if problem:
                raise ValidationError(problem)
        except ContractError as exc:
            held = _batch_size(obj)
            if held > 1:
                # the dead letter says what it took with it: one record, many labels
                exc = type(exc)(f"{exc} (a label batch of {held:,} labels, refused whole)")
            out.refused.append((ri, None, exc))
            out.refused_labels += held
            continue
        rows = _rows(obj)
        out.batches.add(ri)
        kept = 0  # rows before this index are kept or refused already
        for i in _bad_rows(obj["prediction_ids"], obj["labels"], obj["timestamps"]):
            problem = check_label(rows[i])
            if problem is not None:
                labels.extend(rows[kept:i])
                origin.extend(repeat(ri, i - kept))
                out.refused.append((ri, rows[i], ValidationError(problem)))
                out.refused_labels += 1
                kept = i + 1
        labels.extend(rows[kept:] if kept else rows)
        origin.extend(repeat(ri, len(rows) - kept))
    return out


def pack_label_events(
    events: Sequence[Mapping[str, Any]], max_rows: int = 500
) -> list[dict[str, Any]]:
    """Single label events as label batches (dicts ready for ``orjson.dumps``).

    Events are grouped by model, keeping their order within each model, and cut into
    batches of at most ``max_rows``. Fields other than the four of a label are not
    carried (a consumer ignores unknown fields).
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        runs.setdefault(e["model_id"], []).append(e)
    out: list[dict[str, Any]] = []
    for model, run in runs.items():
        for lo in range(0, len(run), max_rows):
            rows = run[lo : lo + max_rows]
            out.append(
                {
                    "format": LABEL_BATCH_FORMAT,
                    "schema_version": SCHEMA_VERSION,
                    "model_id": model,
                    "count": len(rows),
                    "prediction_ids": [e["prediction_id"] for e in rows],
                    "labels": [e["label"] for e in rows],
                    "timestamps": [e["timestamp"] for e in rows],
                }
            )
    return out
