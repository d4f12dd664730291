"""The one worker shell: everything a Driftline Kafka worker does around its pure core.

The monitor (:mod:`driftline.runtime.monitor`) and the label joiner
(:mod:`driftline.runtime.labels`) are small subclasses of :class:`Worker` that say what
to decode, which pure core to call and what to commit. Everything else is here, once:
the consumer and its rebalance listener, the run loop and its stop handling, fencing
leases, Redis retries with backoff, quarantine, readiness, dead letters, the outbox,
the advisory Kafka commit, the reference cache and the common metrics.

Vocabulary. A worker consumes one or more topics that are *co-partitioned* (keyed by
``model_id``, same partition count): partition index ``p`` of every topic forms one
**unit**, owned under one fencing lease taken on ``lease_topic``'s partition ``p``
(:meth:`StateStore.acquire <driftline.runtime.store.StateStore.acquire>`). A unit's
state, outbox and *stored offset* (``meta.offset``: the monitor stores its Kafka
offset, the joiner a commit sequence number) live in Redis and change only through
:meth:`Worker._commit`. Its *positions* (next Kafka offset per topic) are what the
stored state reflects; the worker resumes from them, whatever Kafka's group offsets say.

The contract of a subclass (everything else is the shell's):

* ``open_state(lease)``: the unit's in-memory state from Redis (may raise
  :class:`~driftline.errors.StateError`: the unit is quarantined).
* ``resume_positions(lease, state)``: per topic, the next offset to read (``None``:
  from the beginning).
* ``process(unit, records)``: decode, dead-letter what breaks the contract (with
  :meth:`dead_letter`, awaited before returning), call the pure core, and return the
  :class:`Batch` to commit. Raising ``StateError`` quarantines the unit; nothing of the
  batch is then committed.
* ``committed(unit, batch)``: metrics and history of a batch that is in Redis.
* optional: ``setup()`` (topics, checks; before the group is joined),
  ``before_poll()`` (each loop turn), ``released(unit)`` (the unit was revoked).

What the shell guarantees for every worker: records are handed to ``process`` once per
lease, in partition order, never before the partition is leased and sought to its stored
positions, never at or below those positions (redeliveries are counted as
``duplicate``); transient Redis errors are retried with backoff while the batch is held
(backpressure); a batch's effect is committed effectively once (:meth:`_commit`); a
unit whose stored state cannot be read is quarantined, never started fresh; readiness
(``driftline_ready``) is 1 only when no unit is pending, quarantined or catching up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from driftline._version import __version__
from driftline.config import Settings, WorkerSettings
from driftline.core.reference import ReferenceProfile
from driftline.errors import ConfigError, ContractError, FencedError, StateError
from driftline.runtime import metrics as m
from driftline.runtime.health import HEALTH, track_group
from driftline.runtime.store import CommitResult, Lease, RecordWrites, StateStore, open_store

__all__ = [
    "Batch",
    "RETRY_BACKOFF",
    "TRANSIENT_REDIS",
    "Unit",
    "Worker",
    "dead_letter_headers",
    "ensure_topics",
    "publish_alerts",
]

log = logging.getLogger("driftline.worker")

#: A dead letter the broker refuses as too large keeps this many bytes of the original.
DLQ_TRUNCATE_BYTES = 64 * 1024
#: Room left in a produce request beside a record of ``max_record_bytes`` (headers, key).
_REQUEST_MARGIN = 64 * 1024
#: Backoff between retries of a Redis or Kafka call that failed transiently (seconds).
RETRY_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: Published alerts a worker remembers for in-process readers (the demo): the newest.
RECENT_ALERTS = 1000

#: Redis errors after which the same call may simply be tried again: the commit
#: protocol makes a retried commit safe (``duplicate`` means the first one landed).
TRANSIENT_REDIS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    ConnectionError,
    TimeoutError,
)

S = TypeVar("S")
R = TypeVar("R")
_T = TypeVar("_T")


class _Stopping(Exception):
    """Raised inside a retry loop when the worker was asked to stop: abandon the batch.

    Nothing of the abandoned batch was committed, so it is replayed after a restart.
    """


# --------------------------------------------------------------------------- Kafka helpers


async def publish_alerts(
    producer: AIOKafkaProducer, topic: str, blobs: Sequence[bytes]
) -> list[dict[str, Any]]:
    """Publish outbox alert payloads (keyed by model, alert id in a header); wait for acks.

    Returns the decoded alerts.
    """
    futs = []
    alerts = []
    for blob in blobs:
        alert = orjson.loads(blob)
        alerts.append(alert)
        futs.append(
            await producer.send(
                topic,
                value=blob,
                key=alert["model_id"].encode(),
                headers=[("dl.alert_id", alert["alert_id"].encode())],
            )
        )
        m.ALERTS.labels(alert["model_id"], alert["kind"], alert["status"], alert["severity"]).inc()
    await asyncio.gather(*futs)
    return alerts


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


# --------------------------------------------------------------------------- units and batches


@dataclass
class Unit(Generic[S]):
    """What the worker holds for one partition index under one lease."""

    partition: int
    lease: Lease
    #: The subclass's in-memory state (built by ``open_state``).
    state: S
    #: ``meta.offset`` this lease last wrote or acquired at (the commit's continuity check).
    stored: int
    #: Next Kafka offset per topic that the stored state does not reflect yet.
    positions: dict[str, int]
    #: Log-end offsets when the lease was taken: ready once every position reaches them.
    warm_until: dict[str, int] = field(default_factory=dict)
    #: Caught up once since the lease was taken (stays true until the next lease).
    warm: bool = False
    #: Another worker owns the partition now: this one writes nothing more to it.
    fenced: bool = False
    #: An outbox publish failed (broker unreachable): retry before the next batch.
    outbox_pending: bool = False


@dataclass
class Batch(Generic[R]):
    """What ``process`` hands to the commit: everything one batch writes, and its result."""

    #: State fields to write (sealed by the store).
    states: Mapping[str, bytes]
    #: Alert payloads for the outbox, in order.
    alerts: Sequence[bytes]
    #: Next offset per topic once this batch is stored (topics with records only).
    positions: Mapping[str, int]
    #: The ``meta.offset`` to store (must be past ``unit.stored``).
    stored_offset: int
    #: The subclass's own result, for ``committed`` (metrics, history).
    result: R
    #: Record hashes written in the same commit (the label joiner's pending predictions).
    records: RecordWrites | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker[Any, Any]) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.revoke(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.assign(assigned)


# --------------------------------------------------------------------------- the shell


class Worker(Generic[S, R]):
    """The worker shell (see the module docstring for the contract of a subclass).

    Parameters
    ----------
    settings
        The configuration object.
    cfg
        The worker's own settings (group, batch size, timeouts, reference TTL).
    name
        Worker name used in metric labels (bounded: one per process).
    topics
        The co-partitioned topics consumed, in the order records are grouped.
    lease_topic
        The topic whose partition keys hold each unit's state and lease.
    """

    def __init__(
        self,
        settings: Settings,
        cfg: WorkerSettings,
        name: str,
        topics: Sequence[str],
        lease_topic: str,
    ) -> None:
        self.settings = settings
        self.cfg = cfg
        self.name = name
        self.topics = list(topics)
        self.lease_topic = lease_topic
        self.units: dict[int, Unit[S]] = {}
        #: Partition indexes whose lease could not be taken yet (Redis unreachable).
        self.pending: set[int] = set()
        #: Partition indexes refused for unreadable or incomplete state (paused).
        self.quarantined: set[int] = set()
        self.redis: aioredis.Redis | None = None  # type: ignore[type-arg, unused-ignore]
        self.store: StateStore | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.dead_letters = 0
        self.alerts_published = 0
        #: The newest published alerts (at most :data:`RECENT_ALERTS`), oldest first.
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self._refs: dict[tuple[str, str], tuple[float, ReferenceProfile | None]] = {}
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ the subclass's part
    async def open_state(self, lease: Lease) -> S:
        """The unit's in-memory state, read from Redis under ``lease``."""
        raise NotImplementedError

    def resume_positions(self, lease: Lease, state: S) -> dict[str, int | None]:
        """Per topic, the next offset the stored state does not reflect (None: beginning)."""
        raise NotImplementedError

    async def process(self, unit: Unit[S], records: Mapping[str, Sequence[Any]]) -> Batch[R]:
        """Turn one unit's new records (per topic, in order) into the batch to commit."""
        raise NotImplementedError

    async def committed(self, unit: Unit[S], batch: Batch[R]) -> None:
        """Observe a batch that is stored (metrics, history). Default: nothing."""

    def released(self, unit: Unit[S]) -> None:
        """The unit was revoked or dropped: clear what the worker exported for it."""

    async def setup(self) -> None:
        """Before joining the group: create the topics this worker reads and writes."""
        s = self.settings
        out = [s.topics.alerts, *(s.topics.dlq(t) for t in self.topics)]
        await ensure_topics(s, [*self.topics, *out])

    async def before_poll(self) -> None:
        """Called at each turn of the run loop, before fetching. Default: nothing."""

    def consumer_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the group consumer."""
        return {}

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the worker to finish its current batch, commit and exit."""
        self._stop.set()

    async def start(self) -> None:
        """Connect to Redis and Kafka, run :meth:`setup` and join the consumer group."""
        s, cfg = self.settings, self.cfg
        self.redis, self.store = open_store(s.redis, cfg.group_id)
        await self.setup()
        kw = s.kafka.client_kwargs()
        self.producer = AIOKafkaProducer(
            **kw,
            acks="all",
            linger_ms=5,
            max_request_size=cfg.max_record_bytes + _REQUEST_MARGIN,
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **kw,
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=cfg.max_batch_events,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 10),
            max_partition_fetch_bytes=cfg.max_record_bytes,
            **self.consumer_options(),
        )
        self.consumer.subscribe(self.topics, listener=track_group(_Rebalance(self)))
        m.init_worker_series(self.name, self.topics, self.lease_topic)
        await self.consumer.start()
        m.READY.labels(self.name).set(0)

    async def close(self) -> None:
        """Publish what is left in the outboxes, leave the group, close every connection."""
        for unit in list(self.units.values()):
            if unit.fenced or self.store is None or self.producer is None:
                continue
            try:  # best effort: an unpublished alert stays in Redis for the next owner
                await asyncio.wait_for(self._publish_outbox(unit), timeout=10)
            except (TimeoutError, KafkaError, *TRANSIENT_REDIS, _Stopping) as exc:
                log.warning(
                    "outbox of %s not drained at shutdown: %s",
                    self._where(unit.partition),
                    type(exc).__name__,
                )
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.redis is not None:
            await self.redis.aclose()

    async def run(self, idle_exit_s: float | None = None) -> None:
        """Process batches until :meth:`stop` (or ``idle_exit_s`` without records)."""
        try:
            await self._run(idle_exit_s)
        except _Stopping:
            log.info("stop requested while retrying; the unfinished batch will be replayed")

    async def _run(self, idle_exit_s: float | None) -> None:
        assert self.consumer is not None
        idle_since = time.monotonic()
        while not self._stop.is_set():
            HEALTH.beat()
            await self.before_poll()
            await self._retry_pending()
            for held in list(self.units.values()):
                if held.outbox_pending and not held.fenced:
                    await self._publish_outbox(held)
            fetched = await self.consumer.getmany(
                timeout_ms=200, max_records=self.cfg.max_batch_events
            )
            if not fetched:
                self._update_ready()
                if self._settling():
                    idle_since = time.monotonic()  # not idle: joining, or taking leases
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            per_unit: dict[int, dict[str, list[Any]]] = {}
            for tp, recs in fetched.items():
                per_unit.setdefault(tp.partition, {}).setdefault(tp.topic, []).extend(recs)
            for p, by_topic in sorted(per_unit.items()):
                unit = self.units.get(p)
                if unit is None or unit.fenced:
                    continue
                # Records the stored state already reflects (a fetch that raced a seek, a
                # redelivery) would be applied twice: only a batch that ends past the
                # stored offset reaches the offset guard, so drop them here.
                fresh: dict[str, list[Any]] = {}
                dropped = 0
                for topic, recs in by_topic.items():
                    first = unit.positions.get(topic, 0)
                    keep = [r for r in recs if r.offset >= first]
                    dropped += len(recs) - len(keep)
                    if keep:
                        fresh[topic] = keep
                if dropped:
                    m.EVENTS.labels(self.name, "duplicate").inc(dropped)
                if fresh:
                    await self._handle(unit, fresh)
            self._update_ready()

    def _settling(self) -> bool:
        """Joining the group, or assigned partitions not leased (nor quarantined) yet."""
        assert self.consumer is not None
        assigned = {tp.partition for tp in self.consumer.assignment()}
        return not assigned or bool(assigned - self.units.keys() - self.quarantined)

    def _update_ready(self) -> None:
        """``driftline_ready``: 1 when no unit is pending, quarantined or catching up.

        A unit is warm once each of its positions reached the log end seen when it was
        leased, and the newest high watermark fetched since (some brokers, Tansu among
        them, answer ListOffsets with the start of the last batch).
        """
        assert self.consumer is not None
        for unit in self.units.values():
            if not unit.warm:
                unit.warm = all(
                    unit.positions.get(t, 0)
                    >= max(
                        unit.warm_until.get(t, 0),
                        self.consumer.highwater(TopicPartition(t, unit.partition)) or 0,
                    )
                    for t in self.topics
                )
        ready = (
            not self.pending
            and not self.quarantined
            and all(u.warm for u in self.units.values() if not u.fenced)
        )
        m.READY.labels(self.name).set(1 if ready else 0)

    # ------------------------------------------------------------------ retries
    async def retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call`` until it succeeds, backing off on transient Redis errors.

        The loop holds the batch: nothing more is fetched meanwhile (backpressure).
        Raises :class:`_Stopping` when the worker is asked to stop while waiting.
        """
        attempt = 0
        while True:
            try:
                return await call()
            except TRANSIENT_REDIS as exc:
                if self._stop.is_set():
                    raise _Stopping(what) from exc
                delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                if attempt % 10 == 0:
                    log.warning("%s failed (%s); retrying", what, type(exc).__name__)
                attempt += 1
                m.READY.labels(self.name).set(0)
                await asyncio.sleep(delay)
                HEALTH.beat()  # waiting out an outage is not a wedged loop

    # ------------------------------------------------------------------ assignment
    def _tps(self, p: int) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.topics]

    def _where(self, p: int) -> str:
        return f"{'+'.join(self.topics)}[{p}]"

    def revoke(self, revoked: Sequence[TopicPartition]) -> None:
        """Forget revoked partitions: their units, gauges, pending leases, quarantine."""
        for p in sorted({tp.partition for tp in revoked}):
            unit = self.units.pop(p, None)
            if unit is not None:
                self.released(unit)
            for t in self.topics:
                with contextlib.suppress(KeyError):
                    m.CONSUMER_LAG.remove(self.name, t, str(p))
            self.pending.discard(p)
            if p in self.quarantined:
                self.quarantined.discard(p)
                m.QUARANTINED.labels(self.name, self.lease_topic).dec()

    async def assign(self, assigned: Sequence[TopicPartition]) -> None:
        """Take a fencing lease per partition index and seek to the stored positions.

        Runs inside the rebalance callback, where an exception would only be logged by
        aiokafka and leave the partition silently unprocessed: every failure is handled
        here. A transient error leaves the unit pending (paused; :meth:`run` retries);
        an unreadable or incomplete state, or a partition index assigned for only some
        of the topics (not co-partitioned), quarantines it.
        """
        assert self.consumer is not None
        m.READY.labels(self.name).set(0)
        # Pause before the first await: until a unit is leased and sought to its stored
        # positions, aiokafka must not hand out its records (fetched from Kafka's
        # advisory position, they could skip or repeat offsets). Paused and sought-away
        # records are discarded by aiokafka's fetcher; _acquire resumes the partitions.
        self.consumer.pause(*assigned)
        topics: dict[int, set[str]] = {}
        for tp in assigned:
            topics.setdefault(tp.partition, set()).add(tp.topic)
        for p, have in sorted(topics.items()):
            if have != set(self.topics):
                missing = ", ".join(sorted(set(self.topics) - have))
                self.quarantine(
                    p, ConfigError(f"assigned without {missing}: topics are not co-partitioned")
                )
                continue
            try:
                await self._acquire(p)
            except (*TRANSIENT_REDIS, KafkaError) as exc:
                log.warning(
                    "cannot take %s yet (%s); will retry", self._where(p), type(exc).__name__
                )
                self.consumer.pause(*self._tps(p))
                self.pending.add(p)
            except StateError as exc:
                self.quarantine(p, exc)

    async def _retry_pending(self) -> None:
        assert self.consumer is not None
        assigned = {tp.partition for tp in self.consumer.assignment()}
        for p in sorted(self.pending):
            if p not in assigned:
                self.pending.discard(p)
                continue
            try:
                await self._acquire(p)
            except (*TRANSIENT_REDIS, KafkaError):
                await asyncio.sleep(RETRY_BACKOFF[-1] if len(self.pending) == 1 else 0.1)
                continue
            except StateError as exc:
                self.pending.discard(p)
                self.quarantine(p, exc)
                continue
            self.pending.discard(p)

    async def _acquire(self, p: int, previous: Unit[S] | None = None) -> None:
        """Lease unit ``p``, load its state, seek, and publish its leftover outbox.

        ``previous`` is the unit this worker held before Redis lost data under it.
        Evidence that stored state went back in time (Redis lost data) is logged and
        counted in ``driftline_state_rewind_total``: stored positions behind the
        previous lease's, or behind Kafka's advisory commit. The state is then rebuilt
        by replaying Kafka from the stored positions (or from the earliest retained
        offsets); the worker reports not ready until it has caught up.
        """
        assert self.store is not None and self.consumer is not None
        tps = self._tps(p)
        self.consumer.pause(*tps)  # see assign(): no records until sought and registered
        lease = await self.store.acquire(self.lease_topic, p)
        state = await self.open_state(lease)
        resume = self.resume_positions(lease, state)
        if previous is not None:
            known = dict(previous.positions)
        else:
            known = {tp.topic: await self._kafka_committed(tp) for tp in tps}
        behind = {t: (resume.get(t) or 0, known.get(t, 0)) for t in self.topics}
        if any(have < seen for have, seen in behind.values()):
            m.STATE_REWINDS.labels(self.name, self.lease_topic).inc()
            log.error(
                "stored state of %s is behind the stream (next offsets stored %s, processed "
                "up to %s): Redis lost data; rebuilding by replay from Kafka",
                self._where(p),
                {t: h for t, (h, _) in behind.items()},
                {t: s for t, (_, s) in behind.items()},
            )
        for tp in tps:
            nxt = resume.get(tp.topic)
            if nxt is not None:
                self.consumer.seek(tp, nxt)
                continue
            await self.consumer.seek_to_beginning(tp)
            if known.get(tp.topic, 0) > 0:
                first = (await self.consumer.beginning_offsets([tp]))[tp]
                if first > 0:
                    log.error(
                        "%s: Kafka no longer retains offsets before %d; the rebuilt state "
                        "misses that history",
                        tp,
                        first,
                    )
        ends = await self.consumer.end_offsets(tps)
        unit = Unit(
            partition=p,
            lease=lease,
            state=state,
            stored=lease.offset,
            positions={t: resume.get(t) or 0 for t in self.topics},
            warm_until={tp.topic: ends[tp] for tp in tps},
        )
        self.units[p] = unit
        self.consumer.resume(*tps)
        await self._publish_outbox(unit)

    async def _kafka_committed(self, tp: TopicPartition) -> int:
        """The group's advisory Kafka commit for ``tp`` (0 if none or unknown)."""
        assert self.consumer is not None
        try:
            committed = await asyncio.wait_for(self.consumer.committed(tp), timeout=10)
        except (TimeoutError, KafkaError) as exc:
            log.info("advisory Kafka offset of %s unknown: %s", tp, type(exc).__name__)
            return 0
        return int(committed) if committed is not None else 0

    def quarantine(self, p: int, exc: BaseException) -> None:
        """Stop processing unit ``p`` loudly: its stored state cannot be trusted or resumed.

        Never start such a unit fresh: that would silently replace history with a
        partial one. Its partitions stay paused (others keep flowing), the gauge
        ``driftline_partitions_quarantined`` and readiness say so, and an operator
        inspects the keys and resets the partition (``StateStore.reset_partition``),
        after which a rebalance or restart rebuilds it by replay.
        """
        assert self.consumer is not None
        log.error("quarantined %s: %s: %s", self._where(p), type(exc).__name__, exc)
        unit = self.units.pop(p, None)
        if unit is not None:
            self.released(unit)
        assigned = self.consumer.assignment()
        self.consumer.pause(*(tp for tp in self._tps(p) if tp in assigned))
        if p not in self.quarantined:
            self.quarantined.add(p)
            m.QUARANTINED.labels(self.name, self.lease_topic).inc()
        m.READY.labels(self.name).set(0)

    # ------------------------------------------------------------------ references
    async def reference(self, model: str, version: str) -> ReferenceProfile | None:
        """The reference of ``(model, version)`` (or its default), cached for a TTL.

        A reference read again after the TTL that has not changed (same
        ``reference_id``) keeps its cached object, so whatever the core derived from it
        (bins, plans) stays valid.
        """
        now = time.monotonic()
        hit = self._refs.get((model, version))
        if hit is not None and now - hit[0] < self.cfg.reference_ttl_seconds:
            return hit[1]
        store = self.store
        assert store is not None
        blob = await self.retrying(
            "reading a reference", lambda: store.get_reference(model, version)
        )
        ref = ReferenceProfile.from_bytes(blob) if blob is not None else None
        if ref is not None and hit is not None and hit[1] is not None:
            if hit[1].reference_id == ref.reference_id:
                ref = hit[1]
        self._refs[(model, version)] = (now, ref)
        return ref

    def remember_reference(self, ref: ReferenceProfile) -> None:
        """Cache a reference this worker just stored (a warm-up reference)."""
        self._refs[(ref.model_id, ref.model_version)] = (time.monotonic(), ref)

    # ------------------------------------------------------------------ dead letters
    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None,
        exc: ContractError,
        stage: str | None = None,
    ) -> None:
        """Send one refused record to ``<topic>.dlq``; return once the broker has it.

        The batch (and so the offset past the record) is committed only after this
        returns, so a dead letter is never lost; a broker that stays unreachable holds
        the unit (backpressure). A record larger than the producer can send
        (``max_record_bytes``), or one the broker refuses as too large, is sent
        truncated to :data:`DLQ_TRUNCATE_BYTES` with ``dl.error.truncated`` holding the
        original size (then, if even that is refused, headers only), so one huge record
        cannot block its partition forever.
        """
        assert self.producer is not None
        stage = stage or exc.stage
        headers = dead_letter_headers(topic, partition, offset, stage, exc)
        original = value or b""
        if len(original) > self.cfg.max_record_bytes:
            value = original[:DLQ_TRUNCATE_BYTES]
            headers = [*headers, ("dl.error.truncated", str(len(original)).encode())]
        attempt = 0
        while True:
            try:
                await self.producer.send_and_wait(
                    self.settings.topics.dlq(topic), value=value, key=key, headers=headers
                )
                break
            except MessageSizeTooLargeError:
                if any(k == "dl.error.truncated" for k, _ in headers):
                    value = None  # even the truncated copy is refused: headers only
                    continue
                value = original[:DLQ_TRUNCATE_BYTES]
                headers = [*headers, ("dl.error.truncated", str(len(original)).encode())]
            except KafkaError as kexc:
                if self._stop.is_set():
                    raise _Stopping("dead letter") from kexc
                log.warning("dead letter not acknowledged (%s); retrying", type(kexc).__name__)
                await asyncio.sleep(RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)])
                attempt += 1
                HEALTH.beat()
        self.dead_letters += 1
        m.DEAD_LETTERS.labels(topic, stage).inc()

    # ------------------------------------------------------------------ one batch
    async def _handle(self, unit: Unit[S], records: Mapping[str, Sequence[Any]]) -> None:
        t0 = time.perf_counter()
        try:
            batch = await self.process(unit, records)
        except StateError as exc:
            # Signed by us yet unreadable: never start it fresh (that would silently
            # drop its history). Quarantine the unit instead.
            self.quarantine(unit.partition, exc)
            return
        if await self._commit(unit, batch):
            self._observe_lag(unit)
            await self.committed(unit, batch)
        m.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - t0)

    async def _commit(self, unit: Unit[S], batch: Batch[R]) -> bool:
        """Commit one batch. Guarantee: effectively once for state and alerts.

        1. In ONE Lua script on the unit's hash slot (:meth:`StateStore.commit`): check
           the fencing lease (a stale worker writes nothing), skip a stored offset that
           is not newer (a replayed batch changes nothing), check continuity (Redis did
           not go back under the lease), write the states, append the alerts to the
           outbox (and the record hashes, if any) and store the offset. Retried
           unchanged on a transient Redis error: ``duplicate`` then means it landed.
        2. ``fenced`` or ``rewound``: nothing was written; stop writing (another owner)
           or reload and replay (Redis lost data). Returns False.
        3. Advance the unit's stored offset and positions.
        4. Publish the outbox to the alert topic (deterministic alert ids) and trim it.
        5. Commit the positions to Kafka: advisory only, for lag metrics; on restart the
           positions stored in Redis win. Never ahead of Redis (committed <= stored + 1).
        """
        store = self.store
        assert store is not None and self.consumer is not None
        res = await self.retrying(
            "state commit",
            lambda: store.commit(
                unit.lease,
                batch.stored_offset,
                batch.states,
                batch.alerts,
                expected_offset=unit.stored,
                records=batch.records,
            ),
        )
        if res in (CommitResult.FENCED, CommitResult.REWOUND):
            await self._lost_lease(unit, res)
            # Counted once handled, so whoever watches the counter sees the outcome too.
            m.STATE_COMMITS.labels(self.name, res).inc()
            return False
        m.STATE_COMMITS.labels(self.name, res).inc()
        unit.stored = batch.stored_offset
        unit.positions.update(batch.positions)
        await self._publish_outbox(unit)
        tps = {TopicPartition(t, unit.partition): pos for t, pos in batch.positions.items()}
        try:
            await self.consumer.commit(tps)
        except Exception as exc:  # advisory: a failed Kafka commit loses nothing
            log.info("advisory Kafka commit failed: %s", type(exc).__name__)
        return True

    async def _lost_lease(self, unit: Unit[S], res: CommitResult) -> None:
        """A commit wrote nothing because the lease no longer matches Redis.

        ``fenced`` with a newer epoch stored: another worker owns the partition; stop
        writing (a rebalance takes it away from this worker). ``fenced`` with no meta or
        an older epoch than the lease's, or ``rewound``: Redis lost data under a valid
        lease; take a new lease, reload the stored state and replay from its positions.
        """
        store = self.store
        assert store is not None
        p = unit.partition
        if res is CommitResult.FENCED:
            stored = await self.retrying(
                "reading the stored lease", lambda: store.stored_position(self.lease_topic, p)
            )
            if stored is not None and stored[0] >= unit.lease.epoch:
                log.warning(
                    "partition %s moved to another worker; this worker stops writing",
                    self._where(p),
                )
                unit.fenced = True
                return
        log.error("Redis lost committed state of %s (%s); reloading and replaying", p, res)
        self.units.pop(p, None)
        self.released(unit)
        try:
            await self.retrying("re-acquiring a partition", lambda: self._acquire(p, unit))
        except StateError as exc:
            self.quarantine(p, exc)

    # ------------------------------------------------------------------ the outbox
    async def _publish_outbox(self, unit: Unit[S]) -> None:
        """Publish the unit's outbox (at least once; alert ids deduplicate).

        A broker error leaves the alerts in the Redis outbox, flagged for a retry before
        the next batch: the state commit already holds them durably.
        """
        try:
            await self._drain_outbox(unit)
            unit.outbox_pending = False
        except KafkaError as exc:
            log.warning(
                "alerts of %s not published yet (%s); will retry",
                self._where(unit.partition),
                type(exc).__name__,
            )
            unit.outbox_pending = True

    async def _drain_outbox(self, unit: Unit[S]) -> None:
        store = self.store
        assert store is not None and self.producer is not None
        while True:
            pending = await self.retrying(
                "reading the outbox", lambda: store.outbox_peek(unit.lease, 500)
            )
            if not pending:
                return
            published = await publish_alerts(self.producer, self.settings.topics.alerts, pending)
            self.recent_alerts.extend(published)
            self.alerts_published += len(pending)
            try:
                await self.retrying(
                    "trimming the outbox",
                    functools.partial(store.outbox_ack, unit.lease, len(pending)),
                )
            except FencedError:
                # Another worker owns the partition now; it re-publishes the same ids.
                unit.fenced = True
                return

    def alerts_after(self, seen: int) -> list[dict[str, Any]]:
        """Published alerts after the first ``seen`` ones, as far as they are remembered."""
        new = max(0, self.alerts_published - seen)
        return list(self.recent_alerts)[-new:] if new else []

    # ------------------------------------------------------------------ metrics
    def _observe_lag(self, unit: Unit[S]) -> None:
        assert self.consumer is not None
        for t in self.topics:
            hw = self.consumer.highwater(TopicPartition(t, unit.partition))
            if hw is not None:
                m.CONSUMER_LAG.labels(self.name, t, str(unit.partition)).set(
                    max(0, hw - unit.positions.get(t, 0))
                )
