"""The liveness logic of runtime/health.py with a fake clock, and the /livez and /readyz
answers of the metrics server (a real HTTP server on a free port, in this process)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from driftline.config import HealthSettings
from driftline.runtime import metrics as m
from driftline.runtime.health import HEALTH, Health, track_group

BOUNDS = HealthSettings(loop_stall_seconds=5, join_stall_seconds=20, shutdown_seconds=3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_starting_worker_is_live_until_the_join_bound() -> None:
    clock = Clock()
    h = Health(BOUNDS, clock=clock)
    assert h.live and not h.started
    clock.now += 19
    assert h.live
    clock.now += 2
    assert not h.live and h.status().startswith("worker not started after 21s")


def test_the_loop_must_keep_turning() -> None:
    clock = Clock()
    h = Health(BOUNDS, clock=clock)
    h.beat()
    clock.now += 5
    assert h.live and h.started
    clock.now += 0.5
    assert h.status() == "event loop stalled: last turn 6s ago (bound 5s)"
    h.beat()
    assert h.live


def test_a_join_that_never_ends_fails_even_while_the_loop_turns() -> None:
    clock = Clock()
    h = Health(BOUNDS, clock=clock)
    h.beat()
    h.joining()
    for _ in range(25):  # the loop turns every second, the join hangs
        clock.now += 1
        h.beat()
    assert h.status() == "consumer group join unfinished for 25s (bound 20s)"
    assert "joining the consumer group for 25s" in h.describe()
    h.joined()
    assert h.live


async def test_track_group_marks_the_join_around_the_workers_own_listener() -> None:
    clock = Clock()
    h = Health(BOUNDS, clock=clock)
    h.beat()
    calls: list[tuple[str, Any]] = []

    class Listener:
        async def on_partitions_revoked(self, revoked: Any) -> None:
            calls.append(("revoked", set(revoked)))

        def on_partitions_assigned(self, assigned: Any) -> None:  # a plain function too
            calls.append(("assigned", set(assigned)))

    tracked = track_group(Listener(), health=h)
    clock.now += 30
    h.beat()
    assert not h.live  # the first join (from the consumer's start) has not finished
    await tracked.on_partitions_revoked([])
    await tracked.on_partitions_assigned(["p0"])
    assert h.live
    await tracked.on_partitions_revoked(["p0"])  # a rebalance starts
    clock.now += 21
    h.beat()
    assert not h.live
    await tracked.on_partitions_assigned([])
    assert h.live
    assert calls == [
        ("revoked", set()),
        ("assigned", {"p0"}),
        ("revoked", {"p0"}),
        ("assigned", set()),
    ]


def test_a_failing_assignment_still_ends_the_join() -> None:
    import asyncio

    h = Health(BOUNDS, clock=Clock())

    class Broken:
        async def on_partitions_assigned(self, assigned: Any) -> None:
            raise RuntimeError("lease refused")

    tracked = track_group(Broken(), health=h)
    with pytest.raises(RuntimeError):
        asyncio.run(tracked.on_partitions_assigned([]))
    assert "joining" not in h.describe()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_metrics_server_answers_livez_and_readyz_from_the_process_health() -> None:
    clock = Clock()
    saved = (HEALTH._clock, HEALTH.settings)  # noqa: SLF001 - the process-wide instance
    HEALTH._clock = clock  # noqa: SLF001
    HEALTH.configure(BOUNDS)
    worker = "unit-health"
    m.READY.clear()  # workers of earlier in-process tests: readiness is process-wide
    try:
        port = m.serve_metrics(0)
        assert _get(port, "/readyz") == (503, "not ready: starting for 0s\n")
        HEALTH.beat()
        m.READY.labels(worker).set(0)
        assert _get(port, "/livez")[0] == 200
        status, body = _get(port, "/readyz")
        assert status == 503 and worker in body
        m.READY.labels(worker).set(1)
        assert _get(port, "/readyz") == (200, "ready\n")
        clock.now += 6
        assert _get(port, "/livez") == (503, "event loop stalled: last turn 6s ago (bound 5s)\n")
        assert _get(port, "/readyz")[0] == 503
        status, text = _get(port, "/metrics")
        assert status == 200 and "driftline_ready" in text and "python_info" in text
        req = urllib.request.Request(f"http://127.0.0.1:{port}/livez", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 405
    finally:
        m.READY.remove(worker)
        HEALTH._clock = saved[0]  # noqa: SLF001
        HEALTH.configure(saved[1])
