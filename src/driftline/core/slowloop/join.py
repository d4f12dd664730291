"""The slow loop's pure core: predictions and delayed labels in, performance and alerts out.

No I/O. The ``driftline labels`` worker (:mod:`driftline.runtime.labels`) is the thin shell: it
fetches batches from Kafka, asks Redis for the pending predictions this module names
(:func:`plan_lookups`), calls :func:`join_batch`, and commits what it returns.

What happens to a batch of one partition (predictions and labels of the same models,
co-partitioned by ``model_id``):

1. **Predictions** are stored as *pending predictions* (:class:`PendingPrediction`, a
   fixed binary struct of ~20-30 bytes) in Redis hashes bucketed by event-time
   *generation* and by a hash of the prediction id (see docs/slow-loop.md for the
   layout and its measured memory). A prediction already stored (a producer retry) is
   counted as a duplicate and not stored again. A columnar batch's rows are read from
   its columns (:mod:`.columns`: scores quantised as one matrix, records packed as one
   array), with the results of its rows as single events.
2. **Labels held** by earlier batches (they arrived before their prediction) are
   retried against this batch's predictions.
3. **Labels** are looked up (one Redis script call for the whole batch) and each gets
   exactly one outcome: ``joined``; ``duplicate`` (its prediction was joined already);
   ``expired`` (later than the model's horizon after the prediction, event time);
   ``invalid`` (e.g. a non-numeric label for a regression model: dead-lettered);
   or it is *held* and retried until the model's prediction event time passes the
   label's time by ``grace_seconds``, when it becomes an ``orphan``.
4. Each joined label updates the :class:`PerfState` of its (model, version, segment)
   and of its (model, version) as a whole: event-time buckets (accuracy, per-class
   precision and recall, log loss, Brier, MAE, RMSE, coverage, label lag, estimated
   accuracy), ADWIN on the per-prediction error (concept drift), tumbling windows of
   labelled predictions (performance alert), and the accuracy during each input-drift
   episode the monitor reported (diagnosis).

Everything is in event time and in partition order, so a replay of the same batches
gives the same state and the same alert ids.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial, reduce
from operator import add, setitem
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.config import LabelsSettings
from driftline.contract.columnar import ColumnarBatch, category_value
from driftline.contract.keys import segment_key
from driftline.core.calibration import Calibration
from driftline.core.reference import ReferenceProfile
from driftline.core.slowloop.columns import (
    Layout,
    batch_times,
    classified_event,
    classified_records,
    confidences,
    join_rows,
    quantised_scores,
    stretches,
)
from driftline.core.slowloop.concept import (
    configured_detector,
    ensure_detector,
    new_detector,
)
from driftline.core.slowloop.diagnosis import DriftIndex, episode_verdicts
from driftline.core.slowloop.episodes import Rules
from driftline.core.slowloop.lookups import Found, LookupPlan
from driftline.core.slowloop.pending import (
    FUTURE_TOLERANCE_MS,
    MAX_BUCKETS,
    MAX_SCORED_CLASSES,
    TARGET_PER_BUCKET,
    Horizons,
    PendingPrediction,
    bucket_of,
    event_ms,
    gen_expiry_ms,
    record_key,
)
from driftline.core.slowloop.perf_state import (
    Bucket,
    ModelJoin,
    PerfState,
    UnitState,
    bucket_start,
    stream_key,
)
from driftline.core.slowloop.results import JoinResult, PerfObservation
from driftline.core.slowloop.scoring import LabelSide

__all__ = ["RefLookup", "join_batch", "labels_backpressure"]

RefLookup = Callable[[str, str], ReferenceProfile | None]

_encode = PendingPrediction.encode
#: Stored predictions of a run from which they are added from arrays
#: (:meth:`_Joiner._store_arrays`): below, numpy's calls cost more than the loop.
_ARRAY_ROWS = 32
#: A run's stored predictions: digests, event times, records, their bytes.
_Rows = tuple[list[bytes], list[int], list[PendingPrediction], list[bytes]]


class _Batch:
    """Per-batch working set: records by digest as this batch sees them."""

    def __init__(self) -> None:
        # digest -> (key name, record or None when joined, model)
        self.recs: dict[bytes, tuple[str, PendingPrediction | None]] = {}
        self.new: set[bytes] = set()


def _calibration(ref: ReferenceProfile | None, cache: dict[str, Calibration | None]) -> Any:
    if ref is None:
        return None
    if ref.reference_id not in cache:
        raw = getattr(ref.outputs, "calibration", None)
        cache[ref.reference_id] = Calibration.from_dict(raw) if raw else None
    return cache[ref.reference_id]


class _Joiner:
    def __init__(
        self,
        unit: UnitState,
        refs: RefLookup,
        drift: DriftIndex,
        settings: LabelsSettings,
        result: JoinResult,
    ) -> None:
        self.u = unit
        self.refs = refs
        self.drift = drift
        self.s = settings
        self.c = Horizons(settings)
        # Read once a batch: per-prediction and per-label code reads these often.
        self.bucket_ms = self.c.bucket_ms
        self.window_labels = settings.window_labels
        self.learn_labels = settings.learn_reference_labels
        self.r = result
        self.rules = Rules(settings, result, drift)
        self.b = _Batch()
        self._cal: dict[str, Calibration | None] = {}
        self._ref_cache: dict[tuple[str, str], ReferenceProfile | None] = {}
        self._models: dict[str, ModelJoin] = {}
        self._pstreams: dict[tuple[str, str, str], tuple[list[PerfState], Calibration | None]] = {}
        self._lstreams: dict[tuple[str, int], tuple[list[PerfState], Calibration | None]] = {}
        # (model, generation) -> hash bucket -> (key name, its new records)
        self._slots: dict[tuple[str, int], dict[int, tuple[str, dict[bytes, bytes]]]] = {}
        self._layouts: dict[tuple[int, tuple[Any, ...]], Layout] = {}
        self.side = LabelSide(self)

    # ------------------------------------------------------------ helpers
    def ref(self, model: str, version: str) -> ReferenceProfile | None:
        k = (model, version)
        if k not in self._ref_cache:
            self._ref_cache[k] = self.refs(model, version)
        return self._ref_cache[k]

    def model(self, model_id: str) -> ModelJoin:
        mj = self._models.get(model_id)
        if mj is not None:
            return mj
        mj = self.u.models.get(model_id)
        if mj is None:
            mj = self.u.models[model_id] = ModelJoin(model_id)
        self.r.dirty.add(mj.key)
        self._models[model_id] = mj
        return mj

    def pstreams(
        self, model: str, version: str, segment: str, sample: Any, origin: str
    ) -> tuple[list[PerfState], Calibration | None]:
        """The streams a prediction updates (its segment's, and the whole version's);
        ``origin`` is the prediction's id (kept by a stream it creates)."""
        k = (model, version, segment)
        hit = self._pstreams.get(k)
        if hit is None:
            streams = [self.perf(model, version, segment, sample, origin)]
            if segment:
                streams.append(self.perf(model, version, "", sample, origin))
            cal = _calibration(self.ref(model, version), self._cal)
            hit = self._pstreams[k] = (streams, cal)
        return hit

    def perf(self, model: str, version: str, segment: str, sample: Any, origin: str) -> PerfState:
        key = stream_key(model, version, segment)
        st = self.u.perf.get(key)
        ref = self.ref(model, version)
        if st is None:
            st = PerfState(model, version, segment, origin=origin)
            if ref is not None:
                st.task = ref.outputs.task
            else:
                st.task = "regression" if type(sample) is float else "classification"
            st.detector = new_detector(self.s, configured_detector(self.s, model), st.task, key)
            self.u.perf[key] = st
        else:
            ensure_detector(self.s, st)
        if ref is not None and ref.reference_id != st.reference_id:
            st.reference_id = ref.reference_id
            if ref.outputs.accuracy is not None:
                st.ref_accuracy = float(ref.outputs.accuracy)
                st.ref_source = "reference"
                st.ref_rows = int(ref.row_count)
            if ref.outputs.mae is not None and st.task == "regression":
                st.ref_mae = float(ref.outputs.mae)
                st.ref_source = "reference"
        if ref is not None and st.ref_source == "reference" and not st.ref_rows:
            st.ref_rows = int(ref.row_count)  # a state stored before it was kept
        self.r.dirty.add(key)
        return st

    def streams_of(
        self, mj: ModelJoin, rec: PendingPrediction
    ) -> tuple[list[PerfState], Calibration | None]:
        k = (mj.model_id, rec.stream)
        hit = self._lstreams.get(k)
        if hit is None:
            version, segment = mj.streams[rec.stream]
            out = [self.u.perf[stream_key(mj.model_id, version, segment)]]
            if segment:
                out.append(self.u.perf[stream_key(mj.model_id, version, "")])
            for st in out:
                ensure_detector(self.s, st)
                self.r.dirty.add(st.key)
                self.ref(mj.model_id, version)
            cal = _calibration(self.ref(mj.model_id, version), self._cal)
            hit = self._lstreams[k] = (out, cal)
        return hit

    # ------------------------------------------------------------ predictions
    def add_predictions(
        self,
        items: Sequence[Mapping[str, Any]],
        digests: Sequence[bytes],
        found: Sequence[Found],
    ) -> None:
        """Store a batch's predictions, in partition order: ``items`` are prediction
        events and columnar batches, ``digests`` and ``found`` have an entry a
        prediction (a batch's rows one each; ``found[i]``: what Redis answered for
        prediction ``i``, ``None`` when it is not stored).

        Predictions come in runs of the same (model, version, segment): a columnar
        batch is one (:meth:`_add_batch`, from its columns), and :meth:`_add_run`
        looks up what a run of events shares once.
        """
        lo, n, row = 0, len(items), 0
        while lo < n:
            first = items[lo]
            if type(first) is ColumnarBatch:
                self._add_batch(first, digests, found, row)
                row += first.count
                lo += 1
                continue
            model, version = first["model_id"], first["model_version"]
            seg = first.get("segment")
            hi = lo + 1
            while hi < n:
                e = items[hi]
                if type(e) is ColumnarBatch:
                    break
                if e["model_id"] != model or e["model_version"] != version:
                    break
                if e.get("segment") != seg:
                    break
                hi += 1
            if row == lo:  # no batch before: an event's index is its prediction's
                self._add_run(items, digests, found, lo, hi)
            else:
                end = row + hi - lo
                self._add_run(items[lo:hi], digests[row:end], found[row:end], 0, hi - lo)
            row += hi - lo
            lo = hi

    def _add_run(
        self,
        events: Sequence[Mapping[str, Any]],
        digests: Sequence[bytes],
        found: Sequence[Found],
        lo: int,
        hi: int,
    ) -> None:
        """Store predictions ``lo:hi``, all of one (model, version, segment).

        Each is a duplicate (stored already, by this batch or before), too old (over
        its model's horizon behind the model's watermark as the run moves it), invalid
        (a regression prediction that is not a number) or stored; the stored ones'
        records are then added in order (:meth:`_store`).
        """
        r, recs = self.r, self.b.recs
        first = events[lo]
        model, version = first["model_id"], first["model_version"]
        seg = first.get("segment")
        segment = segment_key(seg) if seg else ""
        mj = self.model(model)
        horizon = self.c.horizon_ms(model)
        streams: list[PerfState] = []
        cal: Calibration | None = None
        regression = False
        sidx = -1
        here: set[bytes] = set()
        ds: list[bytes] = []
        ts: list[int] = []
        made: list[PendingPrediction] = []
        for i in range(lo, hi):
            e = events[i]
            d = digests[i]
            t = event_ms(e)
            if d in recs or d in here or found[i] is not None:
                self._pcount(mj, "duplicate")
                continue
            wm = mj.watermark
            if wm >= 0 and t < wm - horizon:
                self._pcount(mj, "too_old")
                continue
            pred = e["prediction"]
            if not streams:
                streams, cal = self.pstreams(model, version, segment, pred, e["prediction_id"])
                regression = streams[0].task == "regression"
            if regression:
                if type(pred) is not float and type(pred) is not int:
                    self._pcount(mj, "invalid")
                    continue
                if sidx < 0:
                    sidx = mj.stream_index(version, segment)
                rec = PendingPrediction(sidx, t, True, float(pred))
            else:
                scores = e.get("scores")
                layout = self._layout((pred, *scores) if scores else (pred,), streams)
                if sidx < 0:
                    sidx = mj.stream_index(version, segment)
                rec = classified_event(e, layout, sidx, t)
            if not made:
                # the counters' keys in the order one by one would add them
                mj.predictions.setdefault("stored", 0)
                r.predictions.setdefault((model, "stored"), 0)
            here.add(d)
            ds.append(d)
            ts.append(t)
            made.append(rec)
            if wm < 0 or t <= wm + FUTURE_TOLERANCE_MS:
                if t > wm:
                    mj.watermark = t
        if made:
            self._store(mj, streams, cal, ds, ts, made, list(map(_encode, made)))

    def _add_batch(
        self, b: ColumnarBatch, digests: Sequence[bytes], found: Sequence[Found], row: int
    ) -> None:
        """Store the rows of columnar batch ``b`` (predictions ``row:row + b.count``):
        what :meth:`_add_run` does with them as events, from the columns.

        Each row's outcome first, in order, then the stored rows' records at once: the
        class indices of each new (class, scored classes) in order of first appearance,
        the scores quantised as one matrix (:func:`quantised_scores`), the records
        packed as one array (:func:`encode_scored`).
        """
        n = b.count
        scores = quantised_scores(b) if b.scores else None
        if b.scores and scores is None:
            # A score the matrix does not hold exactly (never a contract-valid one):
            # the events' path decides, as it would one by one.
            end = row + n
            self._add_run(join_rows(b), digests[row:end], found[row:end], 0, n)
            return
        r, recs = self.r, self.b.recs
        model, version = b.model_id, b.model_version
        segment = segment_key(b.segment) if b.segment else ""
        mj = self.model(model)
        horizon = self.c.horizon_ms(model)
        times = batch_times(b)
        preds = b.predictions
        streams: list[PerfState] = []
        cal: Calibration | None = None
        regression = False
        here: set[bytes] = set()
        keep: list[int] = []
        wm = mj.watermark
        for i, d, t, f in zip(
            range(n), digests[row : row + n], times, found[row : row + n], strict=True
        ):
            if f is not None or d in recs or d in here:
                self._pcount(mj, "duplicate")
                continue
            if wm >= 0 and t < wm - horizon:
                self._pcount(mj, "too_old")
                continue
            if not streams:
                streams, cal = self.pstreams(model, version, segment, preds[i], b.prediction_ids[i])
                regression = streams[0].task == "regression"
            if regression and type(preds[i]) is not float and type(preds[i]) is not int:
                self._pcount(mj, "invalid")
                continue
            if not keep:
                mj.predictions.setdefault("stored", 0)
                r.predictions.setdefault((model, "stored"), 0)
            here.add(d)
            keep.append(i)
            if (wm < 0 or t <= wm + FUTURE_TOLERANCE_MS) and t > wm:
                wm = t
        mj.watermark = wm
        if not keep:
            return
        sidx = mj.stream_index(version, segment)
        if len(keep) == n:
            ds, ts, pk = list(digests[row : row + n]), times, list(preds)
        else:
            ds = [digests[row + i] for i in keep]
            ts = [times[i] for i in keep]
            pk = [preds[i] for i in keep]
        if regression:
            made = [PendingPrediction(sidx, t, True, float(y)) for t, y in zip(ts, pk, strict=True)]
            encs = list(map(_encode, made))
        else:
            layout = partial(self._layout, streams=streams)
            made, encs = classified_records(scores, keep, n, ts, pk, layout, sidx)
        self._store(mj, streams, cal, ds, ts, made, encs)

    def _store(
        self,
        mj: ModelJoin,
        streams: list[PerfState],
        cal: Calibration | None,
        ds: list[bytes],
        ts: list[int],
        made: list[PendingPrediction],
        encs: list[bytes],
    ) -> None:
        """Add the stored predictions of one stream's run, in order: digests ``ds``,
        event times ``ts``, records ``made`` and their bytes ``encs``; from arrays
        (:meth:`_store_arrays`) when they are many, else one by one
        (:meth:`_store_loop`). The same integers and floats either way.
        """
        rows = (ds, ts, made, encs)
        if len(made) >= _ARRAY_ROWS:
            self._store_arrays(mj, streams, cal, rows)
        else:
            self._store_loop(mj, streams, cal, rows)
        stored = len(made)
        mj.predictions["stored"] += stored
        self.r.count("predictions", mj.model_id, "stored", stored)
        t_max = max(ts)
        for s in streams:
            s.predicted += stored
            if t_max > s.max_pred_ms:
                s.max_pred_ms = t_max

    def _store_loop(
        self, mj: ModelJoin, streams: list[PerfState], cal: Calibration | None, rows: _Rows
    ) -> None:
        """:meth:`_store` one prediction at a time.

        The generation's key names and the event-time buckets are looked up when they
        change, and the counts (stored, per stream, per bucket, per generation) are
        added once a run, bucket or generation: the same integers, in the same order of
        first appearance. The confidence sums are added one prediction at a time, so
        the floating sums and the estimated-accuracy windows are those of one by one.
        """
        ds, ts, made, encs = rows
        recs, new = self.b.recs, self.b.new
        model = mj.model_id
        gen_ms = self.c.gen_ms(model)
        window, bucket_ms = self.window_labels, self.bucket_ms
        gen: int | None = None  # the generation being filled
        n_gen = 0  # its predictions not yet added to its count
        info: list[int] = []
        slots: dict[int, tuple[str, dict[bytes, bytes]]] = {}
        b_start = b_end = 0  # the event-time bucket being filled, [start, end)
        bks: list[Bucket] = []
        n_bucket = 0
        for d, t, rec, enc in zip(ds, ts, made, encs, strict=True):
            g = t // gen_ms
            if g != gen:
                if n_gen:
                    info[1] += n_gen
                gen, n_gen = g, 0
                got = mj.gens.get(g)
                if got is None:
                    got = mj.gens[g] = [self._new_gen_buckets(mj, g), 0]
                info = got
                slots = self._slots.setdefault((model, g), {})
            n_gen += 1
            h = bucket_of(d, info[0])
            slot = slots.get(h)
            if slot is None:
                slot = slots[h] = self._put_slot(model, g, h)
            key = slot[0]
            slot[1][d] = enc
            recs[d] = (key, rec)
            new.add(d)
            if t >= b_end or t < b_start:
                for b in bks:
                    b.pred += n_bucket
                bks = [s.bucket(t, bucket_ms) for s in streams]
                b_start = bucket_start(t, bucket_ms)
                b_end, n_bucket = b_start + bucket_ms, 0
            n_bucket += 1
            top = rec.top
            if top is not None:
                conf = top if cal is None else cal.apply(top)
                for s, b in zip(streams, bks, strict=True):
                    b.est_n += 1
                    b.est_sum += conf
                    s.est_n += 1
                    s.est_sum += conf
                    if s.est_n >= window:
                        self._estimate(s)
        info[1] += n_gen
        for b in bks:
            b.pred += n_bucket

    def _store_arrays(
        self, mj: ModelJoin, streams: list[PerfState], cal: Calibration | None, rows: _Rows
    ) -> None:
        """:meth:`_store` a stretch at a time: the generations, hash buckets and
        event-time buckets from arrays (a key or a bucket looked up once a stretch), the
        confidence sums added in the same order."""
        ds, ts, made, encs = rows
        recs = self.b.recs
        model = mj.model_id
        n = len(ds)
        t = np.asarray(ts, dtype=np.int64)
        gens = t // self.c.gen_ms(model)
        hashes = np.frombuffer(b"".join(ds), dtype="<u4").reshape(n, -1)[:, 0]
        row_slots: list[dict[bytes, bytes]] = []
        row_keys: list[str] = []
        info: list[int] | None = None
        prev = 0  # rows of the generation before, not yet added to its count
        for lo, hi in stretches(gens):
            g = int(gens[lo])
            if info is not None:
                info[1] += prev
            got = mj.gens.get(g)
            if got is None:
                got = mj.gens[g] = [self._new_gen_buckets(mj, g), 0]
            info, prev = got, hi - lo
            slots = self._slots.setdefault((model, g), {})
            # the hash buckets of the stretch, their slots made in order of first use
            hb = hashes[lo:hi] % info[0]
            uniq, first, inv = np.unique(hb, return_index=True, return_inverse=True)
            found: list[tuple[str, dict[bytes, bytes]]] = [("", {})] * len(uniq)
            for j in np.argsort(first, kind="stable").tolist():
                h = int(uniq[j])
                slot = slots.get(h)
                if slot is None:
                    slot = slots[h] = self._put_slot(model, g, h)
                found[j] = slot
            pick = inv.tolist()
            row_keys += [found[j][0] for j in pick]
            row_slots += [found[j][1] for j in pick]
        if info is not None:
            info[1] += prev
        deque(map(setitem, row_slots, ds, encs), maxlen=0)
        recs.update(zip(ds, zip(row_keys, made, strict=True), strict=True))
        self.b.new.update(ds)
        self._batch_sums(streams, cal, t, made)

    def _batch_sums(
        self,
        streams: list[PerfState],
        cal: Calibration | None,
        t: NDArray[np.int64],
        made: list[PendingPrediction],
    ) -> None:
        """The event-time buckets' prediction counts and the confidence sums of a
        batch's stored rows (event times ``t``): a bucket looked up once a stretch, each
        sum added in row order (the floats of one by one), each estimated-accuracy
        window closed where one by one closes it."""
        bucket_ms, window = self.bucket_ms, self.window_labels
        tops = [rec.top_q for rec in made]
        confs = None if tops.count(None) == len(tops) else confidences(tops, cal)
        for lo, hi in stretches(t - t % bucket_ms):
            bks = [s.bucket(int(t[lo]), bucket_ms) for s in streams]
            for b in bks:
                b.pred += hi - lo
            if confs is None:
                continue
            chunk = [c for c in confs[lo:hi] if c is not None]
            for b in bks:
                b.est_n += len(chunk)
                b.est_sum = reduce(add, chunk, b.est_sum)
        if confs is None:
            return
        seq = [c for c in confs if c is not None]
        for s in streams:
            pos = 0
            while pos < len(seq):
                take = min(max(window - s.est_n, 1), len(seq) - pos)
                s.est_n += take
                s.est_sum = reduce(add, seq[pos : pos + take], s.est_sum)
                pos += take
                if s.est_n >= window:
                    self._estimate(s)

    def _estimate(self, s: PerfState) -> None:
        """Close a window of the estimated accuracy (``window_labels`` confident
        predictions): the stream's latest value, a metric for a whole version."""
        est = s.est_sum / s.est_n
        s.last["estimated_accuracy"] = round(est, 6)
        s.est_count += 1
        if not s.segment:
            self.r.observations.append(
                PerfObservation(s.model_id, s.version, "estimated_accuracy", est)
            )
        s.est_n, s.est_sum = 0, 0.0

    def _put_slot(self, model: str, gen: int, h: int) -> tuple[str, dict[bytes, bytes]]:
        """The key name of hash bucket ``h`` of a generation and its new records."""
        key = record_key(model, gen, h)
        puts = self.r.puts.get(key)
        if puts is None:
            puts = self.r.puts[key] = {}
            self.r.expire_after[key] = gen_expiry_ms(self.s, model, gen)
            self.r.key_model[key] = model
        return key, puts

    def _pcount(self, mj: ModelJoin, outcome: str) -> None:
        mj.predictions[outcome] = mj.predictions.get(outcome, 0) + 1
        self.r.count("predictions", mj.model_id, outcome)

    def _layout(self, names: tuple[Any, ...], streams: list[PerfState]) -> Layout:
        """Class indices of a prediction's class and score keys (``names``: its
        prediction, then its scores' classes) in its streams, cached per batch (a model
        sends the same few names over and over)."""
        st = streams[0]
        pred = names[0]
        ck = (id(st), names)
        layout = self._layouts.get(ck)
        if layout is None:
            idx = []
            for nm in names:
                cname = (category_value(nm) or "") if nm is pred else nm
                idx.append(st.class_index(cname))
                for other in streams[1:]:
                    other.class_index(cname)
            order = idx[1:]
            dense = None
            if order and max(order) < MAX_SCORED_CLASSES:
                # position in the dense vector -> position in the scores dict (or -1)
                where = {c: j for j, c in enumerate(order)}
                dense = tuple(where.get(i, -1) for i in range(max(order) + 1))
            in_order = dense == tuple(range(len(order)))
            layout = self._layouts[ck] = (idx[0], dense, in_order)
        return layout

    def _new_gen_buckets(self, mj: ModelJoin, gen: int) -> int:
        """Hash buckets of a new generation: sized from the previous one's count."""
        prev = [g for g in mj.gens if g < gen]
        if not prev:
            return int(self.s.initial_buckets)
        n = mj.gens[max(prev)][1]
        want = max(1, math.ceil(1.25 * n / TARGET_PER_BUCKET))
        return int(min(MAX_BUCKETS, 1 << (want - 1).bit_length()))

    # ------------------------------------------------------------ labels
    def retry_held(self) -> None:
        """Held labels whose prediction arrived in this batch are joined now."""
        held, new = self.u.held, self.b.new
        if not held or not new:
            return
        # Held labels are many in a backlog and this runs every batch: one pass to
        # find the few that join, in held order.
        ready = [h for h in held if h.digest in new]
        if not ready:
            return
        side = self.side
        for h in ready:
            d = h.digest
            side.join(-1, h.model_id, d, h.label, h.time_ms, self.b.recs[d])
        side.score_joined()
        self.u.held = [h for h in held if h.digest not in new]
        self.r.dirty.add("h")

    def expire_held(self) -> None:
        """Held labels become orphans once their model's predictions passed them.

        Only event time decides: a held label is an orphan once its model's prediction
        watermark is ``grace_seconds`` past the label's time.
        """
        held = self.u.held
        if not held:
            return
        grace = self.c.grace_ms
        # The latest label time each model's watermark makes an orphan (none: -inf).
        last = {m: mj.watermark - grace for m, mj in self.u.models.items()}
        never = -math.inf
        orphans = [h for h in held if h.time_ms <= last.get(h.model_id, never)]
        # No cap here: a full buffer pauses the labels partition (labels_backpressure)
        # instead of turning the oldest labels into orphans.
        if not orphans:
            return
        for h in orphans:
            self.model(h.model_id)
            self.side.count(h.model_id, "orphan")
        self.u.held = [h for h in held if h.time_ms > last.get(h.model_id, never)]
        self.r.dirty.add("h")

    def judge_input_drift(self) -> None:
        """Verdicts on the monitor's input-drift episodes, from the buckets of the
        predictions made during each (whole-version streams; every batch, so a verdict
        follows new labels and late alerts alike)."""
        for key, st in self.u.perf.items():
            if st.segment or st.task == "regression":
                continue
            if (st.model_id, st.version) not in self.drift.intervals:
                continue
            thr = self.rules.threshold(st)
            if episode_verdicts(st, self.s, thr, self.drift, self.c.bucket_ms):
                self.r.dirty.add(key)
                self.rules.diag_changed(st)

    def prune_gens(self) -> None:
        """Forget generations whose predictions are past any use (Redis expires them).

        A generation is useless once the model's labels are past its horizon. The clock
        is the label watermark: predictions may be read far ahead of their labels (a
        backlog), and a label must still find its prediction then. A model that never
        had a label forgets generations ten horizons behind its predictions.
        """
        for mj in self.u.models.values():
            if mj.label_watermark >= 0:
                clock = mj.label_watermark
            elif mj.watermark >= 0:
                clock = mj.watermark - 10 * self.c.horizon_ms(mj.model_id)
            else:
                continue
            old = [g for g in mj.gens if gen_expiry_ms(self.s, mj.model_id, g) < clock]
            for g in old:
                del mj.gens[g]
            if old:
                self.r.dirty.add(mj.key)


def labels_backpressure(unit: UnitState, settings: LabelsSettings, paused: bool) -> bool:
    """Whether the partition's labels should wait in Kafka (backpressure).

    Labels that come before their predictions are held in the partition's state until
    the predictions come. Rather than dropping any when there are many (a backlog after
    an outage: labels read far ahead of their predictions), the worker stops reading
    labels once ``max_held_labels`` are held and reads predictions only, which join the
    held labels, until half as many are held (hysteresis: ``paused`` is the current
    decision). At most one batch of labels arrives past the limit.

    Examples
    --------
    >>> s = LabelsSettings(max_held_labels=4)
    >>> u = UnitState(held=[HeldLabel("m", str(i), "a", 0) for i in range(3)])
    >>> labels_backpressure(u, s, paused=False), labels_backpressure(u, s, paused=True)
    (False, True)
    """
    cap = settings.max_held_labels
    return len(unit.held) > cap // 2 if paused else len(unit.held) >= cap


def join_batch(
    predictions: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    plan: LookupPlan,
    found: Sequence[Found],
    unit: UnitState,
    references: RefLookup,
    drift: DriftIndex,
    settings: LabelsSettings,
) -> JoinResult:
    """Join one batch of one partition. Pure: no I/O; updates ``unit`` in place.

    Parameters
    ----------
    predictions, labels
        Contract-valid events of the partition, each in partition order: prediction
        events (dicts) and columnar batches (:class:`ColumnarBatch`, whose rows the join
        reads from its columns), and label events.
    plan, found
        :func:`plan_lookups` of the same batch and state, and what Redis answered.
    unit
        The partition's state (updated).
    references
        ``(model_id, version) -> ReferenceProfile | None`` (task, accuracy, calibration).
    drift
        Input-drift episodes reported by the monitor.
    settings
        The slow loop's settings.

    Returns
    -------
    JoinResult
        Records to write, alerts, dead letters, counters and metric observations.
    """
    j = join_predictions(predictions, plan, found, unit, references, drift, settings)
    return join_labels(j, labels, plan, found)


def join_predictions(
    predictions: Sequence[Mapping[str, Any]],
    plan: LookupPlan,
    found: Sequence[Found],
    unit: UnitState,
    references: RefLookup,
    drift: DriftIndex,
    settings: LabelsSettings,
) -> _Joiner:
    """The first half of :func:`join_batch`: the batch's predictions, then the held
    labels they let join. Reads only the predictions' answers in ``found`` (the first
    :meth:`LookupPlan.label_split` probes), so the shell may ask Redis for the rest
    meanwhile; :func:`join_labels` ends the batch."""
    j = _Joiner(unit, references, drift, settings, JoinResult())
    j.add_predictions(
        predictions, plan.pred_digest, [found[pi] if pi >= 0 else None for pi in plan.pred_probe]
    )
    j.retry_held()
    return j


def label_probes_to_ask(j: _Joiner, plan: LookupPlan, probes: Sequence[int]) -> list[int]:
    """Of the labels' probes ``probes`` (indices into ``plan.probes``), those
    :func:`join_labels` may read after :func:`join_predictions` (``j``) ran: a label
    whose prediction this batch stored joins that record and never reads Redis's
    answer, so the shell need not ask for it."""
    stored = j.b.new
    every = plan.probes
    return [pi for pi in probes if every[pi][0] not in stored]


def join_labels(
    j: _Joiner, labels: Sequence[Mapping[str, Any]], plan: LookupPlan, found: Sequence[Found]
) -> JoinResult:
    """The second half of :func:`join_batch` (after :func:`join_predictions` of the
    same batch): the labels' outcomes, held labels that became orphans, the input-drift
    verdicts and the generations forgotten."""
    j.side.resolve_all(labels, plan, found)
    j.side.finish()
    j.expire_held()
    j.judge_input_drift()
    j.prune_gens()
    # The label side and the joiner refer to each other: without the cycle, the batch's
    # working set (a record a prediction, the labels' outcomes) is freed with the
    # joiner instead of waiting for the collector to find it. The batch is over.
    del j.side
    return j.r
