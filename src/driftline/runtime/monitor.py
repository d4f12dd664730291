"""The monitor worker: the fast loop's pure core
(:func:`driftline.core.fastloop.process_batch`) plugged into the worker shell.

Kafka in (the predictions topic, aiokafka batch fetching), Redis for state, Kafka out
(alerts, dead letters), Prometheus for metrics. The worker uses aiokafka directly rather
than a faust agent: measured on the target machine a faust agent that only counts
handles 11-14k events/s, while batch fetching reaches ~420k/s and the whole vectorised
loop far more than faust's ceiling (docs/architecture.md).

What is specific to the monitor (everything else -- leases, retries, quarantine,
readiness, dead letters, the commit, the outbox -- is
:class:`~driftline.runtime.worker.Worker`'s): its unit is one partition of the
predictions topic; its state is one :class:`~driftline.core.fastloop.ModelState`
per stream (model, version, segment), read from Redis when a batch first needs it and
kept in a worker-wide LRU of ``monitor.max_states_in_memory`` states (an evicted state
is read again when needed); the stored offset is the last Kafka offset a batch covered.

Before the core sees a batch, each model version is screened (:meth:`MonitorWorker._screen`);
the events of a model that cannot be monitored go to the dead-letter topic with the
reason as ``dl.error.stage``, and the rest of the partition keeps flowing:

* ``model_limit``: the model is not in ``allowed_models``, or it is a new stream of a
  partition that already holds ``max_streams_per_partition`` streams;
* ``reference_corrupt``: its stored reference fails its signature or does not parse;
* ``state_corrupt``: one of its stored states does not read (never overwritten: the
  evidence stays for the operator);
* ``reference_missing``: it has no reference now but had one (the model's reference
  index lists the version or ``default``, or its stored state was built against one):
  a deleted reference never silently becomes a warm-up from live, possibly drifted,
  data. **Warm-up** (a reference built from the first live events) is only for a model
  version that never had a reference.

A held model is checked again every ``quarantine_recheck_seconds`` and processed again
once the cause is gone (a reference stored again, a record repaired).

A model warming up keeps its buffered events in side records of ``WARMUP_CHUNK`` rows
(``StateStore`` side hash), written once each (the last, partial one is rewritten
until full) instead of inside its state on every commit, and deleted when its
reference is built.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from driftline.config import Settings
from driftline.contract.codec import pack, unpack
from driftline.contract.columnar import EventFrame, stream_counts
from driftline.contract.decode import decode_records
from driftline.contract.keys import KeyTuple, StateKey, interned_key, state_key
from driftline.core.detectors import bank_compiled
from driftline.core.detectors.bank import use_compiled_pass
from driftline.core.fastloop import WARMUP_EVENTS, BatchResult, ModelState, process_batch
from driftline.core.fastloop.state import STATE_FORMAT
from driftline.core.reference import ReferenceProfile
from driftline.errors import (
    ConfigError,
    DriftlineError,
    ModelLimit,
    ReferenceMissing,
    StateCorrupt,
)
from driftline.runtime import metrics as m
from driftline.runtime.drift_flags import DriftFlags
from driftline.runtime.history import WindowLateFuture, record_history, record_warmups
from driftline.runtime.references import ReferenceState
from driftline.runtime.store import Lease, StateStore
from driftline.runtime.topics import ensure_topics
from driftline.runtime.worker import Batch, Unit, Worker

# ensure_topics: kept importable from here for the retraining trigger.
__all__ = ["WARMUP_CHUNK", "MonitorWorker", "ensure_topics", "read_states"]

log = logging.getLogger("driftline.monitor")

#: Warm-up rows per side record.
WARMUP_CHUNK = 64
_WARM_ROWS, _WARM_COUNT, _WARM_FORMAT = "warmup_rows", "warmup_count", 1
#: What decoding a stored state that passed its signature may still raise.
_UNREADABLE = (DriftlineError, ValueError, KeyError, TypeError, AttributeError, AssertionError)

ModelVersion = tuple[str, str]


def _chunk_name(state_field: str, j: int) -> str:
    return f"w\x00{state_field}\x00{j}"


def _count_name(state_field: str) -> str:
    return f"n\x00{state_field}"


@dataclass
class Models:
    """The monitor's state of one partition (model states themselves are in the LRU)."""

    #: Streams with a stored state in the partition (``meta.nstate`` at the lease, plus
    #: the new ones committed since).
    streams: int
    #: Warm-up rows already in side records, per loaded stream.
    warm_saved: dict[StateKey, int] = field(default_factory=dict)
    #: Models this worker registered as carried by the partition (see _claim_models).
    claimed: set[str] = field(default_factory=set)


@dataclass
class Screened:
    """The screening of one batch's streams (:meth:`MonitorWorker._screen`)."""

    refs: dict[ModelVersion, ReferenceProfile | None] = field(default_factory=dict)
    #: Stored states of the batch's streams (from memory or Redis); absent ones are new.
    states: dict[StateKey, ModelState] = field(default_factory=dict)
    #: Streams whose events are dead-lettered: stream -> (stage, reason).
    dropped: dict[StateKey, tuple[str, Exception]] = field(default_factory=dict)
    #: New streams admitted (under the partition's cap), in order.
    admitted: list[StateKey] = field(default_factory=list)


@dataclass
class Done:
    """What a committed batch hands to the metrics and the state LRU."""

    result: BatchResult
    events: Sequence[Mapping[str, Any]]
    dead_letters: int
    states: dict[StateKey, ModelState]
    warm_saved: dict[StateKey, int]
    new_streams: int
    #: Predictions per stream (model, version, segment key) handed to the core.
    counts: Mapping[KeyTuple, int]


class _Loaded:
    """Decoded model states of every unit, least recently used first, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lru: OrderedDict[tuple[int, StateKey], ModelState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, p: int, key: StateKey) -> ModelState | None:
        st = self._lru.get((p, key))
        if st is not None:
            self._lru.move_to_end((p, key))
        return st

    def put(self, p: int, key: StateKey, st: ModelState) -> None:
        self._lru[(p, key)] = st
        self._lru.move_to_end((p, key))

    def shrink(self) -> Iterator[tuple[int, StateKey]]:
        """Evict down to the limit; yields what was evicted."""
        while len(self._lru) > self.limit:
            yield self._lru.popitem(last=False)[0]

    def drop(self, p: int) -> None:
        for k in [k for k in self._lru if k[0] == p]:
            del self._lru[k]


def _compiled_core(choice: str) -> bool:
    """Turn the banks' compiled pass on or off for this process (compiled at start-up,
    not at the first batch); one line says which."""
    if choice == "off":
        return use_compiled_pass(False)
    if choice == "on" and not bank_compiled.available():
        raise ConfigError(
            "monitor.compiled_core is 'on' but numba is not installed: "
            "pip install 'driftline[compiled]', or set it to 'auto' or 'off'"
        )
    on = use_compiled_pass(True)
    if on:
        log.info("driftline monitor: compiled core on (numba): the banks' pass runs compiled")
    return on


class MonitorWorker(Worker[Models, Done]):
    """Consumes prediction events, keeps drift state in Redis, publishes alerts.

    Parameters
    ----------
    settings
        The configuration object (``settings.monitor`` for this worker).
    name
        Worker name used in metric labels (bounded: one per process).
    """

    def __init__(self, settings: Settings, name: str = "monitor") -> None:
        topic = settings.topics.predictions
        super().__init__(settings, settings.monitor, name, [topic], topic)
        self.topic = topic
        self.processed = 0
        self.feature_labels = m.FeatureLabels(settings.monitor.metrics_max_features)
        self.loaded = _Loaded(settings.monitor.max_states_in_memory)
        #: Model versions whose late and future counters exist (created at zero).
        self.timing_series: set[tuple[str, str]] = set()
        self.drift_flags = DriftFlags(m.DRIFT_ACTIVE)
        #: Each closed window's own late and future-dated events, for the history.
        self.window_late_future = WindowLateFuture()
        m.MODEL_PARTITION_MOVES.labels(name, topic)  # exported from zero: a rule sees 0
        #: Whether the banks run the compiled pass (``monitor.compiled_core``).
        self.compiled_core = _compiled_core(settings.monitor.compiled_core)

    # ------------------------------------------------------------------ state
    async def open_state(self, lease: Lease) -> Models:
        # Nothing is read yet: a batch reads the states it needs (and the LRU keeps them).
        return Models(streams=lease.fields)

    def resume_positions(self, lease: Lease, state: Models) -> dict[str, int | None]:
        return {self.topic: lease.resume_offset}

    def released(self, unit: Unit[Models]) -> None:
        """Forget a partition's loaded states, its streams' late/future totals at their
        last close, and stop exporting its drift flags."""
        self.loaded.drop(unit.partition)
        self.drift_flags.release(unit.partition)
        self.window_late_future.forget(unit.partition)

    # ------------------------------------------------------------------ one batch
    async def process(
        self, unit: Unit[Models], records: Mapping[str, Sequence[Any]]
    ) -> Batch[Done]:
        recs = records[self.topic]
        p = unit.partition
        # Bulk decode (driftline.contract.decode): the valid items in order, with their
        # columns already built for the core, and each refused record with its error.
        # Decoding and the core run in a thread: meanwhile the event loop keeps fetching
        # the next records (aiokafka prefetches only while the loop runs), heartbeats and
        # health answer. One batch at a time, and each batch's states are its own dict.
        events, refused = await asyncio.to_thread(decode_records, [rec.value for rec in recs])
        # A poison record is passed only after the dead-letter topic acknowledged it.
        await asyncio.gather(
            *(
                self.dead_letter(self.topic, p, recs[i].offset, recs[i].value, recs[i].key, exc)
                for i, exc in refused
            )
        )
        # The streams from the decoded columns (no pass over the events); each event's
        # stream only when some are dropped.
        streams = [interned_key(kt) for kt in stream_counts(events)]
        screen = await self._screen(unit, streams)
        dead = len(refused)
        if screen.dropped:
            keys = [state_key(e) for e in events]
            events, sent = await self._drop(unit, recs, refused, events, keys, screen.dropped)
            dead += sent
        await self._claim_models(unit, screen.admitted)
        refs = screen.refs
        states = screen.states
        # The processing clock: an event stamped later than this (plus the tolerance)
        # is future-dated (core/fastloop/clock.py).
        result = await asyncio.to_thread(
            process_batch,
            events,
            states,
            lambda mo, v: refs.get((mo, v)),
            now_ms=int(time.time() * 1000),
            future_tolerance_ms=int(self.settings.monitor.future_tolerance_seconds * 1000),
        )
        store = self.store
        assert store is not None
        for ref in result.new_references:
            await self.retrying(
                "storing a warm-up reference",
                functools.partial(
                    store.put_reference, ref.model_id, ref.model_version, ref.to_bytes()
                ),
            )
            self.remember_reference(ref)
            # Said once, as it happens: the model's drift is measured against its own
            # first live events from now on, which may be drifted already.
            log.warning(
                "model %s version %s had no reference: built %s from its first %d live "
                "events; its drift is measured against them. To measure against its "
                "training data: driftline reference build --model %s --version %s --data FILE",
                ref.model_id,
                ref.model_version,
                ref.reference_id,
                ref.row_count,
                ref.model_id,
                ref.model_version,
            )
        last = recs[-1].offset
        records_out, side, side_deletes, saved = self._encode(unit.state, states)
        return Batch(
            states=records_out,
            alerts=[a.to_json() for a in result.alerts],
            positions={self.topic: last + 1},
            stored_offset=last,
            result=Done(
                result,
                events,
                dead,
                states,
                saved,
                len(screen.admitted),
                stream_counts(events),
            ),
            side=side,
            side_deletes=side_deletes,
        )

    async def _claim_models(self, unit: Unit[Models], admitted: list[StateKey]) -> None:
        """Detect a model whose events moved here from another partition (issue 16).

        Checked once per model and partition, when one of its streams is new to the
        partition (admitted without a stored state). A moved model gets a state of its
        own here (the old partition's state stays where it is); its alert ids cannot
        collide with the old ones (they include the stream's first prediction id). It is
        counted in ``driftline_model_partition_moves_total`` and logged.
        """
        models = unit.state
        new = {k.model_id for k in admitted if k.model_id not in models.claimed}
        if not new:
            return
        store = self.store
        assert store is not None
        ordered = sorted(new)
        moved = await self.retrying(
            "registering models",
            functools.partial(store.claim_models, ordered, self.topic, unit.partition),
        )
        models.claimed.update(ordered)
        for model, before in moved.items():
            m.MODEL_PARTITION_MOVES.labels(self.name, self.topic).inc()
            log.warning(
                "model %r arrives on %s[%d] but was carried by %s: its events moved "
                "partition (partition count or partitioner changed?); this partition "
                "keeps a state of its own, so its windows restart here",
                model,
                self.topic,
                unit.partition,
                before,
            )

    async def committed(self, unit: Unit[Models], batch: Batch[Done]) -> None:
        done = batch.result
        models = unit.state
        models.streams += done.new_streams
        # Said once, as it starts (a stream whose rows are stored already started): no
        # drift is measured until the reference is built, which took 2,000 silent events.
        starting = {
            (k.model_id, k.model_version)
            for k, st in done.states.items()
            if st.warmup and not models.warm_saved.get(k)
        }
        for model, version in sorted(starting):
            log.warning(
                "model %s version %s has no reference: building one from its first %d live "
                "events, nothing is tested until then (the status page shows how far it "
                "is). To measure against its training data: driftline reference build "
                "--model %s --version %s --data FILE",
                model,
                version,
                WARMUP_EVENTS,
                model,
                version,
            )
        for key, st in done.states.items():
            self.loaded.put(unit.partition, key, st)
            if done.warm_saved.get(key):
                models.warm_saved[key] = done.warm_saved[key]
            else:
                models.warm_saved.pop(key, None)
        for p, key in self.loaded.shrink():
            held = self.units.get(p)
            if held is not None:
                held.state.warm_saved.pop(key, None)
        self.processed += sum(done.counts.values())
        self._observe(done)
        self._observe_episodes(unit, done.states)
        # Best effort, after the commit; each window with its own late/future counts.
        own = await self.window_late_future.of(self.store, unit.partition, done.result.windows)
        await record_history(self.store, done.result, own)
        await record_warmups(self.store, _warmup_progress(done))

    # ------------------------------------------------------------------ screening
    async def _screen(self, unit: Unit[Models], streams: list[StateKey]) -> Screened:
        """Which of the batch's streams the core may see, with their references and
        stored states; the others are dropped with their reason (module docstring).

        In order: the allow-list and the holds in force; the stored states (memory,
        else one round trip); the references of the versions that may be processed
        (one round trip for the stale ones: a stream past the cap needs none); the holds
        that result; last, new streams under the partition's cap, in order.
        """
        p = unit.partition
        out = Screened()
        versions: dict[ModelVersion, list[StateKey]] = {}
        for k in streams:
            versions.setdefault((k.model_id, k.model_version), []).append(k)
        for mv, ks in versions.items():
            if not self._allowed(mv[0]):
                why = ModelLimit(f"model {mv[0]!r} is not in allowed_models")
                out.dropped.update(dict.fromkeys(ks, ("model_limit", why)))
            elif (h := self.holds.holding(p, mv)) is not None:
                out.dropped.update(dict.fromkeys(ks, (h.reason, _held(h.reason, h.detail))))
        live = [k for k in streams if k not in out.dropped]
        need = []
        for k in live:
            st = self.loaded.get(p, k)
            if st is None:
                need.append(k)
            else:
                out.states[k] = st
        blobs, unreadable = await self._read(unit, need)
        # New streams beyond the cap need no reference: at most ``room`` may be admitted.
        room = self.settings.monitor.max_streams_per_partition - unit.state.streams
        new = [k for k in live if k not in out.states and k not in blobs and k not in unreadable]
        wanted = {(k.model_id, k.model_version) for k in (*out.states, *blobs, *unreadable)}
        wanted.update((k.model_id, k.model_version) for k in new[: max(0, room)])
        refs = await self.references_of(sorted(wanted))
        loaded, bad = self._decode(blobs, refs)
        out.states.update(loaded)
        unreadable.update(bad)
        for mv in sorted(wanted):
            rs = refs[mv]
            ks = versions[mv]
            problem = [unreadable[k] for k in ks if k in unreadable]
            reason, detail = ("state_corrupt", problem[0]) if problem else ("", "")
            if not reason and rs.error is not None:
                reason, detail = "reference_corrupt", rs.error
            if not reason and rs.ref is None:
                # Warm-up is for a model version that never had a reference.
                had = any(out.states[k].reference_id for k in ks if k in out.states)
                if rs.listed or had:
                    reason = "reference_missing"
                    detail = "no reference stored for it or its default, but it had one"
            if reason:
                h = self.holds.hold(p, mv, reason, detail)
                for k in ks:
                    out.states.pop(k, None)
                    out.dropped[k] = (h.reason, _held(h.reason, h.detail))
                continue
            self.holds.release(p, mv)
            out.refs[mv] = rs.ref
        for k in new:
            if k in out.dropped:
                continue
            if len(out.admitted) < room and (k.model_id, k.model_version) in out.refs:
                out.admitted.append(k)
            else:
                why = ModelLimit(
                    "the partition holds max_streams_per_partition "
                    f"({self.settings.monitor.max_streams_per_partition}) streams"
                )
                out.dropped[k] = ("model_limit", why)
        return out

    def _allowed(self, model: str) -> bool:
        patterns = self.settings.monitor.allowed_models
        return not patterns or any(fnmatchcase(model, pat) for pat in patterns)

    async def _read(
        self, unit: Unit[Models], keys: list[StateKey]
    ) -> tuple[dict[StateKey, bytes], dict[StateKey, str]]:
        """Stored state records of ``keys`` (absent: new streams, or warm-up rows put
        back in) and why the others do not read."""
        if not keys:
            return {}, {}
        store = self.store
        assert store is not None
        lease = unit.lease
        ok, bad = await self.retrying(
            "loading model states", lambda: store.load_fields(lease, [k.encode() for k in keys])
        )
        blobs = {k: ok[k.encode()] for k in keys if k.encode() in ok}
        unreadable = {k: str(bad[k.encode()]) for k in keys if k.encode() in bad}
        rows, bad_rows = await _read_warmup(store, lease, [k.encode() for k in blobs])
        for k in list(blobs):
            name = k.encode()
            if name in bad_rows:
                unreadable[k] = bad_rows[name]
                del blobs[k]
            elif name in rows:
                unit.state.warm_saved[k] = len(rows[name])
                blobs[k] = _with_rows(blobs[k], rows[name])
        return blobs, unreadable

    @staticmethod
    def _decode(
        blobs: Mapping[StateKey, bytes], refs: Mapping[ModelVersion, ReferenceState]
    ) -> tuple[dict[StateKey, ModelState], dict[StateKey, str]]:
        """Model states from their records, on their references' bins."""
        states: dict[StateKey, ModelState] = {}
        unreadable: dict[StateKey, str] = {}
        for k, blob in blobs.items():
            try:
                states[k] = ModelState.from_bytes(blob, refs[(k.model_id, k.model_version)].ref)
            except _UNREADABLE as exc:
                unreadable[k] = f"stored state does not decode: {type(exc).__name__}"
        return states, unreadable

    async def _drop(
        self,
        unit: Unit[Models],
        recs: Sequence[Any],
        refused: Sequence[tuple[int, Exception]],
        events: EventFrame,
        keys: list[StateKey],
        dropped: Mapping[StateKey, tuple[str, Exception]],
    ) -> tuple[EventFrame, int]:
        """Dead-letter the records of dropped streams; the events left, and how many."""
        gone = {i for i, _ in refused}
        valid = [i for i in range(len(recs)) if i not in gone]
        assert len(valid) == len(events), "one decoded item per valid record"
        kept: list[Any] = []
        sends = []
        for item, i, k in zip(events, valid, keys, strict=True):
            why = dropped.get(k)
            if why is None:
                kept.append(item)
                continue
            r = recs[i]
            sends.append(
                self.dead_letter(
                    self.topic, unit.partition, r.offset, r.value, r.key, why[1], why[0]
                )
            )
        await asyncio.gather(*sends)
        frame = EventFrame(kept)
        groups = events.groups
        if groups is not None:  # whole streams were dropped: the others' columns stand
            frame.groups = {kt: c for kt, c in groups.items() if interned_key(kt) not in dropped}
        return frame, len(sends)

    # ------------------------------------------------------------------ encoding
    @staticmethod
    def _encode(
        models: Models, states: Mapping[StateKey, ModelState]
    ) -> tuple[dict[str, bytes], dict[str, bytes], list[str], dict[StateKey, int]]:
        """State records, warm-up side records to write and delete, rows saved per key.

        A warming-up state is stored without its buffer; the buffer's chunks from the
        first one not yet complete in Redis are (re)written, and a finished buffer's
        chunks are deleted.
        """
        out: dict[str, bytes] = {}
        side: dict[str, bytes] = {}
        deletes: list[str] = []
        saved_after: dict[StateKey, int] = {}
        c = WARMUP_CHUNK
        for key, st in states.items():
            name = key.encode()
            rows = st.warmup
            saved = models.warm_saved.get(key, 0)
            if rows:
                n = len(rows)
                if n != saved:
                    for j in range((saved if saved <= n else 0) // c, (n - 1) // c + 1):
                        side[_chunk_name(name, j)] = pack(
                            _WARM_ROWS, _WARM_FORMAT, {"rows": rows[j * c : (j + 1) * c]}
                        )
                    side[_count_name(name)] = pack(
                        _WARM_COUNT, _WARM_FORMAT, {"rows": n, "chunk": c}
                    )
                st.warmup = []
                try:
                    out[name] = st.to_bytes()
                finally:
                    st.warmup = rows
            else:
                if saved:
                    deletes.append(_count_name(name))
                    deletes.extend(_chunk_name(name, j) for j in range(-(-saved // c)))
                out[name] = st.to_bytes()
            saved_after[key] = len(rows)
        return out, side, deletes, saved_after

    # ------------------------------------------------------------------ metrics
    def _observe(self, done: Done) -> None:
        # A columnar batch record carries many predictions: count predictions, not records.
        m.EVENTS.labels(self.name, "processed").inc(sum(done.counts.values()))
        if done.dead_letters:
            m.EVENTS.labels(self.name, "dead_letter").inc(done.dead_letters)
        models = self.model_labels
        per_model: dict[tuple[str, str], int] = {}
        for (mo, v, _), n in done.counts.items():
            per_model[(mo, v)] = per_model.get((mo, v), 0) + n
        other = 0
        for (mo, v), n in per_model.items():
            if models.exported(mo):
                m.MODEL_EVENTS.labels(mo, v).inc(n)
                if (mo, v) not in self.timing_series:
                    # From zero: rate() sees the first late event, a panel shows 0.
                    for timing in m.TIMINGS:
                        m.LATE_FUTURE_EVENTS.labels(mo, v, timing)
                    self.timing_series.add((mo, v))
            else:
                other += n
        if other:
            m.MODEL_EVENTS.labels(models.OTHER, models.OTHER).inc(other)
        for (mo, v), counts in done.result.late_future.items():
            if not models.exported(mo):
                mo = v = models.OTHER
            for timing, n in zip(m.TIMINGS, counts, strict=True):
                if n:
                    m.LATE_FUTURE_EVENTS.labels(mo, v, timing).inc(n)
        # The newest event time the core accepted, whatever the wire form (epoch
        # milliseconds or RFC 3339): the core already parsed every timestamp.
        newest: dict[str, int] = {}
        for st in done.states.values():
            mo = st.key.model_id
            if models.exported(mo):
                newest[mo] = max(newest.get(mo, -1), st.max_event_ms)
        now_ms = time.time() * 1000
        for mo, ts in newest.items():
            if ts >= 0:
                m.PROCESSING_LAG.labels(self.name, mo).set(max(0.0, (now_ms - ts) / 1000))
        for w in done.result.windows:
            mo, v = w["model_id"], w["model_version"]
            if models.exported(mo):
                m.WINDOWS_CLOSED.labels(mo, v).inc()
            else:
                m.WINDOWS_CLOSED.labels(models.OTHER, models.OTHER).inc()
        m.observe_statistics(done.result.observations, models.exported, self.feature_labels.label)

    def _observe_episodes(self, unit: Unit[Models], states: Mapping[StateKey, ModelState]) -> None:
        """``driftline_drift_active`` from the episodes of the states a batch touched,
        labelled with their severity (:mod:`~driftline.runtime.drift_flags`).

        Set from the state, not from the alerts of one batch, so it is right after a
        restart (episodes are loaded with the state); cleared by :meth:`released` when
        the partition moves to another worker.
        """
        streams = (
            (k.model_id, k.model_version, k.segment, st.episodes) for k, st in states.items()
        )
        self.drift_flags.export_streams(unit.partition, streams, self.model_labels.exported)


def _held(reason: str, detail: str) -> Exception:
    """The error a held model's dead letters carry."""
    if reason == "reference_missing":
        return ReferenceMissing(detail)
    return StateCorrupt(detail)


def _warmup_progress(done: Done) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Per stream of the batch without a reference of its own yet: (events collected,
    :data:`WARMUP_EVENTS`); a stream whose reference the batch built: (N, N)."""
    built = {(r.model_id, r.model_version) for r in done.result.new_references}
    out: dict[tuple[str, str, str], tuple[int, int]] = {}
    for key, st in done.states.items():
        mv = (key.model_id, key.model_version)
        if st.warmup or (mv in built and st.window.index == 0):
            n = len(st.warmup) if st.warmup else WARMUP_EVENTS
            out[(key.model_id, key.model_version, key.segment)] = (n, WARMUP_EVENTS)
    return out


async def _read_warmup(
    store: StateStore, lease: Lease, names: list[str]
) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Warm-up rows of the given state fields from side records (absent: none stored),
    and the fields whose records do not read."""
    counts, bad = await store.load_fields(lease, [_count_name(n) for n in names], side=True)
    errors = {n: f"warm-up record: {bad[_count_name(n)]}" for n in names if _count_name(n) in bad}
    chunks: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for n in names:
        blob = counts.get(_count_name(n))
        if blob is None or n in errors:
            continue
        try:
            d = unpack(blob, _WARM_COUNT, _WARM_FORMAT)
            rows, c = int(d["rows"]), int(d["chunk"])
        except _UNREADABLE as exc:
            errors[n] = f"warm-up count does not decode: {type(exc).__name__}"
            continue
        sizes[n] = rows
        chunks[n] = [_chunk_name(n, j) for j in range(-(-rows // c))]
    wanted = [name for names_of in chunks.values() for name in names_of]
    found, bad_chunks = await store.load_fields(lease, wanted, side=True)
    out: dict[str, list[Any]] = {}
    for n, names_of in chunks.items():
        rows_of: list[Any] = []
        try:
            for name in names_of:
                if name in bad_chunks:
                    raise StateCorrupt(str(bad_chunks[name]))
                if name not in found:
                    raise StateCorrupt(f"warm-up chunk {name!r} is missing")
                rows_of.extend(unpack(found[name], _WARM_ROWS, _WARM_FORMAT)["rows"])
            if len(rows_of) != sizes[n]:
                raise StateCorrupt(f"{len(rows_of)} warm-up rows stored, {sizes[n]} recorded")
        except _UNREADABLE as exc:
            errors[n] = f"warm-up rows: {exc}"
            continue
        out[n] = rows_of
    return out, errors


async def read_states(store: StateStore, lease: Lease) -> dict[str, bytes]:
    """Every stored model state of a partition as one record each (warm-up rows put
    back in), for tools and tests: what the core's ``ModelState.to_bytes`` gives."""
    fields = await store.load(lease)
    rows, bad = await _read_warmup(store, lease, list(fields))
    if bad:
        raise StateCorrupt("; ".join(f"{n!r}: {why}" for n, why in bad.items()))
    return {n: _with_rows(b, rows[n]) if n in rows else b for n, b in fields.items()}


def _with_rows(record: bytes, rows: list[Any]) -> bytes:
    """A stored state record (kept without its warm-up buffer) with ``rows`` put back:
    what ``ModelState.to_bytes`` gives for the state in memory."""
    d = unpack(record, "model_state", STATE_FORMAT)
    d["warmup"] = rows
    return pack("model_state", STATE_FORMAT, d)
