"""The monitor worker: the thin I/O shell around the fast loop's pure core
(:func:`driftline.core.fastloop.monitor.process_batch`).

Kafka in (aiokafka batch fetching), Redis for state, Kafka out (alerts, dead letters),
Prometheus for metrics. The worker uses aiokafka directly rather than a faust agent:
measured on the target machine a faust agent that only counts handles 11-14k events/s,
while batch fetching reaches ~420k/s and the whole vectorised loop far more than
faust's ceiling (docs/architecture.md). faust-streaming remains a dependency for
users who embed Driftline's pure core in their own faust apps.

Guarantee: *effectively once* for state and alerts. Each batch's state is committed to
Redis together with the last offset it reflects, in one Lua script, under a fencing
epoch taken at partition assignment (see :meth:`MonitorWorker._commit`). On assignment
the worker resumes from the offset stored in Redis, whatever Kafka's committed offset
says; Kafka's commit is advisory (lag metrics only). Alerts are written to an outbox in
the same script and published afterwards with deterministic ids, so a crash between
the two re-publishes the same alert ids, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from driftline._version import __version__
from driftline.config import Settings
from driftline.contract.columnar import ColumnarBatch, row_count
from driftline.contract.decode import decode_records
from driftline.contract.keys import StateKey, state_key
from driftline.core.fastloop.monitor import BatchResult, ModelState, process_batch
from driftline.core.reference import ReferenceProfile
from driftline.errors import (
    ContractError,
    FencedError,
    StateCorrupt,
    StateError,
)
from driftline.runtime import metrics as m
from driftline.runtime.history import record_history
from driftline.runtime.store import Lease, StateStore, open_store

__all__ = [
    "MonitorWorker",
    "dead_letter_headers",
    "ensure_topics",
    "publish_alerts",
    "run_monitor",
]

log = logging.getLogger("driftline.monitor")

REFERENCE_TTL_S = 30.0
#: Largest record the consumer fetches; the producer accepts as much (dead letters).
MAX_RECORD_BYTES = 8 * 1024 * 1024
#: A dead letter the broker refuses as too large keeps this many bytes of the original.
DLQ_TRUNCATE_BYTES = 64 * 1024
#: Backoff between retries of a Redis or Kafka call that failed transiently (seconds).
RETRY_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

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
_T = TypeVar("_T")


class _Stopping(Exception):
    """Raised inside a retry loop when the worker was asked to stop: abandon the batch.

    Nothing of the abandoned batch was committed, so it is replayed after a restart.
    """


async def publish_alerts(
    producer: AIOKafkaProducer, topic: str, blobs: Sequence[bytes]
) -> list[dict[str, Any]]:
    """Publish outbox alert payloads (keyed by model, alert id in a header); wait for acks.

    Shared by every worker with an alert outbox. Returns the decoded alerts.
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


@dataclass
class _Partition:
    """What the worker holds for one assigned partition."""

    lease: Lease
    raw: dict[str, bytes] = field(default_factory=dict)
    states: dict[StateKey, ModelState] = field(default_factory=dict)
    fenced: bool = False
    #: Last offset whose effect this worker knows is in Redis (the lease's at first).
    offset: int = -1
    #: Log-end offset when the partition was acquired: ready once ``offset + 1`` reaches it.
    warm_until: int = 0
    #: Caught up once since the lease was taken (stays true until the next lease).
    warm: bool = False
    #: An outbox publish failed (broker unreachable): retry before the next batch.
    outbox_pending: bool = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: MonitorWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.worker.clear_partition_gauges(tp)
            self.worker.partitions.pop(tp, None)
            self.worker.pending.discard(tp)
            self.worker.release_quarantine(tp)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.assign(assigned)


class MonitorWorker:
    """Consumes prediction events, keeps drift state in Redis, publishes alerts.

    Parameters
    ----------
    settings
        The configuration object.
    name
        Worker name used in metric labels (bounded: one per process).
    """

    def __init__(self, settings: Settings, name: str = "monitor") -> None:
        self.settings = settings
        self.name = name
        self.topic = settings.topics.predictions
        self.partitions: dict[TopicPartition, _Partition] = {}
        self._refs: dict[tuple[str, str], tuple[float, ReferenceProfile | None]] = {}
        self._stop = asyncio.Event()
        self.redis: aioredis.Redis | None = None  # type: ignore[type-arg, unused-ignore]
        self.store: StateStore | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.processed = 0
        self.dead_letters = 0
        self.alerts_published = 0
        self.feature_labels = m.FeatureLabels(settings.monitor.metrics_max_features)
        #: Assigned partitions whose lease could not be taken yet (Redis unreachable).
        self.pending: set[TopicPartition] = set()
        #: Assigned partitions refused for unreadable or incomplete state (paused).
        self.quarantined: set[TopicPartition] = set()
        self._fault = settings.fault_spec()
        self._fault_fired = False
        self._batches = 0

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the worker to finish its current batch, commit and exit."""
        self._stop.set()

    async def start(self) -> None:
        """Connect to Redis and Kafka and join the consumer group."""
        s = self.settings
        self.redis, self.store = open_store(s.redis, s.monitor.group_id)
        await ensure_topics(s, [self.topic, s.topics.alerts, s.topics.dlq(self.topic)])
        kw = s.kafka.client_kwargs()
        self.producer = AIOKafkaProducer(
            **kw, acks="all", linger_ms=5, max_request_size=MAX_RECORD_BYTES + 64 * 1024
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **kw,
            group_id=s.monitor.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.monitor.max_batch_events,
            session_timeout_ms=s.monitor.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.monitor.session_timeout_ms // 10),
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
        )
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        await self.consumer.start()
        m.READY.labels(self.name).set(0)

    async def close(self) -> None:
        """Publish what is left in the outboxes, leave the group, close every connection."""
        for tp, part in list(self.partitions.items()):
            if part.fenced or self.store is None or self.producer is None:
                continue
            try:  # best effort: an unpublished alert stays in Redis for the next owner
                await asyncio.wait_for(self._publish_outbox(tp, part), timeout=10)
            except (TimeoutError, KafkaError, *TRANSIENT_REDIS, _Stopping) as exc:
                log.warning("outbox of %s not drained at shutdown: %s", tp, type(exc).__name__)
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
            await self._retry_pending()
            for held_tp, held in list(self.partitions.items()):
                if held.outbox_pending and not held.fenced:
                    await self._publish_outbox(held_tp, held)
            batch = await self.consumer.getmany(
                timeout_ms=200, max_records=self.settings.monitor.max_batch_events
            )
            if not batch:
                self._update_ready()
                assigned = self.consumer.assignment()
                if not assigned or assigned - self.partitions.keys() - self.quarantined:
                    idle_since = time.monotonic()  # not idle: joining, or taking leases
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            for tp, records in batch.items():
                part = self.partitions.get(tp)
                if part is None or part.fenced or not records:
                    continue
                # Records this worker already committed (a fetch that raced a seek, a
                # redelivery) would be applied twice: only a batch that ends past the
                # stored offset reaches the offset guard, so drop them here.
                fresh = [r for r in records if r.offset > part.offset]
                if len(fresh) < len(records):
                    m.EVENTS.labels(self.name, "duplicate").inc(len(records) - len(fresh))
                if fresh:
                    await self._handle(tp, part, fresh)
            self._update_ready()

    def _update_ready(self) -> None:
        """``driftline_ready``: 1 when no partition is pending, quarantined or catching up.

        A partition is warm once its committed offset reached the log end seen when it
        was acquired, and the newest high watermark fetched since (some brokers, Tansu
        among them, answer ListOffsets with the start of the last batch).
        """
        assert self.consumer is not None
        for tp, p in self.partitions.items():
            if not p.warm:
                hw = self.consumer.highwater(tp) or 0
                p.warm = p.offset + 1 >= max(p.warm_until, hw)
        ready = (
            not self.pending
            and not self.quarantined
            and all(p.warm for p in self.partitions.values() if not p.fenced)
        )
        m.READY.labels(self.name).set(1 if ready else 0)

    # ------------------------------------------------------------------ faults and retries
    def _fault_point(self, point: str) -> None:
        """Test-only fault injection (``DRIFTLINE_FAULT``); a no-op unless configured."""
        f = self._fault
        if f is None or self._fault_fired or f.point != point or self._batches < f.batch:
            return
        self._fault_fired = True
        log.warning("injected fault: %s at %s of batch %d", f.action, point, self._batches)
        if f.action == "crash":
            os._exit(137)
        os.kill(os.getpid(), signal.SIGSTOP)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
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

    # ------------------------------------------------------------------ assignment
    async def assign(self, assigned: Sequence[TopicPartition]) -> None:
        """Take a fencing lease per partition and seek to the offset stored in Redis.

        Runs inside the rebalance callback, where an exception would only be logged by
        aiokafka and leave the partition silently unprocessed: every failure is handled
        here. A transient Redis error pauses the partition and :meth:`run` retries; an
        unreadable or incomplete state quarantines it (paused, metric, error log).
        """
        assert self.consumer is not None
        m.READY.labels(self.name).set(0)
        # Pause before the first await: until a partition is leased and sought to its
        # stored offset, aiokafka must not hand out its records (fetched from Kafka's
        # advisory position, they could skip or repeat offsets). Paused and sought-away
        # records are discarded by aiokafka's fetcher; _acquire resumes the partition.
        self.consumer.pause(*assigned)
        for tp in assigned:
            try:
                await self._acquire(tp)
            except (*TRANSIENT_REDIS, KafkaError) as exc:
                log.warning("cannot take %s yet (%s); will retry", tp, type(exc).__name__)
                self.consumer.pause(tp)
                self.pending.add(tp)
            except StateError as exc:
                self.quarantine(tp, exc)

    async def _retry_pending(self) -> None:
        assert self.consumer is not None
        for tp in list(self.pending):
            if tp not in self.consumer.assignment():
                self.pending.discard(tp)
                continue
            try:
                await self._acquire(tp)
            except (*TRANSIENT_REDIS, KafkaError):
                await asyncio.sleep(RETRY_BACKOFF[-1] if len(self.pending) == 1 else 0.1)
                continue
            except StateError as exc:
                self.pending.discard(tp)
                self.quarantine(tp, exc)
                continue
            self.pending.discard(tp)

    async def _acquire(self, tp: TopicPartition, previous: _Partition | None = None) -> None:
        """Lease ``tp``, load its state, seek, and publish its leftover outbox.

        ``previous`` is the partition this worker held before Redis lost data under it.
        Evidence that stored state went back in time (Redis lost data) is logged and
        counted in ``driftline_state_rewind_total``: a fresh lease where a previous
        lease or Kafka's advisory commit shows progress, or a stored offset behind them.
        The state is then rebuilt by replaying Kafka from the stored offset (or from the
        earliest retained one); the worker reports not ready until it has caught up.
        """
        assert self.store is not None and self.consumer is not None
        self.consumer.pause(tp)  # see assign(): no records until sought and registered
        lease = await self.store.acquire(tp.topic, tp.partition)
        part = _Partition(lease=lease, raw=await self.store.load(lease), offset=lease.offset)
        known = previous.offset if previous is not None else await self._kafka_committed(tp) - 1
        if lease.offset < known:
            m.STATE_REWINDS.labels(self.name, tp.topic).inc()
            log.error(
                "stored state of %s is behind the stream (stored offset %d, processed up to "
                "%d): Redis lost data; rebuilding by replay from Kafka",
                tp,
                lease.offset,
                known,
            )
        if lease.resume_offset is None:
            await self.consumer.seek_to_beginning(tp)
            first = (await self.consumer.beginning_offsets([tp]))[tp] if known >= 0 else 0
            if first > 0:
                log.error(
                    "%s: Kafka no longer retains offsets before %d; the rebuilt state "
                    "misses that history",
                    tp,
                    first,
                )
        else:
            self.consumer.seek(tp, lease.resume_offset)
        part.warm_until = (await self.consumer.end_offsets([tp]))[tp]
        self.partitions[tp] = part
        self.consumer.resume(tp)
        await self._publish_outbox(tp, part)

    async def _kafka_committed(self, tp: TopicPartition) -> int:
        """The group's advisory Kafka commit for ``tp`` (0 if none or unknown)."""
        assert self.consumer is not None
        try:
            committed = await asyncio.wait_for(self.consumer.committed(tp), timeout=10)
        except (TimeoutError, KafkaError) as exc:
            log.info("advisory Kafka offset of %s unknown: %s", tp, type(exc).__name__)
            return 0
        return int(committed) if committed is not None else 0

    def quarantine(self, tp: TopicPartition, exc: BaseException) -> None:
        """Stop processing ``tp`` loudly: its stored state cannot be trusted or resumed.

        Never start such a partition fresh: that would silently replace history with a
        partial one. The partition stays paused (other partitions keep flowing), the
        gauge ``driftline_partitions_quarantined`` and readiness say so, and an operator
        inspects the keys and resets the partition (``StateStore.reset_partition``),
        after which a rebalance or restart rebuilds it by replay.
        """
        assert self.consumer is not None
        log.error("quarantined %s: %s: %s", tp, type(exc).__name__, exc)
        self.partitions.pop(tp, None)
        if tp in self.consumer.assignment():
            self.consumer.pause(tp)
        if tp not in self.quarantined:
            self.quarantined.add(tp)
            m.QUARANTINED.labels(self.name, tp.topic).inc()
        m.READY.labels(self.name).set(0)

    def release_quarantine(self, tp: TopicPartition) -> None:
        """Forget a quarantined partition that was revoked."""
        if tp in self.quarantined:
            self.quarantined.discard(tp)
            m.QUARANTINED.labels(self.name, tp.topic).dec()

    # ------------------------------------------------------------------ references
    async def _reference(self, model: str, version: str) -> ReferenceProfile | None:
        now = time.monotonic()
        hit = self._refs.get((model, version))
        if hit is not None and now - hit[0] < REFERENCE_TTL_S:
            return hit[1]
        store = self.store
        assert store is not None
        blob = await self._retrying(
            "reading a reference", lambda: store.get_reference(model, version)
        )
        ref = ReferenceProfile.from_bytes(blob) if blob is not None else None
        self._refs[(model, version)] = (now, ref)
        return ref

    # ------------------------------------------------------------------ one batch
    async def _handle(self, tp: TopicPartition, part: _Partition, records: Sequence[Any]) -> None:
        t0 = time.perf_counter()
        # Bulk decode (driftline.contract.columnar): the valid items in order, with their columns
        # already built for the core, and each refused record with its error.
        events, refused = decode_records([rec.value for rec in records])
        dlq: list[Any] = [self._dead_letter(tp, records[i], exc) for i, exc in refused]
        if dlq:
            # A poison record is passed only after the dead-letter topic acknowledged it.
            await asyncio.gather(*dlq)
        keys = {(e["model_id"], e["model_version"]) for e in events}
        refs = {k: await self._reference(*k) for k in keys}
        touched = {state_key(e) for e in events}
        for key in touched:
            if key not in part.states and key.encode() in part.raw:
                blob = part.raw.pop(key.encode())
                try:
                    part.states[key] = ModelState.from_bytes(
                        blob, refs[(key.model_id, key.model_version)]
                    )
                except StateCorrupt as exc:
                    # Signed by us yet unreadable: never start it fresh (that would
                    # silently drop its history). Quarantine the partition instead.
                    self.quarantine(tp, exc)
                    return
        result = process_batch(events, part.states, lambda mo, v: refs.get((mo, v)))
        store = self.store
        assert store is not None
        for ref in result.new_references:
            await self._retrying(
                "storing a warm-up reference",
                functools.partial(
                    store.put_reference, ref.model_id, ref.model_version, ref.to_bytes()
                ),
            )
            self._refs[(ref.model_id, ref.model_version)] = (time.monotonic(), ref)
        ok = await self._commit(tp, part, records[-1].offset, touched, result)
        if ok:
            self.processed += row_count(events)
            self._observe(result, events, len(dlq))
            self._observe_partition(tp, part, records[-1].offset)
            await record_history(self.store, result)  # best effort, after the commit
        m.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - t0)

    async def _dead_letter(self, tp: TopicPartition, rec: Any, exc: ContractError) -> None:
        """Send one refused record to ``<topic>.dlq``; return once the broker has it.

        The batch (and so the offset past the record) is committed only after this
        returns, so a dead letter is never lost; a broker that stays unreachable holds
        the partition (backpressure). A record the broker refuses as too large is sent
        truncated, with ``dl.error.truncated`` holding the original size, so one huge
        record cannot block its partition forever.
        """
        assert self.producer is not None
        headers = dead_letter_headers(tp.topic, tp.partition, rec.offset, exc.stage, exc)
        value = rec.value
        attempt = 0
        while True:
            try:
                await self.producer.send_and_wait(
                    self.settings.topics.dlq(tp.topic), value=value, key=rec.key, headers=headers
                )
                break
            except MessageSizeTooLargeError:
                if any(k == "dl.error.truncated" for k, _ in headers):
                    value = None  # even the truncated copy is refused: headers only
                    continue
                size = len(rec.value or b"")
                value = (rec.value or b"")[:DLQ_TRUNCATE_BYTES]
                headers = [*headers, ("dl.error.truncated", str(size).encode())]
            except KafkaError as kexc:
                if self._stop.is_set():
                    raise _Stopping("dead letter") from kexc
                log.warning("dead letter not acknowledged (%s); retrying", type(kexc).__name__)
                await asyncio.sleep(RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)])
                attempt += 1
        self.dead_letters += 1
        m.DEAD_LETTERS.labels(tp.topic, exc.stage).inc()

    async def _commit(
        self,
        tp: TopicPartition,
        part: _Partition,
        last_offset: int,
        touched: set[StateKey],
        result: BatchResult,
    ) -> bool:
        """Commit one batch. Guarantee: effectively once for state and alerts.

        1. Encode the touched states and the batch's alerts.
        2. In ONE Lua script on the partition's hash slot: check the fencing epoch
           (a stale worker writes nothing), skip if ``last_offset`` is not newer than
           the stored offset (a replayed batch changes nothing), write the states, append
           the alerts to the outbox and store the offset.
        3. Publish the outbox to the alert topic (deterministic alert ids) and trim it.
        4. Commit the offset to Kafka: advisory only, for lag metrics; on restart the
           offset stored in Redis wins.
        """
        store = self.store
        assert store is not None and self.consumer is not None
        states = {k.encode(): part.states[k].to_bytes() for k in touched if k in part.states}
        outbox = [a.to_json() for a in result.alerts]
        self._batches += 1
        self._fault_point("before_redis_commit")
        # Retried unchanged on a transient error: ``duplicate`` then means it landed.
        res = await self._retrying(
            "state commit",
            lambda: store.commit(
                part.lease, last_offset, states, outbox, expected_offset=part.offset
            ),
        )
        m.STATE_COMMITS.labels(self.name, res).inc()
        if res in ("fenced", "rewound"):
            await self._lost_lease(tp, part, res)
            return False
        part.offset = last_offset
        self._fault_point("after_redis_commit")
        await self._publish_outbox(tp, part)
        # Only now, with the state safely in Redis: Kafka's committed offset never runs
        # ahead of the stored one (committed <= stored offset + 1).
        try:
            await self.consumer.commit({tp: last_offset + 1})
        except Exception as exc:  # advisory: a failed Kafka commit loses nothing
            log.info("advisory Kafka commit failed: %s", type(exc).__name__)
        self._fault_point("after_kafka_commit")
        return res == "ok"

    async def _lost_lease(self, tp: TopicPartition, part: _Partition, res: str) -> None:
        """A commit wrote nothing because the lease no longer matches Redis.

        ``fenced`` with a newer epoch stored: another worker owns the partition; stop
        writing (a rebalance takes it away from this worker). ``fenced`` with no meta or
        an older epoch than the lease's, or ``rewound``: Redis lost data under a valid
        lease; take a new lease, reload the stored state and replay from its offset.
        """
        store = self.store
        assert store is not None
        if res == "fenced":
            stored = await self._retrying(
                "reading the stored lease", lambda: store.stored_position(tp.topic, tp.partition)
            )
            if stored is not None and stored[0] >= part.lease.epoch:
                log.warning("partition %s moved to another worker; this worker stops writing", tp)
                part.fenced = True
                return
        log.error("Redis lost committed state of %s (%s); reloading and replaying", tp, res)
        self.partitions.pop(tp, None)
        try:
            await self._retrying("re-acquiring a partition", lambda: self._acquire(tp, part))
        except StateError as exc:
            self.quarantine(tp, exc)

    async def _publish_outbox(self, tp: TopicPartition, part: _Partition) -> None:
        """Publish the partition's outbox (at least once; alert ids deduplicate).

        A broker error leaves the alerts in the Redis outbox, flagged for a retry before
        the next batch: the state commit already holds them durably.
        """
        try:
            await self._drain_outbox(tp, part)
            part.outbox_pending = False
        except KafkaError as exc:
            log.warning("alerts of %s not published yet (%s); will retry", tp, type(exc).__name__)
            part.outbox_pending = True

    async def _drain_outbox(self, tp: TopicPartition, part: _Partition) -> None:
        store = self.store
        assert store is not None and self.producer is not None
        while True:
            pending = await self._retrying(
                "reading the outbox", lambda: store.outbox_peek(part.lease, 500)
            )
            if not pending:
                return
            await publish_alerts(self.producer, self.settings.topics.alerts, pending)
            self.alerts_published += len(pending)
            self._fault_point("before_outbox_ack")
            try:
                await self._retrying(
                    "trimming the outbox",
                    functools.partial(store.outbox_ack, part.lease, len(pending)),
                )
            except FencedError:
                # Another worker owns the partition now; it re-publishes the same ids.
                part.fenced = True
                return

    def _observe(self, result: BatchResult, events: Sequence[Mapping[str, Any]], dl: int) -> None:
        # A columnar batch record carries many predictions: count predictions, not records.
        m.EVENTS.labels(self.name, "processed").inc(row_count(events))
        if dl:
            m.EVENTS.labels(self.name, "dead_letter").inc(dl)
        per_model: dict[tuple[str, str], int] = {}
        newest: dict[str, int] = {}
        for e in events:
            k = (e["model_id"], e["model_version"])
            per_model[k] = per_model.get(k, 0) + (e.count if isinstance(e, ColumnarBatch) else 1)
            ts = e["timestamp"]
            if isinstance(ts, int):
                newest[e["model_id"]] = max(newest.get(e["model_id"], 0), ts)
        for (mo, v), n in per_model.items():
            m.MODEL_EVENTS.labels(mo, v).inc(n)
        now_ms = time.time() * 1000
        for mo, ts in newest.items():
            m.PROCESSING_LAG.labels(self.name, mo).set(max(0.0, (now_ms - ts) / 1000))
        for o in result.observations:
            feat = self.feature_labels.label(o.model_id, o.feature)
            m.DRIFT_SCORE.labels(o.model_id, o.model_version, feat, o.test).set(o.value)

    def _observe_partition(self, tp: TopicPartition, part: _Partition, last_offset: int) -> None:
        """Gauges derived from the partition's state, not from the alerts of one batch.

        ``driftline_drift_active`` is set from every episode this worker holds, so it is
        right after a restart (episodes are loaded with the state) and is cleared by
        :meth:`clear_partition_gauges` when the partition moves to another worker.
        """
        assert self.consumer is not None
        active: dict[tuple[str, str, str], bool] = {}
        for key, st in part.states.items():
            for kind, ep in st.episodes.items():
                k = (key.model_id, key.model_version, kind)
                active[k] = active.get(k, False) or ep.firing
        for (mo, v, kind), firing in active.items():
            m.DRIFT_ACTIVE.labels(mo, v, kind).set(1 if firing else 0)
        hw = self.consumer.highwater(tp)
        if hw is not None:
            m.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(
                max(0, hw - (last_offset + 1))
            )

    def clear_partition_gauges(self, tp: TopicPartition) -> None:
        """Stop exporting a revoked partition's drift flags and lag (the new owner will)."""
        part = self.partitions.get(tp)
        if part is not None:
            for key, st in part.states.items():
                for kind in st.episodes:
                    with contextlib.suppress(KeyError):
                        m.DRIFT_ACTIVE.remove(key.model_id, key.model_version, kind)
        with contextlib.suppress(KeyError):
            m.CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))


async def run_monitor(settings: Settings, idle_exit_s: float | None = None) -> MonitorWorker:
    """Start a worker, run it until stopped, and close it."""
    worker = MonitorWorker(settings)
    await worker.start()
    try:
        await worker.run(idle_exit_s=idle_exit_s)
    finally:
        await worker.close()
    return worker
