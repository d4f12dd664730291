"""Versioned byte format shared by every sketch, detector and state record.

A record is a JSON object (orjson) with a type tag ``t``, a format version ``v`` and
the object's explicit fields. Nothing is ever pickled: reading a record can only
produce numbers, strings, lists and dicts, whatever bytes an attacker wrote.

Examples
--------
>>> blob = pack("demo", 1, {"n": 3})
>>> unpack(blob, "demo", 1)
{'n': 3}
"""

from __future__ import annotations

from typing import Any

import orjson

from driftline.errors import StateCorrupt

__all__ = ["pack", "unpack"]


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
