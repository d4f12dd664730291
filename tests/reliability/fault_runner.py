"""Test-only fault injection: ``driftline monitor`` with a fault at a named commit point.

    python tests/reliability/fault_runner.py crash_after_redis_commit:4 monitor --name m

The first argument is ``<action>_<point>:<n>``; the rest are the ``driftline`` command
line. ``crash`` ends the process at once with exit status 137 (as SIGKILL would);
``stop`` sends it SIGSTOP (a paused "zombie" worker); ``hang`` blocks the event loop in
a call that never returns while the process's threads (metrics, health checks) run on
(a wedged worker: tests/ops/test_liveness.py). The points are the calls the
worker shell makes around the commit of its ``n``-th batch
(:meth:`driftline.runtime.worker.Worker._commit`):

* ``before_redis_commit``: before the ``n``-th ``StateStore.commit``;
* ``after_redis_commit``: after it returned (before the outbox and the Kafka commit);
* ``before_outbox_ack``: before the first ``StateStore.outbox_ack`` at or after the
  ``n``-th commit (alerts published, not trimmed);
* ``after_kafka_commit``: after the ``n``-th advisory Kafka commit returned.

Production code knows nothing of this: the runner subclasses the worker and wraps its
store and consumer, then runs the real command line with that worker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from driftline import cli
from driftline.cli import workers
from driftline.runtime.monitor import MonitorWorker

POINTS = ("before_redis_commit", "after_redis_commit", "before_outbox_ack", "after_kafka_commit")
ACTIONS = ("crash", "stop", "hang")

log = logging.getLogger("driftline.fault")


class Fault:
    """One parsed fault; :meth:`at` fires it once, at its point of its batch."""

    def __init__(self, spec: str) -> None:
        head, _, n = spec.partition(":")
        self.action, _, self.point = head.partition("_")
        if self.action not in ACTIONS or self.point not in POINTS or not n.isdigit():
            raise SystemExit(
                f"fault must be <{'|'.join(ACTIONS)}>_<{'|'.join(POINTS)}>:<n>, not {spec!r}"
            )
        self.batch = int(n)
        self.commits = 0
        self.fired = False

    def at(self, point: str, reached: bool) -> None:
        if self.fired or point != self.point or not reached:
            return
        self.fired = True
        log.warning("injected fault: %s at %s of batch %d", self.action, point, self.commits)
        if self.action == "crash":
            os._exit(137)
        if self.action == "hang":
            while True:  # a blocking call in the event loop's thread
                time.sleep(3600)
        os.kill(os.getpid(), signal.SIGSTOP)


class FaultyStore:
    """The worker's StateStore, with the fault's points around commit and outbox ack."""

    def __init__(self, inner: Any, fault: Fault) -> None:
        self._inner = inner
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        f = self._fault
        f.commits += 1
        f.at("before_redis_commit", f.commits == f.batch)
        result = await self._inner.commit(*args, **kwargs)
        f.at("after_redis_commit", f.commits == f.batch)
        return result

    async def outbox_ack(self, *args: Any, **kwargs: Any) -> Any:
        f = self._fault
        f.at("before_outbox_ack", f.commits >= f.batch)
        return await self._inner.outbox_ack(*args, **kwargs)


def faulty(fault: Fault) -> type[MonitorWorker]:
    """A MonitorWorker whose store and consumer carry ``fault``."""

    class FaultyMonitor(MonitorWorker):
        async def setup(self) -> None:  # the store exists, the consumer not yet
            self.store = FaultyStore(self.store, fault)  # type: ignore[assignment]
            await super().setup()

        async def start(self) -> None:
            await super().start()
            consumer = self.consumer
            assert consumer is not None
            inner = consumer.commit
            kafka_commits = 0

            async def commit(*args: Any, **kwargs: Any) -> Any:
                nonlocal kafka_commits
                kafka_commits += 1
                result = await inner(*args, **kwargs)
                fault.at("after_kafka_commit", kafka_commits == fault.batch)
                return result

            consumer.commit = commit

    return FaultyMonitor


if __name__ == "__main__":
    workers.MonitorWorker = faulty(Fault(sys.argv[1]))  # type: ignore[misc]
    sys.exit(cli.main(sys.argv[2:]))
