"""The label joiner (``driftline labels``): the slow loop's pure core plugged into the
worker shell (:class:`~driftline.runtime.worker.Worker`).

Kafka in (``predictions`` and ``labels``, one consumer group of its own; both topics are
keyed by ``model_id`` and must have the same partition count, so partition ``p`` of each
holds the same models: they are *co-partitioned* and assigned together by Kafka's
range assignor), Redis for pending predictions and state, Kafka out (alerts on the
alert topic, refused labels on ``labels.dlq``), Prometheus for metrics. The logic is the
pure core in :mod:`driftline.core.slowloop`.

Per batch of partition ``p`` (predictions-p and labels-p together):

1. decode; a label that breaks the contract goes to ``labels.dlq`` with reason headers
   (acknowledged before the commit; a prediction that breaks it is counted and skipped:
   the monitor dead-letters predictions);
2. one script call looks up every pending prediction the batch needs
   (:meth:`StateStore.lookup_records`);
3. :func:`~driftline.core.slowloop.join_batch` decides every outcome;
4. the shell's commit (:meth:`Worker._commit <driftline.runtime.worker.Worker._commit>`)
   writes the new pending predictions, the tombstones of joined ones, the state, the
   alert outbox and the position in one script call -- atomically, fenced by the lease
   of partition ``p`` (:meth:`StateStore.commit` with ``records``);
5. the outbox goes to the alert topic (deterministic alert ids); Kafka's commit is
   advisory, as in the monitor. Retries, quarantine and readiness are the shell's.

The position is two Kafka offsets (predictions-p, labels-p) kept in the ``u`` state
field; ``meta.offset`` of the partition holds the joiner's *commit sequence number*
(one per batch), which gives the script its idempotence and continuity checks.

Input drift is learnt by following the alert topic (all partitions, from the start,
no group): the monitor's ``input_drift`` alerts become event-time intervals
(:class:`~driftline.core.slowloop.DriftIndex`). Labels are delayed, so by the time
the labels of event time ``t`` arrive, the monitor has long reported on ``t``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from driftline.config import Settings
from driftline.contract.columnar import ColumnarBatch
from driftline.contract.decode import decode_record
from driftline.contract.events import decode_label_fast
from driftline.core.slowloop import (
    DIAGNOSES,
    TOMBSTONE,
    DriftIndex,
    JoinResult,
    UnitState,
    check_concept_settings,
    join_batch,
    plan_lookups,
    retention_ms,
)
from driftline.errors import ConfigError, ContractError, DecodeError, ValidationError
from driftline.runtime import metrics as m
from driftline.runtime.history import record_performance
from driftline.runtime.store import Lease, RecordWrites
from driftline.runtime.worker import Batch, Unit, Worker, ensure_topics

__all__ = [
    "LabelJoiner",
    "topic_partitions",
]

log = logging.getLogger("driftline.labels")


@dataclass
class Joined:
    """What a committed batch reports to the metrics."""

    result: JoinResult
    #: Prediction events (the rows of a batch count one each) plus refused records.
    predictions: int
    labels: int
    invalid_predictions: int
    dead_letters: int


class LabelJoiner(Worker[UnitState, Joined]):
    """Joins labels to predictions, tracks performance, raises concept-drift alerts.

    Its unit is partition index ``p`` of the predictions and labels topics together,
    leased on the labels topic; the stored offset is a commit sequence number and the
    two Kafka positions live in the state's ``u`` field.

    Parameters
    ----------
    settings
        The configuration object (``settings.labels`` for the slow loop).
    name
        Worker name used in metric labels.
    """

    def __init__(self, settings: Settings, name: str = "labels") -> None:
        self.pred_topic = settings.topics.predictions
        self.label_topic = settings.topics.labels
        super().__init__(
            settings,
            settings.labels,
            name,
            [self.pred_topic, self.label_topic],
            self.label_topic,
        )
        self.drift = DriftIndex()
        self.alert_consumer: AIOKafkaConsumer | None = None
        self.predictions_seen = 0
        self.labels_seen = 0
        self.commits = 0
        #: Outcomes counted by this process (committed batches only): (model, outcome) -> n.
        self.outcomes: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ lifecycle
    async def setup(self) -> None:
        """Create missing topics co-partitioned, check it, and read the alert topic."""
        s = self.settings
        check_concept_settings(s.labels)  # a bad detector choice: one clear ConfigError
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
            if self.redis is not None:
                await self.redis.aclose()
            raise ConfigError(
                f"topics {self.pred_topic!r} ({counts[self.pred_topic]} partitions) and "
                f"{self.label_topic!r} ({counts[self.label_topic]}) must have the same number "
                "of partitions: the label joiner needs them co-partitioned by model_id"
            )
        self.alert_consumer = AIOKafkaConsumer(
            **s.kafka.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self.alert_consumer.start()
        alert_tps = [TopicPartition(s.topics.alerts, p) for p in range(counts[s.topics.alerts])]
        self.alert_consumer.assign(alert_tps)
        await self.alert_consumer.seek_to_beginning(*alert_tps)
        await self.before_poll()

    def consumer_options(self) -> dict[str, Any]:
        # Range assignment gives one consumer partition p of both topics.
        return {"partition_assignment_strategy": (RangePartitionAssignor,)}

    async def close(self) -> None:
        """Leave the group and close every connection."""
        if self.alert_consumer is not None:
            await self.alert_consumer.stop()
        await super().close()

    async def before_poll(self) -> None:
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

    # ------------------------------------------------------------------ state
    async def open_state(self, lease: Lease) -> UnitState:
        assert self.store is not None
        return UnitState.from_fields(await self.store.load(lease))

    def resume_positions(self, lease: Lease, state: UnitState) -> dict[str, int | None]:
        return {
            self.pred_topic: state.offsets.get("predictions"),
            self.label_topic: state.offsets.get("labels"),
        }

    # ------------------------------------------------------------------ one batch
    async def process(
        self, unit: Unit[UnitState], records: Mapping[str, Sequence[Any]]
    ) -> Batch[Joined]:
        store = self.store
        assert store is not None
        precs = records.get(self.pred_topic, [])
        lrecs = records.get(self.label_topic, [])
        state = unit.state
        p = unit.partition
        preds, bad_preds = _decode_predictions(precs)
        if bad_preds:
            # The monitor dead-letters predictions; the joiner only counts them.
            m.JOIN_PREDICTIONS.labels("_invalid", "invalid").inc(bad_preds)
        labels, label_recs, refused = _decode(lrecs, decode_label_fast)
        state.refused += len(refused)
        await asyncio.gather(
            *(
                self.dead_letter(self.label_topic, p, r.offset, r.value, r.key, exc)
                for r, exc in refused
            )
        )
        keys = {(e["model_id"], e["model_version"]) for e in preds}
        for mj in state.models.values():
            keys.update((mj.model_id, v) for v, _ in mj.streams)
        refs = {k: await self.reference(*k) for k in keys}
        plan = plan_lookups(preds, labels, state, self.settings.labels)
        found = await self.retrying(
            "looking up pending predictions",
            lambda: store.lookup_records(self.label_topic, p, plan.keys, plan.probes),
        )
        result = join_batch(
            preds,
            labels,
            plan,
            found,
            state,
            lambda mo, v: refs.get((mo, v)),
            self.drift,
            self.settings.labels,
        )
        sends = []
        for idx, reason, event in result.rejected:
            why = ValidationError(reason)
            if idx >= 0:
                r = label_recs[idx]
                sends.append(
                    self.dead_letter(self.label_topic, p, r.offset, r.value, r.key, why, "join")
                )
            elif event is not None:
                raw = orjson.dumps(event)
                sends.append(self.dead_letter(self.label_topic, p, -1, raw, None, why, "join"))
        await asyncio.gather(*sends)
        positions: dict[str, int] = {}
        if precs:
            positions[self.pred_topic] = state.offsets["predictions"] = precs[-1].offset + 1
        if lrecs:
            positions[self.label_topic] = state.offsets["labels"] = lrecs[-1].offset + 1
        now_ms = int(time.time() * 1000)
        expire = {
            k: max(at, now_ms + retention_ms(self.settings.labels, result.key_model[k]))
            for k, at in result.expire_after.items()
        }
        return Batch(
            states=state.to_fields(set(result.dirty) | {"u"}),
            alerts=[a.to_json() for a in result.alerts],
            positions=positions,
            stored_offset=unit.stored + 1,
            result=Joined(result, len(preds) + bad_preds, len(lrecs), bad_preds, len(refused)),
            records=RecordWrites(result.puts, expire, result.tombs, TOMBSTONE),
        )

    async def committed(self, unit: Unit[UnitState], batch: Batch[Joined]) -> None:
        done = batch.result
        self.commits += 1
        self.predictions_seen += done.predictions
        self.labels_seen += done.labels
        self._observe(done)
        # Performance points for reports (best effort: observability, not state).
        assert self.store is not None
        for model, points in done.result.points.items():
            try:
                await record_performance(self.store, model, points)
            except Exception as exc:  # never let reporting break the join
                log.warning("performance history not written: %s", type(exc).__name__)

    # ------------------------------------------------------------------ metrics
    def _observe(self, done: Joined) -> None:
        result = done.result
        for (model, outcome), n in result.labels.items():
            m.LABELS.labels(model, outcome).inc(n)
            self.outcomes[(model, outcome)] = self.outcomes.get((model, outcome), 0) + n
        n_dlq = done.dead_letters
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
        held = [len(u.state.held) for u in self.units.values()]
        m.HELD_LABELS.labels(self.name).set(sum(held))
        limit = self.settings.labels.max_held_labels
        m.HELD_LABELS_FILL.labels(self.name).set(max(held, default=0) / limit)
        m.EVENTS.labels(self.name, "processed").inc(
            done.predictions - done.invalid_predictions + sum(result.labels.values())
        )
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


def _decode_predictions(records: Sequence[Any]) -> tuple[list[dict[str, Any]], int]:
    """``(prediction events, refused records)``: single events and the rows of columnar
    batches (``prediction_batch.v1``, what the SDK sends by default), in record order.

    The checks are the monitor's (:func:`~driftline.contract.decode.decode_record`): a
    batch that breaks the contract is refused whole, as the monitor refuses it.
    """
    events: list[dict[str, Any]] = []
    refused = 0
    for rec in records:
        try:
            if rec.value is None:
                raise DecodeError("record has no value")
            item = decode_record(rec.value)
        except ContractError:
            refused += 1
            continue
        if isinstance(item, ColumnarBatch):
            events.extend(item.rows())
        else:
            events.append(item)
    return events, refused


def _decode(
    records: Sequence[Any], decode: Callable[[bytes], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Any], list[tuple[Any, ContractError]]]:
    """``(events, their records, [(refused record, error)])``, in record order."""
    events: list[dict[str, Any]] = []
    kept: list[Any] = []
    refused: list[tuple[Any, ContractError]] = []
    for rec in records:
        try:
            if rec.value is None:
                raise DecodeError("record has no value")
            events.append(decode(rec.value))
            kept.append(rec)
        except ContractError as exc:
            refused.append((rec, exc))
    return events, kept, refused


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
