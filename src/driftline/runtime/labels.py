"""The label joiner: the thin I/O shell of the slow loop (``driftline labels``).

Kafka in (``predictions`` and ``labels``, one consumer group of its own; both topics are
keyed by ``model_id`` and must have the same partition count, so partition ``p`` of each
holds the same models: they are *co-partitioned* and assigned together by Kafka's
range assignor), Redis for pending predictions and state, Kafka out (alerts on the
alert topic, refused labels on ``labels.dlq``), Prometheus for metrics. The logic is the
pure core in :mod:`driftline.performance`.

Per batch of partition ``p`` (predictions-p and labels-p together):

1. decode; a label that breaks the contract goes to ``labels.dlq`` with reason headers
   (acknowledged before the commit; a prediction that breaks it is counted and skipped:
   the monitor dead-letters predictions);
2. one script call looks up every pending prediction the batch needs
   (:meth:`StateStore.lookup_records`);
3. :func:`performance.join_batch` decides every outcome;
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
(:class:`performance.DriftIndex`). Labels are delayed, so by the time the labels of
event time ``t`` arrive, the monitor has long reported on ``t``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from driftline.config import Settings
from driftline.contract.events import decode_label_fast, decode_prediction_fast
from driftline.core.reference import ReferenceProfile, TrainingData
from driftline.core.slowloop.join import (
    DIAGNOSES,
    TOMBSTONE,
    DriftIndex,
    JoinResult,
    PerfState,
    UnitState,
    build_report,
    format_report,
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
    "SeaScenario",
    "demo_slow_loop",
    "interleave",
    "load_perf_states",
    "report_text",
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


# ---------------------------------------------------------------------------- report


async def load_perf_states(settings: Settings) -> tuple[list[PerfState], dict[str, dict[str, int]]]:
    """Every stored performance state and the label outcome totals per model.

    Read-only (:meth:`StateStore.peek`): a running joiner is not fenced.
    """
    counts = await topic_partitions(settings, [settings.topics.labels])
    client, store = open_store(settings.redis, settings.labels.group_id)
    states: list[PerfState] = []
    totals: dict[str, dict[str, int]] = {}
    try:
        for p in range(counts[settings.topics.labels]):
            got = await store.peek(settings.topics.labels, p)
            if got is None:
                continue
            unit = UnitState.from_fields(got[1])
            states.extend(unit.perf.values())
            for mj in unit.models.values():
                t = totals.setdefault(mj.model_id, {})
                for k, v in mj.labels.items():
                    t[k] = t.get(k, 0) + v
    finally:
        await client.aclose()
    return states, totals


async def report_text(
    settings: Settings,
    model: str | None = None,
    champion: str | None = None,
    as_json: bool = False,
) -> str:
    """The ``driftline labels --report`` view: performance, champion vs challengers."""
    states, totals = await load_perf_states(settings)
    rep = build_report(states, model=model, champion=champion)
    for mid, entry in rep.items():
        entry["labels"] = totals.get(mid, {})
    if as_json:
        return orjson.dumps(rep, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    lines = [format_report(rep)]
    for mid, t in sorted(totals.items()):
        if model is None or mid == model:
            lines.append(f"labels {mid}: " + ", ".join(f"{k}={v}" for k, v in sorted(t.items())))
    return "\n".join(x for x in lines if x)


# ---------------------------------------------------------------------------- scenario


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class SeaScenario:
    """SEA stream (river's ``SEA`` generator) with a model, delayed labels and drifts.

    Features and true labels come from ``river.datasets.synth.SEA``; the "model" is the
    variant-0 rule ``x0 + x1 > 8`` with a logistic score. A *concept switch* changes the
    generator's variant (same inputs, new labelling rule); a *covariate shift* rescales
    the irrelevant feature ``x2`` (inputs move, accuracy does not).
    """

    model_id: str = "sea"
    model_version: str = "1"
    seed: int = 7
    noise: float = 0.05
    t0_ms: int = 1_767_225_600_000
    step_ms: int = 10
    slope: float = 1.5
    segment: Mapping[str, str] | None = None

    def _score(self, x: Mapping[int, float]) -> tuple[str, dict[str, float]]:
        p = _sigmoid(self.slope * (x[0] + x[1] - 8.0))
        scores = {"pos": round(p, 6), "neg": round(1.0 - p, 6)}
        return ("pos" if p > 0.5 else "neg"), scores

    def _rows(self, n: int, variant: int, seed: int) -> Iterator[tuple[dict[int, float], bool]]:
        from river.datasets import synth

        gen = synth.SEA(variant=variant, noise=self.noise, seed=seed)
        for x, y in gen.take(n):
            yield dict(x), bool(y)

    def training_data(self, n: int = 5000) -> TrainingData:
        """Labelled reference rows (features, predictions, scores, labels)."""
        feats: list[dict[str, Any]] = []
        preds: list[Any] = []
        scores: list[dict[str, float] | None] = []
        labels: list[Any] = []
        for x, y in self._rows(n, 0, self.seed + 1000):
            pred, sc = self._score(x)
            feats.append({"x0": round(x[0], 6), "x1": round(x[1], 6), "x2": round(x[2], 6)})
            preds.append(pred)
            scores.append(sc)
            labels.append("pos" if y else "neg")
        return TrainingData(features=feats, predictions=preds, scores=scores, labels=labels)

    def events(
        self,
        n: int,
        *,
        concept_at: int | None = None,
        variant_after: int = 3,
        covariate_at: int | None = None,
        x2_scale: float = 0.4,
        delay_events: int = 300,
        jitter_events: int = 100,
        start: int = 0,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``n`` prediction events and their label events (labels sorted by label time).

        Label ``i`` is observed ``delay_events`` (+ uniform jitter) events after
        prediction ``i``.
        """
        rng = random.Random(self.seed)
        switch = n if concept_at is None else max(0, concept_at - start)
        rows = list(self._rows(switch, 0, self.seed + start))
        if switch < n:
            rows += list(self._rows(n - switch, variant_after, self.seed + 77 + start))
        preds: list[dict[str, Any]] = []
        labels: list[tuple[int, dict[str, Any]]] = []
        for i, (x, y) in enumerate(rows):
            j = start + i
            if covariate_at is not None and j >= covariate_at:
                x[2] = x[2] * x2_scale
            pred, sc = self._score(x)
            t = self.t0_ms + j * self.step_ms
            e: dict[str, Any] = {
                "prediction_id": f"{self.model_id}-{self.model_version}-{j}",
                "model_id": self.model_id,
                "model_version": self.model_version,
                "timestamp": t,
                "features": {"x0": round(x[0], 6), "x1": round(x[1], 6), "x2": round(x[2], 6)},
                "prediction": pred,
                "scores": sc,
            }
            if self.segment:
                e["segment"] = dict(self.segment)
            preds.append(e)
            lag = (delay_events + rng.randint(0, jitter_events)) * self.step_ms
            labels.append(
                (
                    t + lag,
                    {
                        "prediction_id": e["prediction_id"],
                        "model_id": self.model_id,
                        "label": "pos" if y else "neg",
                        "timestamp": t + lag,
                    },
                )
            )
        labels.sort(key=lambda tl: tl[0])
        return preds, [lab for _, lab in labels]


def interleave(
    preds: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """Predictions and labels in event-time order, as a live system would publish them."""
    out: list[tuple[str, dict[str, Any]]] = []
    i = j = 0
    while i < len(preds) or j < len(labels):
        if j >= len(labels) or (i < len(preds) and preds[i]["timestamp"] <= labels[j]["timestamp"]):
            out.append(("p", preds[i]))
            i += 1
        else:
            out.append(("l", labels[j]))
            j += 1
    return out


# ---------------------------------------------------------------------------- demo


async def demo_slow_loop(
    settings: Settings, events: int = 12_000, out: Any = None
) -> dict[str, Any]:
    """The slow loop end to end on a running stack (called by ``driftline demo``).

    Builds a labelled reference for a SEA model (accuracy and score calibration), then
    runs the monitor and the label joiner while a model server publishes predictions
    and, ~3 s of event time later, their labels. Halfway the concept switches (same
    inputs, new labelling rule): the monitor stays quiet, the joiner raises
    ``concept_drift`` (diagnosis ``concept_drift``) and ``performance`` alerts. Prints
    alerts as they are published and the performance report at the end.
    """
    import sys

    from driftline.cli import format_alert
    from driftline.core.reference import Policy, build_reference
    from driftline.producer import AsyncPredictionProducer
    from driftline.runtime.monitor import MonitorWorker

    write = out or sys.stdout
    sc = SeaScenario()
    ref = build_reference(
        sc.training_data(5000),
        sc.model_id,
        sc.model_version,
        policy=Policy(window_events=500),
        source="SEA variant 0, labelled",
    )
    client, store = open_store(settings.redis, settings.monitor.group_id)
    await store.put_reference(sc.model_id, sc.model_version, ref.to_bytes())
    await client.aclose()
    acc = ref.outputs.accuracy or 0.0
    print(
        f"slow loop: reference {ref.reference_id} with labelled accuracy {acc:.3f} and a "
        f"score calibration; {events} predictions, labels ~3 s (300 events) later; "
        f"concept switch (SEA variant 0 -> 3) at prediction {events // 2}",
        file=write,
        flush=True,
    )
    await ensure_topics(
        settings,
        [
            settings.topics.predictions,
            settings.topics.labels,
            settings.topics.alerts,
            settings.topics.dlq(settings.topics.labels),
            settings.topics.dlq(settings.topics.predictions),
        ],
    )
    monitor = MonitorWorker(settings, name="demo-monitor")
    joiner = LabelJoiner(settings, name="demo-labels")
    await monitor.start()
    await joiner.start()
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(joiner.run())]
    preds, labels = sc.events(events, concept_at=events // 2)
    printed = 0
    async with AsyncPredictionProducer(settings, linger_ms=20) as producer:
        for i, (kind, e) in enumerate(interleave(preds, labels)):
            send = producer.send if kind == "p" else producer.send_label
            while not send(e):
                await asyncio.sleep(0.01)
            if i % 1000 == 999:
                await asyncio.sleep(0.05)
                for a in joiner.alerts[printed:]:
                    print(f"  {format_alert(a)}", file=write)
                printed = len(joiner.alerts)
        await producer.flush(30)
    deadline = time.monotonic() + 60
    while joiner.labels_seen < len(labels) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    monitor.stop()
    joiner.stop()
    await asyncio.gather(*tasks)
    for a in joiner.alerts[printed:]:
        print(f"  {format_alert(a)}", file=write)
    totals = joiner.totals()
    await monitor.close()
    await joiner.close()
    print(f"monitor alerts: {monitor.alerts_published} (inputs did not move)", file=write)
    print(await report_text(settings), file=write, flush=True)
    return {"alerts": joiner.alerts, "totals": totals, "monitor_alerts": monitor.alerts_published}
