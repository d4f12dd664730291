"""What keeps a worker running through faults: retries of transient Redis errors, start
and shutdown steps bounded by a stop request or a deadline, the one line that says the
Kafka broker cannot be reached, and the models it holds back (quarantines) instead of
stopping a partition.

Used by the worker shell (:mod:`driftline.runtime.worker`); the broker's line also by
the retraining trigger and the alert and dead-letter followers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions as redis_errors
from aiokafka.errors import KafkaError

from driftline.runtime import metrics as m

__all__ = [
    "BROKER_CHECK_SECONDS",
    "HOLD_REASONS",
    "BrokerWatch",
    "bounded",
    "polled_lately",
    "until_stopped",
    "watch_broker",
    "REDIS_FAILURES",
    "RETRY_BACKOFF",
    "Hold",
    "ModelHolds",
    "QuietRepeats",
    "Stopping",
    "is_transient",
    "retry",
]

log = logging.getLogger("driftline.worker")

#: Backoff between retries of a Redis or Kafka call that failed transiently (seconds).
RETRY_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

#: Errors after which the same call may simply be tried again: the commit protocol
#: makes a retried commit safe (``duplicate`` means the first one landed). A Redis that
#: refuses writes (out of memory under ``noeviction``, a read-only replica, a failed
#: save) is backpressure, not a failure: the batch is held until it accepts them.
_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.MasterDownError,
    ConnectionError,
    TimeoutError,
)
#: Error replies (first word) that mean the same as the classes above.
_TRANSIENT_REPLIES = frozenset(
    {"OOM", "MISCONF", "READONLY", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}
)
#: What a Redis call may raise (transient or not).
REDIS_FAILURES = (redis_errors.RedisError, ConnectionError, TimeoutError)

_T = TypeVar("_T")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same Redis call later may succeed (see ``_TRANSIENT``).

    Examples
    --------
    >>> is_transient(redis_errors.ResponseError("OOM command not allowed"))
    True
    >>> is_transient(redis_errors.ResponseError("WRONGTYPE Operation against a key"))
    False
    """
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        words = str(exc).split()
        # EXECABORT wraps the reply of the queued command that failed (OOM, ...).
        return bool(words) and (
            words[0] in _TRANSIENT_REPLIES or (words[0] == "EXECABORT" and "OOM" in words)
        )
    return False


class Stopping(Exception):
    """Raised inside a retry loop when the worker was asked to stop: abandon the batch.

    Nothing of the abandoned batch was committed, so it is replayed after a restart.
    """


async def retry(
    what: str,
    call: Callable[[], Awaitable[_T]],
    stop: asyncio.Event,
    waiting: Callable[[], None],
) -> _T:
    """Run ``call`` until it succeeds, backing off on transient Redis errors.

    The caller holds its batch meanwhile: nothing more is fetched (backpressure).
    ``waiting`` is called before each wait (the worker reports not ready). Raises
    :class:`Stopping` when ``stop`` is set while waiting; other errors propagate.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except REDIS_FAILURES as exc:
            if not is_transient(exc):
                raise
            if stop.is_set():
                raise Stopping(what) from exc
            delay = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
            if attempt % 10 == 0:
                log.warning("%s failed (%s: %.80s); retrying", what, type(exc).__name__, exc)
            attempt += 1
            waiting()
            await asyncio.sleep(delay)


async def until_stopped(stop: asyncio.Event, step: Awaitable[_T]) -> _T:
    """Await ``step``, or cancel it and raise :class:`Stopping` once ``stop`` is set
    (a start that waits on a broker that never answers)."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Stopping("start")
    return task.result()


async def bounded(what: str, step: Awaitable[Any], deadline: float) -> None:
    """Await a shutdown step until the monotonic ``deadline`` (at least half a second);
    a step that fails or does not finish is logged, never raised."""
    try:
        await asyncio.wait_for(step, timeout=max(0.5, deadline - time.monotonic()))
    except (TimeoutError, KafkaError, *REDIS_FAILURES, Stopping) as exc:
        log.warning("%s at shutdown did not finish: %s", what, type(exc).__name__)


#: Seconds between two checks that the Kafka broker answers (a worker's start that
#: cannot reach it waits as long before trying again).
BROKER_CHECK_SECONDS = 5.0


class BrokerWatch:
    """Says in one line when the Kafka broker cannot be reached, and in one when it is back.

    aiokafka retries on its own and logs each failed connection (dozens of lines a
    second, none naming the configured servers nor saying what the worker does). This
    adds the worker's own warning, once per outage: which bootstrap servers, and that
    the worker waits and loses nothing (records are processed from the stored positions
    once the broker answers).

    Parameters
    ----------
    worker
        Worker name (the first word of each line).
    servers
        The configured bootstrap servers (host:port list; no credentials in it).
    """

    #: What happens to the records meanwhile, as the warning says it.
    MEANWHILE = "records are processed from the stored positions once it answers"

    def __init__(
        self,
        worker: str,
        servers: str,
        clock: Callable[[], float] = time.monotonic,
        meanwhile: str = MEANWHILE,
    ) -> None:
        self.worker = worker
        self.servers = servers
        self.meanwhile = meanwhile
        self._clock = clock
        #: Monotonic time the current outage was first seen; None while it answers.
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        """The broker did not answer (``exc``): warn if this starts an outage."""
        if self.down_since is not None:
            return
        self.down_since = self._clock()
        log.warning(
            "%s: Kafka broker unreachable at %s (%s); retrying every %.0f s, nothing is lost: %s",
            self.worker,
            self.servers,
            type(exc).__name__,
            BROKER_CHECK_SECONDS,
            self.meanwhile,
        )

    def answered(self) -> None:
        """The broker answered: say so if it was unreachable."""
        if self.down_since is None:
            return
        log.warning(
            "%s: Kafka broker at %s answers again (unreachable for %.0f s)",
            self.worker,
            self.servers,
            self._clock() - self.down_since,
        )
        self.down_since = None


async def watch_broker(
    watch: BrokerWatch,
    stop: asyncio.Event,
    ask: Callable[[], Awaitable[object]],
    fetched_lately: Callable[[], bool] = lambda: False,
) -> None:
    """Every :data:`BROKER_CHECK_SECONDS` until ``stop``, whether the broker answers: a
    fetch response since the last check (``fetched_lately``), else ``ask`` (a metadata
    request) within as long. Only its verdict is logged (``watch``, once per outage);
    the Kafka clients reconnect themselves."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BROKER_CHECK_SECONDS)
        if stop.is_set():
            return
        if fetched_lately():
            watch.answered()
            continue
        try:
            await asyncio.wait_for(ask(), BROKER_CHECK_SECONDS)
        except (KafkaError, OSError, TimeoutError) as exc:
            watch.failed(exc)
        else:
            watch.answered()


def polled_lately(consumer: Any) -> bool:
    """Whether an aiokafka consumer had a fetch response for one of its assigned
    partitions within the last :data:`BROKER_CHECK_SECONDS`."""
    recent = 1000 * (time.time() - BROKER_CHECK_SECONDS)
    polled = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
    return any(t is not None and t >= recent for t in polled)


class QuietRepeats(logging.Filter):
    """Lets a repeated warning or error of the Kafka client through once per ``every``
    seconds; the next one that passes says how many like it were left out.

    aiokafka logs each failed connection, fetch, heartbeat and metadata request: during
    a broker outage, dozens of lines a second (1,700 in 30 s were seen) bury the
    worker's own line (:class:`BrokerWatch`) and fill disks. "Like it": the same logger
    and message template (``record.msg`` before its arguments), so ``Unable connect to
    node with id %s: %s`` counts once whatever the node. Its INFO lines (group joins,
    assignments) and every other logger pass untouched. Installed on the handlers of
    the command line's root logger.

    Parameters
    ----------
    prefix
        Loggers whose repeats are thinned (the name or a dotted child of it).
    every
        Seconds between two records of one template that pass.
    """

    def __init__(
        self,
        prefix: str = "aiokafka",
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.every = every
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._left_out: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written (it may gain the count of those left out)."""
        name = record.name
        if record.levelno < logging.WARNING or not isinstance(record.msg, str):
            return True
        if name != self.prefix and not name.startswith(self.prefix + "."):
            return True
        key = (name, record.msg)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        self._last[key] = now
        n = self._left_out.pop(key, 0)
        if n:
            record.msg += f" ({n:,} more like it in the last {self.every:.0f} s left out)"
        return True


#: Why a model may be held back (each is also the ``dl.error.stage`` of its events).
HOLD_REASONS = ("state_corrupt", "reference_corrupt", "reference_missing")


@dataclass
class Hold:
    """Why a model's events are dead-lettered instead of processed, and until when."""

    #: One of :data:`HOLD_REASONS`.
    reason: str
    #: What was found (for the log and the dead letters' message).
    detail: str
    #: Monotonic time after which the worker checks again whether the cause is gone.
    recheck_at: float


class ModelHolds:
    """The models a worker holds back, per partition index.

    A held model's events go to the dead-letter topic (stage = the reason), its stored
    state is left as it is (the evidence), and the rest of the partition keeps flowing.
    The model is checked again after ``recheck_seconds`` (a reference stored again, a
    repaired record). Each hold is logged once; ``driftline_models_quarantined{reason}``
    counts them.

    Parameters
    ----------
    worker
        Worker name (metric label).
    recheck_seconds
        Seconds a hold stays in force before the cause is checked again.
    """

    def __init__(
        self, worker: str, recheck_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.worker = worker
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self._held: dict[int, dict[tuple[str, ...], Hold]] = {}
        self._count()  # every reason's series from zero, so a rule sees 0, not absence

    def of(self, p: int) -> dict[tuple[str, ...], Hold]:
        """Every hold of partition ``p`` (in force or due for a recheck)."""
        return self._held.get(p, {})

    def holding(self, p: int, model: tuple[str, ...]) -> Hold | None:
        """The hold on ``model`` in partition ``p`` if in force (not due for a recheck)."""
        h = self._held.get(p, {}).get(model)
        return h if h is not None and self._clock() < h.recheck_at else None

    def hold(self, p: int, model: tuple[str, ...], reason: str, detail: str) -> Hold:
        """Hold back ``model`` in partition ``p`` (again: the recheck time moves on)."""
        held = self._held.setdefault(p, {})
        old = held.get(model)
        if old is None or old.reason != reason:
            log.error(
                "model %s of partition %d held back (%s): %s; its events go to the "
                "dead-letter topic",
                "/".join(model),
                p,
                reason,
                detail,
            )
        h = Hold(reason, detail, self._clock() + self.recheck_seconds)
        held[model] = h
        self._count()
        return h

    def release(self, p: int, model: tuple[str, ...]) -> None:
        """Process ``model`` again (the cause of its hold is gone)."""
        h = self._held.get(p, {}).pop(model, None)
        if h is not None:
            log.warning("model %s is processed again (was held: %s)", "/".join(model), h.reason)
            self._count()

    def forget(self, p: int) -> None:
        """Drop partition ``p``'s holds (revoked, quarantined or reloaded)."""
        if self._held.pop(p, None):
            self._count()

    def _count(self) -> None:
        counts = dict.fromkeys(HOLD_REASONS, 0)
        for held in self._held.values():
            for h in held.values():
                counts[h.reason] = counts.get(h.reason, 0) + 1
        for reason, n in counts.items():
            m.MODELS_QUARANTINED.labels(self.worker, reason).set(n)
