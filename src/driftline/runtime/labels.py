"""The label joiner (``driftline labels``): the slow loop's pure core plugged into the
worker shell (:class:`~driftline.runtime.worker.Worker`).

Kafka in (``predictions`` and ``labels``, one consumer group of its own; both topics are
keyed by ``model_id`` and must have the same partition count, so partition ``p`` of each
holds the same models: they are *co-partitioned* and assigned together by Kafka's
range assignor), Redis for pending predictions and state, Kafka out (alerts on the
alert topic, refused labels on ``labels.dlq``), Prometheus for metrics. The logic is the
pure core in :mod:`driftline.core.slowloop`.

Per batch of partition ``p`` (predictions-p and labels-p together):

1. decode (single label events and ``label_batch.v1`` batches, in record order); a
   label that breaks the contract (a record, or a batch's row as its single label
   event) goes to ``labels.dlq`` with reason headers
   (acknowledged before the commit; a prediction that breaks it is counted and skipped:
   the monitor dead-letters predictions);
2. one script call looks up the pending predictions the batch's predictions need
   (:meth:`StateStore.lookup_records`; the labels' probes are planned meanwhile), then
   :func:`~driftline.core.slowloop.join_predictions` stores them in a thread while a
   second call looks up those its labels need (a label whose prediction is in the
   batch only if the batch did not store it:
   :func:`~driftline.core.slowloop.label_probes_to_ask`);
3. :func:`~driftline.core.slowloop.join_labels` decides the labels' outcomes (the two
   halves are :func:`~driftline.core.slowloop.join_batch`);
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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from driftline.config import Settings
from driftline.contract.columnar import ColumnarBatch, row_count
from driftline.contract.decode import decode_join_record
from driftline.contract.label_batch import decode_label_records
from driftline.core.reference import ReferenceProfile
from driftline.core.slowloop import (
    DIAGNOSES,
    TOMBSTONE,
    DriftIndex,
    Found,
    JoinResult,
    LookupPlan,
    UnitState,
    check_concept_settings,
    join_labels,
    join_predictions,
    label_probes_to_ask,
    labels_backpressure,
    plan_label_lookups,
    plan_prediction_lookups,
    retention_ms,
)
from driftline.errors import (
    ConfigError,
    ContractError,
    DecodeError,
    DriftlineError,
    ModelLimit,
    ReferenceMissing,
    StateCorrupt,
    ValidationError,
)
from driftline.runtime import metrics as m
from driftline.runtime.drift_flags import DriftFlags
from driftline.runtime.history import record_alerts, record_performance
from driftline.runtime.resilience import Hold, bounded
from driftline.runtime.store import Lease, RecordWrites
from driftline.runtime.topics import ensure_topics, topic_partitions
from driftline.runtime.worker import Batch, Unit, Worker

__all__ = ["LabelJoiner"]

log = logging.getLogger("driftline.labels")


@dataclass
class Joined:
    """What a committed batch reports to the metrics."""

    result: JoinResult
    #: Prediction events (the rows of a batch count one each) plus refused records.
    predictions: int
    #: Labels read (the rows of a label batch count one each, refused or not).
    labels: int
    #: Valid predictions handed to the core (not those of held or refused models).
    processed_predictions: int
    #: Labels refused by the contract (dead-lettered): single events, rows of label
    #: batches, and every label of a batch refused whole.
    dead_letters: int
    #: Labels of held or refused models (dead-lettered).
    held_labels: int = 0


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
        #: Labels sent to the dead-letter topic (a batch refused whole: all it held).
        self.labels_dead_lettered = 0
        self.commits = 0
        #: Outcomes counted by this process (committed batches only): (model, outcome) -> n.
        self.outcomes: dict[tuple[str, str], int] = {}
        #: Partitions whose labels wait in Kafka (backpressure: too many labels held).
        self.labels_paused: set[int] = set()
        self.drift_flags = DriftFlags(m.DRIFT_ACTIVE)
        #: Models whose labels were said to be held with no prediction of them seen.
        self.unseen_said: set[str] = set()

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
            [
                self.pred_topic,
                self.label_topic,
                s.topics.alerts,
                s.topics.dlq(self.label_topic),
                s.topics.dlq(s.topics.alerts),
            ],
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
        """Leave the group and close every connection (bounded, as the shell's)."""
        if self.alert_consumer is not None:
            deadline = time.monotonic() + self.cfg.session_timeout_ms / 1000
            await bounded("closing the alert reader", self.alert_consumer.stop(), deadline)
        await super().close()

    async def before_poll(self) -> None:
        """Read new alerts (non-blocking): input-drift episodes for the diagnosis.

        When an episode is new or changed, each unit runs an empty batch: the core
        re-derives its input-drift verdicts from the stored evidence, so a verdict does
        not wait for (or depend on) labels arriving after the alert.
        """
        if self.alert_consumer is None:
            return
        changed = False
        for _ in range(100):
            batch = await self.alert_consumer.getmany(timeout_ms=0, max_records=5000)
            if not batch:
                break
            for records in batch.values():
                for r in records:
                    try:
                        changed |= self.drift.observe(orjson.loads(r.value))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        log.warning("unreadable alert record at offset %d", r.offset)
        if changed:
            for unit in list(self.units.values()):
                if not unit.fenced:
                    await self._handle(unit, {})

    # ------------------------------------------------------------------ state
    async def open_state(self, lease: Lease) -> UnitState:
        """The unit's state; a model's own field that does not read holds that model back
        (its labels are dead-lettered), while ``u`` and ``h`` (the unit's position and
        held labels) that do not read quarantine the unit."""
        store = self.store
        assert store is not None
        ok, bad = await self.retrying("loading the unit", lambda: store.load_fields(lease))
        problems = {name: str(exc) for name, exc in bad.items()}
        for name, blob in ok.items():
            try:
                UnitState.from_fields({name: blob})
            except _UNREADABLE as exc:
                problems[name] = f"does not decode: {type(exc).__name__}"
        for name, why in problems.items():
            model = _model_of(name)
            if model is None:
                raise StateCorrupt(f"joiner state field {name!r}: {why}")
            self.holds.hold(lease.partition, (model,), "state_corrupt", f"field {name!r}: {why}")
        return UnitState.from_fields({n: b for n, b in ok.items() if n not in problems})

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
        preds, bad_preds = await asyncio.to_thread(_decode_predictions, precs)
        seen = row_count(preds) + bad_preds
        if bad_preds:
            # The monitor dead-letters predictions; the joiner only counts them.
            m.JOIN_PREDICTIONS.labels("_invalid", "invalid").inc(bad_preds)
        # Single label events and label batches (label_batch.v1), in record order; a
        # batch's row that breaks the contract is dead-lettered alone, as its event.
        dec = decode_label_records([r.value for r in lrecs])
        labels, label_recs, refused = dec.labels, dec.origin, dec.refused
        state.refused += dec.refused_labels
        await asyncio.gather(
            *(
                self.dead_letter(
                    self.label_topic,
                    p,
                    lrecs[ri].offset,
                    _value(lrecs[ri], row),
                    lrecs[ri].key,
                    exc,
                )
                for ri, row, exc in refused
            )
        )
        keys = {(e["model_id"], e["model_version"]) for e in preds}
        for mj in state.models.values():
            keys.update((mj.model_id, v) for v, _ in mj.streams)
        refs, dropped = await self._screen(p, keys, {e["model_id"] for e in (*preds, *labels)})
        held_labels = 0
        if dropped:
            preds, labels, label_recs, held_labels = await self._drop(
                p, preds, labels, label_recs, dropped, lrecs, dec.batches
            )
        # The predictions' probes are read from Redis while the labels' are planned (in
        # a thread: the plan reads the state, which nothing changes before the join).
        cfg = self.settings.labels
        plan = plan_prediction_lookups(preds, state, cfg)
        split = len(plan.probes)
        found: list[Found] = [None] * split
        asked = asyncio.ensure_future(self._lookup(p, list(plan.keys), plan, range(split), found))
        try:
            if split and labels:
                await asyncio.to_thread(plan_label_lookups, plan, labels, state, cfg)
            else:
                plan_label_lookups(plan, labels, state, cfg)
        finally:
            await asked
        found += [None] * (len(plan.probes) - split)
        # The core runs in a thread, so the event loop keeps fetching meanwhile (as the
        # monitor's); one batch at a time, and the alert reader waits between batches.
        # Its predictions' half needs only their probes: the labels' probes are read
        # from Redis while it runs, but those of labels whose prediction is in the batch
        # only if the batch did not store it (else the label never reads the answer).
        elsewhere, here = plan.label_probes()
        started = asyncio.ensure_future(
            asyncio.to_thread(
                join_predictions,
                preds,
                plan,
                found,
                state,
                lambda mo, v: refs.get((mo, v)),
                self.drift,
                self.settings.labels,
            )
        )
        try:
            await self._lookup(p, plan.keys, plan, elsewhere, found)
        finally:
            # Never leave the state to a thread still writing it, even on an error.
            joining = await started
        await self._lookup(p, plan.keys, plan, label_probes_to_ask(joining, plan, here), found)
        result = await asyncio.to_thread(join_labels, joining, labels, plan, found)
        sends = []
        for idx, reason, event in result.rejected:
            why = ValidationError(reason)
            if idx >= 0:
                r = lrecs[label_recs[idx]]
                value = _value(r, labels[idx] if label_recs[idx] in dec.batches else None)
                sends.append(
                    self.dead_letter(self.label_topic, p, r.offset, value, r.key, why, "join")
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
            result=Joined(
                result, seen, dec.count, row_count(preds), dec.refused_labels, held_labels
            ),
            records=RecordWrites(result.puts, expire, result.tombs, TOMBSTONE),
        )

    async def _lookup(
        self,
        p: int,
        keys: Sequence[str],
        plan: LookupPlan,
        which: Sequence[int],
        found: list[Found],
    ) -> None:
        """Redis's answers to the probes of ``plan`` numbered ``which`` (in increasing
        order), into ``found``; ``keys``: the plan's keys (those probes' at least)."""
        store = self.store
        assert store is not None
        if not which:
            return
        lo, hi = which[0], which[-1] + 1
        # usually a stretch of the plan's probes: sliced, not gathered one by one
        stretch = hi - lo == len(which)
        probes = plan.probes[lo:hi] if stretch else [plan.probes[i] for i in which]
        hits = await self.retrying(
            "looking up pending predictions",
            lambda: store.lookup_records(self.label_topic, p, keys, probes),
        )
        if stretch:
            found[lo:hi] = hits
        else:
            for i, hit in zip(which, hits, strict=True):
                found[i] = hit

    async def _screen(
        self, p: int, versions: set[tuple[str, str]], models: set[str]
    ) -> tuple[dict[tuple[str, str], ReferenceProfile | None], dict[str, tuple[str, Exception]]]:
        """References of the batch's model versions, and the models whose events are
        dead-lettered: not allowed (``model_limit``), held, or with a reference that is
        unreadable or was deleted (``reference_missing``: a joiner that learnt its
        reference accuracy from live labels instead would hide a deleted reference)."""
        dropped: dict[str, tuple[str, Exception]] = {}
        for model in models:
            if not self._allowed(model):
                dropped[model] = ("model_limit", ModelLimit(f"model {model!r} is not allowed"))
        refs: dict[tuple[str, str], ReferenceProfile | None] = {}
        states = await self.references_of(mv for mv in sorted(versions) if mv[0] not in dropped)
        for mv, rs in states.items():
            model = mv[0]
            if model in dropped:
                continue
            h = self.holds.holding(p, (model,))
            if h is None:
                if rs.error is not None:
                    h = self.holds.hold(p, (model,), "reference_corrupt", rs.error)
                elif rs.ref is None and rs.listed:
                    why = "its reference was deleted"
                    h = self.holds.hold(p, (model,), "reference_missing", why)
                else:
                    refs[mv] = rs.ref
                    continue
            dropped[model] = (h.reason, _held(h))
        for model in models - dropped.keys():
            h = self.holds.of(p).get((model,))
            if h is not None and h.reason == "state_corrupt":
                # Its field is read again with the unit (next lease), never skipped: a
                # fresh join state would overwrite the evidence.
                h = self.holds.hold(p, (model,), h.reason, h.detail)
            elif h is not None and self.holds.holding(p, (model,)) is None:
                self.holds.release(p, (model,))  # its reference reads again
                h = None
            if h is not None:
                dropped[model] = (h.reason, _held(h))
        return refs, dropped

    def _allowed(self, model: str) -> bool:
        patterns = self.settings.labels.allowed_models
        return not patterns or any(fnmatchcase(model, pat) for pat in patterns)

    async def _drop(
        self,
        p: int,
        preds: list[Mapping[str, Any]],
        labels: list[dict[str, Any]],
        label_recs: list[int],
        dropped: Mapping[str, tuple[str, Exception]],
        lrecs: Sequence[Any],
        batches: set[int],
    ) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]], list[int], int]:
        """Dead-letter the labels of dropped models and skip their predictions (counted:
        the monitor dead-letters predictions); the events left, and labels sent.
        ``label_recs[i]`` is the index in ``lrecs`` of label ``i``'s record."""
        kept_preds = []
        for e in preds:
            why = dropped.get(e["model_id"])
            if why is None:
                kept_preds.append(e)
            else:
                n = e.count if isinstance(e, ColumnarBatch) else 1
                m.JOIN_PREDICTIONS.labels(self.model_labels.label(e["model_id"]), why[0]).inc(n)
        kept_labels, kept_recs, sends = [], [], []
        for e, ri in zip(labels, label_recs, strict=True):
            why = dropped.get(e["model_id"])
            if why is None:
                kept_labels.append(e)
                kept_recs.append(ri)
            else:
                r = lrecs[ri]
                value = _value(r, e if ri in batches else None)
                sends.append(
                    self.dead_letter(self.label_topic, p, r.offset, value, r.key, why[1], why[0])
                )
        await asyncio.gather(*sends)
        return kept_preds, kept_labels, kept_recs, len(sends)

    async def committed(self, unit: Unit[UnitState], batch: Batch[Joined]) -> None:
        done = batch.result
        self.commits += 1
        self.predictions_seen += done.predictions
        self.labels_seen += done.labels
        self.labels_dead_lettered += done.dead_letters + done.held_labels
        self._backpressure(unit)
        if "h" in done.result.dirty or self.unseen_said:
            self._held_for_unseen(unit)
        self._observe(done)
        self._observe_episodes(unit, done.result.dirty)
        assert self.store is not None
        # Concept-drift and performance alerts in the models' history (report, status
        # page), and performance points: best effort (observability, not state).
        await record_alerts(self.store, done.result.alerts)
        for model, points in done.result.points.items():
            try:
                await record_performance(self.store, model, points)
            except Exception as exc:  # never let reporting break the join
                log.warning("performance history not written: %s", type(exc).__name__)

    def _backpressure(self, unit: Unit[UnitState]) -> None:
        """Pause the unit's labels partition while too many labels are held; resume
        at half (:func:`~driftline.core.slowloop.labels_backpressure`). Paused records
        are not lost: aiokafka fetches again from the last returned offset."""
        assert self.consumer is not None
        p = unit.partition
        tp = TopicPartition(self.label_topic, p)
        if labels_backpressure(unit.state, self.settings.labels, p in self.labels_paused):
            if p not in self.labels_paused:
                log.warning(_paused_line(tp, unit.state, self.settings.labels.max_held_labels))
            self.labels_paused.add(p)
            self.consumer.pause(tp)  # idempotent; a reload resumes every partition
        elif p in self.labels_paused:
            self.labels_paused.discard(p)
            self.consumer.resume(tp)
            log.warning(
                "labels partition %s[%d] read again: %s labels held (half the limit or less)",
                tp.topic,
                p,
                f"{len(unit.state.held):,}",
            )
        m.LABELS_PAUSED.labels(self.name).set(len(self.labels_paused))

    def _held_for_unseen(self, unit: Unit[UnitState]) -> None:
        """Say once per model that its labels are held with no prediction of it seen: a
        user waiting for accuracy learns at the first such label, not only when
        ``labels.max_held_labels`` pause the partition (a ``model_id`` that no model
        server sends holds its labels for good). Only the partition's models are
        looked at, and its held labels once per model said. When its predictions come,
        one line says so."""
        models = unit.state.models
        for mj in models.values():
            if mj.model_id in self.unseen_said and mj.watermark >= 0:
                self.unseen_said.discard(mj.model_id)
                log.warning("predictions of model %r seen: its held labels join them", mj.model_id)
        new = [
            k
            for k, mj in models.items()
            if mj.watermark < 0 and mj.model_id not in self.unseen_said
        ]
        if not new:
            return
        held = Counter(h.model_id for h in unit.state.held)
        for k in new:
            model = models[k].model_id
            if not held.get(model):
                continue
            self.unseen_said.add(model)
            log.warning(
                "labels of model %r held: no prediction of it seen yet (%s held on "
                "%s[%d]); they join when its predictions come. Does a model server send "
                "model_id %r? (driftline labels --report)",
                model,
                f"{held[model]:,}",
                self.label_topic,
                unit.partition,
                model,
            )

    def released(self, unit: Unit[UnitState]) -> None:
        self.labels_paused.discard(unit.partition)
        m.LABELS_PAUSED.labels(self.name).set(len(self.labels_paused))
        self.drift_flags.release(unit.partition)

    def _observe_episodes(self, unit: Unit[UnitState], dirty: set[str]) -> None:
        """``driftline_drift_active`` of the concept-drift and performance episodes of
        the streams a batch changed, labelled with their severity (as the monitor's:
        :mod:`~driftline.runtime.drift_flags`). Set from the state, so a restarted
        joiner exports a stream's flags again at its next change."""
        perf = unit.state.perf
        changed = [st for k in dirty if (st := perf.get(k)) is not None]
        streams = ((st.model_id, st.version, st.segment, st.episodes) for st in changed)
        self.drift_flags.export_streams(unit.partition, streams, self.model_labels.exported)

    # ------------------------------------------------------------------ metrics
    def _observe(self, done: Joined) -> None:
        result = done.result
        models = self.model_labels
        for (model, outcome), n in result.labels.items():
            m.LABELS.labels(models.label(model), outcome).inc(n)
            self.outcomes[(model, outcome)] = self.outcomes.get((model, outcome), 0) + n
        n_dlq = done.dead_letters
        if n_dlq:
            m.LABELS.labels("_invalid", "invalid").inc(n_dlq)
            self.outcomes[("_invalid", "invalid")] = (
                self.outcomes.get(("_invalid", "invalid"), 0) + n_dlq
            )
        for (model, outcome), n in result.predictions.items():
            m.JOIN_PREDICTIONS.labels(models.label(model), outcome).inc(n)
        lags: dict[str, list[float]] = {}
        for model, lag in result.lags:
            lags.setdefault(model, []).append(lag)
        for model, values in lags.items():
            m.LABEL_LAG.observe_many(models.label(model), values)
        gauges = {
            "accuracy": m.ACCURACY,
            "estimated_accuracy": m.ESTIMATED_ACCURACY,
            "coverage": m.LABEL_COVERAGE,
            "estimation_error": m.ESTIMATION_ERROR,
        }
        for o in result.observations:
            if not models.exported(o.model_id):
                continue  # a gauge shared by unrelated models would mean nothing
            gauge = gauges.get(o.metric)
            if gauge is not None:
                gauge.labels(o.model_id, o.model_version).set(o.value)
            else:
                m.PERFORMANCE.labels(o.model_id, o.model_version, o.metric).set(o.value)
        for (model, version), diag in result.diagnoses.items():
            if models.exported(model):
                for d in DIAGNOSES:
                    m.DIAGNOSIS.labels(model, version, d).set(1 if d == diag else 0)
        held = [len(u.state.held) for u in self.units.values()]
        m.HELD_LABELS.labels(self.name).set(sum(held))
        limit = self.settings.labels.max_held_labels
        m.HELD_LABELS_FILL.labels(self.name).set(max(held, default=0) / limit)
        m.EVENTS.labels(self.name, "processed").inc(
            done.processed_predictions + sum(result.labels.values())
        )
        if n_dlq + done.held_labels:
            m.EVENTS.labels(self.name, "dead_letter").inc(n_dlq + done.held_labels)

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


def _decode_predictions(records: Sequence[Any]) -> tuple[list[Mapping[str, Any]], int]:
    """``(predictions, refused records)``: single events and columnar batches
    (``prediction_batch.v1``, what the SDK sends by default; the join reads a batch's
    rows from its columns), in record order.

    The checks are the monitor's (:func:`~driftline.contract.decode.decode_record`) but
    for the feature values, which the join never reads and so does not parse
    (:func:`~driftline.contract.decode.decode_join_record`): a record that breaks the
    contract elsewhere is refused (a batch whole), as the monitor refuses it.
    """
    items: list[Mapping[str, Any]] = []
    refused = 0
    for rec in records:
        try:
            if rec.value is None:
                raise DecodeError("record has no value")
            items.append(decode_join_record(rec.value))
        except ContractError:
            refused += 1
    return items, refused


#: What decoding a stored field that passed its signature may still raise.
_UNREADABLE = (DriftlineError, ValueError, KeyError, TypeError, AttributeError)


def _model_of(state_field: str) -> str | None:
    """The model a joiner state field belongs to (``m``/``s`` fields), else None."""
    parts = state_field.split("\x1f")
    return parts[1] if len(parts) > 1 and parts[0] in ("m", "s") else None


def _paused_line(tp: TopicPartition, unit: UnitState, limit: int) -> str:
    """The one log line of a labels partition paused for its held labels: how many, of
    which models (a model with no prediction seen is named as such: a ``model_id`` that
    no model server sends holds its labels until its predictions pass them, so for
    good), why, and what resumes it."""
    per_model = Counter(h.model_id for h in unit.held)
    parts = []
    for model, n in per_model.most_common(3):
        mj = unit.models.get(model)
        unseen = mj is None or mj.watermark < 0
        parts.append(
            f"{n:,} of model {model!r}"
            + (
                " (no prediction of it seen: does a model server send this model_id?)"
                if unseen
                else ""
            )
        )
    if len(per_model) > 3:
        parts.append(f"{sum(n for _, n in per_model.most_common()[3:]):,} of other models")
    return (
        f"labels partition {tp.topic}[{tp.partition}] paused: {len(unit.held):,} labels held "
        f"for predictions not seen yet (labels.max_held_labels={limit:,}): "
        f"{', '.join(parts)}. Its labels wait in Kafka, none lost, until half the held "
        "ones joined or became orphans; predictions are still read "
        "(driftline labels --report; runbook DriftlineLabelsHeldNearLimit)"
    )


def _held(h: Hold) -> Exception:
    """The error a held model's dead letters carry."""
    return ReferenceMissing(h.detail) if h.reason == "reference_missing" else StateCorrupt(h.detail)


def _value(record: Any, row: dict[str, Any] | None) -> bytes | None:
    """What a label's dead letter carries: its record's value, or for a row of a label
    batch that row as its single label event."""
    return record.value if row is None else orjson.dumps(row)
