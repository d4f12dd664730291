"""The producer SDK a model server embeds to publish predictions and labels.

The serving path always wins: :meth:`AsyncPredictionProducer.send` is a plain
(non-async) call that encodes the event, appends it to a bounded in-memory buffer and
returns. It never waits for Kafka, never raises, and when the buffer is full it drops
the event and counts it (``driftline_producer_dropped_total``). A background task
drains the buffer in batches into an ``AIOKafkaProducer``; while Kafka is unreachable
the buffered events are kept (never more than ``max_buffer``) and retried after
reconnecting.

Accounting is exact: every call to ``send``/``send_label`` ends up in exactly one of
``sent`` (acknowledged by Kafka), ``dropped`` (counted with a reason) or ``buffered``
(still waiting), so ``sent + dropped + buffered`` equals the number of calls.

Drop reasons (the ``reason`` label): ``buffer_full``, ``oversize`` (encoded event over
``LIMITS.max_event_bytes``), ``invalid`` (the event breaks the wire contract: checked in
``send`` with the monitor's own check, after numpy and pandas values, ``datetime`` times
and boolean predictions were turned into wire values), ``closed`` (sent after ``stop``),
``shutdown`` (still buffered when ``stop`` gave up), ``rejected`` (Kafka refused the
record with a non-retriable error). Why an event was dropped is kept for the caller:
:attr:`AsyncPredictionProducer.last_refusal`, the recent :attr:`~AsyncPredictionProducer.refusals`
and the counts :attr:`~AsyncPredictionProducer.dropped_by_reason`.

Predictions go out as columnar batches (``prediction_batch.v2``: numeric feature
columns as one binary block, the rest JSON) by default: each delivery round packs the
buffered events of a stream (model, version, segment), in send order, into as few
records as fit; labels likewise, per model (``label_batch.v1``).
``batch_format="json"`` writes the all-JSON ``prediction_batch.v1`` instead (for other
readers of the topic, or monitors of a release that does not read v2), and
``batch_events=False`` sends one record per event, for consumers that read single
events. The monitor and the label joiner give all three the same results.

:class:`PredictionProducer` is the same producer for thread-based servers: it runs the
async producer on its own event loop in a daemon thread.

See docs/producer.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka import codec as _kafka_codec
from aiokafka.errors import KafkaError, KafkaTimeoutError

from driftline.config import Settings
from driftline.contract.events import (
    LIMITS,
    LabelEvent,
    PredictionEvent,
)
from driftline.contract.records import encode_batch, encode_event, pack_records, stream_of
from driftline.errors import ConfigError, ValidationError
from driftline.runtime.metrics import PRODUCER_DROP_REASONS, PRODUCER_DROPPED, PRODUCER_SENT

__all__ = ["AsyncPredictionProducer", "Compression", "PredictionProducer", "Refusal"]

log = logging.getLogger(__name__)

Compression = Literal["gzip", "lz4", "snappy", "zstd"] | None

_CODECS: Final[dict[str, Callable[[], bool]]] = {
    "gzip": _kafka_codec.has_gzip,
    "lz4": _kafka_codec.has_lz4,
    "snappy": _kafka_codec.has_snappy,
    "zstd": _kafka_codec.has_zstd,
}

_BACKOFF_MIN_S: Final = 0.1
#: aiokafka's per-partition batch limit; one event is at most 64 KiB.
_KAFKA_BATCH_BYTES: Final = 512 * 1024

#: Most refusals kept for :attr:`AsyncPredictionProducer.refusals`.
_RECENT_REFUSALS = 100

#: One buffered record: (sequence number, topic, key, value, prepared event). The event
#: is kept (and the value left empty) for predictions packed into batches on delivery.
_Entry = tuple[int, str, bytes, bytes, dict[str, Any] | None]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Refusal:
    """Why an event did not go out: what ``send()`` returning ``False`` means.

    ``drop`` is the counter's reason (``invalid``, ``oversize``, ``buffer_full``,
    ``closed``, ``shutdown``, ``rejected``); ``reason`` says it for a person, e.g.
    ``timestamp: naive datetime (no time zone): ...``; ``prediction_id`` names the
    event when it had one; ``at`` is the wall-clock time (``time.time()``).
    """

    drop: str
    reason: str
    prediction_id: str | None = None
    at: float = 0.0
    count: int = 1


def _permanent(exc: BaseException) -> bool:
    """A Kafka error that retrying the same record cannot fix (e.g. message too large)."""
    return (
        isinstance(exc, KafkaError)
        and not isinstance(exc, KafkaTimeoutError)
        and not getattr(exc, "retriable", False)
        and not getattr(exc, "invalid_metadata", False)
    )


def _consume_result(fut: asyncio.Future[Any]) -> None:
    # Mark a delivery future's exception as retrieved; its outcome is read elsewhere.
    if not fut.cancelled():
        fut.exception()


class AsyncPredictionProducer:
    """Non-blocking, bounded, batching producer of prediction and label events.

    Parameters
    ----------
    settings
        Kafka connection (``settings.kafka``) and topic names (``settings.topics``).
    max_buffer
        Most events held in memory (waiting plus in flight); further sends are dropped.
    linger_ms
        How long the first buffered event waits for more before a batch is sent.
    max_batch
        Most events handed to Kafka in one round.
    compression
        Kafka compression codec; ``gzip`` needs nothing, the others need ``cramjam``.
    topic, label_topic
        Override ``settings.topics.predictions`` / ``settings.topics.labels``.
    idempotent
        Ask Kafka for an idempotent producer (``enable_idempotence``). Off by default
        because Tansu (the dev broker) refuses ``InitProducerId``; turn it on for
        Apache Kafka / Redpanda / MSK.
    request_timeout_ms
        Kafka request and delivery timeout; a batch not acknowledged within it is
        put back into the buffer and the connection is rebuilt.
    reconnect_backoff_max_s
        Upper bound of the exponential pause between reconnection attempts.
    batch_events
        Pack predictions and labels into columnar batch records (the default); ``False``
        sends one record per event (for consumers of single events).
    batch_format
        How a batch of predictions is written: ``"binary"`` (``prediction_batch.v2``,
        the default: numeric feature columns as little-endian numbers, which the monitor
        decodes about ten times faster than their JSON text) or ``"json"``
        (``prediction_batch.v1``, readable by any JSON consumer and by monitors before
        the version that reads v2).

    Examples
    --------
    >>> async def serve(settings: Settings) -> None:   # doctest: +SKIP
    ...     async with AsyncPredictionProducer(settings) as producer:
    ...         producer.send({"prediction_id": "p1", "model_id": "churn", ...})
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_buffer: int = 10_000,
        linger_ms: float = 50,
        max_batch: int = 500,
        compression: Compression = "gzip",
        topic: str | None = None,
        label_topic: str | None = None,
        idempotent: bool = False,
        request_timeout_ms: int = 10_000,
        reconnect_backoff_max_s: float = 5.0,
        batch_events: bool = True,
        batch_format: Literal["binary", "json"] = "binary",
    ) -> None:
        if max_buffer < 1 or max_batch < 1:
            raise ConfigError("producer max_buffer and max_batch must be at least 1")
        if linger_ms < 0 or request_timeout_ms < 1 or reconnect_backoff_max_s <= 0:
            raise ConfigError("producer timeouts must be positive")
        if batch_format not in ("binary", "json"):
            raise ConfigError(f"batch_format must be 'binary' or 'json', got {batch_format!r}")
        if compression is not None:
            check = _CODECS.get(compression)
            if check is None:
                raise ConfigError(f"unknown compression {compression!r}")
            if not check():
                raise ConfigError(f"compression {compression!r} needs cramjam installed")
        self._settings = settings
        self._max_buffer = max_buffer
        self._linger_s = linger_ms / 1000
        self._max_batch = max_batch
        self._compression = compression
        self._topic = topic or settings.topics.predictions
        self._label_topic = label_topic or settings.topics.labels
        self._idempotent = idempotent
        self._request_timeout_ms = request_timeout_ms
        self._backoff_max_s = reconnect_backoff_max_s
        self._batch_events = batch_events
        self._binary = batch_format == "binary"

        # Shared with foreign threads (PredictionProducer): guarded by _lock.
        self._lock = threading.Lock()
        self._buf: deque[_Entry] = deque()
        self._inflight: list[_Entry] = []
        self._seq = 0
        self._sent = 0
        self._dropped = 0
        self._by_reason: dict[str, int] = {}
        self._refusals: deque[Refusal] = deque(maxlen=_RECENT_REFUSALS)
        self._infinite: dict[tuple[str, str], int] = {}
        self._state: Literal["new", "running", "closing", "closed"] = "new"

        # Event-loop side.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._flushing = 0
        self._runner: asyncio.Task[None] | None = None
        self._halt = False
        self._kafka: Any = None
        self._outage = False

        topics = (self._topic, self._label_topic)
        self._sent_metric = {t: PRODUCER_SENT.labels(t) for t in topics}
        # Every reason's series from the start (at zero): rate() sees the first drop.
        self._drop_metric: dict[tuple[str, str], Any] = {
            (t, r): PRODUCER_DROPPED.labels(t, r) for t in topics for r in PRODUCER_DROP_REASONS
        }

    # ------------------------------------------------------------------ properties
    @property
    def sent(self) -> int:
        """Events acknowledged by Kafka."""
        return self._sent

    @property
    def dropped(self) -> int:
        """Events dropped, all reasons together (see the module docstring)."""
        return self._dropped

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """Events dropped, by reason (``invalid``, ``oversize``, ``buffer_full``, ...)."""
        with self._lock:
            return dict(self._by_reason)

    @property
    def last_refusal(self) -> Refusal | None:
        """Why the latest dropped event was dropped (``None`` if none was)."""
        with self._lock:
            return self._refusals[-1] if self._refusals else None

    @property
    def refusals(self) -> list[Refusal]:
        """The most recent refusals (up to 100), oldest first, for logs."""
        with self._lock:
            return list(self._refusals)

    @property
    def infinite_values(self) -> dict[tuple[str, str], int]:
        """Infinite feature values sent as missing, per (model, feature) (a copy).

        JSON has no infinity: an ``inf`` (often a division by zero in feature
        engineering) goes out as ``null``, which the monitor counts as a missing value.
        The first of each model and feature is logged as a warning naming both.
        """
        with self._lock:
            return dict(self._infinite)

    @property
    def buffered(self) -> int:
        """Events held in memory: waiting plus in flight. Never above ``max_buffer``."""
        with self._lock:
            return len(self._buf) + len(self._inflight)

    @property
    def max_buffer(self) -> int:
        """The buffer bound."""
        return self._max_buffer

    @property
    def connected(self) -> bool:
        """Whether a Kafka connection is up (for readiness probes and logs)."""
        return self._kafka is not None and not self._outage

    # ------------------------------------------------------------------ hot path
    def send(self, event: PredictionEvent | Mapping[str, Any]) -> bool:
        """Buffer one prediction event; ``True`` if buffered, ``False`` if dropped.

        Never blocks and never raises. ``event`` is a :class:`PredictionEvent` or a
        mapping with its fields, which may hold what model servers have: numpy
        scalars and 0-d arrays, pandas values, booleans, a time-zone aware
        ``datetime`` or pandas ``Timestamp`` (a naive one is refused, saying so). The
        event is checked by the monitor's own contract check here, so an invalid one
        is refused now (``False``; :attr:`last_refusal` says why) rather than found
        later on the dead-letter topic.
        """
        return self._offer(self._topic, event, PredictionEvent, keep=self._batch_events)

    def send_label(self, event: LabelEvent | Mapping[str, Any]) -> bool:
        """Buffer one label event (keyed by ``model_id``, like predictions); checked
        like :meth:`send`, and packed like predictions (``label_batch.v1``: the labels
        of a model) unless ``batch_events=False``."""
        return self._offer(self._label_topic, event, LabelEvent, keep=self._batch_events)

    def send_batch(self, batch: Mapping[str, Any]) -> bool:
        """Buffer a columnar batch of predictions (one Kafka record); ``True`` if buffered.

        ``batch`` has ``model_id``, ``model_version``, and the columns
        ``prediction_ids``, ``timestamps``, ``features`` (name -> values),
        ``predictions`` and optionally ``scores`` (class -> probabilities) and
        ``segment``: the ``prediction_batch.v1`` envelope without its ``format``,
        ``schema_version`` and ``count``, which are filled in. Columns may be numpy
        arrays. Never blocks and never raises; in the ``sent``/``dropped``/``buffered``
        accounting a batch counts as one. Over ``LIMITS.max_batch_bytes`` encoded it is
        dropped as ``oversize``: send fewer rows (:func:`driftline.contract.columnar.pack_events`
        cuts single events into batches of a given size).
        """
        return self._offer(self._topic, batch, PredictionEvent, batch=True)

    def _offer(
        self,
        topic: str,
        event: Any,
        model: type[PredictionEvent] | type[LabelEvent],
        keep: bool = False,
        batch: bool = False,
    ) -> bool:
        limit = LIMITS.max_batch_bytes if batch else LIMITS.max_event_bytes
        infinite: list[str] = []
        try:
            try:
                key, value, obj = (
                    encode_batch(event, infinite, binary=self._binary)
                    if batch
                    else encode_event(event, model, keep, infinite)
                )
            except ValidationError as exc:
                return self._drop(topic, "invalid", why=str(exc), event=event)
            except Exception as exc:  # orjson.JSONEncodeError, odd mappings: never raise
                why = f"not encodable as JSON: {type(exc).__name__}: {exc}"
                return self._drop(topic, "invalid", why=why, event=event)
            if len(value) > limit:
                why = f"{len(value):,} bytes encoded, over the limit of {limit:,}"
                return self._drop(topic, "oversize", why=why, event=event)
            if obj is not None:
                value = b""  # packed into a batch record on delivery
            with self._lock:
                if self._state in ("closing", "closed"):
                    reason = "closed"
                elif len(self._buf) + len(self._inflight) >= self._max_buffer:
                    reason = "buffer_full"
                else:
                    self._seq += 1
                    self._buf.append((self._seq, topic, key, value, obj))
                    n = len(self._buf)
                    reason = ""
            if reason:
                why = (
                    "the producer is closed"
                    if reason == "closed"
                    else f"{self._max_buffer:,} events already buffered (Kafka slow or down)"
                )
                return self._drop(topic, reason, why=why, event=event)
            if infinite:
                self._note_infinite(key.decode(), infinite)
            if n == 1 or n == self._max_batch:
                self._notify()
            return True
        except Exception:  # pragma: no cover - defensive: the request path must not fail
            log.exception("driftline producer: unexpected error in send()")
            return False

    def _note_infinite(self, model: str, features: list[str]) -> None:
        """Count infinite values sent as missing; warn once per model and feature."""
        first = []
        with self._lock:
            for f in features:
                n = self._infinite.get((model, f), 0)
                self._infinite[(model, f)] = n + 1
                if n == 0:
                    first.append(f)
        for f in first:
            log.warning(
                "driftline producer: feature %r of model %r is infinite; sent as missing "
                "(JSON has no infinity; the monitor counts it as a missing value). Logged "
                "once per model and feature; producer.infinite_values counts them",
                f,
                model,
            )

    def _drop(
        self,
        topic: str,
        reason: str,
        n: int = 1,
        *,
        locked: bool = False,
        why: str = "",
        event: Any = None,
    ) -> bool:
        pid = event.get("prediction_id") if isinstance(event, Mapping) else None
        if pid is None:
            pid = getattr(event, "prediction_id", None)
        refusal = Refusal(
            reason, why or reason, pid if isinstance(pid, str) else None, time.time(), n
        )
        if locked:
            self._count_drop(reason, n, refusal)
        else:
            with self._lock:
                self._count_drop(reason, n, refusal)
        child = self._drop_metric.get((topic, reason))
        if child is None:
            child = self._drop_metric[(topic, reason)] = PRODUCER_DROPPED.labels(topic, reason)
        child.inc(n)
        return False

    def _count_drop(self, reason: str, n: int, refusal: Refusal) -> None:
        self._dropped += n
        self._by_reason[reason] = self._by_reason.get(reason, 0) + n
        self._refusals.append(refusal)

    def _notify(self) -> None:
        """Wake the background task, from the loop thread or any other thread."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the background task. Never fails because Kafka is unreachable:
        the task keeps trying to connect while ``send`` buffers."""
        if self._state == "running":
            return
        if self._state != "new":
            raise RuntimeError("a stopped producer cannot be started again")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._state = "running"
        self._runner = self._loop.create_task(self._run(), name="driftline-producer")

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event buffered before this call has left the buffer
        (delivered, or dropped as rejected). ``True`` on success, ``False`` on timeout."""
        with self._lock:
            target = self._seq
        if self._runner is None or self._runner.done():
            return not self._pending_upto(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._flushing += 1
        self._wake.set()
        try:
            while self._pending_upto(target):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._progress.wait()
            return True
        finally:
            self._flushing -= 1

    def _pending_upto(self, seq: int) -> bool:
        # The buffer and the in-flight batch are both ordered by sequence number.
        with self._lock:
            return bool(
                (self._inflight and self._inflight[0][0] <= seq)
                or (self._buf and self._buf[0][0] <= seq)
            )

    async def stop(self, timeout: float = 5.0) -> None:
        """Refuse new events, flush what can be delivered within ``timeout`` seconds,
        then close. Whatever is still buffered is dropped with reason ``shutdown``
        (events in flight at that moment may in fact have reached Kafka)."""
        if self._state == "closed":
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self._lock:
            was_running = self._state == "running"
            self._state = "closing"
        try:
            if was_running:
                await self.flush(timeout)
            self._halt = True
            if self._runner is not None:
                await self._cancel_runner(self._runner)
            kafka, self._kafka = self._kafka, None
            if kafka is not None:
                await self._close_kafka(kafka, max(deadline - loop.time(), 0.5))
        finally:
            with self._lock:
                left = list(self._inflight) + list(self._buf)
                self._inflight = []
                self._buf.clear()
                self._state = "closed"
                per_topic: dict[str, int] = {}
                for entry in left:
                    per_topic[entry[1]] = per_topic.get(entry[1], 0) + 1
                for t, n in per_topic.items():
                    why = f"{n} events still buffered when stop() gave up"
                    self._drop(t, "shutdown", n, locked=True, why=why)
            if left:
                log.warning("driftline producer: %d events dropped at shutdown", len(left))
            self._progress.set()

    @staticmethod
    async def _cancel_runner(runner: asyncio.Task[None]) -> None:
        # Cancel until the task is done: a library call may swallow one cancellation
        # (asyncio.wait_for does on 3.11 when the inner call fails at the same moment);
        # the _halt flag ends the loop at its next turn in any case.
        while not runner.done():
            runner.cancel()
            await asyncio.wait({runner}, timeout=0.1)
        if not runner.cancelled() and runner.exception() is not None:
            log.error("driftline producer: background task failed", exc_info=runner.exception())

    async def __aenter__(self) -> AsyncPredictionProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ background task
    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._halt:
            try:
                healthy = await self._step()
            except Exception:  # a bug must not end delivery for the life of the process
                log.exception("driftline producer: unexpected error; reconnecting")
                await self._drop_connection()
                healthy = False
            if healthy:
                backoff = _BACKOFF_MIN_S
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)

    async def _step(self) -> bool:
        """Connect if needed, wait for events, deliver until the buffer is empty.
        ``False`` when Kafka is unavailable (the caller backs off)."""
        if self._kafka is None:
            try:
                self._kafka = await self._connect()
            except Exception as exc:
                self._note_outage(exc)
                return False
            if self._outage:
                self._outage = False
                log.info(
                    "driftline producer: connected to Kafka again at %s",
                    self._settings.kafka.bootstrap_servers,
                )
        await self._wait_for_work()
        while batch := self._take():
            ok = await self._deliver(self._kafka, batch)
            self._progress.set()
            if not ok:
                await self._drop_connection()
                return False
        return True

    async def _drop_connection(self) -> None:
        # A fresh client after any failure: new metadata, and with idempotence a new
        # producer id (a restarted broker may not know the old one).
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await self._close_kafka(kafka, self._request_timeout_ms / 1000)

    def _note_outage(self, exc: BaseException) -> None:
        if not self._outage:
            self._outage = True
            log.warning(
                "driftline producer: Kafka unavailable at %s (%s); buffering up to %d "
                "events and retrying",
                self._settings.kafka.bootstrap_servers,
                type(exc).__name__,
                self._max_buffer,
            )
        else:
            log.debug("driftline producer: still unavailable: %r", exc)

    async def _connect(self) -> Any:
        kafka = AIOKafkaProducer(
            **self._settings.kafka.client_kwargs(),
            acks="all",
            enable_idempotence=self._idempotent,
            compression_type=self._compression,
            request_timeout_ms=self._request_timeout_ms,
            max_batch_size=_KAFKA_BATCH_BYTES,
            linger_ms=0,
        )
        try:
            async with asyncio.timeout(self._request_timeout_ms / 1000):
                await kafka.start()
        except BaseException:
            await self._close_kafka(kafka, 1.0)
            raise
        return kafka

    @staticmethod
    async def _close_kafka(kafka: Any, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await kafka.stop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("driftline producer: closing the Kafka client: %r", exc)

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        if not self._buf:
            self._progress.set()
            await self._wake.wait()
            self._wake.clear()
        if self._linger_s > 0 and not self._flushing and len(self._buf) < self._max_batch:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger_s):
                    await self._wake.wait()

    def _take(self) -> list[_Entry]:
        with self._lock:
            n = min(self._max_batch, len(self._buf))
            batch = [self._buf.popleft() for _ in range(n)]
            self._inflight = batch
        return batch

    def _records(self, batch: list[_Entry]) -> list[tuple[str, bytes, bytes, list[int]]]:
        """The Kafka records of a round: ``(topic, key, value, indices of its events)``.

        Events kept for packing become batch records, one stream (model, version,
        segment; a label's is its model) at a time in send order; everything else is
        one record per entry.
        """
        out: list[tuple[str, bytes, bytes, list[int]]] = []
        streams: dict[tuple[str, str, str, str], list[int]] = {}
        for i, (_seq, topic, key, value, obj) in enumerate(batch):
            if obj is None:
                out.append((topic, key, value, [i]))
            else:
                streams.setdefault((topic, *stream_of(obj)), []).append(i)
        for (topic, *_), idx in streams.items():
            events = [batch[i][4] for i in idx]
            start = 0
            for value, rows in pack_records(
                events,  # type: ignore[arg-type]
                LIMITS.max_batch_bytes,
                binary=self._binary,
            ):
                out.append((topic, batch[idx[0]][2], value, idx[start : start + rows]))
                start += rows
        return out

    async def _deliver(self, kafka: Any, batch: list[_Entry]) -> bool:
        """Hand ``batch`` to Kafka and wait for the acknowledgements.

        Acknowledged events count as sent, permanently refused ones are dropped
        (``rejected``), the rest go back to the front of the buffer in order.
        Returns ``False`` if anything must be retried.
        """
        records = self._records(batch)
        futures: list[asyncio.Future[Any]] = []
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(self._request_timeout_ms / 1000 + 5):
                for topic, key, value, _members in records:
                    fut = await kafka.send(topic, value, key=key)
                    fut.add_done_callback(_consume_result)
                    futures.append(fut)
                await asyncio.wait(futures)
        except Exception as exc:
            failure = exc
        finally:
            failure = self._settle(batch, records, futures) or failure
        if failure is not None:
            self._note_outage(failure)
            return False
        return True

    def _settle(
        self,
        batch: list[_Entry],
        records: list[tuple[str, bytes, bytes, list[int]]],
        futures: list[asyncio.Future[Any]],
    ) -> BaseException | None:
        sent: dict[str, int] = {}
        rejected: dict[str, int] = {}
        retry: list[int] = []
        first_error: BaseException | None = None
        for r, (topic, _key, _value, members) in enumerate(records):
            fut = futures[r] if r < len(futures) else None
            if fut is None or not fut.done() or fut.cancelled():
                retry.extend(members)  # never handed over, or no answer in time
                continue
            exc = fut.exception()
            if exc is None:
                sent[topic] = sent.get(topic, 0) + len(members)
            elif _permanent(exc):
                rejected[topic] = rejected.get(topic, 0) + len(members)
            else:
                first_error = first_error or exc
                retry.extend(members)
        with self._lock:
            self._inflight = []
            self._buf.extendleft(reversed([batch[i] for i in sorted(retry)]))
            self._sent += sum(sent.values())
            for topic, n in rejected.items():
                why = "Kafka refused the record (non-retriable)"
                self._drop(topic, "rejected", n, locked=True, why=why)
        for topic, n in sent.items():
            self._sent_metric[topic].inc(n)
        if rejected:
            log.warning("driftline producer: Kafka rejected %d events", sum(rejected.values()))
        if retry and first_error is None:
            first_error = KafkaTimeoutError("batch not acknowledged")
        return first_error


async def _cancel_all_tasks() -> None:
    """Cancel every other task of the running loop and wait briefly for them."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=1.0)


class PredictionProducer:
    """The producer for thread-based servers (Flask, Django, gunicorn threads).

    Runs an :class:`AsyncPredictionProducer` on a private event loop in a daemon
    thread. :meth:`send` and :meth:`send_label` are thread-safe, O(1) and never block
    (a short lock around a deque). Create one per process, after forking.

    Parameters
    ----------
    settings, **kwargs
        As for :class:`AsyncPredictionProducer`.
    flush_at_exit
        If not ``None``, an :mod:`atexit` hook closes the producer with this timeout
        (seconds) when the interpreter exits; :meth:`close` removes the hook. This is
        the only global registration.
    """

    def __init__(
        self, settings: Settings, *, flush_at_exit: float | None = 5.0, **kwargs: Any
    ) -> None:
        self._producer = AsyncPredictionProducer(settings, **kwargs)  # may raise ConfigError
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="driftline-producer", daemon=True
        )
        self._thread.start()
        self._call(self._producer.start(), 10.0)
        self._flush_at_exit = flush_at_exit
        if flush_at_exit is not None:
            atexit.register(self._atexit)

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def sent(self) -> int:
        """Events acknowledged by Kafka."""
        return self._producer.sent

    @property
    def dropped(self) -> int:
        """Events dropped, all reasons together."""
        return self._producer.dropped

    @property
    def buffered(self) -> int:
        """Events held in memory (waiting plus in flight)."""
        return self._producer.buffered

    @property
    def connected(self) -> bool:
        """Whether a Kafka connection is up."""
        return self._producer.connected

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """Events dropped, by reason."""
        return self._producer.dropped_by_reason

    @property
    def infinite_values(self) -> dict[tuple[str, str], int]:
        """Infinite feature values sent as missing, per (model, feature)."""
        return self._producer.infinite_values

    @property
    def last_refusal(self) -> Refusal | None:
        """Why the latest dropped event was dropped (``None`` if none was)."""
        return self._producer.last_refusal

    @property
    def refusals(self) -> list[Refusal]:
        """The most recent refusals (up to 100), oldest first."""
        return self._producer.refusals

    def send(self, event: PredictionEvent | Mapping[str, Any]) -> bool:
        """Buffer one prediction event from any thread; never blocks, never raises
        (see :meth:`AsyncPredictionProducer.send`)."""
        return self._producer.send(event)

    def send_label(self, event: LabelEvent | Mapping[str, Any]) -> bool:
        """Buffer one label event from any thread; never blocks, never raises."""
        return self._producer.send_label(event)

    def send_batch(self, batch: Mapping[str, Any]) -> bool:
        """Buffer a columnar batch from any thread (see ``AsyncPredictionProducer.send_batch``)."""
        return self._producer.send_batch(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block the calling thread until everything buffered so far is delivered."""
        if self._closed:
            return self._producer.buffered == 0
        return self._call(self._producer.flush(timeout), timeout + 5.0)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the thread and its loop."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._flush_at_exit is not None:
            atexit.unregister(self._atexit)
        try:
            self._call(self._producer.stop(timeout), timeout + 5.0)
        except Exception:
            log.exception("driftline producer: error while closing")
            with contextlib.suppress(Exception):
                self._call(_cancel_all_tasks(), 2.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout + 5.0)
            if not self._thread.is_alive():
                self._loop.close()

    def _atexit(self) -> None:
        assert self._flush_at_exit is not None
        self.close(self._flush_at_exit)

    def __enter__(self) -> PredictionProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
