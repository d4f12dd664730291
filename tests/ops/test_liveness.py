"""Liveness that means liveness, with real worker processes (Tansu, redis-server).

- A wedged event loop (the test-only fault ``hang`` of tests/reliability/fault_runner.py
  blocks it inside a batch) fails ``/livez`` and ``/readyz`` while ``/metrics`` still
  answers from the metrics thread, and SIGTERM still ends the process within
  ``health.shutdown_seconds``.
- A worker stuck joining its consumer group (a proxy in front of Tansu accepts the
  connection and never answers the JoinGroup request) fails ``/livez``, and SIGTERM
  ends it within the bound instead of waiting out Kafka's request timeouts.

No timing is asserted: the waits are generous bounds for a loaded machine. What is
asserted is the state the worker reports, and that it exits, saying what it was stuck on.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from driftline.config import Settings
from driftline.demo.sea import SeaScenario
from driftline.runtime.devstack import TansuBroker
from support import MonitorProc, broker_behind, publish

pytestmark = [pytest.mark.integration]

#: Kafka API key of JoinGroup (the Kafka protocol guide).
JOIN_GROUP = 11
#: Small bounds, so the test does not wait long (production: 60 s, 120 s, 20 s). A
#: healthy first join takes seconds (the broker's initial rebalance delay): 30 s of room.
BOUNDS = {
    "DRIFTLINE_HEALTH__LOOP_STALL_SECONDS": "2",
    "DRIFTLINE_HEALTH__JOIN_STALL_SECONDS": "30",
    "DRIFTLINE_HEALTH__SHUTDOWN_SECONDS": "3",
}


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _until(proc: MonitorProc, path: str, status: int, timeout: float = 90) -> str:
    """Poll ``path`` until it answers ``status``; the body."""
    port = await proc.metrics_port()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        assert proc.proc.poll() is None, f"worker exited early:\n{proc.log()[-3000:]}"
        last = await asyncio.to_thread(_get, port, path)
        if last[0] == status:
            return str(last[1])
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} never answered {status} (last {last}):\n{proc.log()[-3000:]}")


async def test_a_wedged_event_loop_fails_livez_and_sigterm_still_ends_it(
    settings: Settings, tmp_path: Path
) -> None:
    proc = MonitorProc(
        settings,
        tmp_path / "monitor.log",
        idle_exit=None,
        fault="hang_before_redis_commit:1",
        **BOUNDS,
    )
    try:
        # Joined and idle: ready (a worker without records is caught up) and live.
        assert await _until(proc, "/readyz", 200) == "ready\n"
        assert "last loop turn" in await _until(proc, "/livez", 200)
        # The first batch blocks the event loop for good.
        preds, _ = SeaScenario(model_id="wedge").events(200)
        await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, preds)
        body = await _until(proc, "/livez", 503)
        assert "event loop stalled" in body
        status, ready = await asyncio.to_thread(_get, await proc.metrics_port(), "/readyz")
        assert status == 503 and "not live" in ready
        # The metrics thread still answers, so Prometheus sees the sick worker.
        scrape = await proc.scrape()
        assert "driftline_ready" in scrape and "process_resident_memory_bytes" in scrape
        # SIGTERM reaches a wedged loop: the watchdog ends the process.
        proc.signal(signal.SIGTERM)
        assert await proc.wait(timeout=90) == 1
        log = proc.log()
        assert "SIGTERM: stopping (at most 3s)" in log
        assert "worker did not stop within 3s" in log and "last loop turn" in log
    finally:
        proc.kill()


class JoinBlackhole:
    """A TCP proxy in front of a Kafka broker that forwards everything until a client
    sends a JoinGroup request; from then on that connection is a broker that accepted
    it and never answers: nothing more goes either way, and it is never closed."""

    def __init__(self, target_port: int) -> None:
        from driftline.runtime.devstack import free_port

        self.target_port = target_port
        self.port = free_port()
        self.joins_swallowed = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> JoinBlackhole:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        swallowing = asyncio.Event()

        async def requests() -> None:
            buf = b""
            while data := await reader.read(65536):
                if swallowing.is_set():
                    continue
                buf += data
                out = b""
                while len(buf) >= 6:  # size (int32), then the header's api_key (int16)
                    size = int.from_bytes(buf[:4], "big")
                    if len(buf) < 4 + size:
                        break
                    frame, buf = buf[: 4 + size], buf[4 + size :]
                    if int.from_bytes(frame[4:6], "big") == JOIN_GROUP:
                        self.joins_swallowed += 1
                        swallowing.set()
                        break
                    out += frame
                if out:
                    up_w.write(out)
                    await up_w.drain()

        async def responses() -> None:
            while data := await up_r.read(65536):
                if not swallowing.is_set():
                    writer.write(data)
                    await writer.drain()

        try:
            await asyncio.gather(requests(), responses())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            up_w.close()
            writer.close()


@pytest.fixture
async def blackholed_broker(tmp_path: Path) -> AsyncIterator[tuple[TansuBroker, JoinBlackhole]]:
    """A Tansu that advertises the proxy, so every connection goes through it."""
    async with broker_behind(JoinBlackhole, tmp_path) as pair:
        yield pair


async def test_a_worker_stuck_joining_its_group_fails_livez_and_sigterm_ends_it(
    settings: Settings, blackholed_broker: tuple[TansuBroker, JoinBlackhole], tmp_path: Path
) -> None:
    _broker, proxy = blackholed_broker
    bootstrap = f"127.0.0.1:{proxy.port}"
    s = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})}
    )
    bounds = {**BOUNDS, "DRIFTLINE_HEALTH__JOIN_STALL_SECONDS": "5"}
    proc = MonitorProc(s, tmp_path / "monitor.log", idle_exit=None, **bounds)
    try:
        body = await _until(proc, "/livez", 503)
        assert "consumer group join unfinished" in body, body
        assert proxy.joins_swallowed >= 1
        proc.signal(signal.SIGTERM)
        assert await proc.wait(timeout=90) == 1
        log = proc.log()
        assert "worker did not stop within 3s" in log
        assert "joining the consumer group" in log
    finally:
        proc.kill()
