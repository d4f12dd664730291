"""Stream identities: the one segment key and :class:`StateKey`.

A monitored stream is one (model, version, segment). The segment's canonical text
(:func:`segment_key`) is written in state fields, alert episodes, history entries and
report filters, so it is defined here once, with its inverse (:func:`segment_dict`).

Both texts are escaped so that any strings survive the round trip (issue 16): segment
keys and values come from data and may hold ``,``, ``=`` or control characters. The
escaping is backward compatible: a text that needs none is written exactly as before
(``plan=pro,region=eu``, ``churn\\x1f3\\x1fplan=pro``), so every state field stored
by an earlier version is found again and decodes to the same key. Only the texts
that used to be ambiguous take the escaped form, marked so that no earlier text can
be mistaken for one:

* segment text: ``=`` + ``k=v`` pairs with ``%``, ``,``, ``=`` and control characters
  written ``%XX`` (``{"r": "x,q=z"}`` -> ``=r=x%2Cq%3Dz``). A plain text never starts
  with ``=`` (its first key would be empty or hold ``=``, both escaped forms).
* state key: the three parts with ``%`` and the separator U+001F written ``%XX``, and
  a fourth, empty part (``a%1Fb\\x1f1\\x1f\\x1f``). A plain key has exactly three parts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KeyTuple",
    "StateKey",
    "interned_key",
    "segment_dict",
    "segment_key",
    "state_key",
]

#: A stream's identity as plain data: (model_id, model_version, segment key).
KeyTuple = tuple[str, str, str]

_SEP = "\x1f"
#: Characters a plain segment text cannot carry: its separators and control characters.
_SEGMENT_SPECIAL = re.compile(r"[%,=\x00-\x1f\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_SPECIAL = re.compile(r"[%\x1f]")
#: Plain segment texts already checked.
_PLAIN: set[str] = set()
_ESCAPED = re.compile(r"%([0-9A-F]{2})")


def _hex(m: re.Match[str]) -> str:
    return f"%{ord(m.group()):02X}"


def _unhex(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def segment_key(segment: Mapping[str, str] | None) -> str:
    """The canonical text of a segment: ``k=v`` pairs sorted by key, comma-separated.

    Keys and values holding ``,``, ``=`` or control characters (or an empty key) give
    the escaped form (see the module docstring); :func:`segment_dict` inverts both.

    Examples
    --------
    >>> segment_key({"region": "eu", "plan": "pro"})
    'plan=pro,region=eu'
    >>> segment_key({"r": "x,q=z"})
    '=r=x%2Cq%3Dz'
    >>> segment_key(None)
    ''
    """
    if not segment:
        return ""
    names = sorted(segment)
    text = ",".join(f"{k}={segment[k]}" for k in names)
    n = len(names)
    if text[0] != "=" and text.count("=") == n and text.count(",") == n - 1:
        # No separator inside a key or a value, so the text splits one way only: the
        # plain form unless a control character needs escaping (checked once per text;
        # a stream sends the same few segments again and again).
        if text in _PLAIN:
            return text
        if _CONTROL.search(text) is None:
            if len(_PLAIN) > 65_536:
                _PLAIN.clear()
            _PLAIN.add(text)
            return text
    sub = _SEGMENT_SPECIAL.sub
    return "=" + ",".join(f"{sub(_hex, k)}={sub(_hex, segment[k])}" for k in names)


def segment_dict(text: str) -> dict[str, str] | None:
    """The segment a :func:`segment_key` text stands for (``None`` for ``""``).

    Never raises: a text from an earlier version that was ambiguous (a key or value
    holding ``,`` or ``=``) is read the way it was read then, pieces without ``=``
    joining the previous value.

    Examples
    --------
    >>> segment_dict("=r=x%2Cq%3Dz")
    {'r': 'x,q=z'}
    >>> segment_dict("plan=pro,region=eu")
    {'plan': 'pro', 'region': 'eu'}
    """
    if not text:
        return None
    out: dict[str, str] = {}
    if text[0] == "=":
        for pair in text[1:].split(","):
            k, _, v = pair.partition("=")
            out[_ESCAPED.sub(_unhex, k)] = _ESCAPED.sub(_unhex, v)
        return out
    last: str | None = None
    for piece in text.split(","):
        k, sep, v = piece.partition("=")
        if sep or last is None:
            out[k] = v
            last = k
        else:  # an earlier version's value that held ','
            out[last] += "," + piece
    return out


@dataclass(frozen=True)
class StateKey:
    """Identity of one monitored stream: model, version and segment."""

    model_id: str
    model_version: str
    segment: str = ""

    def encode(self) -> str:
        """The Redis hash field for this key (see the module docstring)."""
        m, v, s = self.model_id, self.model_version, self.segment
        if _SEP not in m and _SEP not in v and _SEP not in s:
            return f"{m}{_SEP}{v}{_SEP}{s}"
        sub = _KEY_SPECIAL.sub
        return f"{sub(_hex, m)}{_SEP}{sub(_hex, v)}{_SEP}{sub(_hex, s)}{_SEP}"

    @classmethod
    def decode(cls, s: str) -> StateKey:
        """Inverse of :meth:`encode`.

        Raises
        ------
        ValueError
            ``s`` is not an encoded state key.
        """
        parts = s.split(_SEP)
        if len(parts) == 3:
            return cls(*parts)
        if len(parts) == 4 and parts[3] == "":
            m, v, seg = (_ESCAPED.sub(_unhex, p) for p in parts[:3])
            return cls(m, v, seg)
        raise ValueError(f"not a state key: {len(parts)} parts")

    def segment_dict(self) -> dict[str, str] | None:
        """The segment as the alert's ``segment`` object."""
        return segment_dict(self.segment)


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
