"""What the user says about a table's columns (:class:`ColumnMap`), and a row set aside
(:class:`Refusal`): the inputs and one output of :func:`driftline.offline.roles.resolve`.

A :class:`ColumnMap` comes from keyword arguments (the notebook), flags (the command
line) or a mapping file (JSON or TOML); anything it leaves ``None`` is inferred.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from driftline.errors import InputError

__all__ = ["ColumnMap", "Refusal"]


@dataclass
class ColumnMap:
    """What the user says about columns; anything left ``None`` is inferred.

    Parameters
    ----------
    id, timestamp, prediction, label
        Column names; ``""`` says there is no such column (nothing is inferred).
    scores
        Class probability columns: a mapping class -> column, or a list of columns
        (the class is the name without its ``proba_``/``score.``-like prefix).
    features
        The feature columns (every other column is excluded); default: every column
        without another role.
    exclude
        Columns that are neither features nor anything else.
    types
        Declared types, column -> ``numeric`` or ``categorical``.
    task
        ``classification`` or ``regression`` (default: inferred from the outputs).
    on_bad_value
        ``error`` (default): a bad value in a numeric column stops the read, naming the
        line and column; ``dlq``: rows with one are set aside, counted and listed.
    time_format
        The layout of the time column's text in ``strptime`` codes (``%d.%m.%Y %H:%M``);
        default: ISO 8601, or the one common layout that reads every value.
    encoding
        The text encoding of a CSV or TSV file (``cp1252``: what Excel writes for "CSV"
        on Windows); default: UTF-8.
    label_map
        Labels written otherwise than the model's classes, text -> class (any case):
        ``{"no": "0", "yes": "1"}`` for a model that predicts 0 and 1. Labels it does
        not name stay as they are.
    """

    id: str | None = None
    timestamp: str | None = None
    prediction: str | None = None
    label: str | None = None
    scores: Mapping[str, str] | Sequence[str] | None = None
    features: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    types: Mapping[str, str] = field(default_factory=dict)
    task: str | None = None
    on_bad_value: str = "error"
    time_format: str | None = None
    encoding: str | None = None
    label_map: Mapping[str, str] | None = None

    @classmethod
    def for_labels(cls, roles: Mapping[str, str]) -> ColumnMap:
        """The columns of a labels table by role (``id``, ``label``, ``timestamp``), the
        ``time_format`` of its time column and the file's ``encoding``.

        Raises
        ------
        InputError
            A role other than those three.
        """
        unknown = sorted(set(roles) - {"id", "label", "timestamp", "time_format", "encoding"})
        if unknown:
            raise InputError(
                f"labels columns: {', '.join(map(repr, unknown))}: "
                "the roles of a labels table are id, label and timestamp"
            )
        return cls(
            id=roles.get("id"),
            label=roles.get("label"),
            timestamp=roles.get("timestamp"),
            time_format=roles.get("time_format"),
            encoding=roles.get("encoding"),
        )

    @classmethod
    def from_file(cls, path: Path) -> ColumnMap:
        """Read a mapping file (JSON, or TOML by its ``.toml`` suffix) with these keys."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the mapping file ({exc.strerror})") from None
        try:
            obj = tomllib.loads(raw.decode()) if path.suffix == ".toml" else orjson.loads(raw)
        except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a valid mapping file ({exc})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: a mapping file holds one object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise InputError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**obj)

    def merged(self, over: ColumnMap) -> ColumnMap:
        """This map with every field that ``over`` sets taken from ``over``."""
        base = ColumnMap()

        def given(name: str) -> bool:  # set to something other than the default
            v, d = getattr(over, name), getattr(base, name)
            return bool(v) if name in ("exclude", "types") else v != d

        kw = {f.name: getattr(over if given(f.name) else self, f.name) for f in fields(self)}
        kw["types"] = {**self.types, **over.types}
        return ColumnMap(**kw)


@dataclass(frozen=True)
class Refusal:
    """A row set aside: where, which column, and why."""

    row: int
    where: str
    column: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a line of the dead-letter file)."""
        return {"where": self.where, "column": self.column, "reason": self.reason}
