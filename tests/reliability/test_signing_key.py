"""Issue 16, row 9: no default signing key.

Before, a worker without ``DRIFTLINE_REDIS__STATE_SIGNING_KEY`` fell back to a
hard-coded development key, so anyone with write access to Redis could forge a
reference (thresholds out of reach) that the monitor accepted: 0 alerts on a drift
that should raise 3. Now a worker without a key does not start, and a reference
signed with any other key (the old default included) is refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from reliability_support import references, settings_for

from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer
from driftline.runtime.devstack import DevStack
from driftline.runtime.keyspace import reference_key
from driftline.runtime.monitor import ensure_topics
from driftline.runtime.sealer import Sealer
from support import (
    MonitorProc,
    monitor_env,
    put_reference,
    read_all,
    redis_client,
    redis_offsets,
)

pytestmark = pytest.mark.integration

#: The key Driftline used when none was configured, before issue 16 (public).
OLD_DEFAULT_KEY = "driftline-dev-signing-key"


def _out_of_reach(obj: Any) -> Any:
    """A profile whose every threshold no drift can reach."""
    if isinstance(obj, dict):
        return {k: 1e9 if "threshold" in k else _out_of_reach(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_out_of_reach(v) for v in obj]
    return obj


async def test_a_worker_without_a_key_does_not_start(stack: DevStack) -> None:
    settings = settings_for(stack.broker.bootstrap, stack.redis.url)
    env = monitor_env(settings)
    env.pop("DRIFTLINE_REDIS__STATE_SIGNING_KEY")
    out = subprocess.run(
        [sys.executable, "-m", "driftline", "monitor", "--idle-exit", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr[-2000:]  # a configuration (input) error
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("driftline: error: no state signing key: set ")
    assert "DRIFTLINE_REDIS__STATE_SIGNING_KEY" in line and "there is no default" in line
    # It touched nothing: no partition was leased.
    assert await redis_offsets(settings) == {0: -1, 1: -1}


async def test_a_reference_forged_with_the_old_default_key_is_refused(
    stack: DevStack, tmp_path: Path
) -> None:
    settings = settings_for(stack.broker.bootstrap, stack.redis.url)
    churn_ref, fraud_ref = references()
    topic = settings.topics.predictions
    await ensure_topics(settings, [topic, settings.topics.alerts, settings.topics.dlq(topic)], 2)

    # The attacker can write to Redis but holds only the old public key: churn gets a
    # reference with every threshold out of reach, sealed with that key.
    forged = orjson.dumps(_out_of_reach(orjson.loads(churn_ref.to_bytes())))
    key = reference_key(settings.redis.key_prefix, "churn", "1")
    client = redis_client(settings)
    try:
        await client.set(key, Sealer(OLD_DEFAULT_KEY).seal(key, forged))
    finally:
        await client.aclose()
    await put_reference(settings, fraud_ref)  # fraud's, sealed with the configured key

    # Both models drift by 3 sd; churn on partition 0, fraud on partition 1.
    shift = Shift(start=2_000, sigmas=3.0)
    churn = list(SimulatedModel(seed=81).events(6_000, shift=shift))
    fraud_model = SimulatedModel(seed=82, model_id="fraud", model_version="7")
    fraud = list(fraud_model.events(6_000, shift=shift))
    prod = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=20)
    await prod.start()
    try:
        futs = [await prod.send(topic, orjson.dumps(e), partition=0) for e in churn]
        futs += [await prod.send(topic, orjson.dumps(e), partition=1) for e in fraud]
        for f in futs:
            await f
    finally:
        await prod.stop()

    proc = MonitorProc(settings, tmp_path / "monitor.log")
    assert await proc.wait() == 0, proc.log()[-3000:]
    log = proc.log()
    # The model is held back (issue 16 row 6), not its partition: its events are
    # dead-lettered with the reason, and the log names the record and the cause.
    assert "held back (reference_corrupt)" in log, log[-3000:]
    assert "ref:{churn}:1" in log and "signature mismatch" in log, log[-3000:]
    assert len(await read_all(stack.broker.bootstrap, settings.topics.dlq(topic))) == len(churn)

    # The forged reference was never used: no churn alert; fraud's drift raised its 3.
    published = await read_all(stack.broker.bootstrap, settings.topics.alerts)
    alerts = [orjson.loads(v) for v in published]
    assert not [a for a in alerts if a["model_id"] == "churn"]
    replay = Replayer({("fraud", "7"): fraud_ref})
    replay.feed(fraud)
    want = {(a.kind, a.status, a.alert_id) for a in replay.result.alerts}
    assert {(a["kind"], a["status"], a["alert_id"]) for a in alerts} == want
    assert sorted(k for k, s, _ in want if s == "firing") == [
        "data_quality",
        "input_drift",
        "output_drift",
    ]
    assert (await redis_offsets(settings))[1] == len(fraud) - 1

    # The operator's tools refuse it too, with one line.
    show = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "driftline", "reference", "show", *("--model", "churn")]
        + ["--version", "1"],
        env=monitor_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 1, show.stderr  # stored state refused: a failure
    (line,) = show.stderr.strip().splitlines()
    assert line.startswith("driftline: error: stored state: ") and "signature mismatch" in line
