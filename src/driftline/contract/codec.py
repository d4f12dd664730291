"""Versioned byte format shared by every sketch, detector and state record.

A record is a JSON object (orjson) with a type tag ``t``, a format version ``v`` and
the object's explicit fields. Nothing is ever pickled: reading a record can only
produce numbers, strings, lists and dicts, whatever bytes an attacker wrote.

JSON has no infinities or NaN (orjson would write ``null``), so a float field that
may hold one is written with :func:`encode_float` (``"inf"``, ``"-inf"``, ``"nan"``)
and read with :func:`decode_float`; finite floats round-trip exactly.

Examples
--------
>>> blob = pack("demo", 1, {"n": 3, "x": encode_float(float("inf"))})
>>> fields = unpack(blob, "demo", 1)
>>> fields["n"], decode_float(fields["x"], "demo.x")
(3, inf)
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

from driftline.errors import StateCorrupt

__all__ = ["decode_float", "encode_float", "pack", "unpack"]

_NONFINITE: Final = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def pack(tag: str, version: int, fields: dict[str, Any]) -> bytes:
    """Encode ``fields`` as a tagged, versioned record (numpy arrays are allowed)."""
    return orjson.dumps(
        {"t": tag, "v": version, **fields},
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS,
    )


def unpack(data: bytes, tag: str, version: int) -> dict[str, Any]:
    """Decode a record written by :func:`pack`, checking its tag and version.

    Raises
    ------
    StateCorrupt
        The bytes are not such a record, or carry another tag or an unknown version.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StateCorrupt(f"{tag}: record is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("t") != tag:
        raise StateCorrupt(f"expected a {tag!r} record")
    if obj.get("v") != version:
        raise StateCorrupt(f"{tag}: format version {obj.get('v')!r} is not {version}")
    del obj["t"], obj["v"]
    return obj


def encode_float(x: float) -> float | str:
    """``x`` for a JSON record: finite floats as they are, the others as strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def decode_float(value: Any, what: str) -> float:
    """Inverse of :func:`encode_float`, refusing anything that is not a number.

    Raises
    ------
    StateCorrupt
        ``value`` is a boolean, a string other than the three spellings, or no number;
        ``what`` names the field in the message.
    """
    if isinstance(value, bool):
        raise StateCorrupt(f"{what}: expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    raise StateCorrupt(f"{what}: expected a number, got {type(value).__name__}")
