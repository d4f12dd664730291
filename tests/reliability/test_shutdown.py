"""SIGTERM stops a worker within bounded time, even when the broker does not answer
(issue 16, degraded: "a worker stuck in a group join ignored SIGTERM for minutes").

The broker is paused (SIGSTOP: connections stay open, nothing answers), once before the
monitor has joined its group and once while it runs; in both cases SIGTERM ends the
process cleanly (status 0) well before the broker's request timeouts would.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reliability_support import references, settings_for

from driftline.demo.simulate import SimulatedModel
from driftline.runtime.devstack import DevStack, TansuBroker
from support import MonitorProc, publish, put_reference, redis_offsets

pytestmark = pytest.mark.integration


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[TansuBroker]:
    broker = TansuBroker().start(tmp_path)
    try:
        yield broker
    finally:
        if broker.proc is not None:
            os.kill(broker.proc.pid, signal.SIGCONT)
        broker.stop()


def pause(broker: TansuBroker, sig: int) -> None:
    assert broker.proc is not None
    os.kill(broker.proc.pid, sig)


async def test_sigterm_stops_a_worker_whose_broker_does_not_answer(
    stack: DevStack, own_broker: TansuBroker, tmp_path: Path
) -> None:
    s = settings_for(own_broker.bootstrap, stack.redis.url)
    for ref in references():
        await put_reference(s, ref)
    events = list(SimulatedModel(seed=91).events(2_000))
    await publish(own_broker.bootstrap, s.topics.predictions, events)

    # Before the group is joined: the worker is stuck starting.
    pause(own_broker, signal.SIGSTOP)
    starting = MonitorProc(s, tmp_path / "starting.log", idle_exit=None)
    await starting.metrics_port()
    await asyncio.sleep(2)
    starting.signal(signal.SIGTERM)
    # The broker's own timeouts (40 s per request) would hold it far longer.
    assert await starting.wait(20) == 0, starting.log()[-3000:]
    assert "stop requested while starting" in starting.log()
    pause(own_broker, signal.SIGCONT)

    # While running: the broker stops answering; the worker's group is stuck.
    running = MonitorProc(s, tmp_path / "running.log", idle_exit=None)
    for _ in range(600):
        if sum(o + 1 for o in (await redis_offsets(s)).values()) == len(events):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the monitor never caught up")
    pause(own_broker, signal.SIGSTOP)
    await asyncio.sleep(s.monitor.session_timeout_ms / 1000)
    running.signal(signal.SIGTERM)
    # Bounded by the session timeout for the whole close (6 s here), plus the loop turn.
    assert await running.wait(30) == 0, running.log()[-3000:]
    log = running.log()
    assert "monitor stopped after 2000 events" in log
    assert "Traceback" not in log
