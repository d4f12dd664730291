"""The slow loop's pure core: records, calibration, the join, performance, alerts, reports.

Pending predictions live in :class:`MemoryRecords` here (a dict with the Redis script's
semantics); the integration tests run the same core against redis-server.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import LabelsSettings
from driftline.core.calibration import Calibration, fit_calibration
from driftline.core.reference import build_reference
from driftline.core.slowloop import (
    TOMBSTONE,
    DriftIndex,
    JoinResult,
    MemoryRecords,
    PendingPrediction,
    PerfState,
    UnitState,
    build_report,
    format_report,
    join_batch,
    labels_backpressure,
    plan_lookups,
    stream_key,
)
from driftline.demo.sea import SeaScenario, interleave
from driftline.errors import StateCorrupt

T0 = 1_767_225_600_000


class Loop:
    """The core driven like the worker drives it, with records in memory."""

    def __init__(self, settings: LabelsSettings | None = None, refs: Any = None) -> None:
        self.s = settings or LabelsSettings()
        self.unit = UnitState()
        self.mem = MemoryRecords()
        self.drift = DriftIndex()
        self.refs = refs or {}
        self.results: list[JoinResult] = []

    def batch(self, preds: list[dict[str, Any]], labels: list[dict[str, Any]]) -> JoinResult:
        plan = plan_lookups(preds, labels, self.unit, self.s)
        found = self.mem.lookup(plan)
        res = join_batch(
            preds,
            labels,
            plan,
            found,
            self.unit,
            lambda m, v: self.refs.get((m, v)),
            self.drift,
            self.s,
        )
        self.mem.apply(res)
        self.results.append(res)
        return res

    def feed(self, stream: list[tuple[str, dict[str, Any]]], size: int) -> None:
        for i in range(0, len(stream), size):
            chunk = stream[i : i + size]
            self.batch([e for k, e in chunk if k == "p"], [e for k, e in chunk if k == "l"])

    @property
    def alerts(self) -> list[Any]:
        return [a for r in self.results for a in r.alerts]

    def counts(self, model: str) -> dict[str, int]:
        return dict(self.unit.models[model].labels)

    def st(self, model: str, version: str = "1", segment: str = "") -> Any:
        return self.unit.perf[stream_key(model, version, segment)]


def pred(i: int, model: str = "m", version: str = "1", **kw: Any) -> dict[str, Any]:
    e = {
        "prediction_id": f"p{i}",
        "model_id": model,
        "model_version": version,
        "timestamp": T0 + i * 10,
        "features": {"x": 1.0},
        "prediction": kw.pop("prediction", "a"),
        "scores": kw.pop("scores", {"a": 0.8, "b": 0.2}),
    }
    e.update(kw)
    return e


def label(i: int, value: Any = "a", model: str = "m", delay_ms: int = 1000) -> dict[str, Any]:
    return {
        "prediction_id": f"p{i}",
        "model_id": model,
        "label": value,
        "timestamp": T0 + i * 10 + delay_ms,
    }


@pytest.fixture(scope="module")
def sea_ref() -> Any:
    sc = SeaScenario()
    return build_reference(sc.training_data(5000), "sea", "1", seed=0, created_at=0)


# ------------------------------------------------------------------ records


def test_pending_prediction_round_trips_and_is_compact():
    three = PendingPrediction(7, T0, cls=2, top_q=40000, scores_q=(10000, 15535, 40000))
    assert PendingPrediction.decode(three.encode()) == three
    # version 2: 6-byte time, the top score implied by the vector (22 bytes in version 1)
    assert len(three.encode()) == 17
    reg = PendingPrediction(1, T0, regression=True, value=-3.25)
    assert PendingPrediction.decode(reg.encode()) == reg and len(reg.encode()) == 17
    bare = PendingPrediction(0, 0, cls=1)
    assert PendingPrediction.decode(bare.encode()) == bare and len(bare.encode()) == 11
    top_only = PendingPrediction(0, T0, cls=40, top_q=30000)
    assert PendingPrediction.decode(top_only.encode()) == top_only
    for bad in (b"", TOMBSTONE, three.encode()[:-1], three.encode() + b"x", b"\x30" + bytes(20)):
        with pytest.raises(StateCorrupt):
            PendingPrediction.decode(bad)
    with pytest.raises(StateCorrupt, match="unknown record version 3"):
        PendingPrediction.decode(b"\x30" + bytes(20))


def _v1_record(p: PendingPrediction) -> bytes:
    """The version 1 layout, written independently of the module (docs/slow-loop.md)."""
    if p.regression:
        return struct.pack("<BHqd", 0x11, p.stream, p.time_ms, p.value)
    flags = 0x10 | (0x02 if p.top_q is not None else 0) | (0x04 if p.scores_q is not None else 0)
    out = struct.pack("<BHqH", flags, p.stream, p.time_ms, p.cls)
    if p.top_q is not None:
        out += struct.pack("<H", p.top_q)
    if p.scores_q is not None:
        out += struct.pack(f"<B{len(p.scores_q)}H", len(p.scores_q), *p.scores_q)
    return out


def test_pending_prediction_round_trips_any_record_and_reads_version_1():
    rng = np.random.default_rng(5)
    cases = [
        PendingPrediction(0, -(2**47), cls=0),  # the narrow time's ends
        PendingPrediction(0, 2**47 - 1, cls=0),
        PendingPrediction(0, 2**47, cls=3, top_q=9, scores_q=(9, 1)),  # wide time
        PendingPrediction(0, -(2**62), regression=True, value=math.inf),
        PendingPrediction(2, T0, cls=1, top_q=7, scores_q=(8, 9)),  # top not the largest
        PendingPrediction(2, T0, cls=1, top_q=7, scores_q=()),
    ]
    for _ in range(300):
        n = int(rng.integers(1, 17))
        scores = tuple(int(x) for x in rng.integers(0, 65536, n))
        kind = int(rng.integers(0, 4))
        t = int(rng.integers(-(2**50), 2**50)) if kind == 0 else T0 + int(rng.integers(0, 10**9))
        if kind == 1:
            stream = int(rng.integers(0, 65536))
            cases.append(PendingPrediction(stream, t, True, float(rng.normal())))
        elif kind == 2:
            cases.append(PendingPrediction(1, t, cls=int(rng.integers(0, 99)), top_q=max(scores)))
        else:
            cases.append(PendingPrediction(1, t, cls=0, top_q=max(scores), scores_q=scores))
    for p in cases:
        assert PendingPrediction.decode(p.encode()) == p
        assert PendingPrediction.decode(_v1_record(p)) == p
        narrow = -(2**47) <= p.time_ms < 2**47
        assert p.encode()[0] >> 4 == 2
        assert len(p.encode()) <= len(_v1_record(p)) - (2 if narrow else 0)
    with pytest.raises(ValueError, match="top score"):
        PendingPrediction(0, T0, scores_q=(1, 2)).encode()


def test_stored_scores_are_the_quantised_scores_in_class_order():
    """Any key order, classes left out, scores outside [0, 1]: each stored record holds
    the rounded, clamped score of each class in class-index order, and the largest as
    its top score (the oracle: the formula applied score by score)."""
    rng = np.random.default_rng(9)
    names = ["a", "b", "c", "d"]
    preds = []
    for i in range(400):
        keys = [str(k) for k in rng.permutation(names)[: rng.integers(1, 5)]]
        scores = {k: float(rng.uniform(-0.2, 1.2)) for k in keys}
        preds.append(pred(i, prediction=str(rng.choice(names)), scores=scores))
    loop = Loop()
    res = loop.batch(preds, [])
    table = loop.st("m").classes
    stored = {d: PendingPrediction.decode(v) for f in res.puts.values() for d, v in f.items()}
    plan = plan_lookups(preds, [], UnitState(), loop.s)
    for e, d in zip(preds, plan.pred_digest, strict=True):
        rec = stored[d]

        def q(x: float) -> int:
            return min(65535, max(0, int(round(x * 65535))))

        by_class = {table.index(k): q(v) for k, v in e["scores"].items()}
        assert rec.top_q == max(by_class.values())
        assert rec.scores_q == tuple(by_class.get(i, 0) for i in range(max(by_class) + 1))
        assert table[rec.cls] == e["prediction"]


# ------------------------------------------------------------------ calibration


def test_isotonic_calibration_is_monotone_and_matches_accuracy():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.5, 1.0, 20_000)
    ok = rng.random(s.size) < 0.5 + 0.8 * (s - 0.5) ** 2 * 2  # over-confident model
    cal = fit_calibration(s.tolist(), ok.tolist())
    assert cal is not None
    assert all(a <= b for a, b in zip(cal.values, cal.values[1:], strict=False))
    est = np.mean([cal.apply(x) for x in s])
    assert abs(est - ok.mean()) < 0.005
    assert abs(s.mean() - ok.mean()) > 0.05  # raw scores would be far off
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert fit_calibration([0.9] * 10, [True] * 10) is None


def test_reference_built_from_labelled_data_carries_accuracy_and_calibration(sea_ref):
    out = sea_ref.outputs
    assert out.accuracy is not None and 0.93 < out.accuracy < 0.97
    cal = Calibration.from_dict(out.calibration)
    # SEA's rule is the model's: it is right ~95% whatever its score says.
    assert all(0.9 < v < 1.0 for v in cal.values)
    # ... and references without labels are unchanged (no calibration key, same id scheme)
    plain = build_reference(SeaScenario().training_data(500), "sea", "1", created_at=0)
    plain_no_labels = build_reference(
        type(SeaScenario().training_data(10))(
            features=[{"x0": 1.0}] * 100, predictions=["pos"] * 100
        ),
        "sea",
        "1",
        created_at=0,
    )
    assert plain.outputs.calibration is not None
    assert "calibration" not in plain_no_labels.outputs.to_dict()


# ------------------------------------------------------------------ outcomes


def test_every_label_gets_exactly_one_outcome():
    s = LabelsSettings(horizon_seconds=5.0, grace_seconds=2.0, window_labels=20)
    loop = Loop(s)
    preds = [pred(i) for i in range(100)]
    # 0-59 joined (1 s late); 60-69 again (duplicates); 70-79 after the horizon (expired)
    labels = [label(i) for i in range(60)]
    labels += [label(i, delay_ms=2000) for i in range(60, 70)]
    dup = [label(i, delay_ms=3000) for i in range(60, 70)]
    late = [label(i, delay_ms=6000) for i in range(70, 80)]
    orphans = [
        {"prediction_id": f"ghost{i}", "model_id": "m", "label": "a", "timestamp": T0 - 1200 + i}
        for i in range(5)
    ]
    loop.batch(preds[:50], labels[:20] + orphans)
    assert len(loop.unit.held) == 5  # the ghosts wait for their prediction
    loop.batch(preds[50:] + [preds[3]], labels[20:] + dup[:5])  # a repeated prediction
    loop.batch([], dup[5:] + late + labels[:2])
    assert loop.counts("m") == {"joined": 70, "duplicate": 12, "expired": 10, "orphan": 5}
    assert loop.unit.held == []
    assert loop.unit.models["m"].predictions == {"stored": 100, "duplicate": 1}
    assert loop.mem.pending() == 30  # predictions 70-99: never joined
    assert loop.st("m").labelled == 70


def test_predictions_read_far_ahead_of_their_labels_still_join():
    s = LabelsSettings(horizon_seconds=3.0, grace_seconds=1.0)
    loop = Loop(s)
    loop.batch([pred(i) for i in range(3000)], [])  # 30 s of predictions first
    loop.batch([], [label(i, delay_ms=2000) for i in range(0, 3000, 7)])
    assert loop.counts("m") == {"joined": len(range(0, 3000, 7))}


def test_labels_before_their_prediction_are_held_then_joined():
    s = LabelsSettings(grace_seconds=2.0)
    loop = Loop(s)
    loop.batch([], [label(i) for i in range(10)])
    assert len(loop.unit.held) == 10 and loop.counts("m") == {}
    loop.batch([pred(i) for i in range(6)], [label(3)])  # label 3 again: a duplicate
    assert loop.counts("m") == {"joined": 6, "duplicate": 1}
    assert len(loop.unit.held) == 4
    # Predictions keep coming; held labels 6..9 still join when theirs arrive.
    loop.batch([pred(i) for i in range(6, 10)], [])
    assert loop.counts("m") == {"joined": 10, "duplicate": 1}
    # A label whose prediction never comes: orphan once predictions are 2 s past it.
    loop.batch([], [label(505)])
    loop.batch([pred(i) for i in range(10, 900, 10)], [])
    assert loop.counts("m")["orphan"] == 1 and loop.unit.held == []


def test_held_labels_over_the_limit_wait_and_pause_the_labels_instead_of_orphaning():
    # Issue 13: a full buffer no longer turns the oldest labels into orphans; the worker
    # stops reading labels (backpressure) until half as many are held.
    s = LabelsSettings(max_held_labels=4, grace_seconds=2.0)
    loop = Loop(s)
    loop.batch([pred(0)], [label(i) for i in range(1, 8)])
    assert len(loop.unit.held) == 7 and loop.counts("m") == {}
    assert labels_backpressure(loop.unit, s, paused=False)
    loop.batch([pred(i) for i in range(1, 4)], [])
    assert len(loop.unit.held) == 4 and labels_backpressure(loop.unit, s, paused=True)
    loop.batch([pred(i) for i in range(4, 6)], [])
    assert len(loop.unit.held) == 2 and not labels_backpressure(loop.unit, s, paused=True)
    # Orphans only once the model's predictions are grace_seconds past the label (event
    # time): p6 and p7 never come.
    loop.batch([pred(i) for i in range(10, 210, 10)], [])
    assert loop.counts("m") == {"joined": 5} and len(loop.unit.held) == 2
    loop.batch([pred(i) for i in range(210, 400, 10)], [])
    assert loop.counts("m") == {"joined": 5, "orphan": 2} and loop.unit.held == []


def test_non_numeric_label_of_a_regression_model_is_rejected():
    loop = Loop()
    loop.batch([pred(0, prediction=2.5, scores=None), pred(1, prediction=1.0, scores=None)], [])
    res = loop.batch([], [label(0, "high"), label(1, 3.0)])
    assert [(i, "regression" in r) for i, r, _ in res.rejected] == [(0, True)]
    assert loop.counts("m") == {"invalid": 1, "joined": 1}
    assert loop.st("m").task == "regression"


def test_prediction_and_label_in_one_batch_join_in_memory():
    loop = Loop()
    res = loop.batch([pred(0), pred(1)], [label(0), label(0), label(1, "b")])
    assert loop.counts("m") == {"joined": 2, "duplicate": 1}
    # The records were written already joined: no tombstone pass needed.
    assert res.tombs == {} and all(v == TOMBSTONE for h in res.puts.values() for v in h.values())


# ------------------------------------------------------------------ metrics


def test_accuracy_per_class_log_loss_brier_lag_and_coverage_are_exact():
    loop = Loop(LabelsSettings(bucket_seconds=3600))
    preds = [
        pred(0, prediction="a", scores={"a": 0.8, "b": 0.2}),
        pred(1, prediction="a", scores={"a": 0.6, "b": 0.4}),
        pred(2, prediction="b", scores={"a": 0.3, "b": 0.7}),
        pred(3, prediction="b", scores={"a": 0.1, "b": 0.9}),
        pred(4, prediction="a", scores={"a": 0.9, "b": 0.1}),  # never labelled
    ]
    labels = [label(0, "a", delay_ms=5000), label(1, "b"), label(2, "b"), label(3, "a")]
    loop.batch(preds, labels)
    rep = build_report(loop.unit.perf.values())["m"]["versions"]["1"]
    assert rep["labelled"] == 4 and rep["predicted"] == 5 and rep["coverage"] == 0.8
    assert rep["accuracy"] == 0.5
    ll = -(math.log(0.8) + math.log(0.4) + math.log(0.7) + math.log(0.1)) / 4
    assert rep["log_loss"] == pytest.approx(ll, abs=1e-4)
    brier = ((0.2**2 * 2) + (0.6**2 * 2) + (0.3**2 * 2) + (0.9**2 * 2)) / 4
    assert rep["brier"] == pytest.approx(brier, abs=1e-4)
    assert rep["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert rep["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert rep["lag_p50_s"] == 1.0 and rep["lag_p90_s"] == 5.0
    text = format_report(build_report(loop.unit.perf.values()))
    assert "model m" in text and "class a" in text
    first, last = rep["period"]  # the event-time buckets summed, said in the text
    assert first <= pred(0)["timestamp"] <= pred(4)["timestamp"] < last + 3_600_000
    assert "predictions of 20" in text and "event-time buckets kept)" in text
    # the lag quantiles are their histogram bucket's upper edge: read as "at most"
    assert "<=1 s/<=5 s" in text


def test_the_period_of_labels_in_one_minute_reads_as_a_span_not_one_minute_twice() -> None:
    """Every prediction in one event-time bucket printed 'predictions of 2026-.. 17:00Z
    to 2026-.. 17:00Z': two equal times that say nothing. Now the span ends at the latest
    prediction, to the seconds when the minutes would be equal, and the JSON carries it."""
    loop = Loop(LabelsSettings(bucket_seconds=3600))
    preds = [pred(i, timestamp=T0 + 12_000 + i * 1000) for i in range(5)]
    loop.batch(preds, [label(i) for i in range(5)])
    rep = build_report(loop.unit.perf.values())["m"]["versions"]["1"]
    assert rep["latest_prediction"] == T0 + 16_000
    start = datetime.fromtimestamp(rep["period"][0] / 1000, UTC)
    text = format_report(build_report(loop.unit.perf.values()))
    assert start.strftime("%H:%MZ") == "00:00Z"  # as the minutes alone read both ends
    span = f"{start.strftime('%Y-%m-%d')} 00:00:00Z to 00:00:16Z (the latest; event-time"
    assert f"predictions of {span} buckets kept)" in text
    # every prediction in the bucket's first second
    loop = Loop(LabelsSettings(bucket_seconds=3600))
    loop.batch([pred(i) for i in range(5)], [label(i) for i in range(5)])
    text = format_report(build_report(loop.unit.perf.values()))
    assert f"{start.strftime('%Y-%m-%d')} 00:00:00Z (all in that second;" in text
    # a span of hours stays in minutes
    loop = Loop(LabelsSettings(bucket_seconds=3600))
    loop.batch([pred(0), pred(720_000 + 6)], [label(0), label(720_000 + 6)])
    text = format_report(build_report(loop.unit.perf.values()))
    a = datetime.fromtimestamp(T0 // 3_600_000 * 3600, UTC).strftime("%Y-%m-%d %H:%MZ")
    b = datetime.fromtimestamp(pred(720_006)["timestamp"] / 1000, UTC)
    assert f"predictions of {a} to {b.strftime('%H:%MZ')} (the latest;" in text


def test_label_lags_read_as_at_most_a_round_duration() -> None:
    from driftline.core.slowloop.report import _lag

    assert [_lag(s) for s in (1.0, 30.0, 300.0, 3600.0, 43_200.0, 259_200.0)] == [
        "<=1 s", "<=30 s", "<=5 min", "<=1 h", "<=12 h", "<=3 d"
    ]  # fmt: skip
    assert _lag(math.inf) == ">7 d" and _lag(None) == "-"


def test_regression_mae_and_rmse():
    loop = Loop()
    loop.batch([pred(i, prediction=float(i), scores=None) for i in range(4)], [])
    loop.batch([], [label(0, 1.0), label(1, 1.0), label(2, 5.0), label(3, 3)])
    rep = build_report(loop.unit.perf.values())["m"]["versions"]["1"]
    assert rep["mae"] == pytest.approx((1 + 0 + 3 + 0) / 4)
    assert rep["rmse"] == pytest.approx(math.sqrt((1 + 0 + 9 + 0) / 4))


def test_segments_and_the_whole_version_are_tracked_side_by_side():
    loop = Loop()
    loop.batch(
        [pred(i, segment={"region": "eu" if i % 2 else "us"}) for i in range(10)],
        [label(i, "a" if i < 6 else "b") for i in range(10)],
    )
    whole, eu = loop.st("m"), loop.st("m", segment="region=eu")
    assert whole.labelled == 10 and eu.labelled == 5
    rep = build_report(loop.unit.perf.values())["m"]["versions"]["1"]
    assert rep["accuracy"] == 0.6 and rep["segments"]["region=eu"]["accuracy"] == 0.6


def test_champion_and_challenger_are_compared_on_the_same_buckets():
    loop = Loop(LabelsSettings(bucket_seconds=1.0))
    # v1 (champion, more traffic) is right 3 times in 4; v2 always, but only from t >= 1 s.
    preds = [pred(i, version="1") for i in range(200)]
    preds += [pred(i, version="2", prediction_id=f"q{i}") for i in range(100, 200)]
    labs = [label(i, "a" if i % 4 else "b") for i in range(200)]
    labs += [dict(label(i), prediction_id=f"q{i}") for i in range(100, 200)]
    loop.batch(preds, labs)
    rep = build_report(loop.unit.perf.values())["m"]
    assert rep["champion"] == "1"
    (row,) = rep["comparisons"]
    assert row["challenger"] == "2" and row["buckets"] == 1
    assert row["champion"]["labelled"] == 100 and row["challenger_metrics"]["accuracy"] == 1.0
    assert row["accuracy_diff"] == 0.25 and row["p_value"] < 0.001
    assert "champion 1 vs challengers" in format_report(build_report(loop.unit.perf.values()))


# ------------------------------------------------------------------ concept drift


def sea_stream(n: int, **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    preds, labels = SeaScenario(model_id="sea").events(n, **kw)
    return interleave(preds, labels)


def test_concept_switch_fires_concept_drift_soon_after_and_never_before(sea_ref):
    loop = Loop(refs={("sea", "1"): sea_ref})
    loop.feed(sea_stream(10_000, concept_at=5000), 700)
    firing = [a for a in loop.alerts if a.status == "firing"]
    kinds = [a.kind for a in firing]
    assert "concept_drift" in kinds and "performance" in kinds
    for a in firing:
        at = (a.window.end - T0) // 10
        assert 5000 <= at <= 5600, (a.kind, at)
        assert a.diagnosis == "concept_drift"
    st = loop.st("sea")
    assert st.current_diagnosis() == "concept_drift" and st.ref_source == "reference"
    diags = [r.diagnoses for r in loop.results if r.diagnoses]
    assert diags and diags[-1][("sea", "1")] == "concept_drift"


def test_stationary_stream_raises_nothing(sea_ref):
    loop = Loop(refs={("sea", "1"): sea_ref})
    loop.feed(sea_stream(12_000), 1000)
    assert loop.alerts == []


def test_batch_boundaries_and_state_round_trips_do_not_change_results(sea_ref):
    stream = sea_stream(6000, concept_at=3000)
    ref = {("sea", "1"): sea_ref}
    a = Loop(refs=ref)
    a.feed(stream, 5000)
    b = Loop(refs=ref)
    for i in range(0, len(stream), 333):
        b.feed(stream[i : i + 333], 333)
        b.unit = UnitState.from_fields(b.unit.to_fields())  # a restart between batches
    assert [x.alert_id for x in a.alerts] == [x.alert_id for x in b.alerts] != []
    assert a.unit.to_fields().keys() == b.unit.to_fields().keys()
    sa, sb = a.st("sea"), b.st("sea")
    assert (sa.labelled, sa.predicted, sa.window.n) == (sb.labelled, sb.predicted, sb.window.n)
    assert a.counts("sea") == b.counts("sea") == {"joined": 6000}
    assert a.mem.data == b.mem.data


def _input_drift(episode: int, start: int, end: int) -> dict[str, Any]:
    return {
        "kind": "input_drift",
        "status": "firing",
        "model_id": "sea",
        "model_version": "1",
        "episode": episode,
        "window": {"start": T0 + start * 10, "end": T0 + end * 10},
        "detected_at": T0 + end * 10,
    }


def test_a_concept_switch_during_input_drift_is_still_concept_drift(sea_ref):
    # Issue 13: overlap with an input-drift episode used to make any drop a "harmful
    # covariate shift". The estimate on the same predictions does not move, so the
    # drop is unexplained: concept drift.
    loop = Loop(refs={("sea", "1"): sea_ref})
    loop.drift.observe(_input_drift(1, 4800, 5000))
    loop.feed(sea_stream(8000, concept_at=5000, covariate_at=5000), 1000)
    firing = [a for a in loop.alerts if a.status == "firing"]
    assert firing and {a.diagnosis for a in firing} == {"concept_drift"}
    assert loop.st("sea").current_diagnosis() == "concept_drift"


@pytest.mark.parametrize("alert_read", ["before", "after"])
def test_a_drop_the_estimate_explains_is_a_harmful_covariate_shift(alert_read):
    # A model that is wrong, unsure, just above SEA's boundary; its inputs are pulled
    # to where it is unsure: accuracy and the calibrated estimate fall together. The
    # monitor's alert read before the labels or only after them: the same verdict.
    sc = SeaScenario(model_id="sea", model_threshold=8.6)
    ref = build_reference(sc.training_data(5000), "sea", "1", seed=0, created_at=0)
    loop = Loop(LabelsSettings(bucket_seconds=5.0), refs={("sea", "1"): ref})
    alert = _input_drift(1, 5000, 5500)
    if alert_read == "before":
        loop.drift.observe(alert)
    preds, labels = sc.events(9000, squeeze_at=5000)
    loop.feed(interleave(preds, labels), 1000)
    if alert_read == "after":
        loop.drift.observe(alert)
        loop.batch([], [])  # the worker's pass when the alert topic brings news
    firing = [a for a in loop.alerts if a.status == "firing"]
    assert firing and {a.diagnosis for a in firing} == {"covariate_shift_harmful"}
    st = loop.st("sea")
    assert st.drift_diag == {"#1": "covariate_shift_harmful"}
    assert st.current_diagnosis() == "covariate_shift_harmful"


def test_input_drift_with_stable_accuracy_is_benign(sea_ref):
    loop = Loop(refs={("sea", "1"): sea_ref})
    loop.drift.observe(
        {
            "kind": "input_drift",
            "status": "firing",
            "model_id": "sea",
            "model_version": "1",
            "episode": 3,
            "window": {"start": T0 + 3000 * 10, "end": T0 + 3200 * 10},
            "detected_at": T0 + 3200 * 10,
        }
    )
    loop.feed(sea_stream(8000, covariate_at=3000), 1000)
    assert loop.alerts == []
    st = loop.st("sea")
    assert st.drift_diag == {"#3": "input_drift_benign"}
    assert st.current_diagnosis() == "input_drift_benign"
    rep = build_report(loop.unit.perf.values())
    assert rep["sea"]["versions"]["1"]["input_drift"] == {"#3": "input_drift_benign"}
    assert "input drift episode #3: input_drift_benign" in format_report(rep)


def test_reference_accuracy_is_learned_without_a_reference():
    loop = Loop(LabelsSettings(learn_reference_labels=500))
    loop.feed(sea_stream(9000, concept_at=5000), 1000)
    st = loop.st("sea")
    assert st.ref_source == "learned" and 0.92 < (st.ref_accuracy or 0) < 0.98
    assert {a.kind for a in loop.alerts if a.status == "firing"} == {
        "concept_drift",
        "performance",
    }


def test_calibrated_estimate_tracks_accuracy_until_the_concept_changes(sea_ref):
    loop = Loop(refs={("sea", "1"): sea_ref})
    loop.feed(sea_stream(10_000, concept_at=5000), 1000)
    windows = [o for r in loop.results for o in r.observations if o.metric == "estimation_error"]
    before, after = windows[:10], windows[-5:]
    assert max(abs(o.value) for o in before) < 0.05
    assert min(o.value for o in after) > 0.08  # scores cannot see a concept change
    # The calibration learnt on the reference beats the raw top score.
    raw, cal = Loop(), Loop(refs={("sea", "1"): sea_ref})
    raw.feed(sea_stream(4000), 1000)
    cal.feed(sea_stream(4000), 1000)
    e_raw = build_report(raw.unit.perf.values())["sea"]["versions"]["1"]["estimation_error"]
    e_cal = build_report(cal.unit.perf.values())["sea"]["versions"]["1"]["estimation_error"]
    assert e_raw < -0.015 and abs(e_cal) < 0.01


def test_regression_error_rise_is_concept_drift():
    loop = Loop(LabelsSettings(window_labels=100))
    rng = np.random.default_rng(5)
    preds = [pred(i, prediction=float(i % 7), scores=None) for i in range(6000)]
    noise = np.r_[rng.normal(0, 1, 3000), rng.normal(0, 3, 3000)]
    labels = [label(i, float(i % 7) + float(noise[i]), delay_ms=500) for i in range(6000)]
    loop.feed(interleave(preds, labels), 500)
    concept = [a for a in loop.alerts if a.kind == "concept_drift" and a.status == "firing"]
    assert concept and 3000 <= (concept[0].window.end - T0) // 10 <= 3400
    assert not [a for a in loop.alerts if a.kind == "performance"]


# ------------------------------------------------------------------ plumbing


def test_lookups_probe_only_generations_that_can_hold_the_prediction():
    s = LabelsSettings(horizon_seconds=10.0, generations=5)  # 2 s generations
    loop = Loop(s)
    loop.batch([pred(i) for i in range(0, 6000, 10)], [])  # 60 s of predictions
    # No label has come yet: every generation may still be needed (a label backlog).
    assert len(loop.unit.models["m"].gens) == 30
    loop.batch([], [label(5980, delay_ms=1000)])
    gens = sorted(loop.unit.models["m"].gens)
    assert len(gens) <= 8, "generations past the labels' horizon are forgotten"
    plan = plan_lookups([], [label(5990, delay_ms=1000)], loop.unit, s)
    ((_, probe),) = plan.probes
    assert 1 <= len(probe) <= 8 and len(probe) < len(gens) + 1
    names = [plan.keys[k] for k in probe]
    assert names == sorted(names, key=lambda n: -int(n.split(":")[2]))  # newest first


def test_drift_index_follows_firing_and_resolved_alerts():
    ix = DriftIndex()
    base = {"kind": "input_drift", "model_id": "m", "model_version": "1", "episode": 2}
    assert ix.observe({**base, "status": "firing", "window": {"start": 10}, "detected_at": 20})
    assert not ix.observe({**base, "status": "firing", "window": {"start": 10}, "detected_at": 20})
    # an update of the open episode (another feature drifting) neither moves nor ends it
    assert not ix.observe({**base, "status": "updated", "window": {"start": 10}, "detected_at": 30})
    assert ix.containing("m", "1", 35) == ["#2"]
    assert ix.observe({**base, "status": "resolved", "window": {"start": 40}, "detected_at": 50})
    assert ix.containing("m", "1", 30) == ["#2"] and ix.containing("m", "1", 60) == []
    assert not ix.observe({**base, "kind": "output_drift", "status": "firing"})
    # an update whose firing alert was missed opens the episode at its window start
    late = {**base, "episode": 3, "status": "updated", "window": {"start": 70}, "detected_at": 90}
    assert ix.observe(late) and ix.containing("m", "1", 80) == ["#3"]


def test_state_records_are_versioned_and_checked():
    loop = Loop()
    loop.batch([pred(0)], [label(0)])
    fields = loop.unit.to_fields()
    assert set(fields) == {"u", "h", "m\x1fm", "s\x1fm\x1f1\x1f"}
    with pytest.raises(StateCorrupt):
        UnitState.from_fields({"s\x1fm\x1f1\x1f": b'{"t":"perf_state","v":99}'})
    with pytest.raises(StateCorrupt):
        UnitState.from_fields({"weird": b"{}"})


def test_format_1_performance_states_are_still_read():
    # Written before the evidence-based diagnosis: no learn_conf, no evidence cells,
    # buckets without conf_ok, the input-drift tallies (drift_acc) it no longer uses.
    loop = Loop()
    loop.feed(sea_stream(600), 600)
    st = loop.st("sea")
    rec = orjson.loads(st.to_bytes())
    rec["v"] = 1
    del rec["learn_conf"], rec["evidence"]
    rec["drift_acc"] = {"#1": [10, 9]}
    for b in rec["buckets"].values():
        b[0] = b[0][:-1]  # format 1 had no conf_ok slot
    old = PerfState.from_bytes(orjson.dumps(rec))
    assert old.labelled == st.labelled and old.cells == [] and old.learn_conf == [0, 0.0, 0]
    for k, b in old.buckets.items():
        assert b.conf_ok == st.buckets[k].conf_ok  # every labelled prediction had a score
    rec["v"] = 3
    with pytest.raises(StateCorrupt, match="format version 3"):
        PerfState.from_bytes(orjson.dumps(rec))


def test_sea_chunks_of_a_long_stream_have_their_own_length():
    # events(n, start=...) builds a long stream chunk by chunk (bench_label_backlog):
    # a switch beyond the chunk used to make the chunk run up to the switch.
    sc = SeaScenario(model_id="sea")
    whole, _ = sc.events(3000, concept_at=2500)
    preds, labels = sc.events(1000, concept_at=2500, start=1000)
    assert len(preds) == len(labels) == 1000
    assert [p["prediction_id"] for p in preds] == [p["prediction_id"] for p in whole[1000:2000]]


def test_alerts_resolve_once_accuracy_is_back_and_never_while_it_is_not(sea_ref):
    # The concept switches at 3000 and switches back at 8000: each slow-loop kind fires
    # once and resolves once, after the return, on predictions made after it.
    sc = SeaScenario(model_id="sea")
    p1, l1 = sc.events(8000, concept_at=3000)
    p2, l2 = sc.events(6000, start=8000)
    loop = Loop(refs={("sea", "1"): sea_ref})
    loop.feed(interleave(p1 + p2, sorted(l1 + l2, key=lambda e: e["timestamp"])), 1000)
    for kind in ("concept_drift", "performance"):
        seen = [(a.status, (a.window.end - T0) // 10) for a in loop.alerts if a.kind == kind]
        assert [s for s, _ in seen] == ["firing", "resolved"], (kind, seen)
        assert 3000 <= seen[0][1] < 8000 <= seen[1][1], (kind, seen)


def test_large_figures_read_in_full_not_in_e_notation() -> None:
    """A regression on prices has an MAE of tens of thousands: the replay's line, the
    labels report and the HTML report print ``39,558``, not ``3.956e+04``; small and
    huge figures keep their significant digits."""
    from driftline.core.slowloop.report import figure
    from driftline.views.report.build import _num

    assert figure(39558.2) == _num(39558.2) == "39,558"
    assert figure(-2.5e6) == _num(-2.5e6) == "-2,500,000"
    assert figure(1234.56) == "1235" and figure(0.123456) == "0.1235"
    assert figure(3e20) == "3e+20" and figure(math.inf) == "inf"
    assert _num(0.0001234) == "1.23e-04" and _num(12.3456) == "12.3"
    assert _num(1494.3) == "1,494" and _num(397.2) == "397" and _num(3123.9, 4) == "3124"


def test_precision_of_a_class_never_predicted_is_said_undefined_not_a_figure():
    """A class the model never predicted has no precision (no prediction of it to count
    the right ones among); its line read 'precision -' beside figures, read as 0. Now
    'precision n/a (never predicted)', and a class never the label 'recall n/a (never
    the label)'; the others keep their figures."""
    loop = Loop(LabelsSettings(bucket_seconds=3600))
    preds = [pred(i, prediction="a", scores={"a": 0.8, "b": 0.1, "c": 0.1}) for i in range(3)]
    preds.append(pred(3, prediction="c", scores={"a": 0.1, "b": 0.1, "c": 0.8}))
    labels = [label(0, "a"), label(1, "b"), label(2, "b"), label(3, "a")]
    loop.batch(preds, labels)
    rep = build_report(loop.unit.perf.values())
    per_class = rep["m"]["versions"]["1"]["per_class"]
    assert per_class["b"] == {"precision": None, "recall": 0.0, "support": 2}
    assert per_class["c"] == {"precision": 0.0, "recall": None, "support": 0}
    text = format_report(rep)
    (line_b,) = [ln for ln in text.splitlines() if "class b " in ln]
    assert "precision n/a (never predicted)  recall    0.00%  support 2" in line_b, text
    (line_c,) = [ln for ln in text.splitlines() if "class c " in ln]
    assert "precision    0.00%  recall n/a (never the label)  support 0" in line_c, text
    (line_a,) = [ln for ln in text.splitlines() if "class a " in ln]
    assert "precision   33.33%  recall   50.00%  support 2" in line_a, text


def test_scores_keyed_true_false_of_a_boolean_prediction_score_its_labels() -> None:
    """A model server sent a boolean prediction (``np.True_``) with scores written
    ``{"True": p, "False": 1 - p}`` (``str(True)``): the prediction's classes are
    ``true``/``false``, so the labels' class found no score and ``labels --report``
    said log loss 11.78 and Brier 1.62 where the replay of the same table said 0.56 and
    0.38. The SDK's event keys such scores as the prediction's classes; the oracle is
    the same events with ``np.True_``/``np.False_`` keys."""
    from driftline.contract.values import prepare_prediction

    def run(key: Any) -> dict[str, Any]:
        loop = Loop()
        preds, labels = [], []
        for i in range(40):
            p = 0.3 + 0.4 * (i % 2)
            e = pred(i, prediction=np.bool_(p > 0.5), scores={key(True): p, key(False): 1 - p})
            preds.append(prepare_prediction(e))
            labels.append(label(i, "true" if i % 3 else "false"))
        loop.batch(preds, labels)
        return build_report(loop.unit.perf.values())["m"]["versions"]["1"]

    want = run(np.bool_)
    got = run(str)
    assert want["log_loss"] < 1.0 and got["log_loss"] == want["log_loss"]
    assert got["brier"] == want["brier"] and got["accuracy"] == want["accuracy"]
    assert prepare_prediction({"prediction": True, "scores": {"TRUE": 0.9, "False": 0.1}})[
        "scores"
    ] == {"true": 0.9, "false": 0.1}
    # a string prediction names its own classes: its scores keep their keys
    kept = prepare_prediction({"prediction": "True", "scores": {"True": 0.9, "False": 0.1}})
    assert kept["scores"] == {"True": 0.9, "False": 0.1}
