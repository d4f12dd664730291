"""The label side of the join: each label's outcome, and a joined label's scores.

Owner of what a batch's labels do to the state (:class:`LabelSide`, one per batch,
driven by :func:`driftline.core.slowloop.join.join_batch`):

1. **Outcome**, label by label in partition order (each decides the next: a joined
   prediction makes a later label of it a duplicate): the model's label watermark, the
   pending record (this batch's, else what Redis answered, decoded once), then
   ``held`` / ``duplicate`` / ``expired`` / ``invalid`` / ``joined``, the tombstone of a
   joined record and the label's lag.
2. **Scores** of a joined label in its own stream (version and segment) then in the
   whole version's stream: the event-time bucket of its prediction (accuracy, per-class
   counts, log loss, Brier, MAE / RMSE, confidence, lag), the open window, the recent
   evidence of the diagnosis, the learning phase, the error to the concept detector, and
   the window's close once it is full. A batch's joined labels are scored after its
   outcomes, in partition order; a run of one stream's labels that reaches no event
   (window close, ADWIN test, pending rise, learning) on local variables.

What is the same for both streams (the bucket's start, the lag's histogram bin, the
error, the log loss and Brier of the score vector, the calibrated confidence) is
computed once a label; the floating sums are added in the order one by one adds them,
so the state, the alerts and every output are those of the label-by-label code (oracle:
``tests/unit/test_label_side.py``).
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from driftline.contract.columnar import category_value
from driftline.core.calibration import Calibration
from driftline.core.slowloop.concept import ErrorFeed
from driftline.core.slowloop.diagnosis import add_evidence, add_evidence_run
from driftline.core.slowloop.episodes import Rules
from driftline.core.slowloop.lookups import Found, LookupPlan
from driftline.core.slowloop.pending import (
    FUTURE_TOLERANCE_MS,
    LOG_LOSS_EPS,
    SCORE_SCALE,
    TOMBSTONE,
    Horizons,
    PendingPrediction,
    event_ms,
)
from driftline.core.slowloop.perf_state import (
    LAG_EDGES_S,
    MAX_CLASS_STATS,
    OTHER_CLASS,
    Bucket,
    HeldLabel,
    ModelJoin,
    PerfState,
    UnitState,
    bucket_start,
)
from driftline.core.slowloop.results import JoinResult

__all__ = ["Joiner", "LabelSide"]

#: ``q / SCORE_SCALE`` for a quantised score (both exact as floats: the same quotient).
_SCALE_DIV = float(SCORE_SCALE).__rtruediv__
_decode = PendingPrediction.decode
_mul = operator.mul
_log = math.log

#: A joined label, as its streams score it: (streams, record, label time, prediction
#: time, bucket start, lag bin, lag in seconds, correct, true class index, error,
#: squared error, calibrated confidence, log loss, Brier).
_Joined = tuple[
    list[PerfState],
    PendingPrediction,
    int,
    int,
    int,
    int,
    float,
    bool,
    int,
    float,
    float,
    float | None,
    float,
    float,
]


class _Records(Protocol):
    #: digest -> (key name, record or None once joined), as this batch sees them
    recs: dict[bytes, tuple[str, PendingPrediction | None]]
    #: digests stored by this batch
    new: set[bytes]


class Joiner(Protocol):
    """What the label side reads of the batch's joiner (``join._Joiner``)."""

    u: UnitState
    r: JoinResult
    c: Horizons
    rules: Rules
    bucket_ms: int
    window_labels: int
    learn_labels: int
    _models: dict[str, ModelJoin]
    _lstreams: dict[tuple[str, int], tuple[list[PerfState], Calibration | None]]

    @property
    def b(self) -> _Records:
        """The batch's records."""

    def model(self, model_id: str) -> ModelJoin:
        """The model's join bookkeeping (created when new)."""

    def streams_of(
        self, mj: ModelJoin, rec: PendingPrediction
    ) -> tuple[list[PerfState], Calibration | None]:
        """The streams a record scores into (its own first) and its calibration."""


def _translate(src: PerfState, dst: PerfState, i: int) -> int:
    """Index in ``dst``'s class table of class ``i`` of ``src``'s."""
    if i == OTHER_CLASS or i >= len(src.classes):
        return OTHER_CLASS
    return dst.class_index(src.classes[i])


class LabelSide:
    """The labels of one batch against the joiner's working set ``j`` (module notes)."""

    def __init__(self, j: Joiner) -> None:
        self.j = j
        self._horizon: dict[str, int] = {}
        self.errors = ErrorFeed()
        # labels joined by :meth:`join`, not scored yet (:meth:`score_joined`)
        self._joined: list[_Joined] = []

    def count(self, model: str, outcome: str) -> None:
        """One more label of ``model`` with ``outcome`` (the model's and the batch's)."""
        j = self.j
        mj = j._models.get(model) or j.model(model)
        ml = mj.labels
        ml[outcome] = ml.get(outcome, 0) + 1
        rl = j.r.labels
        k = (model, outcome)
        rl[k] = rl.get(k, 0) + 1

    def _held_event(
        self, idx: int, model: str, d: bytes, label: Any, t_label: int
    ) -> dict[str, Any] | None:
        """A held label rebuilt as a label event (its Kafka record is gone), else None."""
        if idx >= 0:
            return None
        pid = next((h.prediction_id for h in self.j.u.held if h.digest == d), "")
        return {"prediction_id": pid, "model_id": model, "label": label, "timestamp": t_label}

    def finish(self) -> None:
        """After the batch's labels: what waits for the detectors is fed."""
        self.errors.flush()

    def resolve_all(
        self, labels: Sequence[Mapping[str, Any]], plan: LookupPlan, found: Sequence[Found]
    ) -> None:
        """The outcome of each of the batch's labels, in partition order."""
        j = self.j
        models, model_of = j._models, j.model
        recs = j.b.recs
        keys, probes, digests = plan.keys, plan.label_probe, plan.label_digest
        held = j.u.held
        dirty = j.r.dirty
        outcome = self.outcome
        joined: list[_Joined] = []
        add = joined.append
        # joined labels per model, counted at the end (their counters' keys are added
        # when first met, as one by one adds them: the state's bytes keep their order)
        n_joined: dict[str, int] = {}
        for i, lab in enumerate(labels):
            model = lab["model_id"]
            mj = models.get(model) or model_of(model)
            t = lab["timestamp"]
            if type(t) is not int:
                t = event_ms(lab)
            label = lab["label"]
            lw = mj.label_watermark
            if (lw < 0 or t <= lw + FUTURE_TOLERANCE_MS) and t > lw:
                mj.label_watermark = t
            d = digests[i]
            hit = recs.get(d)
            if hit is None:
                li = probes[i]
                f = found[li] if li >= 0 else None
                if f is not None:
                    value = f[1]
                    hit = recs[d] = (keys[f[0]], None if value == TOMBSTONE else _decode(value))
                else:
                    held.append(HeldLabel(model, lab["prediction_id"], label, t, d))
                    dirty.add("h")
                    continue
            item = outcome(i, model, d, label, t, hit)
            if item is not None:
                add(item)
                k = n_joined.get(model)
                if k is None:
                    mj.labels.setdefault("joined", 0)
                    j.r.labels.setdefault((model, "joined"), 0)
                    k = 0
                n_joined[model] = k + 1
        for model, k in n_joined.items():
            models[model].labels["joined"] += k
            j.r.labels[(model, "joined")] += k
        self.score_all(joined)

    def join(
        self,
        idx: int,
        model: str,
        d: bytes,
        label: Any,
        t_label: int,
        hit: tuple[str, PendingPrediction | None],
    ) -> None:
        """A label whose prediction's record is ``hit``: its outcome (``idx``: its index
        in the batch, -1 for a held label); a joined one is counted now and scored by
        :meth:`score_joined`, with the others joined before it."""
        item = self.outcome(idx, model, d, label, t_label, hit)
        if item is not None:
            self.count(model, "joined")
            self._joined.append(item)

    def score_joined(self) -> None:
        """The labels :meth:`join` joined since the last call, scored in order as a
        batch's labels are (:meth:`score_all`: runs of one stream at once)."""
        if self._joined:
            joined, self._joined = self._joined, []
            self.score_all(joined)

    def outcome(
        self,
        idx: int,
        model: str,
        d: bytes,
        label: Any,
        t_label: int,
        hit: tuple[str, PendingPrediction | None],
    ) -> _Joined | None:
        """The outcome of a label whose prediction's record is ``hit`` (``idx``: its
        index in the batch, -1 for a held label); when it joins, what its streams add
        (its ``joined`` count is the caller's)."""
        key, rec = hit
        if rec is None:
            self.count(model, "duplicate")
            return None
        j = self.j
        stream, t_pred, regression, value, cls, top_q, scores_q = rec
        horizon = self._horizon.get(model)
        if horizon is None:
            horizon = self._horizon[model] = j.c.horizon_ms(model)
        if t_label - t_pred > horizon:
            self.count(model, "expired")
            return None
        hit_s = j._lstreams.get((model, stream))
        if hit_s is None:
            hit_s = j.streams_of(j.u.models[model], rec)
        streams, cal = hit_s
        r = j.r
        if regression and type(label) is not float and type(label) is not int:
            reason = f"label {label!r} is not a number; {model} is a regression model"
            r.rejected.append((idx, reason, self._held_event(idx, model, d, label, t_label)))
            self.count(model, "invalid")
            return None
        j.b.recs[d] = (key, None)
        if d in j.b.new:
            r.puts[key][d] = TOMBSTONE
        else:
            r.tombs.setdefault(key, []).append(d)
        lag_s = (t_label - t_pred) / 1000.0
        r.lags.append((model, lag_s))
        # what both streams add: computed once
        own = streams[0]
        lag_bin = bisect_left(LAG_EDGES_S, lag_s)
        bucket_ms = j.bucket_ms
        b_start = bucket_start(t_pred, bucket_ms)
        correct = False
        conf: float | None = None
        truth = 0
        ll = brier = sq = 0.0
        if regression:
            e = float(label) - value
            err = abs(e)
            sq = e * e
        else:
            truth = own.label_index(category_value(label) or "")
            correct = cls == truth and truth != OTHER_CLASS
            err = 0.0 if correct else 1.0
            if top_q is not None:
                top = top_q / SCORE_SCALE
                conf = top if cal is None else cal.apply(top)
            if scores_q is not None:
                n = len(scores_q)
                p_true = scores_q[truth] / SCORE_SCALE if truth < n else 0.0
                ll = -_log(LOG_LOSS_EPS if LOG_LOSS_EPS > p_true else p_true)
                # the sum of squares in sum()'s order: ((0 + a * a) + b * b) + ...
                if n == 3:
                    a, b, c = map(_SCALE_DIV, scores_q)
                    brier = a * a + b * b + c * c - 2 * p_true + 1.0
                elif n == 2:
                    a, b = map(_SCALE_DIV, scores_q)
                    brier = a * a + b * b - 2 * p_true + 1.0
                else:
                    ps = list(map(_SCALE_DIV, scores_q))
                    brier = sum(map(_mul, ps, ps)) - 2 * p_true + 1.0
        return (
            streams,
            rec,
            t_label,
            t_pred,
            b_start,
            lag_bin,
            lag_s,
            correct,
            truth,
            err,
            sq,
            conf,
            ll,
            brier,
        )

    def score_all(self, joined: Sequence[_Joined]) -> None:
        """The batch's joined labels, in partition order: runs of one stream's labels
        that reach no event (no window close, no pending rise, no learning, no test of
        ADWIN that detects a change: its tests are crossed when none does) in one tight
        loop (:meth:`_score_quiet`); every other label, and every label of more than one
        stream, one by one (:meth:`score`)."""
        n = len(joined)
        i = 0
        j = self.j
        feed = self.errors
        quiet = feed.quiet
        # a stream's label whose ADWIN test detects a change: no run crosses it
        detects: dict[int, int] = {}
        while i < n:
            item = joined[i]
            streams = item[0]
            st = streams[0]
            if len(streams) == 1 and not item[1].regression and st.learn_n >= j.learn_labels:
                room = j.window_labels - st.window.n - 1
                k = min(quiet(st), room)
                if room > k and i > detects.get(id(st), -1) and feed.through(st):
                    # up to the window's close, across ADWIN's tests if none detects
                    e = self._run_end(joined, i, min(n, i + room))
                    if e - i > k:
                        hit = feed.run_through(st, [x[9] for x in joined[i:e]])
                        if hit < 0:
                            self._score_quiet(st, joined, i, e)
                            i = e
                            continue
                        detects[id(st)] = i + hit
                if k > 0:
                    e = self._run_end(joined, i, min(n, i + k))
                    self._score_quiet(st, joined, i, e)
                    i = e
                    continue
            self.score(item)
            i += 1

    @staticmethod
    def _run_end(joined: Sequence[_Joined], i: int, end: int) -> int:
        """Where the run of ``joined[i]``'s stream's classification labels from ``i``
        ends, at ``end`` at the latest."""
        streams = joined[i][0]
        e = i + 1
        while e < end:
            nxt = joined[e]
            if nxt[0] is not streams or nxt[1].regression:
                break
            e += 1
        return e

    def _score_quiet(self, st: PerfState, joined: Sequence[_Joined], i: int, e: int) -> None:
        """Labels ``i:e`` of ``joined``, all of classification stream ``st`` alone, none
        of which closes its window, tests its ADWIN or learns: :meth:`score`'s steps with
        the window's and the current bucket's sums on local variables, added in the same
        order (the same floating sums); the evidence and the errors go as one run."""
        bks = st.buckets
        w = st.window
        wn, w_ok, w_err, w_lag = w.n, w.correct, w.err_sum, w.lag_sum
        w_lln, w_ll, w_brier, w_cn, w_conf = w.ll_n, w.ll_sum, w.brier_sum, w.conf_n, w.conf_sum
        w_start, w_end = w.start, w.end
        errs: list[float] = []
        times: list[int] = []
        rights: list[bool] = []
        confs: list[float | None] = []
        b_at = joined[i][4]
        b = bks.get(b_at)
        if b is None:
            b = bks[b_at] = Bucket()
        lab, ok_n, lln, ll_sum, br_sum = b.lab, b.correct, b.ll_n, b.ll_sum, b.brier_sum
        cn, c_sum, c_ok = b.conf_n, b.conf_sum, b.conf_ok
        for k in range(i, e):
            _s, rec, _t, t_pred, b_start, lag_bin, lag_s, correct, yi, err, _q, conf, ll, brier = (
                joined[k]
            )
            if b_start != b_at:
                b.lab, b.correct, b.ll_n, b.ll_sum, b.brier_sum = lab, ok_n, lln, ll_sum, br_sum
                b.conf_n, b.conf_sum, b.conf_ok = cn, c_sum, c_ok
                b_at = b_start
                b = bks.get(b_start)
                if b is None:
                    b = bks[b_start] = Bucket()
                lab, ok_n, lln, ll_sum, br_sum = b.lab, b.correct, b.ll_n, b.ll_sum, b.brier_sum
                cn, c_sum, c_ok = b.conf_n, b.conf_sum, b.conf_ok
            lab += 1
            b.lag[lag_bin] += 1
            wn += 1
            if w_start < 0 or t_pred < w_start:
                w_start = t_pred
            if t_pred > w_end:
                w_end = t_pred
            w_lag += lag_s
            ok = int(correct)
            ok_n += ok
            w_ok += ok
            pi = rec.cls
            if pi < MAX_CLASS_STATS:
                if pi >= len(b.tp):
                    b.class_slot(pi)
                b.pc[pi] += 1
                if correct:
                    b.tp[pi] += 1
            if yi < MAX_CLASS_STATS:
                if yi >= len(b.tp):
                    b.class_slot(yi)
                b.ac[yi] += 1
            if rec.scores_q is not None:
                lln += 1
                ll_sum += ll
                br_sum += brier
                w_lln += 1
                w_ll += ll
                w_brier += brier
            if conf is not None:
                cn += 1
                c_sum += conf
                c_ok += ok
                w_cn += 1
                w_conf += conf
            w_err += err
            rights.append(correct)
            confs.append(conf)
            errs.append(err)
            times.append(t_pred)
        b.lab, b.correct, b.ll_n, b.ll_sum, b.brier_sum = lab, ok_n, lln, ll_sum, br_sum
        b.conf_n, b.conf_sum, b.conf_ok = cn, c_sum, c_ok
        st.labelled += e - i
        w.n, w.correct, w.err_sum, w.lag_sum = wn, w_ok, w_err, w_lag
        w.ll_n, w.ll_sum, w.brier_sum, w.conf_n, w.conf_sum = w_lln, w_ll, w_brier, w_cn, w_conf
        w.start, w.end = w_start, w_end
        add_evidence_run(st, rights, confs)
        self.errors.run(st, errs, times)

    def score(self, item: _Joined) -> None:
        """A joined label's scores in its streams, its own first."""
        (
            streams,
            rec,
            t_label,
            t_pred,
            b_start,
            lag_bin,
            lag_s,
            correct,
            truth,
            err,
            sq,
            conf,
            ll,
            brier,
        ) = item
        j = self.j
        own = streams[0]
        regression, cls, scores_q = rec.regression, rec.cls, rec.scores_q
        ok = int(correct)
        learn = j.learn_labels
        window_labels = j.window_labels
        rules = j.rules
        observe = self.errors.observe
        for st in streams:
            bks = st.buckets
            b = bks.get(b_start)
            if b is None:
                b = bks[b_start] = Bucket()
            b.lab += 1
            b.lag[lag_bin] += 1
            st.labelled += 1
            w = st.window
            w.n += 1
            if w.start < 0 or t_pred < w.start:
                w.start = t_pred
            if t_pred > w.end:
                w.end = t_pred
            w.lag_sum += lag_s
            if regression:
                b.abs_sum += err
                b.sq_sum += sq
                w.sq_sum += sq
            else:
                b.correct += ok
                w.correct += ok
                if st is own:
                    pi, yi = cls, truth
                else:
                    pi = _translate(own, st, cls)
                    yi = _translate(own, st, truth)
                if pi < MAX_CLASS_STATS:
                    if pi >= len(b.tp):
                        b.class_slot(pi)
                    b.pc[pi] += 1
                    if correct:
                        b.tp[pi] += 1
                if yi < MAX_CLASS_STATS:
                    if yi >= len(b.tp):
                        b.class_slot(yi)
                    b.ac[yi] += 1
                if scores_q is not None:
                    b.ll_n += 1
                    b.ll_sum += ll
                    b.brier_sum += brier
                    w.ll_n += 1
                    w.ll_sum += ll
                    w.brier_sum += brier
                if conf is not None:
                    b.conf_n += 1
                    b.conf_sum += conf
                    b.conf_ok += ok
                    w.conf_n += 1
                    w.conf_sum += conf
                add_evidence(st, correct, conf)
            w.err_sum += err
            if st.learn_n < learn:
                st.learn_n += 1
                st.learn_correct += ok
                st.learn_err += err
                if conf is not None:
                    lc = st.learn_conf
                    lc[0] += 1
                    lc[1] += conf
                    lc[2] += ok
                if st.learn_n == learn and st.ref_accuracy is None and not regression:
                    st.ref_accuracy = st.learn_correct / st.learn_n
                    st.ref_rows = st.learn_n
                    st.ref_source = "learned"
            observe(rules, st, rec, err, t_label)
            if w.n >= window_labels:
                rules.close_window(st, t_label)
