"""Golden scenarios: seeded inputs run through the pure fast-loop and slow-loop cores.

``tests/golden/record.py`` writes what each scenario produces to
``tests/golden/<name>.json``; ``tests/unit/test_golden.py`` replays every scenario with
the current code and compares (alert ids exactly, everything else to a relative 1e-9:
vectorised code may change the order of a sum). The fixtures are the oracle of
refactors of the cores, in place of a frozen second copy of the code.

Only public entry points are called: ``process_batch`` (events, columnar batches, mixed) with
``BatchResult`` and ``ModelState.to_bytes`` / ``from_bytes`` (fast loop);
``plan_lookups`` / ``join_batch`` with ``MemoryRecords``, ``DriftIndex`` and
``UnitState.to_fields`` / ``from_fields`` (slow loop).

The references are recorded too (``references.json``) and the scenarios run against the
recorded ones, so a change in reference building fails on its own
(``test_references_are_unchanged``) instead of looking like a change of the core. The
events are generated (``SimulatedModel``, ``SeaScenario``); each fixture keeps a digest
of its input, so a changed generator is reported as such.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from driftline.config import LabelsSettings, WorkerSettings
from driftline.contract.columnar import ColumnarBatch, pack_events, row_count
from driftline.contract.decode import decode_records
from driftline.contract.keys import StateKey
from driftline.core.fastloop import BatchResult, ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile, TrainingData, build_reference
from driftline.core.slowloop import (
    TOMBSTONE,
    DriftIndex,
    JoinResult,
    MemoryRecords,
    PendingPrediction,
    UnitState,
    join_batch,
    plan_lookups,
)
from driftline.demo.sea import SeaScenario, interleave
from driftline.demo.simulate import Shift, SimulatedModel
from support import mixed_items, pair_events, pair_reference

#: Version of the fixture layout (not of the recorded behaviour).
FORMAT = 1
HERE = Path(__file__).resolve().parent
REFERENCES_FILE = HERE / "references.json"
RECORD_COMMAND = "PYTHONPATH=src python tests/golden/record.py"
#: Tolerance of floats (the monitor tests' documented 1e-9).
REL = 1e-9

Record = dict[str, Any]
Events = list[dict[str, Any]]
Stream = list[tuple[str, dict[str, Any]]]

T0 = 1_767_225_600_000
NUMPY = orjson.OPT_SERIALIZE_NUMPY


# ------------------------------------------------------------------------ plain data


def plain(x: Any) -> Any:
    """``x`` as JSON data, exactly as a fixture stores it (NaN and infinities: null)."""
    return orjson.loads(orjson.dumps(x, option=NUMPY))


def digest(x: Any) -> str:
    """SHA-256 of ``x`` as canonical JSON (infinities included, unlike :func:`plain`)."""
    raw = json.dumps(x, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def _tables(x: Any) -> Any:
    """Lists of dicts become ``{"#tables": [[keys, rows], ...]}``: one table per run of
    consecutive dicts with the same keys (in the same order), keys written once."""
    if isinstance(x, dict):
        return {k: _tables(v) for k, v in x.items()}
    if isinstance(x, list):
        if len(x) > 1 and all(type(d) is dict for d in x):
            runs: list[list[Any]] = []
            for d in x:
                keys = list(d)
                if not runs or runs[-1][0] != keys:
                    runs.append([keys, []])
                runs[-1][1].append([_tables(v) for v in d.values()])
            return {"#tables": runs}
        return [_tables(v) for v in x]
    return x


def _untables(x: Any) -> Any:
    if isinstance(x, dict):
        if x.keys() == {"#tables"}:
            return [
                dict(zip(keys, map(_untables, row), strict=True))
                for keys, rows in x["#tables"]
                for row in rows
            ]
        return {k: _untables(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_untables(v) for v in x]
    return x


def _pack_observations(obs: list[list[Any]]) -> dict[str, Any]:
    """``[[model, version, name, test, value], ...]`` with the repeated labels listed once."""
    labels: dict[tuple[Any, ...], int] = {}
    index = [labels.setdefault(tuple(o[:-1]), len(labels)) for o in obs]
    return {"labels": [list(k) for k in labels], "index": index, "values": [o[-1] for o in obs]}


def _unpack_observations(d: Mapping[str, Any]) -> list[list[Any]]:
    labels = d["labels"]
    return [[*labels[i], v] for i, v in zip(d["index"], d["values"], strict=True)]


def encode(record: Record) -> bytes:
    """A record as fixture bytes: compact JSON, one top-level field per line (for diffs),
    lists of dicts as tables and repeated observation labels listed once."""
    out = dict(record)
    if "observations" in out:
        out["observations"] = _pack_observations(out["observations"])
    lines = [
        orjson.dumps(k).decode() + ":" + orjson.dumps(_tables(v), option=NUMPY).decode()
        for k, v in out.items()
    ]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def decode(data: bytes) -> Record:
    """Inverse of :func:`encode`."""
    record: Record = _untables(orjson.loads(data))
    if "observations" in record:
        record["observations"] = _unpack_observations(record["observations"])
    return record


# ------------------------------------------------------------------------ references


def _churn_reference(model: str = "churn", **policy: Any) -> ReferenceProfile:
    data = SimulatedModel(seed=3, model_id=model).training_data(20_000)
    return build_reference(data, model, "1", policy=Policy(**policy), seed=0, created_at=0)


def _regression_value(scores: Mapping[str, float]) -> float:
    """The simulated model's regression twin: churn probability in per mille."""
    return round(1000.0 * scores["churn"], 3)


def _regression_reference() -> ReferenceProfile:
    data = SimulatedModel(seed=3, model_id="price").training_data(20_000)
    values: list[Any] = [_regression_value(s or {}) for s in data.scores or []]
    rows = TrainingData(features=data.features, predictions=values)
    return build_reference(rows, "price", "1", seed=0, created_at=0)


def _sea_reference() -> ReferenceProfile:
    return build_reference(SeaScenario().training_data(5000), "sea", "1", seed=0, created_at=0)


#: The pair of the multivariate scenario: f01 follows f00 (latent correlation +0.8).
PAIR = ("f00", "f01")


#: How each recorded reference is built (``references.json`` keeps what they gave).
REFERENCE_BUILDERS: dict[str, Callable[[], ReferenceProfile]] = {
    "churn": lambda: _churn_reference(window_events=500),
    "churn_time_windows": lambda: _churn_reference(window_seconds=5.0),
    "churn_big_windows": lambda: _churn_reference(window_events=5_000),
    "fraud": lambda: _churn_reference("fraud"),
    "price_regression": _regression_reference,
    "sea": _sea_reference,
    "pair": pair_reference,
}


def reference_record(ref: ReferenceProfile) -> Any:
    """A reference as fixture data (its own versioned JSON record)."""
    return orjson.loads(ref.to_bytes())


@functools.cache
def recorded_references() -> dict[str, ReferenceProfile]:
    """The references of ``references.json`` (what every scenario runs against)."""
    stored = orjson.loads(REFERENCES_FILE.read_bytes())
    return {name: ReferenceProfile.from_bytes(orjson.dumps(r)) for name, r in stored.items()}


def _references(names: Sequence[str]) -> dict[tuple[str, str], ReferenceProfile]:
    """Recorded references by (model, version), as the workers look them up."""
    refs = recorded_references()
    return {(refs[n].model_id, refs[n].model_version): refs[n] for n in names}


# ------------------------------------------------------------------------ fast loop

#: How a scenario's events reach the core: ``events`` through ``process_batch``;
#: ``batches`` packed into columnar batches of 137 rows and ``mixed`` (runs of single
#: events and batches alternating) through ``process_batch``; ``reload`` like
#: ``events`` with every state stored and loaded again between batches (as the worker
#: does through Redis); ``wire`` each call's events encoded as JSON records and decoded
#: by the worker's decoder (``driftline.contract.decode.decode_records``, typed).
Feed = Literal["events", "batches", "mixed", "reload", "wire"]


@dataclass(frozen=True)
class FastScenario:
    """Prediction events through the fast loop's core.

    ``feeds`` are ``(how, items per call)``: the first one is recorded; the others must
    give the same record except the per-call summaries (``calls``).
    """

    name: str
    about: str
    events: Callable[[], Events]
    references: tuple[str, ...]
    feeds: tuple[tuple[Feed, int], ...]
    #: What the scenario is there to cover, checked on its record.
    covers: Callable[[Record], None]
    #: The processing clock (``now_ms``): ``T0 + rows fed so far * now_step_ms``, as if
    #: the events were processed as they happened. None: no processing clock (replay).
    now_step_ms: int | None = None


def _sim(seed: int, n: int, model: str = "churn", **kw: Any) -> Events:
    return list(SimulatedModel(seed=seed, model_id=model).events(n, **kw))


def _shift_and_recovery(seed: int) -> Events:
    sim = SimulatedModel(seed=seed)
    events = list(sim.events(6_000, shift=Shift(start=2_500, sigmas=1.0)))
    return events + list(sim.events(4_000, start=6_000))


def _categorical_and_output_shift() -> Events:
    shift = Shift(start=2_000, sigmas=2.5, cat_feature="plan", category="x", share=0.4)
    return _sim(5, 5_000, shift=shift)


def _data_quality() -> Events:
    events = _sim(9, 3_000)
    rng = np.random.default_rng(0)
    for i, e in enumerate(events):
        f = e["features"]
        if i >= 1_000:
            f["f05"] = None
            f["f06"] = "oops"
            f["extra"] = 1
        roll = rng.random()
        if roll < 0.05:
            f["f07"] = None
        elif roll < 0.06:
            f["f08"] = True  # a boolean is not a number
        elif roll < 0.07:
            f["plan"] = 3  # a number is not a category
        elif roll < 0.08:
            f["region"] = None
        elif roll < 0.09:
            del f["f09"]
        elif roll < 0.095:
            f["f10"] = math.inf
        elif roll < 0.10:
            f["channel"] = False
        elif roll < 0.105:
            e.pop("scores")
    return events


def _models_segments_string_times() -> Events:
    a = _sim(1, 3_000, shift=Shift(start=1_000, sigmas=1.5))
    b = _sim(2, 3_000, model="fraud")
    for i, e in enumerate(b):
        e["segment"] = {"country": "DE" if i % 3 else "FR"}
    c = _sim(4, 1_500)
    for e in c:
        e["model_version"] = "2"  # no reference: warms up
        e["timestamp"] = f"2026-01-01T00:{(e['timestamp'] // 60_000) % 60:02d}:00Z"
    return [x for trio in zip(a, b, c + c, strict=False) for x in trio]


def _late_and_future() -> Events:
    events = _sim(7, 4_000, shift=Shift(start=2_000, sigmas=1.0))
    events[100]["timestamp"] -= 3_000_000  # late
    events[200]["timestamp"] += 3_600_000  # future-dated
    events[201]["timestamp"] += 3_600_000
    return events


def _sparse_gappy() -> Events:
    # One event every 8m43s (a 500-event window spans three days), a first event 30
    # days ahead of the rest, a week-long gap after event 3100, a 1 sd shift after it.
    step = 8 * 60_000 + 43_000
    events = _sim(8, 6_000, step_ms=step, shift=Shift(start=3_500, sigmas=1.0))
    events[0]["timestamp"] += 30 * 86_400_000
    for e in events[3_100:]:
        e["timestamp"] += 7 * 86_400_000
    return events


def _regression() -> Events:
    sim = SimulatedModel(seed=10, model_id="price")
    # f19 weighs most in the churn score, so its shift moves the predicted value too
    events = list(sim.events(6_000, shift=Shift(start=2_000, feature="f19", sigmas=1.0)))
    events += list(sim.events(4_000, start=6_000))
    for e in events:
        e["prediction"] = _regression_value(e.pop("scores"))
    return events


def _columnar() -> Events:
    events = _sim(11, 8_000, shift=Shift(start=3_000, sigmas=0.8))
    events += list(SimulatedModel(seed=12).events(4_000, start=8_000))
    for i, e in enumerate(events):
        if i % 50 == 0:
            e["features"]["f04"] = None
        if i % 70 == 0:
            e["features"]["plan"] = 7  # a type mismatch
    return events


def _statuses(rec: Record, kind: str) -> list[str]:
    return [a["status"] for a in rec["alerts"] if a["kind"] == kind]


def _fires_and_resolves(kind: str) -> Callable[[Record], None]:
    def check(rec: Record) -> None:
        got = _statuses(rec, kind)
        assert "firing" in got and "resolved" in got, f"{kind}: {got}"

    return check


def _fires(*kinds: str) -> Callable[[Record], None]:
    def check(rec: Record) -> None:
        for kind in kinds:
            assert "firing" in _statuses(rec, kind), f"no firing {kind} alert"

    return check


def _late_future(rec: Record) -> None:
    assert (rec["late_events"], rec["future_events"]) == (1, 2)
    _fires("input_drift")(rec)


def _sparse_times(rec: Record) -> None:
    assert (rec["late_events"], rec["future_events"]) == (0, 1)
    starts = [w["start"] for w in rec["windows"]]
    assert min(starts) >= T0 and all(w["start"] <= w["end"] for w in rec["windows"])
    _fires("input_drift")(rec)


def _warm_up(rec: Record) -> None:
    assert [r["source"] for r in rec["new_references"]] == ["warm-up"]
    _fires("input_drift")(rec)


def _joint(rec: Record) -> None:
    """The multivariate detector opens the one input-drift episode and names the pair;
    the window summaries carry its level over time."""
    drift = [a for a in rec["alerts"] if a["kind"] == "input_drift"]
    assert [(a["status"], a["detector"]) for a in drift][:1] == [("firing", "multivariate")]
    assert [a for a in drift if a["status"] == "firing"] == drift[:1], drift
    assert {f["feature"] for f in drift[0]["top_features"][:2]} == set(PAIR)
    levels = [
        t["value"] for w in rec["windows"] for t in w["tests"] if t["feature"] == "__multivariate__"
    ]
    assert len(levels) == len(rec["windows"]) and max(levels) >= 1.0


def _several_streams(rec: Record) -> None:
    keys = [k for k, _ in rec["states"]]
    assert len(keys) == 4 and any("country=FR" in k for k in keys), keys
    assert len(rec["new_references"]) == 1
    _fires("input_drift")(rec)


FAST: tuple[FastScenario, ...] = (
    *(
        FastScenario(
            f"fast_numeric_shift_seed{seed}",
            "1 sd shift of f03 at event 2500, recovery from 6000 (firing and resolved)",
            functools.partial(_shift_and_recovery, seed),
            ("churn",),
            feeds,
            _fires_and_resolves("input_drift"),
        )
        for seed, feeds in (
            (1, (("events", 5_000), ("wire", 5_000))),
            (2, (("events", 333), ("wire", 333))),
            (3, (("events", 1_000), ("wire", 1_000))),
        )
    ),
    FastScenario(
        "fast_categorical_and_output_shift",
        "f00 +2.5 sd and 40% of plan set to a new category from event 2000",
        _categorical_and_output_shift,
        ("churn",),
        (("events", 700), ("wire", 700)),
        _fires("input_drift", "output_drift"),
    ),
    FastScenario(
        "fast_data_quality",
        "missing values, type mismatches, unknown features, infinities, missing scores",
        _data_quality,
        ("churn",),
        (("events", 400),),  # inf is not JSON: no wire feed (see tests/unit/test_typed.py)
        _fires("data_quality"),
    ),
    FastScenario(
        "fast_models_segments_string_times",
        "three streams interleaved: a shifted model, a segmented one, RFC 3339 times "
        "warming up without a reference",
        _models_segments_string_times,
        ("churn", "fraud"),
        (("events", 900), ("wire", 900)),
        _several_streams,
    ),
    FastScenario(
        "fast_time_windows_late_future",
        "5 s time windows, one late and two future-dated events (against the processing "
        "clock), 1 sd shift at 2000",
        _late_and_future,
        ("churn_time_windows",),
        (("events", 650), ("batches", 5), ("wire", 650)),
        _late_future,
        now_step_ms=10,
    ),
    FastScenario(
        "fast_sparse_gappy_times",
        "one event every 8m43s, the first 30 days ahead, a week-long gap, a 1 sd shift "
        "after it; no processing clock (as a replay)",
        _sparse_gappy,
        ("churn",),
        (("events", 1_000), ("events", 77), ("reload", 500), ("wire", 1_000)),
        _sparse_times,
    ),
    FastScenario(
        "fast_big_windows",
        "5000-event windows fed 6000 events per call (past Page-Hinkley's vector block)",
        functools.partial(_sim, 6, 9_000, shift=Shift(start=6_000, sigmas=1.0)),
        ("churn_big_windows",),
        (("events", 6_000), ("wire", 6_000)),
        _fires("input_drift"),
    ),
    FastScenario(
        "fast_warm_up",
        "no reference: the first 2000 events build one, then a shift at 6000 is found",
        functools.partial(_sim, 6, 9_000, shift=Shift(start=6_000, sigmas=1.0)),
        (),
        (("events", 1_500), ("wire", 1_500)),
        _warm_up,
    ),
    FastScenario(
        "fast_regression",
        "a regression model (numeric prediction, no scores): shift and recovery",
        _regression,
        ("price_regression",),
        (("events", 800), ("wire", 800)),
        _fires("input_drift", "output_drift"),
    ),
    FastScenario(
        "fast_state_round_trip",
        "every state stored and loaded between batches of 700",
        functools.partial(_sim, 4, 6_000, shift=Shift(start=2_500, sigmas=1.0)),
        ("churn",),
        (("reload", 700), ("events", 6_000), ("wire", 700)),
        _fires("input_drift"),
    ),
    FastScenario(
        "fast_multivariate",
        "f00 and f01 move together (+0.8), then opposite (-0.8) from event 2000, every "
        "marginal unchanged: the multivariate detector, through single events, columnar "
        "batches and states reloaded between batches",
        functools.partial(pair_events, 13, 6_000, 2_000),
        ("pair",),
        (("events", 500), ("batches", 5), ("reload", 333)),
        _joint,
    ),
    FastScenario(
        "fast_columnar",
        "columnar batches of 137 rows (7 per call) give the results of single events",
        _columnar,
        ("churn",),
        (("batches", 7), ("events", 1_000), ("mixed", 13), ("wire", 1_000)),
        _fires("input_drift"),
    ),
)


def _items(events: Events, how: Feed) -> list[Any]:
    if how == "wire":  # the encoded records, decoded per call by the worker's decoder
        return [orjson.dumps(e) for e in events]
    if how == "batches":
        return [ColumnarBatch.from_dict(b) for b in pack_events(events, max_rows=137)]
    if how == "mixed":
        return mixed_items(events)
    return events


def run_fast(scn: FastScenario, feed: tuple[Feed, int] | None = None) -> Record:
    """Run ``scn`` (its first feed unless ``feed`` is given) and return its record."""
    how, size = feed or scn.feeds[0]
    events = scn.events()
    refs = _references(scn.references)
    items = _items(copy.deepcopy(events), how)
    states: dict[StateKey, ModelState] = {}
    total = BatchResult()
    calls: list[list[int]] = []
    rows = 0
    for i in range(0, len(items), size):
        call = items[i : i + size]
        if how == "wire":
            call, refused = decode_records(call)
            assert not refused, refused
        rows += row_count(call)
        now = None if scn.now_step_ms is None else T0 + rows * scn.now_step_ms
        res = process_batch(call, states, lambda m, v: refs.get((m, v)), now_ms=now)
        calls.append(
            [
                len(res.alerts),
                res.windows_closed,
                len(res.observations),
                res.late_events,
                res.future_events,
                len(res.new_references),
            ]
        )
        total.alerts += res.alerts
        total.windows += res.windows
        total.observations += res.observations
        total.new_references += res.new_references
        total.late_events += res.late_events
        total.future_events += res.future_events
        # Warm-up references are stored and used from then on (as by the worker).
        refs.update({(r.model_id, r.model_version): r for r in res.new_references})
        if how == "reload":
            states = {
                k: ModelState.from_bytes(s.to_bytes(), refs.get((k.model_id, k.model_version)))
                for k, s in states.items()
            }
    return {
        "format": FORMAT,
        "scenario": scn.name,
        "about": scn.about,
        "inputs": {
            "events": len(events),
            "sha256": digest(events),
            "references": [recorded_references()[n].reference_id for n in scn.references],
            **({} if scn.now_step_ms is None else {"now_step_ms": scn.now_step_ms}),
        },
        "feed": [how, size],
        "alert_ids": [a.alert_id for a in total.alerts],
        "alerts": [a.model_dump(mode="json") for a in total.alerts],
        "windows": plain(total.windows),
        "observations": plain(
            [[o.model_id, o.model_version, o.feature, o.test, o.value] for o in total.observations]
        ),
        "late_events": total.late_events,
        "future_events": total.future_events,
        "new_references": [reference_record(r) for r in total.new_references],
        "calls": calls,
        "states": [[k.encode(), orjson.loads(s.to_bytes())] for k, s in states.items()],
    }


# ------------------------------------------------------------------------ slow loop


@dataclass(frozen=True)
class SlowScenario:
    """Predictions and labels of one partition through the slow loop's join core."""

    name: str
    about: str
    stream: Callable[[], Stream]
    references: tuple[str, ...]
    settings: Mapping[str, Any]
    #: Events per call (predictions and labels together, in stream order).
    batch: int
    #: Input-drift alerts the monitor reported (fed to the ``DriftIndex`` first).
    drift_alerts: tuple[Mapping[str, Any], ...] = ()
    #: Store and load the partition's state between calls (a restart every batch).
    restart: bool = False
    covers: Callable[[Record], None] = field(default=lambda rec: None)


def _sea(n: int, **kw: Any) -> tuple[Events, Events]:
    return SeaScenario(model_id="sea").events(n, **kw)


def _label(pid: str, model: str, value: Any, t: int) -> dict[str, Any]:
    return {"prediction_id": pid, "model_id": model, "label": value, "timestamp": t}


def _sea_with_faults() -> Stream:
    """Concept switch at 4000; duplicates, orphans, expired and early labels mixed in."""
    preds, labels = _sea(8_000, concept_at=4_000)
    early = {f"sea-1-{i}" for i in range(7_000, 7_040, 4)}
    late = {f"sea-1-{i}" for i in range(0, 8_000, 613)}
    extra: Events = []
    for i, e in enumerate(preds):
        t = e["timestamp"]
        if i % 499 == 0:  # a label of a prediction never made: an orphan
            extra.append(_label(f"ghost-{i}", "sea", "pos", t + 3_000))
        if e["prediction_id"] in late:  # later than the 20 s horizon: expired
            extra.append(_label(e["prediction_id"], "sea", "neg", t + 22_000))
    again = [e for e in labels[::97] if e["prediction_id"] not in early | late]  # duplicates
    held = [e for e in labels if e["prediction_id"] in early]
    kept = [e for e in labels if e["prediction_id"] not in early | late]
    labels = sorted(kept + extra + again, key=_time)
    preds = [x for i, e in enumerate(preds) for x in ([e, dict(e)] if i % 211 == 0 else [e])]
    stream = interleave(preds, labels)
    # Labels that overtake their predictions (the labels topic ahead): held, then joined.
    for lab in held:
        pid = lab["prediction_id"]
        at = next(i for i, (_, e) in enumerate(stream) if e["prediction_id"] == pid)
        stream.insert(at - 40, ("l", lab))
    return stream


def _drift_alert(episode: int, status: str, start: int, end: int) -> dict[str, Any]:
    return {
        "kind": "input_drift",
        "status": status,
        "model_id": "sea",
        "model_version": "1",
        "episode": episode,
        "window": {"start": T0 + start * 10, "end": T0 + end * 10},
        "detected_at": T0 + end * 10,
    }


def _sea_two_versions_segments() -> Stream:
    """v1 without reference (learned) with a covariate shift then a concept switch,
    v2 (segmented) beside it."""
    preds, labels = _sea(9_000, covariate_at=2_000, concept_at=5_500)
    sc = SeaScenario(model_id="sea", model_version="2", seed=9, segment={"region": "eu"})
    p2, l2 = sc.events(3_000, start=3_000)
    return interleave(sorted(preds + p2, key=_time), sorted(labels + l2, key=_time))


def _time(e: Mapping[str, Any]) -> int:
    return int(e["timestamp"])


def _regression_stream() -> Stream:
    rng = np.random.default_rng(5)
    noise = np.r_[rng.normal(0, 1, 3_000), rng.normal(0, 3, 3_000)]
    preds: Events = []
    labels: Events = []
    for i in range(6_000):
        t = T0 + i * 10
        value: Any = float(i % 7)
        if i % 301 == 0:
            value = "high"  # not a number: an invalid prediction
        preds.append(
            {
                "prediction_id": f"p{i}",
                "model_id": "m",
                "model_version": "1",
                "timestamp": t,
                "features": {"x": 1.0},
                "segment": {"region": "eu" if i % 3 else "us"},
                "prediction": value,
            }
        )
        label: Any = "n/a" if i % 101 == 0 else float(i % 7) + float(noise[i])
        labels.append(_label(f"p{i}", "m", label, t + 500))
    return interleave(preds, labels)


def _outcomes(*wanted: str) -> Callable[[Record], None]:
    def check(rec: Record) -> None:
        seen = {o for call in rec["calls"] for _, o, _ in call["labels"]}
        assert set(wanted) <= seen, f"label outcomes {sorted(seen)}"

    return check


def _concept(rec: Record) -> None:
    _outcomes("joined", "duplicate", "expired", "orphan")(rec)
    kinds = {a["kind"] for a in rec["alerts"] if a["status"] == "firing"}
    assert {"concept_drift", "performance"} <= kinds, kinds
    dup = [n for c in rec["calls"] for _, o, n in c["predictions"] if o == "duplicate"]
    assert dup, "no duplicate prediction"


def _diagnosed(rec: Record) -> None:
    diags = {d for c in rec["calls"] for _, _, d in c["diagnoses"]}
    assert {"input_drift_benign", "concept_drift"} <= diags, diags
    slow = {a["diagnosis"] for a in rec["alerts"]}
    assert slow == {"concept_drift"}, slow  # input drift nearby does not make it harmful


def _regression_covers(rec: Record) -> None:
    _outcomes("joined", "invalid")(rec)
    assert any(c["rejected"] for c in rec["calls"])
    assert "concept_drift" in {a["kind"] for a in rec["alerts"]}


SLOW: tuple[SlowScenario, ...] = (
    SlowScenario(
        "slow_concept_switch_with_faults",
        "SEA with a labelled reference, concept switch at 4000; duplicate predictions and "
        "labels, orphan, expired and early labels; state stored and loaded every batch",
        _sea_with_faults,
        ("sea",),
        {"horizon_seconds": 20.0, "grace_seconds": 5.0},
        700,
        restart=True,
        covers=_concept,
    ),
    SlowScenario(
        "slow_learned_reference_diagnoses",
        "SEA without a reference (accuracy learned), a covariate shift during input-drift "
        "episode 1 (benign), a concept switch during episode 2 (still concept drift: the "
        "estimate does not explain the drop), a segmented v2",
        _sea_two_versions_segments,
        (),
        {"learn_reference_labels": 500},
        1_000,
        drift_alerts=(
            _drift_alert(1, "firing", 1_900, 2_100),
            _drift_alert(1, "resolved", 3_000, 4_000),
            _drift_alert(2, "firing", 5_300, 5_500),
        ),
        covers=_diagnosed,
    ),
    SlowScenario(
        "slow_regression_invalid",
        "regression with segments: error rise at 3000 (concept drift), non-numeric "
        "labels and predictions",
        _regression_stream,
        (),
        {"window_labels": 100},
        500,
        covers=_regression_covers,
    ),
)


def _counts(table: Mapping[tuple[str, str], int]) -> list[list[Any]]:
    return [[m, o, n] for (m, o), n in sorted(table.items())]


def _hash_records(h: Any, records: Mapping[str, Mapping[bytes, bytes]]) -> None:
    # What a record says, not its bytes: a new version of the stored format (more
    # compact, same content) gives the same digest, an information change does not.
    for name, fields in sorted(records.items()):
        h.update(name.encode() + b"\x00")
        for d, rec in sorted(fields.items()):
            said = rec if rec == TOMBSTONE else repr(PendingPrediction.decode(rec)).encode()
            h.update(d + said + b"\x00")


def _writes_digest(res: JoinResult) -> str:
    """What the shell would write: records, tombstones, TTLs and label lags."""
    h = hashlib.sha256()
    _hash_records(h, res.puts)
    for name, digests in sorted(res.tombs.items()):
        h.update(name.encode() + b"\x00" + b"".join(digests))
    h.update(orjson.dumps(sorted(res.expire_after.items())))
    h.update(orjson.dumps(sorted(res.key_model.items())))
    h.update(orjson.dumps(res.lags))
    return h.hexdigest()


def _records_digest(mem: MemoryRecords) -> str:
    h = hashlib.sha256()
    _hash_records(h, mem.data)
    return h.hexdigest()


def _chunks(stream: Stream, size: int) -> Iterator[tuple[Events, Events]]:
    for i in range(0, len(stream), size):
        chunk = stream[i : i + size]
        yield [e for k, e in chunk if k == "p"], [e for k, e in chunk if k == "l"]


#: Settings of the worker shell that the core never reads (not inputs of a scenario).
_SHELL_ONLY = set(WorkerSettings.model_fields) - {"group_id", "max_batch_events"}


def run_slow(scn: SlowScenario) -> Record:
    """Run ``scn`` through ``plan_lookups`` / ``join_batch`` and return its record."""
    stream = scn.stream()
    settings = LabelsSettings(**scn.settings)
    refs = _references(scn.references)
    drift = DriftIndex()
    for alert in scn.drift_alerts:
        drift.observe(alert)
    unit = UnitState()
    mem = MemoryRecords()
    alerts = []
    calls: list[dict[str, Any]] = []
    for preds, labels in _chunks(copy.deepcopy(stream), scn.batch):
        plan = plan_lookups(preds, labels, unit, settings)
        found = mem.lookup(plan)
        res = join_batch(
            preds, labels, plan, found, unit, lambda m, v: refs.get((m, v)), drift, settings
        )
        mem.apply(res)
        alerts += res.alerts
        calls.append(
            {
                "labels": _counts(res.labels),
                "predictions": _counts(res.predictions),
                "alerts": len(res.alerts),
                "rejected": [list(r) for r in res.rejected],
                "observations": [
                    [o.model_id, o.model_version, o.metric, o.value] for o in res.observations
                ],
                "points": res.points,
                "diagnoses": [[m, v, d] for (m, v), d in sorted(res.diagnoses.items())],
                "dirty": sorted(res.dirty),
                "writes_sha256": _writes_digest(res),
            }
        )
        if scn.restart:
            unit = UnitState.from_fields(unit.to_fields())
    return {
        "format": FORMAT,
        "scenario": scn.name,
        "about": scn.about,
        "inputs": {
            "predictions": sum(1 for k, _ in stream if k == "p"),
            "labels": sum(1 for k, _ in stream if k == "l"),
            "sha256": digest(stream),
            "references": [recorded_references()[n].reference_id for n in scn.references],
            "settings": settings.model_dump(mode="json", exclude=_SHELL_ONLY),
            "batch": scn.batch,
        },
        "alert_ids": [a.alert_id for a in alerts],
        "alerts": [a.model_dump(mode="json") for a in alerts],
        "calls": plain(calls),
        "records": {"pending": mem.pending(), "sha256": _records_digest(mem)},
        # every state field is a versioned JSON record (driftline.codec)
        "states": [[k, orjson.loads(v)] for k, v in unit.to_fields().items()],
    }


# ------------------------------------------------------------------------ registry

Scenario = FastScenario | SlowScenario
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (*FAST, *SLOW)}


def run(scn: Scenario) -> Record:
    """The record of one scenario (first feed of a fast one)."""
    return run_fast(scn) if isinstance(scn, FastScenario) else run_slow(scn)


def fixture_path(name: str) -> Path:
    """Where scenario ``name`` is recorded."""
    return HERE / f"{name}.json"
