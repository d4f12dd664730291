"""The label joiner (slow loop) through real Tansu and redis-server.

Predictions and labels are SEA streams (river's generator) scored by a fixed model;
labels arrive hundreds of events after their predictions.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.config import Settings
from driftline.contract.binary_batch import encode_binary_batch
from driftline.contract.columnar import pack_events
from driftline.contract.events import LIMITS
from driftline.contract.label_batch import pack_label_events
from driftline.core.reference import Policy, build_reference
from driftline.core.slowloop import (
    DriftIndex,
    MemoryRecords,
    UnitState,
    join_batch,
    plan_lookups,
    stream_key,
)
from driftline.demo.sea import SeaScenario, interleave
from driftline.runtime.devstack import DevStack, free_port
from driftline.runtime.history import load_history
from driftline.runtime.labels import LabelJoiner
from driftline.runtime.metrics import REGISTRY
from driftline.runtime.monitor import MonitorWorker
from driftline.runtime.store import open_store
from driftline.views.report import render_report, report_from_store
from driftline.views.slow_loop import load_perf_states, report_text
from driftline.views.status import model_statuses, render_index
from support import ON_BOTH_REDIS, read_all, read_dlq, redis_env, redis_settings

pytestmark = pytest.mark.integration

T0 = SeaScenario().t0_ms
STEP = SeaScenario().step_ms


@pytest.fixture
def lsettings(settings: Settings, unique: str) -> Settings:
    """Per-test settings with the slow loop tuned to the test's event-time scale."""
    return settings.model_copy(
        update={
            "labels": settings.labels.model_copy(
                update={
                    "group_id": f"labels-{unique}",
                    "grace_seconds": 5.0,
                    "bucket_seconds": 10.0,
                    "max_batch_events": 1000,
                }
            )
        }
    )


async def create_topics(s: Settings, partitions: int = 2) -> None:
    """Predictions, labels and alerts with the same partition count (co-partitioned)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap_servers)
    await admin.start()
    try:
        names = [
            s.topics.predictions,
            s.topics.labels,
            s.topics.alerts,
            s.topics.dlq(s.topics.labels),
            s.topics.dlq(s.topics.predictions),
        ]
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in names if t not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def send(s: Settings, topic: str, items: list[Any]) -> None:
    """Publish dict events (keyed by model id) or raw ``(key, bytes)`` pairs."""
    prod = AIOKafkaProducer(
        bootstrap_servers=s.kafka.bootstrap_servers, linger_ms=20, max_batch_size=1 << 20
    )
    await prod.start()
    try:
        futs = []
        for it in items:
            if isinstance(it, tuple):
                key, value = it
            else:
                key, value = it["model_id"].encode(), orjson.dumps(it)
            futs.append(await prod.send(topic, value, key=key))
        for f in futs:
            await f
    finally:
        await prod.stop()


async def store_reference(s: Settings, ref: Any) -> None:
    client, store = open_store(s.redis, s.monitor.group_id)
    await store.put_reference(ref.model_id, ref.model_version, ref.to_bytes())
    await client.aclose()


def sea_reference(sc: SeaScenario) -> Any:
    return build_reference(
        sc.training_data(5000),
        sc.model_id,
        sc.model_version,
        policy=Policy(window_events=500),
        seed=0,
        created_at=0,
    )


async def run_monitor(s: Settings) -> MonitorWorker:
    worker = MonitorWorker(s, name="test-monitor")
    await worker.start()
    try:
        await worker.run(idle_exit_s=2.5)
    finally:
        await worker.close()
    return worker


async def alerts_of(s: Settings, kinds: set[str]) -> list[dict[str, Any]]:
    vals = await read_all(s.kafka.bootstrap_servers, s.topics.alerts, idle_ms=800)
    return [a for a in map(orjson.loads, vals) if a["kind"] in kinds]


def event_index(t_ms: int) -> int:
    return (t_ms - T0) // STEP


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# ------------------------------------------------------------------ one scenario, four models
#
# Four independent models share the topics (so partitions hold several models each) and
# are processed by ONE monitor run, then ONE joiner in two phases, which keeps the suite
# fast (every worker start pays a Kafka group join). Restarts: the SIGKILL test below.
#
#   sea-c  the concept switches halfway (same inputs, new labelling rule)
#   sea-b  the irrelevant input x2 shrinks (covariate shift; accuracy unchanged)
#   sea-x  orphan, duplicate, expired (120 s horizon) and invalid labels, counted exactly
#   sea-h  labels published before their predictions, which only come in phase two


class Scenario:
    def __init__(self) -> None:
        self.monitor: MonitorWorker | None = None
        self.joiner: LabelJoiner | None = None
        #: Label outcome totals and held labels at the end of phase one.
        self.phase1: dict[str, dict[str, int]] = {}
        self.held1 = 0
        self.alerts: list[dict[str, Any]] = []
        self.want_x: dict[str, int] = {}
        self.bad: list[bytes] = []
        self.settings: Settings | None = None
        #: driftline_labels_total counted during the scenario: (model, outcome) -> n
        #: (the registry is the process's, shared by the runs on both Redis kinds).
        self.label_counts: dict[tuple[str, str], float] = {}


N_C, SWITCH = 8000, 4000
N_B, SHIFT = 8000, 3000
N_X = 3000


def _sea_x() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    sc = SeaScenario(model_id="sea-x", seed=13)
    preds, _ = sc.events(N_X)
    unlabelled = set(range(0, N_X, 30))  # 100 predictions never get a label
    # 121 s late: past the 120 s horizon. (The horizon also sets how long, in wall-clock
    # time, Redis keeps a pending prediction when event time is in the past: a few
    # seconds made labels read later than that under load turn into orphans.)
    expired = set(range(5, 2500, 60)) - unlabelled
    dup = set(range(7, 2500, 50))  # 50 labels are published twice
    labels: list[dict[str, Any]] = []
    for i, p in enumerate(preds):
        if i in unlabelled:
            continue
        late = 12_100 if i in expired else 100
        lab = {"prediction_id": p["prediction_id"], "model_id": "sea-x", "label": "pos"}
        labels.append({**lab, "timestamp": p["timestamp"] + late * STEP})
        if i in dup:
            labels.append({**lab, "timestamp": p["timestamp"] + (late + 5) * STEP})
    ghosts = [
        {
            "prediction_id": f"ghost-{i}",
            "model_id": "sea-x",
            "label": "neg",
            "timestamp": T0 + i * 500,
        }
        for i in range(30)
    ]
    want = {
        "joined": N_X - len(unlabelled) - len(expired),
        "expired": len(expired),
        "duplicate": len(dup),
        "orphan": len(ghosts),
    }
    return preds, sorted(labels + ghosts, key=lambda e: e["timestamp"]), want


def _label_counts() -> dict[tuple[str, str], float]:
    return {
        (sample.labels["model"], sample.labels["outcome"]): sample.value
        for family in REGISTRY.collect()
        if family.name == "driftline_labels"
        for sample in family.samples
        if sample.name == "driftline_labels_total"
    }


#: The scenario's outcome per Redis kind, run once each (the last test compares them).
_SCENARIOS: dict[str, Scenario] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["server", "cluster"])
async def scenario(stack: DevStack, request: pytest.FixtureRequest) -> Scenario:
    """The scenario on the session's redis-server, and again on its Redis Cluster."""
    if request.param not in _SCENARIOS:
        _SCENARIOS[request.param] = await _run_scenario(stack, request, request.param)
    return _SCENARIOS[request.param]


async def _run_scenario(stack: DevStack, request: pytest.FixtureRequest, kind: str) -> Scenario:
    u = uuid.uuid4().hex[:10]
    s = Settings(
        kafka={"bootstrap_servers": stack.broker.bootstrap},
        redis={**redis_settings(stack, request, kind), "key_prefix": f"t{u}"},
        topics={
            "predictions": f"predictions-{u}",
            "labels": f"labels-{u}",
            "alerts": f"alerts-{u}",
        },
        monitor={"group_id": f"monitor-{u}"},
        labels={
            "group_id": f"labels-{u}",
            "grace_seconds": 5.0,
            "bucket_seconds": 10.0,
            "max_batch_events": 2000,
            "model_horizons": {"sea-x": 120.0},
        },
        metrics_port=0,
    )
    out = Scenario()
    out.settings = s
    await create_topics(s)
    c, b = SeaScenario(model_id="sea-c", seed=11), SeaScenario(model_id="sea-b", seed=12)
    h = SeaScenario(model_id="sea-h", seed=14)
    for sc in (c, b):
        await store_reference(s, sea_reference(sc))
    c_preds, c_labels = c.events(N_C, concept_at=SWITCH)
    b_preds, b_labels = b.events(N_B, covariate_at=SHIFT)
    x_preds, x_labels, out.want_x = _sea_x()
    h_preds, h_labels = h.events(900, delay_events=20, jitter_events=0)
    h_ghosts = [
        {"prediction_id": f"ghost-{i}", "model_id": "sea-h", "label": "pos", "timestamp": T0 + i}
        for i in range(5)
    ]
    out.bad = [
        b"not json",
        orjson.dumps({"model_id": "sea-x", "label": "pos"}),
        orjson.dumps({**x_labels[0], "label": [1, 2]}),
    ]
    # sea-b's predictions come as columnar batches, what the SDK sends: binary batches
    # (prediction_batch.v2, its default) alternating with JSON ones (v1).
    b_batches = [
        (b"sea-b", encode_binary_batch(env) if i % 2 == 0 else orjson.dumps(env))
        for i, env in enumerate(pack_events(b_preds, max_rows=250))
    ]
    await send(s, s.topics.predictions, c_preds + b_batches + x_preds)
    phase1_labels = (
        [*c_labels, *b_labels, *x_labels[:1000], *((b"sea-x", v) for v in out.bad)]
        + x_labels[1000:]
        + h_ghosts
        + h_labels[:500]
    )
    await send(s, s.topics.labels, phase1_labels)
    counts_before = _label_counts()
    out.monitor = await run_monitor(s)
    j = out.joiner = LabelJoiner(s, name="test-labels")
    await j.start()
    task = asyncio.create_task(j.run())
    try:
        n_pred = N_C + N_B + N_X
        await until(lambda: j.labels_seen >= len(phase1_labels) and j.predictions_seen >= n_pred)
        out.phase1 = {m: dict(t) for m, t in j.totals().items()}
        out.held1 = sum(len(u.state.held) for u in j.units.values())
        await send(s, s.topics.predictions, h_preds)  # sea-h's predictions come late
        await until(lambda: j.predictions_seen >= n_pred + len(h_preds))
    finally:
        j.stop()
        await task
        await j.close()
    out.label_counts = {k: v - counts_before.get(k, 0.0) for k, v in _label_counts().items()}
    out.alerts = [
        orjson.loads(v) for v in await read_all(s.kafka.bootstrap_servers, s.topics.alerts)
    ]
    return out


async def until(cond: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def joined_until(s: Settings, name: str, done: Any) -> LabelJoiner:
    """A label joiner run until ``done(joiner)`` holds, then stopped and closed."""
    j = LabelJoiner(s, name=name)
    await j.start()
    task = asyncio.create_task(j.run())
    try:
        await until(lambda: done(j))
    finally:
        j.stop()
        await task
        await j.close()
    return j


def _alerts(sc: Scenario, model: str, kinds: set[str]) -> list[dict[str, Any]]:
    return [a for a in sc.alerts if a["model_id"] == model and a["kind"] in kinds]


async def test_concept_switch_raises_concept_drift_diagnosed_as_concept_drift(scenario):
    assert scenario.joiner is not None and scenario.joiner.totals()["sea-c"] == {"joined": N_C}
    assert _alerts(scenario, "sea-c", {"input_drift"}) == [], "the inputs did not move"
    slow = _alerts(scenario, "sea-c", {"concept_drift", "performance"})
    firing = [a for a in slow if a["status"] == "firing"]
    concept = [a for a in firing if a["kind"] == "concept_drift"]
    assert concept, f"no concept_drift alert among {slow}"
    first = concept[0]
    assert first["diagnosis"] == "concept_drift"
    # Fired on the error of predictions made after the switch, within a few hundred.
    at = event_index(first["window"]["end"])
    assert SWITCH <= at <= SWITCH + 600, at
    # ... and nothing fired on predictions made before the switch.
    assert all(event_index(a["window"]["end"]) >= SWITCH for a in firing)
    perf = [a for a in firing if a["kind"] == "performance"]
    assert perf and perf[0]["diagnosis"] == "concept_drift"
    assert perf[0]["statistic"] < perf[0]["threshold"]
    assert len({a["alert_id"] for a in slow}) == len(slow)
    assert gauge("driftline_diagnosis", model="sea-c", version="1", diagnosis="concept_drift") == 1
    assert scenario.settings is not None
    text = await report_text(scenario.settings, model="sea-c")
    assert "model sea-c" in text and "concept_drift" in text


async def test_covariate_shift_with_stable_accuracy_is_benign_input_drift(scenario):
    inputs = _alerts(scenario, "sea-b", {"input_drift"})
    assert inputs and inputs[0]["status"] == "firing"
    assert event_index(inputs[0]["detected_at"]) >= SHIFT
    assert scenario.joiner is not None and scenario.joiner.totals()["sea-b"] == {"joined": N_B}
    assert _alerts(scenario, "sea-b", {"concept_drift", "performance"}) == []
    assert scenario.settings is not None
    states, _ = await load_perf_states(scenario.settings)
    (st,) = [x for x in states if x.key == stream_key("sea-b", "1", "")]
    assert set(st.drift_diag.values()) == {"input_drift_benign"}
    assert st.current_diagnosis() == "input_drift_benign"
    assert (
        gauge("driftline_diagnosis", model="sea-b", version="1", diagnosis="input_drift_benign")
        == 1
    )


async def test_orphan_duplicate_expired_and_invalid_labels_are_counted_exactly(scenario):
    s, want = scenario.settings, scenario.want_x
    assert s is not None and scenario.joiner is not None
    assert scenario.joiner.totals()["sea-x"] == want
    assert scenario.joiner.outcomes[("_invalid", "invalid")] == 3
    for outcome, count in want.items():
        assert scenario.label_counts[("sea-x", outcome)] == count
    dlq = await read_all(s.kafka.bootstrap_servers, s.topics.dlq(s.topics.labels), idle_ms=800)
    assert sorted(dlq) == sorted(scenario.bad)
    assert scenario.phase1["sea-x"] == want
    states, totals = await load_perf_states(s)
    assert totals["sea-x"] == want
    (st,) = [x for x in states if x.key == stream_key("sea-x", "1", "")]
    assert (st.predicted, st.labelled) == (N_X, want["joined"])
    assert "sea-x: duplicate=50, expired=" in await report_text(s, model="sea-x")


async def test_the_labels_report_reads_redis_alone_with_the_broker_down(scenario):
    """``driftline labels --report`` asked Kafka for the labels topic's partition count
    before reading Redis: with the broker down it waited on Kafka and reported nothing.
    Now the partitions come from Redis (the meta records the joiner wrote): with the
    broker's address unreachable the report comes at once, from every partition the
    topic has (the oracle: the broker's own count, and the joiner's totals)."""
    s = scenario.settings
    assert s is not None and scenario.joiner is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap_servers)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([s.topics.labels])
    finally:
        await admin.close()
    client, store = open_store(s.redis, s.labels.group_id)
    try:
        stored = await store.stored_partitions(s.topics.labels, block=2)
    finally:
        await client.aclose()
    assert stored == list(range(len(meta["partitions"])))
    nowhere = s.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    down = s.model_copy(update={"kafka": nowhere})
    text = await asyncio.wait_for(report_text(down), 20)
    assert "model sea-c" in text and "labels sea-x: duplicate=50" in text
    _, totals = await asyncio.wait_for(load_perf_states(down), 20)
    assert totals == scenario.joiner.totals()


async def test_labels_before_their_predictions_are_held_until_they_come(scenario):
    assert scenario.joiner is not None and scenario.settings is not None
    assert scenario.phase1.get("sea-h", {}) == {}
    assert scenario.held1 == 505
    assert scenario.joiner.totals()["sea-h"] == {"joined": 500, "orphan": 5}
    assert sum(len(u.state.held) for u in scenario.joiner.units.values()) == 0
    # Phase two changed nothing for the other models.
    for model in ("sea-c", "sea-b", "sea-x"):
        assert scenario.joiner.totals()[model] == scenario.phase1[model]
    # What is committed in Redis is what the worker counted.
    _, totals = await load_perf_states(scenario.settings)
    assert totals == scenario.joiner.totals()


async def test_a_drift_alert_reruns_the_units_without_a_failed_commit_line(lsettings, caplog):
    """At a drift alert the joiner runs an empty batch per unit (its verdicts re-derived
    from stored evidence). Its Kafka commit of no position raised in aiokafka, and every
    unit logged 'advisory Kafka commit failed: ValueError' exactly when an on-call reads
    the logs. Oracle for the batches having run: the worker's state-commit counter grew
    by one per unit."""
    s = lsettings
    await create_topics(s)
    name = f"labels-{uuid.uuid4().hex[:8]}"
    j = LabelJoiner(s, name=name)

    def commits() -> float:
        return (
            REGISTRY.get_sample_value(
                "driftline_state_commits_total", {"worker": name, "result": "ok"}
            )
            or 0.0
        )

    await j.start()
    task = asyncio.create_task(j.run())
    try:
        await until(lambda: len(j.units) == 2)
        before = commits()
        alert = {
            "alert_id": "a" * 32, "model_id": "churn", "model_version": "3", "segment": None,
            "kind": "input_drift", "status": "firing", "severity": "warning",
            "feature": "age", "detector": "cusum", "statistic": 0.5, "threshold": 0.25,
            "p_value": None, "window": {"start": T0, "end": T0 + 1000, "count": 40},
            "reference": "churn:3:abc", "detected_at": T0 + 1000, "episode": 1,
            "diagnosis": "undetermined", "top_features": [], "schema_version": 1,
        }  # fmt: skip
        with caplog.at_level("INFO", logger="driftline.worker"):
            await send(s, s.topics.alerts, [alert])
            await until(lambda: commits() >= before + len(j.units))
    finally:
        j.stop()
        await task
        await j.close()
    failed = [r for r in caplog.records if "commit failed" in r.getMessage()]
    assert failed == []


# ------------------------------------------------------------------ crash and restart


def _spawn_labels(s: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        **redis_env(s),
        "DRIFTLINE_TOPICS__PREDICTIONS": s.topics.predictions,
        "DRIFTLINE_TOPICS__LABELS": s.topics.labels,
        "DRIFTLINE_TOPICS__ALERTS": s.topics.alerts,
        "DRIFTLINE_LABELS__GROUP_ID": s.labels.group_id,
        "DRIFTLINE_LABELS__MAX_BATCH_EVENTS": "300",
        "DRIFTLINE_LABELS__GRACE_SECONDS": "5",
        "DRIFTLINE_LABELS__BUCKET_SECONDS": "10",
        "DRIFTLINE_METRICS_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "driftline", "labels", "--idle-exit", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
@ON_BOTH_REDIS
async def test_sigkill_mid_stream_then_restart_counts_every_label_once(lsettings):
    s = lsettings
    sc = SeaScenario(model_id="sea-k", seed=15)
    await create_topics(s, partitions=1)
    await store_reference(s, sea_reference(sc))
    n = 6000
    preds, labels = sc.events(n, concept_at=3000)
    dups = [dict(lab, timestamp=lab["timestamp"] + 30) for lab in labels[::100]]
    ghosts = [
        {"prediction_id": f"ghost-{i}", "model_id": "sea-k", "label": "pos", "timestamp": T0 + i}
        for i in range(20)
    ]
    labels = sorted(labels + dups + ghosts, key=lambda e: e["timestamp"])
    await send(s, s.topics.predictions, preds)
    await send(s, s.topics.labels, labels)

    client, store = open_store(s.redis, s.labels.group_id)
    meta = store.keys(s.topics.labels, 0).meta
    proc = _spawn_labels(s)
    for _ in range(800):  # kill once some, not all, batches are committed
        await asyncio.sleep(0.03)
        seq = await client.hget(meta, "offset")
        if seq is not None and int(seq) >= 8:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    mid = int(await client.hget(meta, "offset") or -1)
    proc = _spawn_labels(s)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-2000:]
    got = await store.peek(s.topics.labels, 0)
    await client.aclose()
    assert got is not None and mid < got[0], "the kill must land mid-stream"
    unit = UnitState.from_fields(got[1])
    assert unit.models["sea-k"].labels == {
        "joined": n,
        "duplicate": len(dups),
        "orphan": len(ghosts),
    }
    assert unit.models["sea-k"].predictions == {"stored": n}
    st = unit.perf[stream_key("sea-k", "1", "")]
    assert (st.predicted, st.labelled) == (n, n)
    alerts = await alerts_of(s, {"concept_drift", "performance"})
    firing = {(a["kind"], a["episode"]) for a in alerts if a["status"] == "firing"}
    assert ("concept_drift", 1) in firing
    # Re-published alerts after the crash keep their ids: one id per (kind, episode, status).
    assert len({a["alert_id"] for a in alerts}) == len(
        {(a["kind"], a["episode"], a["status"]) for a in alerts}
    )


# ------------------------------------------------------------------ a backlog of labels


async def _join_backlog(
    s: Settings, labels: list[dict[str, Any]], preds: list[dict[str, Any]]
) -> tuple[LabelJoiner, int, bool]:
    """A backlog through one running joiner: every label is published (and read) before
    any prediction exists; the predictions are published once the joiner has paused its
    labels partition. Returns the joiner, the most labels it held at once and whether
    its labels partition was paused while the predictions were not there yet."""
    j = LabelJoiner(s, name=f"backlog-{s.labels.group_id}")
    await j.start()
    task = asyncio.create_task(j.run())
    most_held = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180

    def sample() -> None:
        nonlocal most_held
        assert loop.time() < deadline, "timed out"
        most_held = max(most_held, sum(len(u.state.held) for u in j.units.values()))

    try:
        await send(s, s.topics.labels, labels)
        while not j.labels_paused:
            sample()
            await asyncio.sleep(0.02)
        paused_before = j.predictions_seen == 0
        await send(s, s.topics.predictions, preds)
        while j.labels_seen < len(labels) or j.predictions_seen < len(preds):
            sample()
            await asyncio.sleep(0.02)
    finally:
        j.stop()
        await task
        await j.close()
    return j, most_held, paused_before


def live_alerts(
    s: Settings, ref: Any, preds: list[dict[str, Any]], labels: list[dict[str, Any]]
) -> set[tuple[str, str, int, str | None]]:
    """The slow-loop alerts without a backlog: the joiner's pure core on the events in
    event-time order (labels after their predictions, as they happen live)."""
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    items = interleave(preds, labels)
    out: set[tuple[str, str, int, str | None]] = set()
    step = s.labels.max_batch_events
    for i in range(0, len(items), step):
        p = [e for k, e in items[i : i + step] if k == "p"]
        lab = [e for k, e in items[i : i + step] if k == "l"]
        plan = plan_lookups(p, lab, unit, s.labels)
        res = join_batch(p, lab, plan, mem.lookup(plan), unit, lambda m, v: ref, drift, s.labels)
        mem.apply(res)
        out |= {(a.kind, a.status, a.episode, a.diagnosis) for a in res.alerts}
    return out


async def test_a_backlog_of_labels_before_their_predictions_loses_nothing(lsettings):
    # Issue 13: every label published before its prediction (a backlog after an
    # outage). The joiner holds at most max_held_labels (+ one batch), pauses the
    # labels partition meanwhile, and joins every label: no orphan, concept drift found.
    cap, batch = 1500, 500
    s = lsettings.model_copy(
        update={
            "labels": lsettings.labels.model_copy(
                update={"max_held_labels": cap, "max_batch_events": batch}
            )
        }
    )
    sc = SeaScenario(model_id="sea-bl", seed=16)
    await create_topics(s, partitions=1)
    await store_reference(s, sea_reference(sc))
    n = 6000
    preds, labels = sc.events(n, concept_at=3000)
    j, most_held, paused_before = await _join_backlog(s, labels, preds)
    assert paused_before  # the labels waited in Kafka: nothing else could make room
    assert j.totals()["sea-bl"] == {"joined": n}
    assert gauge("driftline_labels_total", model="sea-bl", outcome="orphan") is None
    assert cap <= most_held <= cap + batch, most_held
    assert gauge("driftline_labels_held", worker=j.name) == 0
    assert gauge("driftline_labels_paused", worker=j.name) == 0
    alerts = await alerts_of(s, {"concept_drift", "performance"})
    concept = [a for a in alerts if a["kind"] == "concept_drift" and a["status"] == "firing"]
    assert concept and concept[0]["diagnosis"] == "concept_drift"
    assert event_index(concept[0]["window"]["end"]) >= 3000
    # ... as without the backlog: the same alerts (kind, status, episode, diagnosis).
    got = {(a["kind"], a["status"], a["episode"], a["diagnosis"]) for a in alerts}
    assert got == live_alerts(s, sea_reference(sc), preds, labels)
    # ... in the slow-loop history the report and the status page read.
    client, store = open_store(s.redis, s.labels.group_id)
    try:
        hist = await load_history(store, "sea-bl")
        assert {a["alert_id"] for a in hist.alerts} == {a["alert_id"] for a in alerts}
        (status,) = [x for x in await model_statuses(store) if x["model"] == "sea-bl"]
        assert status["state"] == "degraded"
        assert "concept_drift" in render_index([status], 0)
        # ... and in the HTML report's episodes.
        data = await report_from_store(store, "sea-bl")
        assert ("concept_drift", 1) in {(e["kind"], e["episode"]) for e in data["episodes"]}
        assert "concept_drift" in render_report(data)
    finally:
        await client.aclose()


# ------------------------------------------------------------------ label batches


async def test_a_label_batch_dead_letters_its_poison_rows_and_joins_the_rest_once(lsettings):
    # label_batch.v1 (what the SDK sends by default) mixed with single label events: a
    # row that breaks the contract goes to the DLQ alone, as its single label event and
    # with that event's reason; a malformed batch goes whole; the rest is joined once.
    s = lsettings
    sc = SeaScenario(model_id="sea-lb", seed=21)
    await create_topics(s, partitions=1)
    await store_reference(s, sea_reference(sc))
    n = 600
    preds, labels = sc.events(n)
    poison = [{**labels[10], "label": True}, {**labels[20], "timestamp": -1}]
    rows = [*labels[:10], poison[0], *labels[10:20], poison[1], *labels[20:300], labels[5]]
    batches = [(b"sea-lb", orjson.dumps(b)) for b in pack_label_events(rows, max_rows=100)]
    malformed = orjson.dumps({**pack_label_events(labels[:3])[0], "count": 4})
    records = [*batches, *labels[300:450], (b"sea-lb", malformed), *labels[450:]]
    await send(s, s.topics.predictions, preds)
    await send(s, s.topics.labels, records)
    # Labels are counted one each (a batch's rows too; the malformed batch as the
    # three labels it held: it counted one, however many it held).
    j = await joined_until(
        s,
        f"batches-{s.labels.group_id}",
        lambda j: j.labels_seen >= len(rows) + n - 300 + 3 and j.predictions_seen >= n,
    )
    assert j.labels_seen == len(rows) + n - 300 + 3
    assert j.totals()["sea-lb"] == {"joined": n, "duplicate": 1}
    assert j.outcomes[("_invalid", "invalid")] == 2 + 3
    assert j.labels_dead_lettered == 2 + 3 and j.dead_letters == 3
    dlq = await read_dlq(s.kafka.bootstrap_servers, s.topics.dlq(s.topics.labels), idle_ms=800)
    assert [orjson.loads(v) for v, _ in dlq[:2]] == poison
    assert [h["dl.error.message"] for _, h in dlq[:2]] == [
        "label: expected a number or a string, got a boolean",
        "timestamp: negative epoch milliseconds",
    ]
    assert dlq[2][0] == malformed
    assert dlq[2][1]["dl.error.message"] == (
        "prediction_ids: 3 entries, count is 4 (a label batch of 3 labels, refused whole)"
    )
    assert len(dlq) == 3


async def test_predictions_refused_only_for_a_feature_value_are_dead_lettered_and_joined(
    lsettings,
):
    # The monitor refuses a batch, and a single event, whose only fault is a feature
    # value, to the predictions' dead-letter topic with the reason; the joiner, which
    # reads no feature, stores them, and their labels join instead of becoming orphans.
    s = lsettings
    sc = SeaScenario(model_id="sea-fv", seed=23)
    await create_topics(s, partitions=1)
    await store_reference(s, sea_reference(sc))
    n = 600
    preds, labels = sc.events(n)
    batches = pack_events(preds[:300], max_rows=100)
    batches[1]["features"]["x1"][7] = [1.0]  # a list where a number belongs
    # A binary batch (prediction_batch.v2) whose block holds an infinity, which no
    # JSON batch can carry; the first batch is a valid binary one.
    binary = encode_binary_batch(batches[2])
    block = 12 + int.from_bytes(binary[8:12], "little")
    block += -block % 8
    assert list(batches[2]["features"])[0] == "x0"
    infinite = binary[:block] + np.float64(np.inf).tobytes() + binary[block + 8 :]
    too_long = "x" * (LIMITS.max_string_value_length + 1)
    bad_event = {**preds[450], "features": {**preds[450]["features"], "x2": too_long}}
    records = [
        (b"sea-fv", encode_binary_batch(batches[0])),
        (b"sea-fv", orjson.dumps(batches[1])),
        (b"sea-fv", infinite),
        *preds[300:450],
        bad_event,
        *preds[451:],
    ]
    await send(s, s.topics.predictions, records)
    await send(s, s.topics.labels, labels)
    await run_monitor(s)
    dlq = await read_dlq(s.kafka.bootstrap_servers, s.topics.dlq(s.topics.predictions), idle_ms=800)
    assert [v for v, _ in dlq] == [orjson.dumps(batches[1]), infinite, orjson.dumps(bad_event)]
    assert [h["dl.error.message"] for _, h in dlq] == [
        "features.'x1': value is a list",
        "features.'x0': value is infinite",
        f"features.'x2': string is longer than {LIMITS.max_string_value_length} characters",
    ]
    j = await joined_until(
        s, f"features-{s.labels.group_id}", lambda j: j.labels_seen >= n and j.predictions_seen >= n
    )
    assert j.predictions_seen == n and j.labels_seen == n
    assert j.totals()["sea-fv"] == {"joined": n}
    assert ("_invalid", "invalid") not in j.outcomes


# ------------------------------------------------------------------ one server = a cluster


def _perf_counts(states: list[Any]) -> dict[str, Any]:
    return {
        st.key: (
            st.predicted,
            st.labelled,
            {t: (b.pred, b.lab, b.correct) for t, b in st.buckets.items()},
            {kind: ep.firing for kind, ep in st.episodes.items()},
            st.drift_diag,
        )
        for st in states
    }


async def test_the_scenario_on_a_redis_cluster_equals_the_one_on_one_server(stack, request):
    """Same alerts (ids, kinds, episodes, windows), totals and committed performance
    states, whether the state lives on one redis-server or on three cluster masters."""
    server = _SCENARIOS.get("server") or await _run_scenario(stack, request, "server")
    cluster = _SCENARIOS.get("cluster") or await _run_scenario(stack, request, "cluster")

    def alerts(sc: Scenario) -> list[tuple[Any, ...]]:
        return sorted(
            (
                a["alert_id"],
                a["model_id"],
                a["kind"],
                a["episode"],
                a["status"],
                orjson.dumps(a["window"]),
            )
            for a in sc.alerts
        )

    assert alerts(server) and alerts(server) == alerts(cluster)
    assert server.joiner is not None and cluster.joiner is not None
    assert server.joiner.totals() == cluster.joiner.totals()
    assert server.label_counts == cluster.label_counts
    assert server.settings is not None and cluster.settings is not None
    (s_states, s_totals), (c_states, c_totals) = [
        await load_perf_states(sc.settings) for sc in (server, cluster) if sc.settings
    ]
    assert s_totals == c_totals
    # Counts, not bytes: the joiner meets predictions and labels in the order their two
    # topics are fetched, which differs from run to run on any Redis, so ADWIN's bucket
    # merges and float sums may differ in their last bits between two runs.
    assert _perf_counts(s_states) == _perf_counts(c_states)


async def test_labels_of_a_model_that_never_predicts_are_named_in_the_report(lsettings):
    """A label pipeline that writes model_id 'SEA-T' for the model the servers call
    'sea-t': its labels are held for a prediction that never comes (only that model's
    prediction clock would orphan them), and `driftline labels --report` did not show
    them at all ('labels sea-t: joined=...' and nothing else). It names the model, how
    many are held and that it has no predictions. Oracle: the count sent."""
    s = lsettings
    await create_topics(s)
    sc = SeaScenario(model_id="sea-t")
    await store_reference(s, sea_reference(sc))
    preds, labels = sc.events(600, delay_events=50, jitter_events=10)
    typo = [{**lab, "model_id": "SEA-T"} for lab in labels[:40]]
    await send(s, s.topics.predictions, preds)
    await send(s, s.topics.labels, labels + typo)
    await joined_until(
        s, "test-typo", lambda j: j.labels_seen >= len(labels) + len(typo) and j.predictions_seen
    )
    text = await report_text(s)
    assert (
        "labels SEA-T: held=40 (no prediction of model 'SEA-T' seen: they wait for one;" in text
    ), text
    (line,) = [x for x in text.splitlines() if x.startswith("labels sea-t: ")]
    assert "joined=" in line and "no prediction" not in line, line


async def test_labels_held_for_a_model_never_seen_are_said_at_once(lsettings, caplog):
    """Labels of a model id no server sends ('SEA-T' for 'sea-t') were held without a
    word until labels.max_held_labels paused the partition: a user waiting for accuracy
    saw nothing. Now the first batch that holds such labels says so, once per model,
    naming it and the partition, and one line says when its predictions come (labels
    sent before their model's first predictions). Oracle: the labels sent."""
    caplog.set_level("WARNING", logger="driftline.labels")
    await create_topics(lsettings, partitions=1)
    sc = SeaScenario(model_id="sea-t", seed=29)
    await store_reference(lsettings, sea_reference(sc))
    preds, labels = sc.events(300)
    typo = [{**lab, "model_id": "SEA-T"} for lab in labels[:40]]
    j = LabelJoiner(lsettings, name="test-unseen")
    await j.start()
    task = asyncio.create_task(j.run())
    try:
        await send(lsettings, lsettings.topics.labels, labels[:100])  # before their predictions
        await until(lambda: j.labels_seen >= 100)
        await send(lsettings, lsettings.topics.predictions, preds)
        await send(lsettings, lsettings.topics.labels, labels[100:])
        await until(lambda: j.labels_seen >= len(labels) and j.predictions_seen >= len(preds))
        await send(lsettings, lsettings.topics.labels, typo[:10])
        await until(lambda: j.labels_seen >= len(labels) + 10)
        await send(lsettings, lsettings.topics.labels, typo[10:])
        await until(lambda: j.labels_seen >= len(labels) + len(typo))
    finally:
        j.stop()
        await task
        await j.close()
    said = [r.getMessage() for r in caplog.records if " held" in r.getMessage()]
    where = f"{lsettings.topics.labels}[0]"
    # the first batch of sea-t's early labels: 100, or fewer if the fetch split them
    early = re.fullmatch(r".*\((\d+) held on .*", said[0] if said else "")
    assert early is not None and 1 <= int(early[1]) <= 100, said
    assert said == [
        f"labels of model 'sea-t' held: no prediction of it seen yet ({early[1]} held on "
        f"{where}); they join when its predictions come. Does a model server send model_id "
        "'sea-t'? (driftline labels --report)",
        "predictions of model 'sea-t' seen: its held labels join them",
        f"labels of model 'SEA-T' held: no prediction of it seen yet (10 held on {where}); "
        "they join when its predictions come. Does a model server send model_id 'SEA-T'? "
        "(driftline labels --report)",
    ]
    assert j.totals()["sea-t"] == {"joined": len(labels)} and not j.labels_paused


async def test_a_partition_paused_for_held_labels_says_whose_they_are_and_why(lsettings, caplog):
    """Labels of a model id no server sends ('SEA-T' for 'sea-t') are held, not orphaned,
    and at labels.max_held_labels they pause their labels partition. The joiner's one
    line said only 'labels of partition 0 wait: 60 labels held for predictions not read
    yet': not which model, nor that the partition is paused, nor what resumes it. Now it
    names the partition, the model (with no prediction seen), the limit, and that the
    labels wait in Kafka. Oracle: the labels sent."""
    caplog.set_level("WARNING", logger="driftline.labels")
    cap = 60
    s = lsettings.model_copy(
        update={"labels": lsettings.labels.model_copy(update={"max_held_labels": cap})}
    )
    await create_topics(s, partitions=1)
    sc = SeaScenario(model_id="sea-t", seed=23)
    await store_reference(s, sea_reference(sc))
    preds, labels = sc.events(300)
    typo = [{**lab, "model_id": "SEA-T"} for lab in labels[:cap]]
    j = LabelJoiner(s, name="test-paused")
    await j.start()
    task = asyncio.create_task(j.run())
    try:
        await send(s, s.topics.predictions, preds)
        await send(s, s.topics.labels, labels)
        await until(lambda: j.labels_seen >= len(labels) and j.predictions_seen >= len(preds))
        assert not j.labels_paused
        await send(s, s.topics.labels, typo)
        await until(lambda: bool(j.labels_paused))
    finally:
        j.stop()
        await task
        await j.close()
    said = [r.getMessage() for r in caplog.records if " paused: " in r.getMessage()]
    assert said == [
        f"labels partition {s.topics.labels}[0] paused: {cap} labels held for predictions not "
        f"seen yet (labels.max_held_labels={cap}): {cap} of model 'SEA-T' (no prediction "
        "of it seen: does a model server send this model_id?). Its labels wait in Kafka, "
        "none lost, until half the held ones joined or became orphans; predictions are "
        "still read (driftline labels --report; runbook DriftlineLabelsHeldNearLimit)"
    ]
