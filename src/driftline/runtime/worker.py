"""The one worker shell: everything a Driftline Kafka worker does around its pure core.

The monitor (:mod:`.monitor`) and the label joiner (:mod:`.labels`) are small
subclasses of :class:`Worker` that say what to decode, which pure core to call and
what to commit. Everything else is here, once: the consumer and its rebalance
listener, the run loop and its stop handling, fencing leases, Redis retries with
backoff (:mod:`.resilience`), quarantine of partitions and models, readiness, dead
letters, the outbox, the advisory Kafka commit, the reference cache and common metrics.

Vocabulary. A worker consumes *co-partitioned* topics (keyed by ``model_id``, same
partition count): partition index ``p`` of every topic forms one **unit**, owned under
one fencing lease on ``lease_topic``'s partition ``p``. A unit's state, outbox and
*stored offset* (``meta.offset``: the monitor's Kafka offset, the joiner's commit
sequence number) live in Redis and change only through :meth:`Worker._commit`; its
*positions* (next Kafka offset per topic) are what the stored state reflects, and the
worker resumes from them whatever Kafka's group offsets say.

The contract of a subclass (everything else is the shell's):

* ``open_state(lease)``: the unit's in-memory state from Redis (a
  :class:`~driftline.errors.StateError` quarantines the unit);
* ``resume_positions(lease, state)``: per topic, the next offset (``None``: beginning);
* ``process(unit, records)``: decode, dead-letter what cannot be processed (with
  :meth:`dead_letter`, awaited before returning; a model whose own state or reference
  cannot be used is held back with ``self.holds``), call the pure core, return the
  :class:`Batch` to commit (a ``StateError`` quarantines the unit, nothing committed);
* ``committed(unit, batch)``: metrics and history of a batch that is in Redis;
* optional: ``setup()`` (before joining), ``before_poll()`` (each loop turn),
  ``released(unit)`` (revoked or dropped), ``consumer_options()``.

What the shell guarantees for every worker: records reach ``process`` in partition
order, once per lease, never before the unit is leased and sought to its stored
positions and never at or below them (redeliveries count as ``duplicate``); transient
Redis errors (unreachable, out of memory) are retried with backoff while the batch is
held (backpressure); a batch is committed effectively once; state that cannot be read
is quarantined (unit) or held back (model), never started fresh, and checked again
every ``quarantine_recheck_seconds``; readiness is 1 only when no unit is pending,
quarantined or catching up; a stop (SIGTERM) ends the start, the loop and the close
within bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from driftline.config import Settings, WorkerSettings
from driftline.core.reference import ReferenceProfile
from driftline.errors import ConfigError, FencedError, StateCorrupt, StateError
from driftline.runtime import metrics as m
from driftline.runtime.blas import single_threaded_blas
from driftline.runtime.health import HEALTH, track_group
from driftline.runtime.redis_client import RedisClient
from driftline.runtime.references import ReferenceCache, ReferenceState
from driftline.runtime.resilience import (
    BROKER_CHECK_SECONDS,
    REDIS_FAILURES,
    RETRY_BACKOFF,
    BrokerWatch,
    ModelHolds,
    Stopping,
    bounded,
    is_transient,
    polled_lately,
    retry,
    until_stopped,
    watch_broker,
)
from driftline.runtime.store import CommitResult, Lease, RecordWrites, StateStore, open_store
from driftline.runtime.topics import (
    dead_letter_headers,
    ensure_topics,
    publish_alerts,
    send_dead_letter,
)

# dead_letter_headers, ensure_topics: also imported from here by the retraining trigger.
__all__ = [
    "FETCH_MAX_WAIT_MS",
    "Batch",
    "Unit",
    "Worker",
    "dead_letter_headers",
    "ensure_topics",
]

log = logging.getLogger("driftline.worker")

#: Room left in a produce request beside a record of ``max_record_bytes`` (headers, key).
_REQUEST_MARGIN = 64 * 1024
#: Longest a fetch waits at the broker for data (Kafka's ``fetch.max.wait.ms``). With
#: Kafka's 500 ms default the workers waited for it between batches (a fetch of several
#: partitions was held while one of them had nothing new): bench/bench_pipeline.py
#: measured 16k single events/s against 25k with 50 ms. An idle worker polls more often.
FETCH_MAX_WAIT_MS = 50
#: Published alerts a worker remembers for in-process readers (the demo): the newest.
RECENT_ALERTS = 1000
S = TypeVar("S")
R = TypeVar("R")
_T = TypeVar("_T")


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
    #: Side records written (and deleted) in the same commit (the monitor's warm-up rows).
    side: Mapping[str, bytes] = field(default_factory=dict)
    side_deletes: Sequence[str] = ()


def leave_group_from_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """Make a started ``consumer`` leave its group as it closes in generation 0 too.

    aiokafka sends LeaveGroup only from generation 1, Kafka's first; Tansu numbers its
    first generation 0. A worker closed in it stayed a member until its session timed
    out, so the next worker of the group (a restart) joined, waited for that member and
    joined again: a session timeout and a join later than after a leave. Wraps the
    coordinator's leave step (aiokafka runs it as the consumer stops); a consumer
    without one (aiokafka changed) keeps aiokafka's behaviour.
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    leave = getattr(coordinator, "_maybe_leave_group", None)
    if leave is None:
        return

    async def leave_in_any_generation() -> None:
        if coordinator.generation == 0:
            coordinator.generation = 1  # what aiokafka's check wants; reset as it leaves
        await leave()

    coordinator._maybe_leave_group = leave_in_any_generation


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
        #: Models held back (quarantined), per partition index.
        self.holds = ModelHolds(name, cfg.quarantine_recheck_seconds)
        #: Partition indexes refused for unreadable or incomplete state (paused), with
        #: the monotonic time of the next attempt to take them again.
        self.quarantined: dict[int, float] = {}
        self.redis: RedisClient | None = None
        self.store: StateStore | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.dead_letters = 0
        self.alerts_published = 0
        #: The newest published alerts (at most :data:`RECENT_ALERTS`), oldest first.
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self.references = ReferenceCache(cfg.reference_ttl_seconds, cfg.reference_cache_size)
        #: Model ids exported as metric label values (the rest share "other").
        self.model_labels = m.ModelLabels(cfg.metrics_max_models)
        #: Says once per outage that the broker cannot be reached (and when it is back).
        self.broker = BrokerWatch(name, settings.kafka.bootstrap_servers)
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
        out = [s.topics.alerts, *(s.topics.dlq(t) for t in (*self.topics, s.topics.alerts))]
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
        """Connect to Redis and Kafka, run :meth:`setup` and join the consumer group.

        A stop requested meanwhile (SIGTERM while the broker does not answer) ends the
        start at once; :meth:`run` then returns and :meth:`close` closes what is open.
        """
        s, cfg = self.settings, self.cfg
        single_threaded_blas()  # runtime/blas.py: spinning BLAS threads cost a core
        self.redis, self.store = open_store(s.redis, cfg.group_id)
        try:
            await self._until_broker_answers(self.setup)
            kw = s.kafka.client_kwargs()
            self.producer = AIOKafkaProducer(
                **kw,
                acks="all",
                linger_ms=5,
                max_request_size=cfg.max_record_bytes + _REQUEST_MARGIN,
            )
            await until_stopped(self._stop, self.producer.start())
            self.consumer = AIOKafkaConsumer(
                **kw,
                group_id=cfg.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=cfg.max_batch_events,
                session_timeout_ms=cfg.session_timeout_ms,
                heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 10),
                max_partition_fetch_bytes=cfg.max_record_bytes,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                **self.consumer_options(),
            )
            self.consumer.subscribe(self.topics, listener=track_group(_Rebalance(self)))
            m.init_worker_series(self.name, self.topics, self.lease_topic)
            await until_stopped(self._stop, self.consumer.start())
            leave_group_from_generation_zero(self.consumer)
        except Stopping:
            log.info("stop requested while starting")
        m.READY.labels(self.name).set(0)

    async def _until_broker_answers(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run a start step again every :data:`BROKER_CHECK_SECONDS` while the broker
        cannot be reached (one warning line, not an exit: a worker started before its
        broker waits for it); a stop ends the wait."""
        while True:
            try:
                await until_stopped(self._stop, step())
            except KafkaConnectionError as exc:
                self.broker.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), BROKER_CHECK_SECONDS)
                if self._stop.is_set():
                    raise Stopping("start") from exc
            else:
                self.broker.answered()
                return

    async def _watch_broker(self) -> None:
        """Whether the broker answers, every :data:`BROKER_CHECK_SECONDS`
        (:func:`watch_broker`: a fetch response of an assigned partition since the last
        check, else a metadata request)."""
        assert self.consumer is not None
        consumer = self.consumer
        fetched = functools.partial(polled_lately, consumer)
        await watch_broker(self.broker, self._stop, consumer.topics, fetched)

    async def close(self) -> None:
        """Publish what is left in the outboxes, leave the group, close every connection.

        Bounded as a whole by the session timeout (a broker or Redis that never answers
        cannot hold the process): an unpublished alert stays in Redis for the next
        owner, and a member that could not leave the group is evicted after its
        session timeout.
        """
        deadline = time.monotonic() + self.cfg.session_timeout_ms / 1000
        for unit in list(self.units.values()):
            if unit.fenced or self.store is None or self.producer is None:
                continue
            where = self._where(unit.partition)
            await bounded(f"draining the outbox of {where}", self._publish_outbox(unit), deadline)
        if self.consumer is not None:
            await bounded("leaving the consumer group", self.consumer.stop(), deadline)
        if self.producer is not None:
            await bounded("closing the producer", self.producer.stop(), deadline)
        if self.redis is not None:
            await bounded("closing Redis", self.redis.aclose(), deadline)

    async def run(self, idle_exit_s: float | None = None) -> None:
        """Process batches until :meth:`stop` (or ``idle_exit_s`` without records)."""
        if self.consumer is None:  # the start was stopped before the group was joined
            return
        watch = asyncio.create_task(self._watch_broker())
        try:
            await self._run(idle_exit_s)
        except Stopping:
            log.info("stop requested while retrying; the unfinished batch will be replayed")
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

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
        return not assigned or bool(assigned - self.units.keys() - self.quarantined.keys())

    def _update_ready(self) -> None:
        """``driftline_ready``: 1 when no unit is pending, quarantined or catching up,
        and the broker answers.

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
            and self.broker.down_since is None
            and not self.quarantined
            and all(u.warm for u in self.units.values() if not u.fenced)
        )
        m.READY.labels(self.name).set(1 if ready else 0)

    # ------------------------------------------------------------------ retries
    async def retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call`` until it succeeds, backing off on transient Redis errors (the
        batch is held: backpressure); :class:`Stopping` if asked to stop meanwhile."""
        return await retry(what, call, self._stop, self._waiting)

    def _waiting(self) -> None:
        """Called before each wait of a retry (Redis, dead letters): the loop is alive
        but not making progress."""
        m.READY.labels(self.name).set(0)
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
            self._release_quarantine(p)
            self.holds.forget(p)

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
            await self._take(p)

    async def _take(self, p: int) -> bool:
        """Acquire unit ``p``, or leave it pending (transient) or quarantined; True if taken.

        Every failure is handled here, as :meth:`assign` runs inside the rebalance
        callback: a transient error (Redis unreachable or refusing writes, Kafka
        metadata slow) leaves the unit pending and paused, retried at each loop turn;
        state that cannot be trusted (garbage, a missing field, a wrong type, an error
        reply) quarantines it, and the shell tries again every
        ``quarantine_recheck_seconds`` (an operator's repair is picked up without a
        restart).
        """
        assert self.consumer is not None
        try:
            await self._acquire(p)
        except (*REDIS_FAILURES, KafkaError) as exc:
            if isinstance(exc, KafkaError) or is_transient(exc):
                if p not in self.pending:
                    log.warning(
                        "cannot take %s yet (%s); will retry", self._where(p), type(exc).__name__
                    )
                self.consumer.pause(*self._tps(p))
                self.pending.add(p)
                return False
            self.pending.discard(p)
            self.quarantine(p, exc)
            return False
        except StateError as exc:
            self.pending.discard(p)
            self.quarantine(p, exc)
            return False
        self.pending.discard(p)
        self._release_quarantine(p)
        return True

    async def _retry_pending(self) -> None:
        """Take pending units again, and quarantined ones whose recheck time came."""
        assert self.consumer is not None
        assigned = {tp.partition for tp in self.consumer.assignment()}
        now = time.monotonic()
        due = sorted(self.pending | {p for p, at in self.quarantined.items() if at <= now})
        for p in due:
            if p not in assigned:
                self.pending.discard(p)
                continue
            if not await self._take(p) and p in self.pending:
                await asyncio.sleep(RETRY_BACKOFF[-1] if len(self.pending) == 1 else 0.1)

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
                first = (
                    await asyncio.wait_for(
                        self.consumer.beginning_offsets([tp]), self.cfg.session_timeout_ms / 1000
                    )
                )[tp]
                if first > 0:
                    log.error(
                        "%s: Kafka no longer retains offsets before %d; the rebuilt state "
                        "misses that history",
                        tp,
                        first,
                    )
        ends = await asyncio.wait_for(
            self.consumer.end_offsets(tps), self.cfg.session_timeout_ms / 1000
        )
        unit = Unit(
            partition=p,
            lease=lease,
            state=state,
            stored=lease.offset,
            positions={t: resume.get(t) or 0 for t in self.topics},
            warm_until={tp.topic: ends[tp] for tp in tps},
        )
        # Leftover alerts first: no batch of this unit can drain the outbox meanwhile
        # (two drains would trim each other's entries).
        await self._publish_outbox(unit)
        self.units[p] = unit
        self.consumer.resume(*tps)

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
        inspects the keys and repairs or resets the partition
        (``StateStore.reset_partition``); the worker takes it again by itself once the
        state reads (checked every ``quarantine_recheck_seconds``).
        """
        assert self.consumer is not None
        if p not in self.quarantined:
            log.error("quarantined %s: %s: %s", self._where(p), type(exc).__name__, exc)
            m.QUARANTINED.labels(self.name, self.lease_topic).inc()
        unit = self.units.pop(p, None)
        if unit is not None:
            self.released(unit)
        self.holds.forget(p)
        assigned = self.consumer.assignment()
        self.consumer.pause(*(tp for tp in self._tps(p) if tp in assigned))
        self.quarantined[p] = time.monotonic() + self.cfg.quarantine_recheck_seconds
        m.READY.labels(self.name).set(0)

    def _release_quarantine(self, p: int) -> None:
        if self.quarantined.pop(p, None) is not None:
            log.warning("%s is no longer quarantined", self._where(p))
            m.QUARANTINED.labels(self.name, self.lease_topic).dec()

    # ------------------------------------------------------------------ references
    async def references_of(
        self, wanted: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], ReferenceState]:
        """What the worker knows of the references of ``(model, version)`` pairs (or
        their defaults): read from Redis at most once per ``reference_ttl_seconds``, the
        stale ones in one round trip."""
        store = self.store
        assert store is not None

        async def read(pairs: list[tuple[str, str]]) -> Any:
            return await self.retrying("reading references", lambda: store.lookup_references(pairs))

        return await self.references.get(wanted, read)

    def remember_reference(self, ref: ReferenceProfile) -> None:
        """Cache a reference this worker just stored (a warm-up reference)."""
        self.references.put(ref)

    # ------------------------------------------------------------------ dead letters
    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None,
        exc: Exception,
        stage: str | None = None,
    ) -> None:
        """Send one refused record to ``<topic>.dlq``; return once the broker has it.

        The batch (and so the offset past the record) is committed only after this
        returns, so a dead letter is never lost; a broker that stays unreachable holds
        the unit (backpressure). A record larger than the producer can send
        (``max_record_bytes``), or one the broker refuses as too large, is sent
        truncated (:func:`~driftline.runtime.topics.send_dead_letter`), so one huge
        record cannot block its partition forever.
        """
        assert self.producer is not None
        stage = stage or str(getattr(exc, "stage", "worker"))
        await send_dead_letter(
            self.producer,
            self.settings.topics.dlq(topic),
            value,
            key,
            dead_letter_headers(topic, partition, offset, stage, exc),
            self.cfg.max_record_bytes,
            self._stop,
            self._waiting,
        )
        self.dead_letters += 1
        m.DEAD_LETTERS.labels(topic, stage).inc()

    # ------------------------------------------------------------------ one batch
    async def _handle(self, unit: Unit[S], records: Mapping[str, Sequence[Any]]) -> None:
        t0 = time.perf_counter()
        try:
            batch = await self.process(unit, records)
        except (StateError, *REDIS_FAILURES) as exc:
            # State of the whole unit that cannot be read (a model's own records are
            # held back by the subclass instead), or an error reply that no retry will
            # change: never start it fresh (that would silently drop its history).
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
                side=batch.side,
                side_deletes=batch.side_deletes,
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
        if not tps:
            # A batch of no records (the label joiner re-deriving its verdicts after a
            # drift alert) moved no position. aiokafka refuses an empty commit with a
            # ValueError, which logged 'advisory Kafka commit failed' once per unit at
            # every drift alert.
            return True
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
        self.holds.forget(p)
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
            alerts = self.settings.topics.alerts
            published = await publish_alerts(self.producer, alerts, pending, self.model_labels)
            for blob, why in published.unreadable:
                # Not an alert (edited by hand, a bug): kept as evidence, not published.
                await self.dead_letter(
                    alerts, unit.partition, -1, blob, None, StateCorrupt(why), "outbox"
                )
            self.recent_alerts.extend(published.alerts)
            self.alerts_published += len(published.alerts)
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
