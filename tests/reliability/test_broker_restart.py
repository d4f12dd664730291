"""Scenario 4: the broker restarts (Tansu on s3:// storage served by a local moto).

Memory storage forgets topics on restart, so the broker keeps its log in S3 (moto's
server on a loopback port). Workers reconnect by themselves and resume from Redis:
the stored state and the alert-id set equal a clean replay; alerts are published at
least once (the ids deduplicate), state updates exactly once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from reliability_support import Stream, settings_for

from driftline.runtime.devstack import DevStack, TansuBroker, free_port, wait_port
from support import MonitorProc, assert_equals_replay, publish, put_reference, redis_offsets
from tool_checks import require_module

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "tansu"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port, with the bucket; yields Tansu's environment."""
    require_module("moto.server")
    boto3 = require_module("boto3")
    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, proc=proc)
        env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT": f"http://127.0.0.1:{port}",
            "AWS_ALLOW_HTTP": "true",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def s3_broker(s3: dict[str, str], tmp_path: Path) -> AsyncIterator[TansuBroker]:
    broker = TansuBroker(storage=f"s3://{BUCKET}/", env=s3).start(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


async def test_broker_hard_restart_mid_stream_loses_and_duplicates_nothing(
    stack: DevStack, stream: Stream, s3_broker: TansuBroker, tmp_path: Path
) -> None:
    topic = "predictions-s3"
    await publish(s3_broker.bootstrap, topic, stream.events)
    s = settings_for(s3_broker.bootstrap, stack.redis.url, topic)
    for ref in stream.references:
        await put_reference(s, ref)
    proc = MonitorProc(
        s, tmp_path / "monitor.log", idle_exit=8.0, DRIFTLINE_MONITOR__MAX_BATCH_EVENTS="100"
    )
    for _ in range(1_200):
        if sum(o + 1 for o in (await redis_offsets(s)).values()) >= 2_000:
            break
        await asyncio.sleep(0.05)
    s3_broker.kill()  # a hard bounce: SIGKILL
    at_kill = sum(o + 1 for o in (await redis_offsets(s)).values())
    await asyncio.sleep(2.0)
    s3_broker.start(tmp_path)  # same port, same bucket
    assert at_kill < len(stream.events), "the bounce should land mid-stream"

    assert await proc.wait(180) == 0, proc.log()[-4000:]
    assert "Traceback" not in proc.log(), proc.log()[-4000:]
    await assert_equals_replay(s, stream.replay)
    assert os.path.exists(tmp_path / f"tansu-{s3_broker.port}.log")
