"""The monitor through real Tansu and redis-server, checked against a clean replay."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys

import orjson
import pytest

from driftline.contract.keys import StateKey
from driftline.core.reference import build_reference
from driftline.core.reference.profile import ReferenceProfile
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer
from driftline.runtime.monitor import MonitorWorker
from driftline.runtime.store import open_store
from support import (
    MONITOR_SRC,
    ON_BOTH_REDIS,
    assert_close,
    pair_events,
    pair_reference,
    publish,
    read_all,
    redis_env,
    run_until,
    stored_states,
)

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


async def _store_reference(settings, ref):
    client, store = open_store(settings.redis, settings.monitor.group_id)
    await store.put_reference(ref.model_id, ref.model_version, ref.to_bytes())
    await client.aclose()


@functools.cache
def _reference():
    """Built once per module (tests only store and replay it; the profile is frozen)."""
    return build_reference(
        SimulatedModel(seed=3).training_data(20_000), "churn", "1", seed=0, created_at=0
    )


async def _run_worker(settings, records):
    """A monitor in this process, stopped once it handled the topic's ``records``."""
    worker = MonitorWorker(settings, name="test")
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= records)
    finally:
        await worker.close()
    return worker


@ON_BOTH_REDIS
async def test_stream_alerts_on_shift_and_equals_replay(settings):
    ref = _reference()
    await _store_reference(settings, ref)
    events = list(SimulatedModel(seed=11).events(12_000, shift=Shift(start=6_000, sigmas=0.5)))
    # A second model on the same topic, stationary, must stay quiet.
    other = SimulatedModel(seed=12, model_id="fraud", model_version="7")
    await _store_reference(
        settings, build_reference(other.training_data(20_000), "fraud", "7", seed=0, created_at=0)
    )
    quiet = list(other.events(6_000))
    # A third model whose two features stop moving together (multivariate, issue 15).
    pair_ref = pair_reference()
    await _store_reference(settings, pair_ref)
    joint = pair_events(13, 6_000, 3_000)
    bad = [b"not json", orjson.dumps({"model_id": "churn"})]
    await publish(
        settings.kafka.bootstrap_servers, settings.topics.predictions, events + quiet + joint
    )
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await prod.start()
    for b in bad:
        await prod.send_and_wait(settings.topics.predictions, b, key=b"churn")
    await prod.stop()

    records = len(events) + len(quiet) + len(joint) + len(bad)
    worker = await _run_worker(settings, records)
    assert worker.processed == len(events) + len(quiet) + len(joint)
    assert worker.dead_letters == 2

    alerts = [
        orjson.loads(v)
        for v in await read_all(settings.kafka.bootstrap_servers, settings.topics.alerts)
    ]
    paired = [a for a in alerts if a["model_id"] == "pair"]
    assert [(a["kind"], a["status"], a["detector"]) for a in paired] == [
        ("input_drift", "firing", "multivariate")
    ]
    assert {f["feature"] for f in paired[0]["top_features"][:2]} == {"f00", "f01"}
    alerts = [a for a in alerts if a["model_id"] != "pair"]
    firing = [a for a in alerts if a["status"] == "firing"]
    assert firing and all(a["model_id"] == "churn" for a in alerts)
    first = firing[0]
    assert first["kind"] == "input_drift" and first["top_features"][0]["feature"] == "f03"
    delay = (first["detected_at"] - T0) // 10 - 6_000
    assert 0 <= delay <= 600

    # Oracle: a clean single-pass replay of the same input.
    other_ref = build_reference(
        SimulatedModel(seed=12, model_id="fraud", model_version="7").training_data(20_000),
        "fraud",
        "7",
        seed=0,
        created_at=0,
    )
    replay = Replayer({("churn", "1"): ref, ("fraud", "7"): other_ref, ("pair", "1"): pair_ref})
    replay.feed(events)
    replay.feed(quiet)
    replay.feed(joint)
    want = {a.alert_id: a.model_dump(mode="json") for a in replay.result.alerts}
    assert {a["alert_id"] for a in alerts + paired} == set(want)
    assert paired[0] == want[paired[0]["alert_id"]]  # the same alert, top_features included
    stored = await stored_states(settings)
    assert set(stored) == {k.encode() for k in replay.result.states}
    for key, st in replay.result.states.items():
        assert_close(stored[key.encode()], st.to_bytes())

    dlq = await read_all(
        settings.kafka.bootstrap_servers,
        settings.topics.dlq(settings.topics.predictions),
        idle_ms=800,
    )
    assert sorted(dlq) == sorted(bad)


@pytest.mark.slow
async def test_stationary_stream_of_200k_events_raises_no_alert(settings):
    ref = _reference()
    await _store_reference(settings, ref)
    events = list(SimulatedModel(seed=21).events(200_000))
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events)
    worker = await _run_worker(settings, len(events))
    assert worker.processed == 200_000
    assert (
        await read_all(settings.kafka.bootstrap_servers, settings.topics.alerts, idle_ms=800) == []
    )


def _spawn_monitor(settings):
    env = {
        **os.environ,
        # The child runs the source tree this test imported, not whatever the
        # interpreter's editable install points at (as support.monitor_env does).
        "PYTHONPATH": MONITOR_SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        **redis_env(settings),
        "DRIFTLINE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "DRIFTLINE_TOPICS__ALERTS": settings.topics.alerts,
        "DRIFTLINE_MONITOR__GROUP_ID": settings.monitor.group_id,
        "DRIFTLINE_MONITOR__MAX_BATCH_EVENTS": "500",
        "DRIFTLINE_METRICS_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "driftline", "monitor", "--idle-exit", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
@ON_BOTH_REDIS
async def test_sigkill_mid_stream_then_restart_equals_uninterrupted_run(settings):
    ref = _reference()
    await _store_reference(settings, ref)
    events = list(SimulatedModel(seed=31).events(30_000, shift=Shift(start=12_000, sigmas=1.0)))
    # And a model whose features stop moving together: the multivariate state too.
    pair_ref = pair_reference()
    await _store_reference(settings, pair_ref)
    joint = pair_events(17, 16_000, 8_000)
    events = [x for two in zip(events, [*joint, *[None] * 14_000], strict=True) for x in two if x]
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events)
    client, store = open_store(settings.redis, settings.monitor.group_id)

    proc = _spawn_monitor(settings)
    # Kill it once it has committed some, but not all, of the stream.
    for _ in range(600):
        await asyncio.sleep(0.05)
        offsets = [
            int(v)
            for p in (0, 1)
            if (v := await client.hget(store.keys(settings.topics.predictions, p).meta, "offset"))
            is not None
        ]
        if sum(o + 1 for o in offsets if o >= 0) >= 6_000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # Events committed before the kill, over both partitions.
    mid = 0
    for p in (0, 1):
        mid += int(
            await client.hget(store.keys(settings.topics.predictions, p).meta, "offset") or -1
        )
        mid += 1
    proc = _spawn_monitor(settings)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-2000:]
    await client.aclose()
    assert 0 < mid < len(events), "the kill should land mid-stream"

    replay = Replayer({("churn", "1"): ref, ("pair", "1"): pair_ref})
    replay.feed(events)
    alerts = [
        orjson.loads(v)
        for v in await read_all(settings.kafka.bootstrap_servers, settings.topics.alerts)
    ]
    # Re-published alerts after the crash carry the same ids: the *set* equals the replay's.
    assert {a["alert_id"] for a in alerts} == {a.alert_id for a in replay.result.alerts}
    assert replay.result.alerts, "the shift should have been alerted"
    assert "multivariate" in {a.detector for a in replay.result.alerts}
    stored = await stored_states(settings)
    for model in ("churn", "pair"):
        key = StateKey(model, "1")
        assert_close(stored[key.encode()], replay.result.states[key].to_bytes())
        assert "mv" in orjson.loads(stored[key.encode()])


async def test_a_version_without_a_reference_says_when_it_gets_a_warm_up_one(settings, caplog):
    """Model version 2 deployed without `driftline reference build`: the monitor built its
    reference from its first 2,000 live events and stored it without a word (only
    `reference show` said `source=warm-up`), so an on-call could not know its drift is
    measured against live data. One warning, naming the model, the reference and the
    command that measures against training data. Oracle: the stored reference's id."""
    caplog.set_level("WARNING", logger="driftline.monitor")
    events = list(SimulatedModel(seed=5, model_version="2").events(2_100))
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events)
    await _run_worker(settings, len(events))
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        data = await store.get_reference("churn", "2")
    finally:
        await client.aclose()
    assert data is not None
    stored = ReferenceProfile.from_bytes(data)
    said = [r.getMessage() for r in caplog.records if "had no reference" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(
        f"model churn version 2 had no reference: built {stored.reference_id} from its "
        "first 2000 live events"
    )
    assert "driftline reference build --model churn --version 2 --data FILE" in said[0]


async def test_a_monitor_with_the_compiled_core_equals_the_numpy_replay(settings, caplog):
    """``monitor.compiled_core: on`` (numba): the worker's alerts and stored states are
    the numpy replay's, on binary batches as the SDK sends them."""
    from driftline.contract.binary_batch import encode_binary_batch
    from driftline.contract.columnar import pack_events
    from driftline.core.detectors import bank

    ref = _reference()
    await _store_reference(settings, ref)
    events = list(SimulatedModel(seed=21).events(9_000, shift=Shift(start=4_000, sigmas=0.5)))
    batches = [encode_binary_batch(env) for env in pack_events(events, max_rows=500)]
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await prod.start()
    for value in batches:
        await prod.send_and_wait(settings.topics.predictions, value, key=b"churn")
    await prod.stop()
    on = settings.model_copy(
        update={"monitor": settings.monitor.model_copy(update={"compiled_core": "on"})}
    )
    caplog.set_level("INFO", logger="driftline.monitor")
    try:
        worker = await _run_worker(on, len(events))  # processed counts predictions
        assert worker.compiled_core and bank._compiled_pass is not None
    finally:
        bank.use_compiled_pass(False)  # the rest of the suite runs the numpy pass
    assert "compiled core on" in caplog.text
    assert worker.processed == len(events) and worker.dead_letters == 0
    alerts = [
        orjson.loads(v)
        for v in await read_all(settings.kafka.bootstrap_servers, settings.topics.alerts)
    ]
    replay = Replayer({("churn", "1"): ref})
    replay.feed(events)
    want = [a.alert_id for a in replay.result.alerts]
    assert want and [a["alert_id"] for a in alerts] == want
    stored = await stored_states(settings)
    assert set(stored) == {k.encode() for k in replay.result.states}
    for key, st in replay.result.states.items():
        assert_close(stored[key.encode()], st.to_bytes())


async def test_a_closed_worker_leaves_its_group_at_once(settings):
    """Tansu numbers a group's first generation 0, and aiokafka leaves a group only from
    generation 1 (Kafka's first): a monitor closed in it stayed a member until its
    session timed out, so its restart joined, waited for the gone member and joined
    again (about 8 s lost with the suite's 6 s session). Oracle: the broker's own
    description of the group, a member while it runs and none once it closed."""
    from aiokafka.admin import AIOKafkaAdminClient

    events = list(SimulatedModel(seed=1).events(20))
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()

    async def members() -> tuple[int, list[str]]:
        (response,) = await admin.describe_consumer_groups([settings.monitor.group_id])
        ((_, _, _, _, _, group_members),) = response.groups
        return len(group_members), [m[0] for m in group_members]

    worker = MonitorWorker(settings, name="test")
    await worker.start()
    try:
        running = asyncio.create_task(worker.run())
        try:
            while worker.processed < len(events):
                await asyncio.sleep(0.05)
            assert worker.consumer is not None
            assert await members() == (1, [worker.consumer._coordinator.member_id])
            assert worker.consumer._coordinator.generation == 0  # Tansu's first
        finally:
            worker.stop()
            await running
    finally:
        await worker.close()
    try:
        assert await members() == (0, [])
    finally:
        await admin.close()
