"""Where Driftline's records live in Redis: key names and Redis Cluster slots.

All keys of one partition share the hash tag ``{group:topic:partition}``, and all
history keys of one model the tag ``{model}``, so every script touches one Redis
Cluster slot (:func:`key_slot`). The layout is in the docstring of
:mod:`driftline.runtime.store` and in docs/redis.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_REFERENCE_VERSION",
    "HISTORY_KINDS",
    "META_FORMAT",
    "PartitionKeys",
    "crc16",
    "history_key",
    "history_models_key",
    "key_slot",
    "model_owner_key",
    "partition_keys",
    "reference_index_key",
    "reference_key",
    "state_record_name",
]


# --------------------------------------------------------------------------- key layout

#: Version of the partition key layout, stored in ``meta.format``.
META_FORMAT = 1
#: Reference version used when a model version has no reference of its own.
DEFAULT_REFERENCE_VERSION = "default"

# Kafka's legal topic characters: with no ':' in a topic, "<group>:<topic>:<partition>"
# is unambiguous even when the group contains ':'.
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
# '{' / '}' would move or cut the hash tag; NUL separates key and field in record names.
_FORBIDDEN = frozenset("{}\x00")


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    bad = _FORBIDDEN.intersection(value)
    if bad:
        raise ValueError(f"{what} {value!r} must not contain {''.join(sorted(bad))!r}")
    return value


def _check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic):
        raise ValueError(f"topic {topic!r} is not a legal Kafka topic name")
    return topic


def _check_partition(partition: int) -> int:
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"partition must be a non-negative int, got {partition!r}")
    return partition


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The Redis keys of one (group, topic, partition); they share one slot.

    ``side`` holds sealed records kept beside the state and not counted in
    ``meta.nstate`` (the monitor's warm-up buffers, written in chunks).
    """

    meta: str
    state: str
    outbox: str
    side: str

    def all(self) -> tuple[str, str, str]:
        """``(meta, state, outbox)`` in the order the scripts expect them first."""
        return (self.meta, self.state, self.outbox)

    def every(self) -> tuple[str, str, str, str]:
        """All four keys (``all()`` and ``side``)."""
        return (self.meta, self.state, self.outbox, self.side)


def partition_keys(prefix: str, group: str, topic: str, partition: int) -> PartitionKeys:
    """Keys of one partition's state.

    Examples
    --------
    >>> partition_keys("dl", "driftline-monitor", "predictions", 3).meta
    'dl:{driftline-monitor:predictions:3}:meta'
    """
    group, topic = _check_name("group", group), _check_topic(topic)
    partition = _check_partition(partition)
    base = f"{_check_name('key prefix', prefix)}:{{{group}:{topic}:{partition}}}"
    return PartitionKeys(
        meta=f"{base}:meta", state=f"{base}:state", outbox=f"{base}:outbox", side=f"{base}:side"
    )


def reference_key(prefix: str, model_id: str, version: str) -> str:
    """Key of one reference profile: ``{prefix}:ref:{<model_id>}:<version>``."""
    return f"{_check_name('key prefix', prefix)}:ref:{{{_check_name('model_id', model_id)}}}:" + (
        _check_name("version", version)
    )


def reference_index_key(prefix: str, model_id: str) -> str:
    """Set of a model's reference versions: ``{prefix}:refs:{<model_id>}``."""
    return f"{_check_name('key prefix', prefix)}:refs:{{{_check_name('model_id', model_id)}}}"


#: History streams kept per model (see :mod:`driftline.runtime.history`), plus the ``latest`` hash.
HISTORY_KINDS = ("windows", "alerts", "perf", "latest")


def history_key(prefix: str, model_id: str, kind: str) -> str:
    """Key of one model's history: ``{prefix}:hist:{<model_id>}:<kind>``.

    ``kind`` is ``windows``, ``alerts``, ``perf`` (capped streams) or ``latest`` (hash).
    All of a model's history keys share the hash tag ``{<model_id>}``.

    Examples
    --------
    >>> history_key("dl", "churn", "windows")
    'dl:hist:{churn}:windows'
    """
    if kind not in HISTORY_KINDS:
        raise ValueError(f"history kind must be one of {HISTORY_KINDS}, got {kind!r}")
    return (
        f"{_check_name('key prefix', prefix)}:hist:{{{_check_name('model_id', model_id)}}}:{kind}"
    )


def history_models_key(prefix: str) -> str:
    """Set of the model ids that have history: ``{prefix}:hist:models``."""
    return f"{_check_name('key prefix', prefix)}:hist:models"


def model_owner_key(prefix: str, model_id: str) -> str:
    """Hash of the partition each consumer group last saw a model on:
    ``{prefix}:owner:{<model_id>}``, field = group, value = ``<topic>:<partition>``.

    Examples
    --------
    >>> model_owner_key("dl", "churn")
    'dl:owner:{churn}'
    """
    return f"{_check_name('key prefix', prefix)}:owner:{{{_check_name('model_id', model_id)}}}"


def state_record_name(state_key: str, state_field: str) -> str:
    """The name a state envelope is signed under: its hash key and field, NUL-separated.

    Keys never contain NUL (checked), so the first NUL splits the name unambiguously.
    """
    if "\x00" in state_key:
        raise ValueError("a state key must not contain NUL")
    return f"{state_key}\x00{state_field}"


# --------------------------------------------------------------------------- cluster slots


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem), the checksum Redis Cluster uses: ``b"123456789"`` -> 0x31C3."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """Redis Cluster hash slot of ``key``, honouring ``{hash tags}`` like CLUSTER KEYSLOT.

    Examples
    --------
    >>> key_slot("foo")
    12182
    >>> key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    True
    """
    raw = key.encode("utf-8") if isinstance(key, str) else key
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) & 0x3FFF
