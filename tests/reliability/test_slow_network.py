"""Scenario 7: slow or unreachable Redis and broker, through test TCP proxies.

Guarantees: backpressure, not loss (the worker holds its batch and retries; nothing
more is fetched meanwhile); bounded memory; and the Kafka committed offset never runs
ahead of the state in Redis (committed <= stored offset + 1, sampled throughout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reliability_support import Stream, settings_for

from driftline.runtime.devstack import DevStack, TansuBroker
from support import (
    MonitorProc,
    TcpProxy,
    assert_equals_replay,
    broker_behind,
    kafka_committed,
    publish,
    put_reference,
    redis_offsets,
    rss_bytes,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def proxied_broker(tmp_path: Path) -> AsyncIterator[tuple[TansuBroker, TcpProxy]]:
    """A Tansu that advertises a proxy in front of itself: every client goes through it."""
    async with broker_behind(TcpProxy, tmp_path) as pair:
        yield pair


async def test_slow_and_cut_redis_and_broker_lose_nothing_and_keep_offsets_behind_state(
    stack: DevStack, stream: Stream, proxied_broker: tuple[TansuBroker, TcpProxy], tmp_path: Path
) -> None:
    broker, kafka_proxy = proxied_broker
    redis_proxy = await TcpProxy(stack.redis.port).start()
    bootstrap = f"127.0.0.1:{kafka_proxy.port}"
    topic = "predictions-proxied"
    await publish(bootstrap, topic, stream.events)
    s = settings_for(bootstrap, f"redis://127.0.0.1:{redis_proxy.port}/0", topic)
    direct = s.model_copy(update={"redis": s.redis.model_copy(update={"url": stack.redis.url})})
    for ref in stream.references:
        await put_reference(direct, ref)

    proc = MonitorProc(
        s,
        tmp_path / "monitor.log",
        idle_exit=5.0,
        DRIFTLINE_MONITOR__MAX_BATCH_EVENTS="100",
        DRIFTLINE_REDIS__SOCKET_TIMEOUT="2",
    )
    violations: list[str] = []
    peak_rss = 0
    samples = 0

    async def watch() -> None:
        nonlocal peak_rss, samples
        while proc.proc.poll() is None:
            try:
                # Kafka first, then Redis: both only grow, so K(t1) <= R(t1) + 1 <= R(t2) + 1.
                committed = await asyncio.wait_for(
                    kafka_committed(bootstrap, s.monitor.group_id, topic), 3
                )
            except Exception:  # the broker is cut right now: no sample
                await asyncio.sleep(0.1)
                continue
            stored = await redis_offsets(direct)
            samples += 1
            for p, k in committed.items():
                if k > stored[p] + 1:
                    violations.append(f"partition {p}: kafka {k} > redis {stored[p]} + 1")
            try:
                peak_rss = max(peak_rss, rss_bytes(proc.pid))
            except OSError:
                return
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())

    async def progress() -> int:
        return sum(o + 1 for o in (await redis_offsets(direct)).values())

    for _ in range(600):
        if await progress() >= 1_000:
            break
        await asyncio.sleep(0.05)
    redis_proxy.latency = 0.01
    await asyncio.sleep(1.5)
    redis_proxy.cut()  # Redis unreachable: the worker holds its batch and retries
    at_cut = await progress()
    await asyncio.sleep(3.0)
    assert await progress() == at_cut, "no commit while Redis is unreachable"
    redis_proxy.restore()
    await asyncio.sleep(1.0)
    kafka_proxy.latency = 0.01
    await asyncio.sleep(1.5)
    kafka_proxy.cut()  # the broker unreachable (shorter than the session timeout)
    await asyncio.sleep(3.0)
    kafka_proxy.restore()

    assert await proc.wait(120) == 0, proc.log()[-4000:]
    await watcher
    await redis_proxy.stop()
    assert samples > 10
    assert violations == []
    assert peak_rss < 400 * 1024 * 1024, f"peak RSS {peak_rss / 2**20:.0f} MiB"
    log = proc.log()
    assert "state commit failed" in log or "failed (" in log, "the worker retried"
    assert "Traceback" not in log, log[-4000:]
    await assert_equals_replay(direct, stream.replay)
    assert broker.proc is not None and broker.proc.poll() is None
