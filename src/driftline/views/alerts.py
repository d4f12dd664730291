"""Alerts for people: one readable line per alert, filters, and following the alert topic.

Used by ``driftline alerts`` and by the demo. :func:`follow_alerts` reads the alert topic
(deduplicating on ``alert_id``, since the outbox may publish an alert twice) and prints
the alerts that pass the filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import orjson

from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.runtime.resilience import BrokerWatch, polled_lately, watch_broker
from driftline.views.report.build import (
    alert_figures,
    parse_since,
    score_figure,
    signal_name,
)

__all__ = [
    "DEDUPE_IDS",
    "alert_matches",
    "follow_alerts",
    "follower_watch",
    "format_alert",
    "parse_choices",
    "parse_since_ms",
    "topic_records",
]

log = logging.getLogger("driftline")


def _readable(unit: str) -> str:
    """A unit as the report names it (``__class__``: ``class mix``), quoted when it has
    a space, so that the line still splits into ``key=value`` fields."""
    name = signal_name(unit)
    return f'"{name}"' if " " in name else name


def format_alert(a: dict[str, Any], untimed: bool = False) -> str:
    """One readable line for an alert event. Output signals are named as the report and
    the status page name them (``class mix``, ``low-confidence rate``); the alert event
    itself, its JSON and the metrics keep the unit names (``__class__``). ``untimed``:
    the events carried no time (a table without a timestamp column), and the line starts
    with the row the alert was raised at instead of a date in 1970."""
    from datetime import UTC, datetime

    # Named and with units (bare, a cusum effect "stat=1.11" read as a PSI).
    stat, thr = alert_figures(a)
    # "; ": a statistic can hold a comma ("mean up, spread up": one feature's reading).
    top = "; ".join(
        f"{signal_name(f['feature'])}={score_figure(a, f)}" for f in a.get("top_features", [])[:3]
    )
    mark = {"firing": "FIRING  ", "updated": "UPDATED "}.get(a["status"], "resolved")
    at = (
        f"row {a['detected_at']:,}"
        if untimed
        else datetime.fromtimestamp(a["detected_at"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    diagnosis = a.get("diagnosis")
    diag = f"  diagnosis={diagnosis}" if diagnosis and diagnosis != "undetermined" else ""
    feature = f" feature={_readable(a['feature'])}" if a.get("feature") else ""
    return (
        f"{at} [{mark}] {a['severity']:<8} {a['kind']:<12} model={a['model_id']}:"
        f"{a['model_version']}{feature} detector={a['detector']} "
        f"stat={stat} thr={thr} "
        f"window={a['window']['count']} ev  top=[{top}]{diag}  id={a['alert_id'][:12]}"
    )


def parse_choices(value: str | Sequence[str] | None) -> frozenset[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> {"a", "b"}; nothing -> no filter."""
    if not value:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return frozenset(p.strip() for p in parts if p.strip()) or None


def alert_matches(
    a: dict[str, Any],
    model: str | Sequence[str] | None = None,
    kind: str | Sequence[str] | None = None,
    severity: str | Sequence[str] | None = None,
) -> bool:
    """Whether an alert passes the ``--model``/``--kind``/``--severity`` filters
    (each a value or a comma-separated list; empty means any)."""
    for key, allowed in (("model_id", model), ("kind", kind), ("severity", severity)):
        values = parse_choices(allowed)
        if values is not None and a.get(key) not in values:
            return False
    return True


def parse_since_ms(text: str, now_ms: int | None = None) -> int:
    """``--since``: an ISO 8601 date-time (``2026-01-01T10:00Z``; naive means UTC), epoch
    ms, or a duration back from now (``90s``, ``30m``, ``1h``, ``7d``, ``2w``)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        ms = parse_since(text, now)
    except ValueError as exc:
        raise DriftlineError(str(exc)) from None
    if ms is None:
        raise DriftlineError(f"--since {text!r}: empty")
    return ms


def follower_watch(name: str, settings: Settings) -> BrokerWatch:
    """The broker's one line per outage for a follower of a topic (``name``)."""
    return BrokerWatch(
        name,
        settings.kafka.bootstrap_servers,
        meanwhile="what is published meanwhile is printed once it answers",
    )


#: At most this many alert ids are remembered for deduplication (oldest forgotten).
DEDUPE_IDS = 100_000


async def topic_records(
    settings: Settings,
    topic: str,
    stop: asyncio.Event,
    *,
    from_start: bool = False,
    since_ms: int | None = None,
    follow: bool = True,
    watch: BrokerWatch | None = None,
) -> AsyncGenerator[Any, None]:
    """The records of ``topic`` (aiokafka ``ConsumerRecord``) until ``stop`` is set.

    Where to start: ``since_ms`` (records whose Kafka timestamp is at or after it; the
    consumer seeks there with ``offsets_for_times``), else the beginning
    (``from_start``), else the end. With ``follow=False`` it stops once it has read
    past the end offsets seen at the start and a fetch brings nothing more (history);
    a topic that does not exist yet is then empty, and followed it is waited for.
    Followed, ``watch`` says once per outage that the broker cannot be reached, and
    when it answers again (:func:`~driftline.runtime.resilience.watch_broker`).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def new_consumer() -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            **settings.kafka.client_kwargs(), group_id=None, enable_auto_commit=False
        )
        try:
            await c.start()
        except BaseException:
            # A broker that cannot be reached: close what start() opened, or asyncio
            # logs "Unclosed AIOKafkaConsumer" and its repr after the one-line error.
            await c.stop()
            raise
        # Let its offset-reset task start: aiokafka's stop() cancels that task and awaits
        # it, which raises CancelledError if it never ran (a history of a topic that does
        # not exist yet stopped the consumer at once: 'internal error: CancelledError').
        await asyncio.sleep(0)
        return c

    consumer = await new_consumer()
    watching: asyncio.Task[None] | None = None
    try:
        parts: set[int] | None = None
        while not stop.is_set():
            parts = consumer.partitions_for_topic(topic)
            if parts or not follow:
                break
            if topic in await consumer.topics():
                # Created since start(): aiokafka's topics() reads fresh metadata but
                # leaves the consumer's own as it was, so partitions_for_topic would stay
                # None (a follower started before the first alert printed nothing). A
                # new consumer starts with the cluster's metadata as it is now.
                await consumer.stop()
                consumer = await new_consumer()
                continue
            await asyncio.sleep(1.0)  # the topic does not exist yet: wait for it
        if not parts:
            return
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                if hit is None:  # nothing published since then
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)
        elif from_start:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps) if not follow else {}
        if follow and watch is not None:
            fetched = functools.partial(polled_lately, consumer)
            watching = asyncio.create_task(watch_broker(watch, stop, consumer.topics, fetched))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            if not follow and not batch:
                # History: done once every partition is read past the end offsets seen
                # at the start and a fetch brings nothing more. Not "stop at those
                # offsets": Tansu reports a partition's end as 1 after one batch of
                # three records (the monitor publishes a batch's alerts together),
                # which hid two of three alerts.
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
            for recs in batch.values():
                for r in recs:
                    if since_ms is not None and r.timestamp < since_ms:
                        # offsets_for_times is a lower bound on some brokers (Tansu
                        # answers with the earliest offset): the timestamp decides.
                        continue
                    yield r
    finally:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await consumer.stop()


async def follow_alerts(
    settings: Settings,
    from_start: bool,
    stop: asyncio.Event,
    model: str | Sequence[str] | None = None,
    kind: str | Sequence[str] | None = None,
    *,
    severity: str | Sequence[str] | None = None,
    since_ms: int | None = None,
    follow: bool = True,
    emit: Callable[[str], None] | None = None,
) -> int:
    """Print alerts from the alert topic until ``stop`` is set; return how many.

    Where to start and when to end: :func:`topic_records`. Alerts are deduplicated by
    ``alert_id`` (the outbox may publish one twice) and filtered by model, kind and
    severity.
    """
    out = emit or (lambda line: print(line, flush=True))
    seen: dict[str, None] = {}
    shown = 0
    records = topic_records(
        settings,
        settings.topics.alerts,
        stop,
        from_start=from_start,
        since_ms=since_ms,
        follow=follow,
        watch=follower_watch("alerts", settings),
    )
    try:
        async for r in records:
            try:
                a = orjson.loads(r.value)
                alert_id = a["alert_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("skipped an unreadable record at offset %d", r.offset)
                continue
            if alert_id in seen:  # consumers deduplicate on the alert id
                continue
            seen[alert_id] = None
            if len(seen) > DEDUPE_IDS:
                del seen[next(iter(seen))]
            if alert_matches(a, model, kind, severity):
                out(format_alert(a))
                shown += 1
    finally:
        await records.aclose()  # the consumer stops now, not when the generator is collected
    return shown
