"""The retraining trigger's I/O shell: a faust app (``driftline retrain``).

An agent over the alert topic runs :func:`driftline.runtime.retrain.decide` on every
alert with its model's :class:`~driftline.runtime.retrain.ModelState`, read from a
faust Table (in memory, restored from its changelog topic ``topics.retrain_state()`` on
start), then delivers the request (topic and/or webhook) and writes the new state.
:func:`faust_settings` maps driftline's configuration onto faust's in one place.

Order per alert, and why nothing is lost or requested twice:

1. decide (pure); an unreadable alert goes to ``<alerts>.dlq`` with reason headers;
2. deliver the request and wait for the broker's acknowledgement and/or a 2xx from the
   webhook (retried with backoff until it succeeds or the service stops);
3. write the model's signed state to the table (its changelog record is sent);
4. acknowledge the alert: faust flushes the changelog, then commits the offset.

A crash after 2 and before 3 re-delivers the same ``request_id`` (consumers
deduplicate on it); after 3, the re-read alert is a duplicate. A stop during 2 leaves
the alert unacknowledged, so it is read again on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlsplit

import orjson

from driftline.config import KafkaSettings, Settings
from driftline.errors import ConfigError, StateCorrupt
from driftline.runtime import metrics as m
from driftline.runtime.health import HEALTH
from driftline.runtime.resilience import BROKER_CHECK_SECONDS, BrokerWatch, watch_broker
from driftline.runtime.retrain import (
    ModelState,
    Outcome,
    RetrainPolicy,
    RetrainRequest,
    decide,
)
from driftline.runtime.sealer import Sealer

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaConsumer

__all__ = ["RetrainService", "faust_settings"]

log = logging.getLogger("driftline.retrain")


def _post_json(url: str, body: bytes, idempotency_key: str, timeout: float) -> int:
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked in RetrainService
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": "driftline-retrain",
        },
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        status: int = resp.status
        return status


def _credentials(kafka: KafkaSettings) -> Any:
    """faust's credentials object for the configured security protocol (or ``None``)."""
    import faust

    ctx = kafka.ssl_context()
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # checked by KafkaSettings
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def faust_settings(
    settings: Settings, *, group_id: str, partitions: int, from_start: bool
) -> dict[str, Any]:
    """driftline's configuration as faust ``App`` keyword arguments: the one mapping.

    ``env={}`` stops faust from reading its own environment variables (they would
    override these): :mod:`driftline.config` stays the only reader of the environment.
    """
    kafka, retrain = settings.kafka, settings.retrain
    session_s = retrain.session_timeout_ms / 1000
    return {
        "id": group_id,
        "env": {},
        "broker": ";".join(f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",")),
        "broker_client_id": kafka.client_id,
        "broker_credentials": _credentials(kafka),
        "broker_session_timeout": session_s,
        "broker_heartbeat_interval": session_s / 10,
        "broker_rebalance_timeout": session_s,
        "consumer_auto_offset_reset": "earliest" if from_start else "latest",
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        # Tables live in memory and are rebuilt from their changelog on start.
        "store": "memory://",
        "table_standby_replicas": 0,
        # A new table's changelog must have the alert topic's partitions.
        "topic_partitions": partitions,
        "topic_replication_factor": 1,
        "topic_disable_leader": True,
        # Stop without waiting for an alert whose delivery is still retried: it is not
        # acknowledged, so its offset is not committed and a restart reads it again.
        "stream_wait_empty": False,
        "web_enabled": False,
        "autodiscover": False,
        # faust creates these directories even for memory tables (nothing is written).
        "datadir": str(Path(tempfile.gettempdir()) / "driftline-faust"),
    }


async def _metadata_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of no group, for metadata requests: the partition counts at start,
    then whether the broker answers (:func:`watch_broker`)."""
    from aiokafka import AIOKafkaConsumer

    reader = AIOKafkaConsumer(**settings.kafka.client_kwargs(), group_id=None)
    try:
        await reader.start()
    except BaseException:
        await reader.stop()
        raise
    return reader


async def _partition_counts(reader: AIOKafkaConsumer, topics: list[str]) -> dict[str, int]:
    """Partitions of each of ``topics`` that exists."""
    await reader.topics()
    return {t: len(p) for t in topics if (p := reader.partitions_for_topic(t))}


class _Stopping(Exception):
    """A stop was requested while an alert was still being delivered."""


class RetrainService:
    """The retraining trigger as a faust app; runs :func:`decide` on every alert.

    Parameters
    ----------
    settings
        The configuration object (Kafka, topic names, ``retrain.*``).
    policy
        The retraining policy.
    group_id
        The consumer group on the alert topic (the faust app id); ``retrain.group_id``
        by default.
    webhook_url
        Optional ``http(s)://`` URL that receives each request as a JSON POST.
    publish
        Publish requests to ``settings.topics.retrain_requests``.
    from_start
        A new consumer group starts at the alert topic's beginning instead of its end.
    """

    def __init__(
        self,
        settings: Settings,
        policy: RetrainPolicy,
        *,
        group_id: str | None = None,
        webhook_url: str | None = None,
        publish: bool = True,
        from_start: bool = False,
    ) -> None:
        if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
            raise ConfigError("retrain webhook must be an http:// or https:// URL")
        if not publish and webhook_url is None:
            raise ConfigError("retrain: nothing to do (no topic and no webhook)")
        self.settings = settings
        self.policy = policy
        self.group_id = group_id or settings.retrain.group_id
        self.webhook_url = webhook_url
        self.publish = publish
        self.from_start = from_start
        self.state_topic = settings.topics.retrain_state()
        self.decisions = 0
        self.requested = 0
        self.dead_letters = 0
        #: Requests recorded in the state restored on start.
        self.restored = 0
        self.app: faust.App | None = None
        self._sealer = Sealer(settings.redis.signing_key())
        self._stop = asyncio.Event()
        #: Set while the agent holds no alert (between two alerts, or done).
        self._idle = asyncio.Event()
        self._idle.set()
        self._failure: StateCorrupt | None = None
        self._last_activity = time.monotonic()
        self._table: Any = None
        self._requests_topic: Any = None
        self._dlq_topic: Any = None
        #: Says once per outage that the broker cannot be reached (and when it is back).
        self.broker = BrokerWatch(
            "retrain",
            settings.kafka.bootstrap_servers,
            meanwhile="alerts are read from the committed positions once it answers",
        )
        self._reader: AIOKafkaConsumer | None = None

    def stop(self) -> None:
        """Stop reading alerts; :meth:`run` returns and :meth:`close` stops the app."""
        self._stop.set()

    @property
    def app_error(self) -> BaseException | None:
        """The error the faust app stopped on, if it crashed."""
        return None if self.app is None else self.app.crash_reason

    @property
    def crashed(self) -> bool:
        """The faust app stopped on an error of its own."""
        return self.app_error is not None

    async def start(self) -> None:
        """Create the topics, join the group and restore the state table."""
        from driftline.runtime.worker import ensure_topics, leave_group_from_generation_zero

        s = self.settings
        alerts = s.topics.alerts
        topics = [alerts, s.topics.dlq(alerts)]
        await ensure_topics(s, topics + ([s.topics.retrain_requests] if self.publish else []))
        self._reader = await _metadata_reader(s)
        counts = await _partition_counts(self._reader, [alerts, self.state_topic])
        partitions = counts[alerts]
        if counts.get(self.state_topic, partitions) != partitions:
            raise ConfigError(
                f"retrain: state topic {self.state_topic} has {counts[self.state_topic]} "
                f"partitions but {alerts} has {partitions}: they must match"
            )
        self.app = self._build(partitions)
        for outcome in get_args(Outcome):  # every decision's series from the start
            m.RETRAIN_ALERTS.labels(outcome)
        started = time.monotonic()
        # app.start() returns once the group is joined and the table restored from its
        # changelog; a stop meanwhile (SIGTERM during a join) must not wait for that.
        starting = asyncio.ensure_future(self.app.start())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()
        # faust's aiokafka consumer (in its consumer thread) leaves the group as it stops,
        # from Tansu's first generation (0) too: a restart then joins at once.
        thread = getattr(self.app.consumer, "_thread", None)
        consumer = getattr(thread, "_consumer", None)
        if consumer is not None:
            leave_group_from_generation_zero(consumer)
        models = 0
        for key, blob in self._table.items():
            self.restored += self._open(key.decode(), blob).requests
            models += 1
        log.info(
            "restored %d earlier requests (%d models) from %s; started in %.1fs",
            self.restored,
            models,
            self.state_topic,
            time.monotonic() - started,
        )
        self._last_activity = time.monotonic()

    def _build(self, partitions: int) -> faust.App:
        import faust

        s = self.settings
        app = faust.App(
            **faust_settings(
                s, group_id=self.group_id, partitions=partitions, from_start=self.from_start
            )
        )
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        changelog = app.topic(
            self.state_topic, partitions=partitions, compacting=True, deleting=False, **raw
        )
        self._table = app.Table(
            "retrain-state",
            partitions=partitions,
            changelog_topic=changelog,
            key_type=bytes,
            value_type=bytes,
        )
        self._requests_topic = app.topic(s.topics.retrain_requests, **raw)
        self._dlq_topic = app.topic(s.topics.dlq(s.topics.alerts), **raw)
        app.agent(app.topic(s.topics.alerts, **raw), name="retrain-trigger")(self._agent)
        return app

    async def run(self, idle_exit_s: float | None = None) -> None:
        """Wait until :meth:`stop`, the app stopping, or ``idle_exit_s`` since the last
        alert was handled, with none in hand, once every assigned alert partition was
        fetched to its end.

        Raises
        ------
        StateCorrupt
            A stored state record failed its signature or format check.
        """
        assert self.app is not None and self._reader is not None
        watching = asyncio.create_task(watch_broker(self.broker, self._stop, self._reader.topics))
        try:
            await self._run(idle_exit_s)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _run(self, idle_exit_s: float | None) -> None:
        assert self.app is not None
        caught_up: float | None = None
        while not self._stop.is_set() and not self.app.should_stop:
            HEALTH.beat()  # /livez: this loop turns every 0.2 s unless the event loop is wedged
            if idle_exit_s is not None:
                # faust starts fetching some time after start() returns (seeks, resumes):
                # idle time counts from the moment the alerts are all fetched.
                if caught_up is None and await self._fetched_to_end():
                    caught_up = time.monotonic()
                recovery = getattr(self.app.tables, "recovery", None)  # TableManager's
                if self.app.rebalancing or getattr(recovery, "in_recovery", False):
                    # Fetched is not handled: while faust rebalances or restores the
                    # state table from its changelog, the agent takes no alert, and a
                    # slow restore on a busy machine is not idle time.
                    self._last_activity = time.monotonic()
                # Idle means no alert in hand as well: a delivery or a dead letter can
                # take longer than the idle time (a first send to a new topic on a busy
                # broker), and the alerts fetched behind it are still to be handled.
                idle_since = max(caught_up or time.monotonic(), self._last_activity)
                idle = caught_up is not None and self._idle.is_set()
                if idle and time.monotonic() - idle_since > idle_exit_s:
                    break
            try:
                await asyncio.wait_for(self._stop.wait(), 0.2)
            except TimeoutError:
                pass
        if self._failure is not None:
            raise self._failure

    async def _fetched_to_end(self) -> bool:
        """Every alert partition assigned here (one at least) was fetched up to its end."""
        assert self.app is not None
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == self.settings.topics.alerts]
        if not tps:
            # Not joined yet (a slow group join on a busy machine took longer than the
            # idle time and the app left before reading anything): nothing is caught up.
            return False
        try:
            ends = await consumer.highwaters(*tps)
            for tp in tps:
                position = await consumer.position(tp)
                if position is None or position < ends.get(tp, 0):
                    return False
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: ask again later
            log.debug("end offsets unavailable (%s)", type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        """Finish the alert in hand, then stop the app (commit, leave the group).

        Both within ``retrain.stop_timeout_seconds``: a delivery still retried gives up
        at once (its alert stays unacknowledged and is read again after a restart).
        """
        self._stop.set()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader.stop(), BROKER_CHECK_SECONDS)
        if self.app is None:
            return
        limit = self.settings.retrain.stop_timeout_seconds
        deadline = time.monotonic() + limit
        try:
            # The alert's state write must reach the producer before faust's last flush.
            await asyncio.wait_for(self._idle.wait(), limit)
            await asyncio.wait_for(self.app.stop(), max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            # Nothing is lost: alerts whose offsets were not committed are read again,
            # and the restored state turns them into duplicates.
            log.warning("the faust app did not stop within %.0fs; exiting anyway", limit)

    # ------------------------------------------------------------------- the agent

    def _open(self, model: str, blob: bytes) -> ModelState:
        # Signed under (state topic, model): a record copied to another model is refused.
        return ModelState.from_bytes(self._sealer.open_sealed(f"{self.state_topic}:{model}", blob))

    def _seal(self, model: str, state: ModelState) -> bytes:
        return self._sealer.seal(f"{self.state_topic}:{model}", state.to_bytes())

    async def _agent(self, stream: Any) -> None:
        # Manual acks: an alert is acknowledged (its offset may be committed) only once
        # its request is delivered and its state written.
        async for event in stream.noack().events():
            if self._stop.is_set():
                return  # not acknowledged: read again after a restart
            self._idle.clear()
            try:
                await self._handle(event)
                await stream.ack(event)
            except _Stopping:
                log.info("stopped while delivering a request; it is sent again on restart")
                return
            except StateCorrupt as exc:
                log.error("retrain state refused: %s", exc)
                self._failure = exc
                self._stop.set()
                return
            finally:
                self._last_activity = time.monotonic()
                self._idle.set()

    async def _handle(self, event: Any) -> None:
        msg = event.message
        self._last_activity = time.monotonic()
        try:
            alert = orjson.loads(event.value or b"")
            if not isinstance(alert, dict):
                raise TypeError("an alert is a JSON object")
            model = alert["model_id"]
            if not isinstance(model, str):
                raise TypeError("model_id is not a string")
            key = model.encode()
            blob = self._table.get(key)
            state = ModelState() if blob is None else self._open(model, blob)
            decision, after = decide(
                self.policy, state, alert, max_seen=self.settings.retrain.max_seen_per_model
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await self._dead_letter(msg, exc)
            return
        self.decisions += 1
        m.RETRAIN_ALERTS.labels(decision.outcome).inc()
        req = decision.request
        if req is not None:
            await self._deliver(req)
            self.requested += 1
            m.RETRAIN_REQUESTS.labels(req.model_id, req.status).inc()
            log.info("retraining request %s (%s): %s", req.request_id, req.status, req.reason)
        else:
            log.debug("alert %s: %s (%s)", decision.alert_id, decision.outcome, decision.reason)
        if after != state:
            self._table[key] = self._seal(model, after)

    async def _dead_letter(self, msg: Any, exc: Exception) -> None:
        from driftline.runtime.worker import dead_letter_headers

        headers = dead_letter_headers(msg.topic, msg.partition, msg.offset, "decode", exc)
        await self._send(self._dlq_topic, msg.key, msg.value or b"", headers)
        self.dead_letters += 1
        m.DEAD_LETTERS.labels(msg.topic, "decode").inc()
        log.warning(
            "alert at %s[%d] offset %d dead-lettered: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            type(exc).__name__,
        )

    async def _deliver(self, req: RetrainRequest) -> None:
        body = req.to_json()
        if self.publish:
            headers = [("dl.request_id", req.request_id.encode())]
            await self._send(self._requests_topic, req.model_id.encode(), body, headers)
        if self.webhook_url is not None:
            await self._post(body, req.request_id)

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds before a retry; raise :class:`_Stopping` on a stop."""
        if self._stop.is_set():
            raise _Stopping
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            return
        raise _Stopping

    async def _send(
        self, topic: Any, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publish one record and wait for the broker's acknowledgement (retried)."""
        delay = 0.5
        while True:
            try:
                # force: send now, not when faust commits (we wait for the ack here).
                sent = await topic.send(key=key, value=value, headers=headers, force=True)
                await sent
                return
            except Exception as exc:  # noqa: BLE001 - any send failure is retried
                log.warning("publish to %s failed (%s); retrying", topic, type(exc).__name__)
            await self._pause(delay)
            delay = min(delay * 2, 30.0)

    async def _post(self, body: bytes, key: str) -> None:
        """POST until the webhook answers 2xx (capped backoff) or the service stops."""
        assert self.webhook_url is not None
        delay = 0.5
        timeout = self.settings.retrain.webhook_timeout_seconds
        while True:
            try:
                status = await asyncio.to_thread(_post_json, self.webhook_url, body, key, timeout)
                if 200 <= status < 300:
                    return
                log.warning("retrain webhook answered %d; retrying", status)
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    # The webhook refuses this request for good: retrying cannot help,
                    # and blocking would stop every later request.
                    log.error("retrain webhook refused request %s with %d", key, exc.code)
                    return
                log.warning("retrain webhook answered %d; retrying", exc.code)
            except OSError as exc:
                log.warning("retrain webhook failed (%s); retrying", type(exc).__name__)
            # Not delivered: on a stop the alert stays unacknowledged and is read again.
            await self._pause(delay)
            delay = min(delay * 2, 30.0)
