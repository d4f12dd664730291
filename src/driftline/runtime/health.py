"""Liveness and shutdown of a worker process.

A worker is *live* while its loop turns and its consumer is not stuck joining the
group; the metrics server's thread judges that from two timestamps the worker keeps
here, so ``/livez`` answers even when the worker is wedged, and says so:

- the **heartbeat**: the worker's loop calls :meth:`Health.beat` once per iteration
  (every poll, at most ``getmany``'s timeout apart). A loop that has not turned for
  ``health.loop_stall_seconds`` (a blocking call, a deadlock, an await that never
  returns) fails liveness;
- **group progress**: :func:`track_group` wraps the consumer's rebalance listener, so a
  join (from the revocation that starts it, or from the consumer's start, to the
  assignment that ends it) that lasts over ``health.join_stall_seconds`` fails too.
  Before the first beat the worker is *starting* (connecting, loading): only the join
  bound applies.

:func:`install_stop_handlers` makes SIGTERM and SIGINT ask the worker to stop (it
finishes its batch, commits, leaves the group) and starts a watchdog thread that ends
the process with status 1 if it has not stopped within ``health.shutdown_seconds``,
whatever it is waiting for: a broker that never answers a join, a wedged loop. The
handlers are plain ``signal`` handlers, not the event loop's, so they run even when the
loop does not. A second signal ends the process at once.

One worker runs per process, so this state is process-wide (:data:`HEALTH`), like the
metrics registry.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from driftline.config import HealthSettings

__all__ = ["HEALTH", "Health", "install_stop_handlers", "track_group"]

log = logging.getLogger("driftline.health")


class Health:
    """The heartbeat and group-join progress of the worker of this process.

    Written by the worker's thread, read by the metrics server's: each field is one
    float or ``None``, assigned whole.

    Parameters
    ----------
    settings
        The bounds (``loop_stall_seconds``, ``join_stall_seconds``).
    clock
        Monotonic seconds (a parameter for tests).

    Examples
    --------
    >>> now = [0.0]
    >>> h = Health(HealthSettings(loop_stall_seconds=5), clock=lambda: now[0])
    >>> h.beat(); now[0] = 4.0; h.live
    True
    >>> now[0] = 6.0; h.live, h.status()
    (False, 'event loop stalled: last turn 6s ago (bound 5s)')
    """

    def __init__(
        self, settings: HealthSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or HealthSettings()
        self._clock = clock
        self._started = clock()
        self._beat: float | None = None
        self._join_since: float | None = None

    def configure(self, settings: HealthSettings) -> None:
        """Set the bounds and start over (a worker is starting)."""
        self.settings = settings
        self._started = self._clock()
        self._beat = None
        self._join_since = None

    def beat(self) -> None:
        """The worker's loop turned: call once per iteration."""
        self._beat = self._clock()

    def joining(self) -> None:
        """The consumer started a group join (or its start): progress is pending."""
        if self._join_since is None:
            self._join_since = self._clock()

    def joined(self) -> None:
        """The join finished: the consumer has its assignment."""
        self._join_since = None

    def status(self) -> str:
        """Why the worker is not live, or ``"ok"`` and what it is doing."""
        s = self.settings
        now = self._clock()
        if self._beat is not None and now - self._beat > s.loop_stall_seconds:
            return (
                f"event loop stalled: last turn {now - self._beat:.0f}s ago "
                f"(bound {s.loop_stall_seconds:g}s)"
            )
        join = self._join_since
        if join is not None and now - join > s.join_stall_seconds:
            return (
                f"consumer group join unfinished for {now - join:.0f}s "
                f"(bound {s.join_stall_seconds:g}s)"
            )
        if self._beat is None and now - self._started > s.join_stall_seconds:
            return (
                f"worker not started after {now - self._started:.0f}s "
                f"(bound {s.join_stall_seconds:g}s)"
            )
        return "ok: " + self.describe()

    @property
    def started(self) -> bool:
        """Whether the worker's loop has turned at least once (it is past its start)."""
        return self._beat is not None

    @property
    def live(self) -> bool:
        """Whether ``/livez`` answers 200."""
        return self.status().startswith("ok")

    def describe(self) -> str:
        """What the worker was last seen doing (for logs)."""
        now = self._clock()
        parts = []
        if self._beat is None:
            parts.append(f"starting for {now - self._started:.0f}s")
        else:
            parts.append(f"last loop turn {now - self._beat:.1f}s ago")
        if self._join_since is not None:
            parts.append(f"joining the consumer group for {now - self._join_since:.0f}s")
        return "; ".join(parts)


#: The health of this process's worker (one worker per process).
HEALTH = Health()


class _TrackedListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """A rebalance listener that records group progress around the worker's own."""

    def __init__(self, inner: ConsumerRebalanceListener | None, health: Health) -> None:
        self.inner = inner
        self.health = health

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.health.joining()
        if self.inner is not None:
            res = self.inner.on_partitions_revoked(revoked)
            if inspect.isawaitable(res):
                await res

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            if self.inner is not None:
                res = self.inner.on_partitions_assigned(assigned)
                if inspect.isawaitable(res):
                    await res
        finally:
            self.health.joined()


def track_group(
    listener: ConsumerRebalanceListener | None = None, health: Health = HEALTH
) -> ConsumerRebalanceListener:
    """Wrap a consumer's rebalance listener (pass it to ``subscribe``): the join that
    follows starts now, and every later rebalance is tracked until its assignment."""
    health.joining()
    return _TrackedListener(listener, health)


def install_stop_handlers(
    stop: Callable[[], None], loop: Any, settings: HealthSettings, health: Health = HEALTH
) -> None:
    """On SIGTERM or SIGINT, ask the worker to stop (``stop`` runs in ``loop``), and end
    the process with status 1 if it is still running ``settings.shutdown_seconds``
    later. A second signal ends it at once. Call from the main thread."""
    bound = settings.shutdown_seconds
    state = {"stopping": False}

    def expire(reason: str) -> None:
        log.error("%s (%s): exiting", reason, health.describe())
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if state["stopping"]:
            expire(f"second {name} while stopping")
        state["stopping"] = True
        log.info("%s: stopping (at most %gs)", name, bound)
        loop.call_soon_threadsafe(stop)
        timer = threading.Timer(bound, expire, (f"worker did not stop within {bound:g}s",))
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
