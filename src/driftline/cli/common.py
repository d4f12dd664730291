"""What several commands share: the column map from options, reference files, output."""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from pathlib import Path

from driftline.config import Settings
from driftline.core.reference import ReferenceProfile
from driftline.errors import InputError
from driftline.offline.files import read_reference_file
from driftline.offline.roles import ColumnMap

__all__ = ["column_map", "dlq_path", "read_references", "say"]


def say(text: str) -> None:
    """One line (or block) for a person, on stderr (stdout carries data)."""
    print(text, file=sys.stderr, flush=True)


def _list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _pairs(text: str, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _list(text) or []:
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InputError(f"{flag}: {part!r} must be NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def column_map(args: argparse.Namespace) -> ColumnMap:
    """The column map the options say (a --mapping file, overridden by the flags)."""
    base = ColumnMap.from_file(Path(args.mapping)) if args.mapping else ColumnMap()
    scores: dict[str, str] | list[str] | None = None
    if args.scores:
        scores = _pairs(args.scores, "--scores") if "=" in args.scores else _list(args.scores)
    types = _pairs(args.types, "--types") if args.types else {}
    for col, kind in types.items():
        if kind not in ("numeric", "categorical"):
            raise InputError(f"--types: {col}={kind}: a type is numeric or categorical")
    flags = ColumnMap(
        id=args.id,
        timestamp=args.timestamp,
        prediction=args.prediction,
        label=args.label,
        scores=scores,
        features=_list(args.features),
        exclude=tuple(_list(args.exclude) or ()),
        types=types,
        task=args.task,
        on_bad_value=args.on_bad_value,
        time_format=args.time_format,
        encoding=args.encoding,
        label_map=_pairs(args.label_map, "--label-map") if args.label_map else None,
    )
    return base.merged(flags)


def label_column_map(args: argparse.Namespace) -> ColumnMap | None:
    """The columns ``--labels-columns`` names for a labels table (``None``: inferred)."""
    text = getattr(args, "labels_columns", None)
    if not text:
        return None
    return ColumnMap.for_labels(_pairs(text, "--labels-columns"))


def input_files(values: Sequence[str] | None) -> list[str] | None:
    """The files of ``--events``/``--labels`` in order, with a pattern the shell left
    alone (quoted: ``'preds/*.csv'``) expanded, sorted. One file or several: the
    offline readers take a list of paths either way.

    Raises
    ------
    InputError
        A pattern that matches no file.
    """
    if not values:
        return None
    files: list[str] = []
    for v in values:
        if any(c in v for c in "*?[") and not Path(v).exists():
            found = sorted(glob.glob(v))
            if not found:
                raise InputError(f"{v}: no file matches this pattern")
            files += found
        else:
            files.append(v)
    return files


def dlq_path(args: argparse.Namespace, data: str) -> Path:
    """Where rows set aside go: --dlq, or ``<data>.refused.jsonl`` in the working folder."""
    return Path(args.dlq) if args.dlq else Path(f"{Path(data).name}.refused.jsonl")


def read_references(paths: list[str] | None, settings: Settings) -> list[ReferenceProfile]:
    """Signed reference files, checked with the state signing key."""
    if not paths:
        return []
    key = settings.redis.signing_key()  # no key configured: one clear line
    return [read_reference_file(Path(p), key) for p in paths]
