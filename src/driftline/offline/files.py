"""Reference files and JSONL dead-letter files: what the offline commands write and read.

A reference file is the signed, versioned envelope Redis stores
(:meth:`~driftline.core.reference.ReferenceProfile.to_sealed`), signed with the state
signing key from the settings, so a file cannot be altered or forged either.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from driftline.core.reference import ReferenceProfile
from driftline.errors import InputError, StateCorrupt

__all__ = ["read_reference_file", "write_atomic", "write_jsonl", "write_reference_file"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except FileNotFoundError:
        raise InputError(f"{path}: the folder does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_reference_file(
    path: Path, ref: ReferenceProfile, signing_key: bytes | str | SecretStr
) -> int:
    """Write a signed reference file; returns its size in bytes."""
    blob = ref.to_sealed(signing_key)
    write_atomic(path, blob)
    return len(blob)


def read_reference_file(path: Path, signing_key: bytes | str | SecretStr) -> ReferenceProfile:
    """Read and check a reference file.

    Raises
    ------
    InputError
        The file does not exist or cannot be read, is not a signed reference, or its
        signature does not match (altered, or signed with another key).
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such reference file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    try:
        return ReferenceProfile.from_sealed(blob, signing_key, where=str(path))
    except StateCorrupt as exc:  # a file a person gave: an input error, said as such
        raise InputError(str(exc)) from None


def write_jsonl(path: Path | None, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON lines (``None``: nowhere); returns how many."""
    items = [orjson.dumps(dict(r)) + b"\n" for r in rows]
    if path is not None and items:
        write_atomic(path, b"".join(items))
    return len(items)
