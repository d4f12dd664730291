"""What the state store takes and returns (:mod:`driftline.runtime.store`).

Plain values: the outcome of a commit, a partition lease, the history and record writes a
commit or an append carries, and what a reference or history lookup found.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain

__all__ = [
    "CommitResult",
    "HistoryBatch",
    "HistorySnapshot",
    "Lease",
    "RecordWrites",
    "ReferenceLookup",
    "pack_probes",
    "unpack_hits",
]


class CommitResult(StrEnum):
    """Outcome of :meth:`StateStore.commit`; compares equal to its string value."""

    #: States, outbox and offset were written together.
    OK = "ok"
    #: ``last_offset`` is not past the stored offset: already applied, nothing written.
    DUPLICATE = "duplicate"
    #: Another worker acquired the partition since this lease: nothing written.
    FENCED = "fenced"
    #: The stored offset is not ``expected_offset``: Redis went back in time (restart
    #: from an older AOF, failover) under a still-valid lease. Nothing written; the
    #: caller reloads the stored state and replays from its offset.
    REWOUND = "rewound"


@dataclass(frozen=True, slots=True)
class Lease:
    """Ownership of one partition's state, returned by :meth:`StateStore.acquire`.

    ``offset`` is the last offset whose effect was in Redis at acquisition (-1: none).
    ``fresh`` is true when no state existed at all: first start, or Redis lost its data;
    the caller decides where to start reading then.
    """

    topic: str
    partition: int
    epoch: int
    offset: int
    fresh: bool
    #: Random fencing token; epoch and token must both match for a write.
    token: str = field(repr=False)
    #: State fields stored at acquisition (``meta.nstate``).
    fields: int = 0

    @property
    def resume_offset(self) -> int | None:
        """The Kafka offset to seek to, or ``None`` when nothing was committed yet."""
        return self.offset + 1 if self.offset >= 0 else None


@dataclass(frozen=True)
class HistoryBatch:
    """One model's history entries to append in :meth:`StateStore.append_history`.

    Payloads are plain JSON bytes (observability data, not state: never signed, never
    unpickled). ``maxlen`` caps each stream approximately (``XADD MAXLEN ~``).
    """

    model_id: str
    windows: Sequence[bytes] = ()
    alerts: Sequence[bytes] = ()
    perf: Sequence[bytes] = ()
    #: ``latest`` hash fields (``version\x1fsegment``) -> small JSON status record.
    latest: Mapping[str, bytes] = field(default_factory=dict)
    maxlen: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceLookup:
    """What :meth:`StateStore.lookup_references` found for a model version."""

    #: The verified payload, or None (absent or unreadable).
    payload: bytes | None
    #: The version it was stored under (the one asked for, or ``default``).
    version: str | None
    #: Why a stored reference cannot be used (bad signature), else None.
    error: str | None = None
    #: The model's reference index lists the version asked for or ``default``.
    listed: bool = False


@dataclass(frozen=True)
class RecordWrites:
    """Record hashes a :meth:`StateStore.commit` writes with the state (the label joiner).

    ``puts``: record name -> {field: value}, each written hash then gets
    ``PEXPIREAT expire_at_ms[name]``; ``tombs``: record name -> fields set to
    ``tombstone`` in hashes that still exist. Names are those of
    :meth:`StateStore.record_key`. Record values are not sealed: they are looked up by a
    digest and carry no authority.
    """

    puts: Mapping[str, Mapping[bytes, bytes]] = field(default_factory=dict)
    expire_at_ms: Mapping[str, int] = field(default_factory=dict)
    tombs: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    tombstone: bytes = b"\x00"

    def arguments(self, key_index: Mapping[str, int]) -> list[str | bytes]:
        """The script arguments after the prelude's (see ``lua/store_join.lua``): a
        hash's records and its tombstones each packed in one argument."""
        args: list[str | bytes] = []
        live = [n for n in self.puts if self.puts[n]]
        args.append(str(len(live)))
        for n in live:
            if n not in self.expire_at_ms:
                raise ValueError(f"record {n!r} is written without an expiry")
            packed = _pack_strings(list(chain.from_iterable(self.puts[n].items())))
            args += [str(key_index[n]), str(int(self.expire_at_ms[n])), packed]
        dead = [n for n in self.tombs if self.tombs[n]]
        args.append(str(len(dead)))
        for n in dead:
            args += [str(key_index[n]), _pack_strings(self.tombs[n]), self.tombstone]
        return args


#: The u8 length prefix of a string of each length (``_pack_strings``).
_LENGTH = [bytes((n,)) for n in range(256)]


def _pack_strings(items: Sequence[bytes]) -> bytes:
    """``items`` as one string: each as u8 length + bytes (``lua/store_join.lua``)."""
    try:
        heads = list(map(_LENGTH.__getitem__, map(len, items)))
    except IndexError:
        raise ValueError("record fields and values are at most 255 bytes") from None
    return b"".join(chain.from_iterable(zip(heads, items, strict=True)))


@dataclass(frozen=True)
class HistorySnapshot:
    """One model's latest windows, newest alerts and newest performance point
    (:meth:`StateStore.history_snapshots`)."""

    model_id: str
    latest: dict[str, bytes]
    alerts: list[tuple[str, bytes]]
    perf: list[tuple[str, bytes]]


_HIT = struct.Struct("<III")
#: A probe's candidate count and its candidates, by count.
_CANDIDATES = [struct.Struct(f"<B{n}I") for n in range(256)]


def pack_probes(probes: Sequence[tuple[bytes, Sequence[int]]]) -> bytes:
    """The lookup script's probes argument (``lua/store_lookup.lua``): per probe u8
    field length, field, u8 candidate count, candidate key indexes as u32.

    Examples
    --------
    >>> pack_probes([(b"ab", (1,)), (b"c", ())])
    b'\\x02ab\\x01\\x01\\x00\\x00\\x00\\x01c\\x00'
    """
    parts: list[bytes] = []
    add = parts.extend
    # A batch's probes share few candidate lists (a label's keys depend on its hash
    # bucket only): each is packed once.
    packed: dict[tuple[int, ...], bytes] = {}
    for fld, idxs in probes:
        cands = idxs if type(idxs) is tuple else tuple(idxs)
        tail = packed.get(cands)
        if tail is None:
            n = len(cands)
            if n > 255:
                raise ValueError("a lookup probe takes at most 255 candidates")
            tail = packed[cands] = _CANDIDATES[n].pack(n, *cands)
        if len(fld) > 255:
            raise ValueError("a lookup probe takes at most 255 field bytes")
        add((_LENGTH[len(fld)], fld, tail))
    return b"".join(parts)


def unpack_hits(blob: bytes, probes: int) -> list[tuple[int, bytes] | None]:
    """The lookup script's reply as ``(key index, value)`` or None per probe.

    Examples
    --------
    >>> unpack_hits(b"\\x01\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x02\\x00\\x00\\x00hi", 2)
    [None, (3, b'hi')]
    """
    out: list[tuple[int, bytes] | None] = [None] * probes
    blob = bytes(blob)
    pos, size, head = 0, len(blob), _HIT.size
    while pos < size:
        i, k, n = _HIT.unpack_from(blob, pos)
        pos += head
        out[i] = (k, blob[pos : pos + n])
        pos += n
    return out
