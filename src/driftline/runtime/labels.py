"""The label joiner: the thin I/O shell of the slow loop (``driftline labels``).

Kafka in (``predictions`` and ``labels``, one consumer group of its own; both topics are
keyed by ``model_id`` and must have the same partition count, so partition ``p`` of each
holds the same models: they are *co-partitioned* and assigned together by Kafka's
range assignor), Redis for pending predictions and state, Kafka out (alerts on the
alert topic, refused labels on ``labels.dlq``), Prometheus for metrics. The logic is the
pure core in :mod:`driftline.core.slowloop.join`.

Per batch of partition ``p`` (predictions-p and labels-p together):

1. decode; a label that breaks the contract goes to ``labels.dlq`` with reason headers
   (acknowledged before the commit; a prediction that breaks it is counted and skipped:
   the monitor dead-letters predictions);
2. one script call looks up every pending prediction the batch needs
   (:meth:`StateStore.lookup_records`);
3. :func:`~driftline.core.slowloop.join.join_batch` decides every outcome;
4. one script call commits the new pending predictions, the tombstones of joined ones,
   the state, the alert outbox and the position -- atomically, fenced by the lease of
   partition ``p`` (:meth:`StateStore.commit_records`);
5. the outbox goes to the alert topic (deterministic alert ids); Kafka's commit is
   advisory, as in the monitor.

The position is two Kafka offsets (predictions-p, labels-p) kept in the ``u`` state
field; ``meta.offset`` of the partition holds the joiner's *commit sequence number*
(one per batch), which gives the script its idempotence and continuity checks.

Input drift is learnt by following the alert topic (all partitions, from the start,
no group): the monitor's ``input_drift`` alerts become event-time intervals
(:class:`~driftline.core.slowloop.join.DriftIndex`). Labels are delayed, so by the time
the labels of event time ``t`` arrive, the monitor has long reported on ``t``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from driftline.config import Settings
from driftline.contract.events import decode_label_fast, decode_prediction_fast
from driftline.core.reference import ReferenceProfile
from driftline.core.slowloop.join import (
    DIAGNOSES,
    TOMBSTONE,
    DriftIndex,
    JoinResult,
    UnitState,
    join_batch,
    plan_lookups,
    retention_ms,
)
from driftline.errors import ConfigError, ContractError, DecodeError, ValidationError
from driftline.runtime import metrics as m
from driftline.runtime.monitor import dead_letter_headers, ensure_topics, publish_alerts
from driftline.runtime.store import CommitResult, Lease, StateStore, open_store

__all__ = [
    "LabelJoiner",
    "run_labels",
    "topic_partitions",
]

log = logging.getLogger("driftline.labels")

REFERENCE_TTL_S = 30.0
ROLE_PREDICTIONS = "predictions"
ROLE_LABELS = "labels"


@dataclass
class _Unit:
    """One partition index ``p``: predictions-p and labels-p, under one lease."""

    partition: int
    lease: Lease
    state: UnitState
    #: The commit sequence number last stored (``meta.offset``); -1 before any.
    seq: int
    fenced: bool = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: LabelJoiner) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.worker.units.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.assign(assigned)


class LabelJoiner:
    """Joins labels to predictions, tracks performance, raises concept-drift alerts.

    Parameters
    ----------
    settings
        The configuration object (``settings.labels`` for the slow loop).
    name
        Worker name used in metric labels.
    """

    def __init__(self, settings: Settings, name: str = "labels") -> None:
        self.settings = settings
        self.cfg = settings.labels
        self.name = name
        self.pred_topic = settings.topics.predictions
        self.label_topic = settings.topics.labels
        self.units: dict[int, _Unit] = {}
        self.drift = DriftIndex()
        self._refs: dict[tuple[str, str], tuple[float, ReferenceProfile | None]] = {}
        self._stop = asyncio.Event()
        self.redis: aioredis.Redis | None = None  # type: ignore[type-arg, unused-ignore]
        self.store: StateStore | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.alert_consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.predictions_seen = 0
        self.labels_seen = 0
        self.dead_letters = 0
        self.alerts_published = 0
        self.commits = 0
        #: Outcomes counted by this process (committed batches only): (model, outcome) -> n.
        self.outcomes: dict[tuple[str, str], int] = {}
        self.alerts: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Finish the current batch, commit and exit."""
        self._stop.set()

    async def start(self) -> None:
        """Connect, check co-partitioning and join the consumer group."""
        s = self.settings
        self.redis, self.store = open_store(s.redis, self.cfg.group_id)
        # A missing topic is created with the partition count of the predictions topic,
        # so that the two stay co-partitioned.
        have = await topic_partitions(s, [self.pred_topic], missing_ok=True)
        await ensure_topics(
            s,
            [self.pred_topic, self.label_topic, s.topics.alerts, s.topics.dlq(self.label_topic)],
            **({"partitions": have[self.pred_topic]} if have.get(self.pred_topic) else {}),
        )
        counts = await topic_partitions(s, [self.pred_topic, self.label_topic, s.topics.alerts])
        if counts[self.pred_topic] != counts[self.label_topic]:
            await self.redis.aclose()
            raise ConfigError(
                f"topics {self.pred_topic!r} ({counts[self.pred_topic]} partitions) and "
                f"{self.label_topic!r} ({counts[self.label_topic]}) must have the same number "
                "of partitions: the label joiner needs them co-partitioned by model_id"
            )
        kw = s.kafka.client_kwargs()
        self.producer = AIOKafkaProducer(**kw, acks="all", linger_ms=5)
        await self.producer.start()
        self.alert_consumer = AIOKafkaConsumer(
            **kw, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self.alert_consumer.start()
        alert_tps = [TopicPartition(s.topics.alerts, p) for p in range(counts[s.topics.alerts])]
        self.alert_consumer.assign(alert_tps)
        await self.alert_consumer.seek_to_beginning(*alert_tps)
        await self._follow_alerts()
        self.consumer = AIOKafkaConsumer(
            **kw,
            group_id=self.cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.cfg.max_batch_events,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # Range assignment gives one consumer partition p of both topics.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self.consumer.subscribe([self.pred_topic, self.label_topic], listener=_Rebalance(self))
        await self.consumer.start()
        m.READY.labels(self.name).set(0)

    async def close(self) -> None:
        """Leave the group and close every connection."""
        for c in (self.consumer, self.alert_consumer):
            if c is not None:
                await c.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.redis is not None:
            await self.redis.aclose()

    async def run(self, idle_exit_s: float | None = None) -> None:
        """Process batches until :meth:`stop` (or ``idle_exit_s`` without records)."""
        assert self.consumer is not None
        idle_since = time.monotonic()
        while not self._stop.is_set():
            await self._follow_alerts()
            batch = await self.consumer.getmany(
                timeout_ms=200, max_records=self.cfg.max_batch_events
            )
            if not batch:
                m.READY.labels(self.name).set(1 if self.units else 0)
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            per_unit: dict[int, dict[str, list[Any]]] = {}
            for tp, records in batch.items():
                role = ROLE_PREDICTIONS if tp.topic == self.pred_topic else ROLE_LABELS
                per_unit.setdefault(tp.partition, {}).setdefault(role, []).extend(records)
            for p, roles in sorted(per_unit.items()):
                unit = self.units.get(p)
                if unit is None or unit.fenced:
                    continue
                await self._handle(
                    unit, roles.get(ROLE_PREDICTIONS, []), roles.get(ROLE_LABELS, [])
                )

    # ------------------------------------------------------------------ assignment
    async def assign(self, assigned: Sequence[TopicPartition]) -> None:
        """Take a lease per partition index held for both topics; seek to stored offsets."""
        assert self.store is not None and self.consumer is not None
        roles: dict[int, set[str]] = {}
        for tp in assigned:
            role = ROLE_PREDICTIONS if tp.topic == self.pred_topic else ROLE_LABELS
            roles.setdefault(tp.partition, set()).add(role)
        for p, have in sorted(roles.items()):
            if have != {ROLE_PREDICTIONS, ROLE_LABELS}:
                log.error(
                    "partition %d assigned for %s only: not co-partitioned, not processed",
                    p,
                    ",".join(sorted(have)),
                )
                continue
            await self._acquire(p)

    async def _acquire(self, p: int) -> None:
        assert self.store is not None
        lease = await self.store.acquire(self.label_topic, p)
        fields = await self.store.load(lease)
        unit = _Unit(p, lease, UnitState.from_fields(fields), seq=lease.offset)
        if lease.fresh:
            m.STATE_REWINDS.labels(self.name, self.label_topic).inc()
        self.units[p] = unit
        await self._seek(unit)
        await self._publish_outbox(unit)

    async def _seek(self, unit: _Unit) -> None:
        assert self.consumer is not None
        for role, topic in ((ROLE_PREDICTIONS, self.pred_topic), (ROLE_LABELS, self.label_topic)):
            tp = TopicPartition(topic, unit.partition)
            nxt = unit.state.offsets.get(role)
            if nxt is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, nxt)

    async def _reload(self, unit: _Unit) -> None:
        """Redis went back under a valid lease: reload what it has and replay from there."""
        assert self.store is not None
        m.STATE_REWINDS.labels(self.name, self.label_topic).inc()
        self.units.pop(unit.partition, None)
        await self._acquire(unit.partition)

    # ------------------------------------------------------------------ alerts topic
    async def _follow_alerts(self) -> None:
        """Read new alerts (non-blocking): input-drift episodes for the diagnosis."""
        if self.alert_consumer is None:
            return
        for _ in range(100):
            batch = await self.alert_consumer.getmany(timeout_ms=0, max_records=5000)
            if not batch:
                return
            for records in batch.values():
                for r in records:
                    try:
                        self.drift.observe(orjson.loads(r.value))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        log.warning("unreadable alert record at offset %d", r.offset)

    # ------------------------------------------------------------------ references
    async def _reference(self, model: str, version: str) -> ReferenceProfile | None:
        now = time.monotonic()
        hit = self._refs.get((model, version))
        if hit is not None and now - hit[0] < REFERENCE_TTL_S:
            return hit[1]
        assert self.store is not None
        blob = await self.store.get_reference(model, version)
        ref = ReferenceProfile.from_bytes(blob) if blob is not None else None
        self._refs[(model, version)] = (now, ref)
        return ref

    # ------------------------------------------------------------------ one batch
    async def _handle(self, unit: _Unit, precs: Sequence[Any], lrecs: Sequence[Any]) -> None:
        assert self.store is not None and self.consumer is not None
        t0 = time.perf_counter()
        preds: list[dict[str, Any]] = []
        for rec in precs:
            try:
                if rec.value is None:
                    raise DecodeError("record has no value")
                preds.append(decode_prediction_fast(rec.value))
            except ContractError:
                # The monitor dead-letters predictions; the joiner only counts them.
                m.JOIN_PREDICTIONS.labels("_invalid", "invalid").inc()
        labels: list[dict[str, Any]] = []
        label_recs: list[Any] = []
        dlq: list[Any] = []
        for rec in lrecs:
            try:
                if rec.value is None:
                    raise DecodeError("record has no value")
                labels.append(decode_label_fast(rec.value))
                label_recs.append(rec)
            except ContractError as exc:
                unit.state.refused += 1
                dlq.append(self._dead_letter(unit.partition, rec.offset, rec.value, rec.key, exc))
        if dlq:
            await asyncio.gather(*dlq)
        keys = {(e["model_id"], e["model_version"]) for e in preds}
        for mj in unit.state.models.values():
            keys.update((mj.model_id, v) for v, _ in mj.streams)
        refs = {k: await self._reference(*k) for k in keys}
        plan = plan_lookups(preds, labels, unit.state, self.cfg)
        found = await self.store.lookup_records(
            self.label_topic, unit.partition, plan.keys, plan.probes
        )
        result = join_batch(
            preds,
            labels,
            plan,
            found,
            unit.state,
            lambda mo, v: refs.get((mo, v)),
            self.drift,
            self.cfg,
        )
        if result.rejected:
            sends = []
            for idx, reason, event in result.rejected:
                why = ValidationError(reason)
                if idx >= 0:
                    r = label_recs[idx]
                    sends.append(
                        self._dead_letter(unit.partition, r.offset, r.value, r.key, why, "join")
                    )
                elif event is not None:
                    raw = orjson.dumps(event)
                    sends.append(self._dead_letter(unit.partition, -1, raw, None, why, "join"))
            await asyncio.gather(*sends)
        if precs:
            unit.state.offsets[ROLE_PREDICTIONS] = precs[-1].offset + 1
        if lrecs:
            unit.state.offsets[ROLE_LABELS] = lrecs[-1].offset + 1
        ok = await self._commit(unit, result, bool(dlq))
        if ok:
            self.predictions_seen += len(precs)
            self.labels_seen += len(lrecs)
            self._observe(unit, result, len(preds), len(precs) - len(preds), len(dlq))
            tps = {}
            if precs:
                tps[TopicPartition(self.pred_topic, unit.partition)] = precs[-1].offset + 1
            if lrecs:
                tps[TopicPartition(self.label_topic, unit.partition)] = lrecs[-1].offset + 1
            try:
                await self.consumer.commit(tps)
            except Exception as exc:  # advisory: the position that counts is in Redis
                log.info("advisory Kafka commit failed: %s", type(exc).__name__)
        m.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - t0)

    def _dead_letter(
        self,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None,
        exc: ContractError,
        stage: str | None = None,
    ) -> Any:
        assert self.producer is not None
        stage = stage or exc.stage
        self.dead_letters += 1
        m.DEAD_LETTERS.labels(self.label_topic, stage).inc()
        return self.producer.send_and_wait(
            self.settings.topics.dlq(self.label_topic),
            value=value,
            key=key,
            headers=dead_letter_headers(self.label_topic, partition, offset, stage, exc),
        )

    async def _commit(self, unit: _Unit, result: JoinResult, refused: bool) -> bool:
        """Commit one batch: records, tombstones, state, outbox, position -- atomically."""
        assert self.store is not None
        dirty = set(result.dirty) | {"u"}
        states = unit.state.to_fields(dirty)
        now_ms = int(time.time() * 1000)
        expire = {
            k: max(at, now_ms + retention_ms(self.cfg, result.key_model[k]))
            for k, at in result.expire_after.items()
        }
        res = await self.store.commit_records(
            unit.lease,
            unit.seq + 1,
            states,
            [a.to_json() for a in result.alerts],
            puts=result.puts,
            expire_at_ms=expire,
            tombs=result.tombs,
            tombstone=TOMBSTONE,
            expected_offset=unit.seq,
        )
        m.STATE_COMMITS.labels(self.name, res).inc()
        if res is CommitResult.FENCED:
            log.warning("partition %d moved to another worker; stop writing", unit.partition)
            unit.fenced = True
            self.units.pop(unit.partition, None)
            return False
        if res is CommitResult.REWOUND:
            log.warning("partition %d: Redis went back in time; reloading", unit.partition)
            await self._reload(unit)
            return False
        if res is CommitResult.DUPLICATE:  # cannot happen with expected_offset; be safe
            await self._reload(unit)
            return False
        unit.seq += 1
        self.commits += 1
        await self._publish_outbox(unit)
        await self._history(result)
        return True

    async def _history(self, result: JoinResult) -> None:
        """Performance points for reports (best effort: observability, not state)."""
        if not result.points or self.store is None:
            return
        from driftline.runtime.history import record_performance

        for model, points in result.points.items():
            try:
                await record_performance(self.store, model, points)
            except Exception as exc:  # never let reporting break the join
                log.warning("performance history not written: %s", type(exc).__name__)

    async def _publish_outbox(self, unit: _Unit) -> None:
        assert self.store is not None and self.producer is not None
        while True:
            pending = await self.store.outbox_peek(unit.lease, 500)
            if not pending:
                return
            self.alerts.extend(
                await publish_alerts(self.producer, self.settings.topics.alerts, pending)
            )
            self.alerts_published += len(pending)
            try:
                await self.store.outbox_ack(unit.lease, len(pending))
            except Exception:  # FencedError: the new owner re-publishes the same ids
                unit.fenced = True
                return

    def _observe(
        self, unit: _Unit, result: JoinResult, n_pred: int, n_bad_pred: int, n_dlq: int
    ) -> None:
        for (model, outcome), n in result.labels.items():
            m.LABELS.labels(model, outcome).inc(n)
            self.outcomes[(model, outcome)] = self.outcomes.get((model, outcome), 0) + n
        if n_dlq:
            m.LABELS.labels("_invalid", "invalid").inc(n_dlq)
            self.outcomes[("_invalid", "invalid")] = (
                self.outcomes.get(("_invalid", "invalid"), 0) + n_dlq
            )
        for (model, outcome), n in result.predictions.items():
            m.JOIN_PREDICTIONS.labels(model, outcome).inc(n)
        for model, lag in result.lags:
            m.LABEL_LAG.labels(model).observe(lag)
        for o in result.observations:
            if o.metric == "accuracy":
                m.ACCURACY.labels(o.model_id, o.model_version).set(o.value)
            elif o.metric == "estimated_accuracy":
                m.ESTIMATED_ACCURACY.labels(o.model_id, o.model_version).set(o.value)
            elif o.metric == "coverage":
                m.LABEL_COVERAGE.labels(o.model_id, o.model_version).set(o.value)
            elif o.metric == "estimation_error":
                m.ESTIMATION_ERROR.labels(o.model_id, o.model_version).set(o.value)
            else:
                m.PERFORMANCE.labels(o.model_id, o.model_version, o.metric).set(o.value)
        for (model, version), diag in result.diagnoses.items():
            for d in DIAGNOSES:
                m.DIAGNOSIS.labels(model, version, d).set(1 if d == diag else 0)
        m.HELD_LABELS.labels(self.name).set(sum(len(u.state.held) for u in self.units.values()))
        m.EVENTS.labels(self.name, "processed").inc(n_pred + sum(result.labels.values()))
        if n_dlq:
            m.EVENTS.labels(self.name, "dead_letter").inc(n_dlq)

    # ------------------------------------------------------------------ views
    def totals(self) -> dict[str, dict[str, int]]:
        """Exact label outcome counters per model, summed over this worker's partitions."""
        out: dict[str, dict[str, int]] = {}
        for u in self.units.values():
            for mj in u.state.models.values():
                t = out.setdefault(mj.model_id, {})
                for k, v in mj.labels.items():
                    t[k] = t.get(k, 0) + v
        return out


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


async def run_labels(settings: Settings, idle_exit_s: float | None = None) -> LabelJoiner:
    """Start a joiner, run it until stopped (or idle), and close it."""
    worker = LabelJoiner(settings)
    await worker.start()
    try:
        await worker.run(idle_exit_s=idle_exit_s)
    finally:
        await worker.close()
    return worker
