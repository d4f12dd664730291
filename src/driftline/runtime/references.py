"""The reference profiles a worker uses: read from Redis at most once per TTL, bounded.

Keyed by ``(model, version)`` (the version asked for, which may resolve to the model's
``default``). An entry older than the TTL is read again; when the stored reference did
not change (same ``reference_id``) the cached object is kept, so whatever the core
derived from it (bins, plans cached per object) stays valid and memory stays flat under
a steady stream. At most ``size`` entries are kept, least recently used evicted first.

A reference that cannot be read (bad signature, unparsable profile) is reported, not
raised past the worker: the caller quarantines that model until the reference reads
again (checked once per TTL).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from driftline.core.reference import ReferenceProfile
from driftline.errors import DriftlineError
from driftline.runtime.store import ReferenceLookup

__all__ = ["ReferenceCache", "ReferenceState"]

#: What an unreadable reference payload may raise while being parsed.
_UNREADABLE = (DriftlineError, ValueError, KeyError, TypeError, AttributeError)


@dataclass(frozen=True)
class ReferenceState:
    """What the worker knows of one ``(model, version)``'s reference."""

    #: The profile to monitor against, or None.
    ref: ReferenceProfile | None
    #: Why the stored reference cannot be used (None: readable or absent).
    error: str | None = None
    #: The model's reference index lists this version or ``default``: a reference was
    #: stored once (so an absent one was deleted, not never built).
    listed: bool = False


class ReferenceCache:
    """TTL and LRU cache of reference states (see the module docstring).

    Parameters
    ----------
    ttl
        Seconds an entry is used before it is read again.
    size
        Most entries kept.
    clock
        Monotonic seconds (a parameter for tests).
    """

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, ReferenceState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        wanted: Iterable[tuple[str, str]],
        read: Callable[[list[tuple[str, str]]], Awaitable[list[ReferenceLookup]]],
    ) -> dict[tuple[str, str], ReferenceState]:
        """The reference states of ``wanted``; ``read`` is called once for the stale ones."""
        now = self._clock()
        out: dict[tuple[str, str], ReferenceState] = {}
        stale: list[tuple[str, str]] = []
        for key in dict.fromkeys(wanted):
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                self._entries.move_to_end(key)
                out[key] = hit[1]
            else:
                stale.append(key)
        if stale:
            for key, found in zip(stale, await read(stale), strict=True):
                hit = self._entries.get(key)
                out[key] = self._parse(found, hit[1] if hit is not None else None)
                self._store(key, now, out[key])
        return out

    def put(self, ref: ReferenceProfile) -> None:
        """Cache a reference this worker just stored (a warm-up reference)."""
        state = ReferenceState(ref, listed=True)
        self._store((ref.model_id, ref.model_version), self._clock(), state)

    def _store(self, key: tuple[str, str], at: float, state: ReferenceState) -> None:
        self._entries[key] = (at, state)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    @staticmethod
    def _parse(found: ReferenceLookup, old: ReferenceState | None) -> ReferenceState:
        if found.error is not None:
            return ReferenceState(None, error=found.error, listed=True)
        if found.payload is None:
            return ReferenceState(None, listed=found.listed)
        try:
            ref = ReferenceProfile.from_bytes(found.payload)
        except _UNREADABLE as exc:
            return ReferenceState(
                None, error=f"unparsable profile: {type(exc).__name__}", listed=True
            )
        if old is not None and old.ref is not None and old.ref.reference_id == ref.reference_id:
            ref = old.ref  # unchanged: keep the object the core's caches know
        return ReferenceState(ref, listed=True)
