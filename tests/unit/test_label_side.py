"""The label side of the join, per batch, against the label-by-label code it replaced.

:class:`~driftline.core.slowloop.scoring.LabelSide` decides each label's outcome and
scores the joined ones in a tight loop (what both streams share computed once a label).
The oracle is the previous code, kept here verbatim (``_PerLabel``: ``resolve``,
``_join``, ``_score`` as they were in ``join.py``), on random batch sequences:
classification with and without scores, regression, segments, duplicates within and
across batches, held, expired, invalid and orphan labels, the learning phase, window
closes and concept-drift alerts mid-batch, ADWIN and river detectors. Every
``JoinResult`` field in order and the whole encoded state must be equal.
"""

from __future__ import annotations

import bisect
import math
import operator
import random
from collections.abc import Mapping
from typing import Any

import pytest

from driftline.config import LabelsSettings
from driftline.contract.columnar import category_value
from driftline.core.slowloop import join
from driftline.core.slowloop.concept import observe_error
from driftline.core.slowloop.diagnosis import DriftIndex, add_evidence
from driftline.core.slowloop.lookups import Found, LookupPlan, MemoryRecords, plan_lookups
from driftline.core.slowloop.pending import (
    FUTURE_TOLERANCE_MS,
    LOG_LOSS_EPS,
    SCORE_SCALE,
    TOMBSTONE,
    PendingPrediction,
    event_ms,
)
from driftline.core.slowloop.perf_state import (
    LAG_EDGES_S,
    MAX_CLASS_STATS,
    OTHER_CLASS,
    HeldLabel,
    PerfState,
    UnitState,
)
from driftline.core.slowloop.scoring import LabelSide
from support import join_snapshot

_SCALE_DIV = float(SCORE_SCALE).__rtruediv__
T0 = 1_767_225_600_000
CLASSES = ["a", "b", "c", "d", "e"]
SEGMENTS = [None, {"region": "eu"}, {"region": "us"}]
MODELS = ("m1", "m2", "m3", "reg")


class _PerLabel(LabelSide):
    """The previous label-by-label code (join.py before the label side moved out)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.j, name)

    def resolve_all(self, labels: Any, plan: LookupPlan, found: Any) -> None:
        for i, lab in enumerate(labels):
            li = plan.label_probe[i]
            self.resolve(i, lab, plan.label_digest[i], found[li] if li >= 0 else None, plan)

    def join(self, *args: Any) -> None:
        self._join(*args)

    def count(self, model: str, outcome: str) -> None:
        self._outcome(model, outcome)

    def resolve(
        self, idx: int, lab: Mapping[str, Any], d: bytes, found: Found, plan: LookupPlan
    ) -> None:
        """Outcome of one label of this batch (joined, duplicate, expired, held...)."""
        model = lab["model_id"]
        mj = self.model(model)
        t = event_ms(lab)
        label = lab["label"]
        if mj.label_watermark < 0 or t <= mj.label_watermark + FUTURE_TOLERANCE_MS:
            if t > mj.label_watermark:
                mj.label_watermark = t
        hit = self.b.recs.get(d)
        if hit is None and found is not None:
            key = plan.keys[found[0]]
            value = found[1]
            rec = None if value == TOMBSTONE else PendingPrediction.decode(value)
            hit = self.b.recs[d] = (key, rec)
        if hit is None:
            self.u.held.append(HeldLabel(model, lab["prediction_id"], label, t))
            self.r.dirty.add("h")
            return
        self._join(idx, model, d, label, t, hit)

    def _held_event(
        self, idx: int, model: str, d: bytes, label: Any, t_label: int
    ) -> dict[str, Any] | None:
        """A held label rebuilt as a label event (its Kafka record is gone), else None."""
        if idx >= 0:
            return None
        pid = next((h.prediction_id for h in self.u.held if h.digest == d), "")
        return {"prediction_id": pid, "model_id": model, "label": label, "timestamp": t_label}

    def _outcome(self, model: str, outcome: str) -> None:
        mj = self.model(model)
        mj.labels[outcome] = mj.labels.get(outcome, 0) + 1
        self.r.count("labels", model, outcome)

    def _join(
        self,
        idx: int,
        model: str,
        d: bytes,
        label: Any,
        t_label: int,
        hit: tuple[str, PendingPrediction | None],
    ) -> None:
        key, rec = hit
        if rec is None:
            self._outcome(model, "duplicate")
            return
        if t_label - rec.time_ms > self.c.horizon_ms(model):
            self._outcome(model, "expired")
            return
        mj = self.u.models[model]
        streams, cal = self.streams_of(mj, rec)
        if rec.regression and type(label) is not float and type(label) is not int:
            reason = f"label {label!r} is not a number; {model} is a regression model"
            self.r.rejected.append((idx, reason, self._held_event(idx, model, d, label, t_label)))
            self._outcome(model, "invalid")
            return
        self._outcome(model, "joined")
        self.b.recs[d] = (key, None)
        if d in self.b.new:
            self.r.puts[key][d] = TOMBSTONE
        else:
            self.r.tombs.setdefault(key, []).append(d)
        lag_s = (t_label - rec.time_ms) / 1000.0
        self.r.lags.append((model, lag_s))
        own = streams[0]
        truth = None if rec.regression else own.class_index(category_value(label) or "")
        top = rec.top
        conf = None if top is None else (top if cal is None else cal.apply(top))
        for st in streams:
            self._score(st, own, rec, label, truth, conf, t_label, lag_s)

    # ------------------------------------------------------------ performance
    def _score(
        self,
        st: PerfState,
        own: PerfState,
        rec: PendingPrediction,
        label: Any,
        truth: int | None,
        conf: float | None,
        t_label: int,
        lag_s: float,
    ) -> None:
        """Score one joined prediction in ``st``.

        ``own`` is the stream the record's class indices refer to (its version and
        segment); ``truth`` the label's index in ``own``'s class table. ``st`` is
        ``own`` or the whole-version stream, whose class table may order classes
        differently: per-class counts are translated by name.
        """
        b = st.bucket(rec.time_ms, self.bucket_ms)
        b.lab += 1
        b.lag[bisect.bisect_left(LAG_EDGES_S, lag_s)] += 1
        st.labelled += 1
        w = st.window
        w.n += 1
        t_pred = rec.time_ms
        if w.start < 0 or t_pred < w.start:
            w.start = t_pred
        if t_pred > w.end:
            w.end = t_pred
        w.lag_sum += lag_s
        correct = False
        if rec.regression:
            e = float(label) - rec.value
            err = abs(e)
            b.abs_sum += err
            b.sq_sum += e * e
            w.sq_sum += e * e
        else:
            assert truth is not None
            correct = rec.cls == truth and truth != OTHER_CLASS
            err = 0.0 if correct else 1.0
            b.correct += int(correct)
            w.correct += int(correct)
            if st is own:
                pi, yi = rec.cls, truth
            else:
                pi = _translate(own, st, rec.cls)
                yi = _translate(own, st, truth)
            if pi < MAX_CLASS_STATS:
                b.class_slot(pi)
                b.pc[pi] += 1
                if correct:
                    b.tp[pi] += 1
            if yi < MAX_CLASS_STATS:
                b.class_slot(yi)
                b.ac[yi] += 1
            if rec.scores_q is not None:
                ps = list(map(_SCALE_DIV, rec.scores_q))
                p_true = ps[truth] if truth < len(ps) else 0.0
                ll = -math.log(max(p_true, LOG_LOSS_EPS))
                brier = sum(map(operator.mul, ps, ps)) - 2 * p_true + 1.0
                b.ll_n += 1
                b.ll_sum += ll
                b.brier_sum += brier
                w.ll_n += 1
                w.ll_sum += ll
                w.brier_sum += brier
            if conf is not None:
                b.conf_n += 1
                b.conf_sum += conf
                b.conf_ok += int(correct)
                w.conf_n += 1
                w.conf_sum += conf
            add_evidence(st, correct, conf)
        w.err_sum += err
        learn = self.learn_labels
        if st.learn_n < learn:
            st.learn_n += 1
            st.learn_correct += int(correct)
            st.learn_err += err
            if conf is not None:
                lc = st.learn_conf
                lc[0] += 1
                lc[1] += conf
                lc[2] += int(correct)
            if st.learn_n == learn and st.ref_accuracy is None and not rec.regression:
                st.ref_accuracy = st.learn_correct / st.learn_n
                st.ref_rows = st.learn_n
                st.ref_source = "learned"
        observe_error(self.rules, st, rec, err, t_label)
        if w.n >= self.window_labels:
            self.rules.close_window(st, t_label)


def _translate(src: PerfState, dst: PerfState, i: int) -> int:
    """Index in ``dst``'s class table of class ``i`` of ``src``'s."""
    if i == OTHER_CLASS or i >= len(src.classes):
        return OTHER_CLASS
    return dst.class_index(src.classes[i])


def _sequence(seed: int) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Random batches. Each model's labels are right 90% of the time in the first half
    of the sequence and 35% after (concept drift mid-sequence); some labels come before
    their prediction (held, then joined or orphaned), twice (duplicates, some in the
    same batch), too late (expired), or are not numbers for the regression model."""
    rng = random.Random(seed)
    n_batches = rng.randrange(6, 14)
    clock = dict.fromkeys(MODELS, T0)
    preds_of: list[list[dict[str, Any]]] = []
    for b in range(n_batches):
        preds = []
        m, v, seg = "m1", "1", None
        for k in range(rng.randrange(0, 400)):
            if k == 0 or rng.random() < 0.1:
                m = rng.choice(MODELS)
                v, seg = rng.choice(["1", "2"]), rng.choice(SEGMENTS)
            clock[m] += rng.randrange(0, 20_000)
            e: dict[str, Any] = {
                "prediction_id": f"p{b}-{k}",
                "model_id": m,
                "model_version": v,
                "timestamp": clock[m],
            }
            if seg is not None:
                e["segment"] = dict(seg)
            if m == "reg":
                e["prediction"] = rng.random() * 10
            else:
                e["prediction"] = rng.choice(CLASSES)
                if rng.random() < 0.7:
                    names = rng.sample(CLASSES, rng.randrange(1, 6))
                    e["scores"] = {c: rng.choice([rng.random(), 0.0, 1.0]) for c in names}
            preds.append(e)
        preds_of.append(preds)
    out = []
    for b, preds in enumerate(preds_of):
        right = 0.9 if b < n_batches // 2 else 0.35
        pool = [p for q in preds_of[max(0, b - 2) : b + 1] for p in q]
        later = preds_of[b + 1] if b + 1 < n_batches else []
        labels = []
        for _ in range(rng.randrange(0, 500) if pool else 0):
            r = rng.random()
            p = rng.choice(later) if later and r < 0.05 else rng.choice(pool)
            lag = rng.randrange(1_000, 3_600_000)
            if r > 0.97:
                lag += 30 * 3_600_000  # past the horizon: expired
            label: Any
            if p["model_id"] == "reg":
                label = p["prediction"] + rng.gauss(0, 1 if right > 0.5 else 4)
                if rng.random() < 0.03:
                    label = "high"  # invalid
            elif rng.random() < right:
                label = p["prediction"]
            else:
                label = rng.choice(CLASSES)
            lab = {
                "prediction_id": p["prediction_id"],
                "model_id": p["model_id"],
                "label": label,
                "timestamp": p["timestamp"] + lag,
            }
            if r < 0.01:
                lab["prediction_id"] = f"never-{b}"  # held, then an orphan
            labels.append(lab)
            if rng.random() < 0.03:
                labels.append(dict(lab))  # a duplicate in the same batch
        out.append((preds, labels))
    return out


def _settings(seed: int) -> LabelsSettings:
    detectors = [{}, {"m2": "ddm"}, {"m2": "eddm", "m3": "hddm_a"}, {"reg": "ddm"}]
    return LabelsSettings(
        window_labels=20 + 7 * (seed % 3),
        learn_reference_labels=(30, 100, 1000)[seed % 3],
        horizon_seconds=24 * 3600,
        grace_seconds=600,
        model_concept_detectors=detectors[seed % len(detectors)],
    )


def _drift() -> DriftIndex:
    drift = DriftIndex()
    drift.observe(
        {
            "kind": "input_drift",
            "status": "firing",
            "model_id": "m1",
            "model_version": "1",
            "segment": None,
            "episode": 1,
            "window": {"start": T0 + 3_600_000, "end": T0 + 7_200_000},
            "detected_at": T0 + 7_200_000,
        }
    )
    return drift


def _one_stream(seed: int) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Long batches of one classification stream (model m1, version 1, no segment): its
    labels mostly in prediction order (long runs in one bucket, then the next), right
    90% of the time, then 40% (ADWIN detects, the alert fires mid-batch), windows
    closing mid-batch; some predictions without scores, some labels duplicated."""
    rng = random.Random(1000 + seed)
    t = T0
    out = []
    n_batches = rng.randrange(4, 8)
    for b in range(n_batches):
        preds = []
        for k in range(rng.randrange(500, 1500)):
            t += rng.randrange(0, 2_000)
            cls = rng.choice(CLASSES[:3])
            e: dict[str, Any] = {
                "prediction_id": f"p{b}-{k}",
                "model_id": "m1",
                "model_version": "1",
                "timestamp": t,
                "prediction": cls,
            }
            if rng.random() < 0.9:
                e["scores"] = {c: rng.random() for c in CLASSES[:3]}
            preds.append(e)
        right = 0.9 if b < n_batches // 2 else 0.4
        labels = []
        for p in preds:
            label = p["prediction"] if rng.random() < right else rng.choice(CLASSES[:3])
            lab = {**{k: p[k] for k in ("prediction_id", "model_id")}, "label": label}
            lab["timestamp"] = p["timestamp"] + rng.randrange(1_000, 60_000)
            labels.append(lab)
            if rng.random() < 0.01:
                labels.append(dict(lab))
        out.append((preds, labels))
    return out


def _run(seed: int, sequence: Any = _sequence) -> list[Any]:
    settings = _settings(seed)
    unit, mem, drift = UnitState(), MemoryRecords(), _drift()
    seen = []
    for preds, labels in sequence(seed):
        plan = plan_lookups(preds, labels, unit, settings)
        res = join.join_batch(
            preds, labels, plan, mem.lookup(plan), unit, lambda m, v: None, drift, settings
        )
        mem.apply(res)
        seen += join_snapshot(res, unit)
    return seen


@pytest.mark.parametrize("seed", range(32))
def test_label_side_equals_label_by_label(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _run(seed)
    monkeypatch.setattr(join, "LabelSide", _PerLabel)
    assert _run(seed) == runs


@pytest.mark.parametrize("seed", range(6))
def test_one_stream_runs_equal_label_by_label(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long runs of one stream's labels (scored between events on local variables)
    across window closes, ADWIN's tests and detections, within one batch."""
    quiet: list[int] = []
    score_quiet = LabelSide._score_quiet

    def counted(self: LabelSide, st: PerfState, joined: Any, i: int, e: int) -> None:
        quiet.append(e - i)
        score_quiet(self, st, joined, i, e)

    monkeypatch.setattr(LabelSide, "_score_quiet", counted)
    runs = _run(seed, _one_stream)
    assert max(quiet) >= 15 and sum(quiet) > 2000  # the runs were taken
    alerts = "".join(r for batch in runs[0::4] for f, r in batch if f == "alerts")
    assert "kind='concept_drift'" in alerts and "kind='performance'" in alerts
    monkeypatch.setattr(join, "LabelSide", _PerLabel)
    assert _run(seed, _one_stream) == runs


def test_the_sequences_reach_every_case() -> None:
    """The oracle's sequences join, hold, expire, refuse and orphan labels, close
    windows and fire concept-drift alerts from ADWIN and river detectors."""
    outcomes: set[str] = set()
    detectors: set[str] = set()
    points = 0
    for seed in range(32):
        settings = _settings(seed)
        unit, mem, drift = UnitState(), MemoryRecords(), _drift()
        for preds, labels in _sequence(seed):
            plan = plan_lookups(preds, labels, unit, settings)
            res = join.join_batch(
                preds, labels, plan, mem.lookup(plan), unit, lambda m, v: None, drift, settings
            )
            mem.apply(res)
            outcomes |= {o for (_, o) in res.labels}
            detectors |= {a.detector for a in res.alerts if a.kind == "concept_drift"}
            points += sum(map(len, res.points.values()))
    assert outcomes == {"joined", "duplicate", "expired", "invalid", "orphan"}
    assert {"adwin", "ddm"} <= detectors
    assert points > 1000


def test_a_label_naming_a_binary_class_the_other_way_is_that_class() -> None:
    """The label side's class of a label: ``true`` for a model predicting ``1``, ``1``
    or ``1.0`` for one predicting ``true``, ``1.0`` (an SDK sending a float) for ``1``;
    a name with no such counterpart among the predictions' classes is a class of its
    own, as before."""
    from driftline.core.slowloop.perf_state import PerfState

    ints = PerfState("m", "1")
    zero, one = ints.class_index("0"), ints.class_index("1")
    assert [ints.label_index(v) for v in ("true", "false", "1.0", "0.0", "1")] == [
        one,
        zero,
        one,
        zero,
        one,
    ]
    bools = PerfState("m", "1")
    no, yes = bools.class_index("false"), bools.class_index("true")
    assert [bools.label_index(v) for v in ("1", "0", "1.0", "0.0")] == [yes, no, yes, no]
    names = PerfState("m", "1")
    names.class_index("churn")
    assert names.label_index("true") == 1 and names.classes == ["churn", "true"]
