"""Stream identities: the one segment key and :class:`StateKey`.

A monitored stream is one (model, version, segment). The segment's canonical text
(:func:`segment_key`) is written in state fields, alert episodes, history entries and
report filters, so it is defined here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KeyTuple", "StateKey", "interned_key", "segment_key", "state_key"]

#: A stream's identity as plain data: (model_id, model_version, segment key).
KeyTuple = tuple[str, str, str]


def segment_key(segment: Mapping[str, str] | None) -> str:
    """The canonical text of a segment: ``k=v`` pairs sorted by key, comma-separated.

    Examples
    --------
    >>> segment_key({"region": "eu", "plan": "pro"})
    'plan=pro,region=eu'
    >>> segment_key(None)
    ''
    """
    return ",".join(f"{k}={segment[k]}" for k in sorted(segment)) if segment else ""


@dataclass(frozen=True)
class StateKey:
    """Identity of one monitored stream: model, version and segment."""

    model_id: str
    model_version: str
    segment: str = ""

    def encode(self) -> str:
        """The Redis hash field for this key."""
        return f"{self.model_id}\x1f{self.model_version}\x1f{self.segment}"

    @classmethod
    def decode(cls, s: str) -> StateKey:
        """Inverse of :meth:`encode`."""
        m, v, seg = s.split("\x1f")
        return cls(m, v, seg)

    def segment_dict(self) -> dict[str, str] | None:
        """The segment as the alert's ``segment`` object."""
        if not self.segment:
            return None
        return dict(kv.split("=", 1) for kv in self.segment.split(","))


def state_key(event: Mapping[str, Any]) -> StateKey:
    """The :class:`StateKey` an event (or a columnar batch) belongs to."""
    seg = event.get("segment")
    return interned_key(
        (event["model_id"], event["model_version"], segment_key(seg) if seg else "")
    )


_KEYS: dict[KeyTuple, StateKey] = {}


def interned_key(kt: KeyTuple) -> StateKey:
    """The (shared) :class:`StateKey` of a key tuple."""
    key = _KEYS.get(kt)
    if key is None:
        if len(_KEYS) > 100_000:
            _KEYS.clear()
        key = _KEYS[kt] = StateKey(*kt)
    return key
