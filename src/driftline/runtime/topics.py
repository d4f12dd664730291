"""Kafka plumbing the workers share: topics, dead-letter headers, alert publishing.

The worker shell (:mod:`driftline.runtime.worker`) is the only producer of dead letters
and alerts; these helpers hold the wire details (header names, keys, checks of outbox
entries) in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from driftline._version import __version__
from driftline.config import Settings
from driftline.contract.events import (
    AlertKind,
    AlertStatus,
    Severity,
)
from driftline.errors import ConfigError
from driftline.runtime import metrics as m
from driftline.runtime.resilience import RETRY_BACKOFF, Stopping

__all__ = [
    "DLQ_TRUNCATE_BYTES",
    "Published",
    "dead_letter_headers",
    "ensure_topics",
    "publish_alerts",
    "send_dead_letter",
    "topic_partitions",
]

log = logging.getLogger("driftline.topics")

#: A dead letter too large to send keeps this many bytes of the original.
DLQ_TRUNCATE_BYTES = 64 * 1024
#: Fields an outbox entry must carry (as strings) to be published as an alert.
_ALERT_FIELDS = ("alert_id", "model_id", "kind", "status", "severity")
#: Values the metric labels of an alert may take (anything else is not an alert).
_ALERT_VALUES = {
    "kind": frozenset(get_args(AlertKind)),
    "status": frozenset(get_args(AlertStatus)),
    "severity": frozenset(get_args(Severity)),
}


async def ensure_topics(settings: Settings, topics: Sequence[str], partitions: int = 4) -> None:
    """Create topics that do not exist yet (idempotent)."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=1)
            for t in topics
            if t not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except Exception as exc:  # a concurrent creator won the race
                log.debug("create_topics: %s", type(exc).__name__)
    finally:
        await admin.close()


async def topic_partitions(
    settings: Settings, topics: Sequence[str], missing_ok: bool = False
) -> dict[str, int]:
    """Partition count of each topic (from the cluster metadata); 0 for a missing one
    with ``missing_ok``, else :class:`ConfigError`."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
    await admin.start()
    try:
        meta = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    out = {t["topic"]: len(t["partitions"]) for t in meta}
    missing = [t for t in topics if not out.get(t)]
    if missing_ok:
        return {t: out.get(t, 0) for t in topics}
    if missing:
        raise ConfigError(f"topics without partitions (or absent): {', '.join(missing)}")
    return out


def dead_letter_headers(
    topic: str, partition: int, offset: int, stage: str, exc: BaseException
) -> list[tuple[str, bytes]]:
    """Reason headers of a dead-letter record (the message is truncated, never the payload)."""
    return [
        ("dl.error.topic", topic.encode()),
        ("dl.error.partition", str(partition).encode()),
        ("dl.error.offset", str(offset).encode()),
        ("dl.error.stage", stage.encode()),
        ("dl.error.class", type(exc).__name__.encode()),
        ("dl.error.message", str(exc)[:512].encode()),
        ("dl.app.version", __version__.encode()),
    ]


async def send_dead_letter(
    producer: AIOKafkaProducer,
    dlq: str,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    max_bytes: int,
    stop: asyncio.Event,
    waiting: Callable[[], None],
) -> None:
    """Send one dead letter to ``dlq``; return once the broker acknowledged it.

    A value over ``max_bytes`` (what the producer may send), or one the broker refuses
    as too large, is sent truncated to :data:`DLQ_TRUNCATE_BYTES` with
    ``dl.error.truncated`` = the original size; if even that is refused, headers only.
    Other broker errors are retried with backoff, ``waiting`` called before each wait
    (raises :class:`Stopping` when ``stop`` is set meanwhile).
    """
    original = value or b""

    def truncated() -> list[tuple[str, bytes]]:
        return [*headers, ("dl.error.truncated", str(len(original)).encode())]

    if len(original) > max_bytes:
        value, headers = original[:DLQ_TRUNCATE_BYTES], truncated()
    attempt = 0
    while True:
        try:
            await producer.send_and_wait(dlq, value=value, key=key, headers=headers)
            return
        except MessageSizeTooLargeError:
            if any(k == "dl.error.truncated" for k, _ in headers):
                value = None  # even the truncated copy is refused: headers only
            else:
                value, headers = original[:DLQ_TRUNCATE_BYTES], truncated()
        except KafkaError as exc:
            if stop.is_set():
                raise Stopping("dead letter") from exc
            log.warning("dead letter not acknowledged (%s); retrying", type(exc).__name__)
            waiting()
            await asyncio.sleep(RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)])
            attempt += 1


@dataclass
class Published:
    """What :func:`publish_alerts` did with a slice of an outbox."""

    #: The alerts published (decoded), in order.
    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: Entries that are not alerts (not JSON, or without their fields), with the reason.
    unreadable: list[tuple[bytes, str]] = field(default_factory=list)


def _alert(blob: bytes) -> dict[str, Any] | str:
    """The alert in an outbox entry, or why it is not one."""
    try:
        alert = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(alert, dict):
        return "not a JSON object"
    missing = [f for f in _ALERT_FIELDS if not isinstance(alert.get(f), str)]
    if missing:
        return f"missing or non-string fields: {', '.join(missing)}"
    wrong = [f for f, ok in _ALERT_VALUES.items() if alert[f] not in ok]
    if wrong:
        return f"unknown values of: {', '.join(wrong)}"
    return alert


async def publish_alerts(
    producer: AIOKafkaProducer, topic: str, blobs: Sequence[bytes], models: m.ModelLabels
) -> Published:
    """Publish outbox alert payloads (keyed by model, alert id in a header); wait for acks.

    An entry that is not an alert (Redis edited by hand, a bug) is returned as
    unreadable instead of stopping the outbox: the caller dead-letters it.
    """
    out = Published()
    futs = []
    for blob in blobs:
        alert = _alert(blob)
        if isinstance(alert, str):
            out.unreadable.append((blob, alert))
            continue
        out.alerts.append(alert)
        futs.append(
            await producer.send(
                topic,
                value=blob,
                key=alert["model_id"].encode(),
                headers=[("dl.alert_id", alert["alert_id"].encode())],
            )
        )
        m.ALERTS.labels(
            models.label(alert["model_id"]), alert["kind"], alert["status"], alert["severity"]
        ).inc()
    await asyncio.gather(*futs)
    return out
