"""The retraining trigger: drift alerts in, retraining requests out.

``driftline retrain`` consumes the alert topic with its own consumer group, decides
under a :class:`RetrainPolicy` which alerts warrant retraining a model, and publishes a
:class:`RetrainRequest` to the ``retrain-requests`` topic and/or POSTs it to a webhook
(a training pipeline, a ticketing system, a chat bridge).

The decision is pure (:class:`RetrainTrigger`, no I/O, deterministic); the shell
(:class:`RetrainService`) does Kafka, HTTP and metrics around it.

Policy, per alert, in this order:

1. ``resolved`` alerts close the model's open episode and never trigger;
2. an ``alert_id`` already seen is a duplicate (the monitor's outbox may publish an
   alert twice);
3. the alert's ``kind`` must be in ``kinds``, its ``severity`` in ``severities``, its
   ``diagnosis`` not in ``ignore_diagnoses`` (by default data-quality problems and
   benign input drift never retrain: retraining on broken data bakes the breakage in);
4. debounce per model: no second request for a model within ``debounce_ms`` of the
   previous one, measured in event time (the alerts' ``detected_at``), so a replay of
   the same alerts decides the same way.

A request carries the triggering alert first, then every other alert of the model
still firing (its context), the diagnosis, and a deterministic ``request_id`` (a hash
of the model, version and triggering alert id): a re-published request has the same id,
and consumers deduplicate on it (the webhook gets it as ``Idempotency-Key``). With
``require_approval`` the request is published with status ``pending_approval``: an
approver (a person, a pipeline gate) acts on it; without, ``requested``.

Restarts: on start the service reads the ``retrain-requests`` topic (low volume) and
restores the debounce clock and the triggering alert ids from it, so alerts consumed
again after a crash neither re-request nor escape the debounce. In webhook-only mode
(``publish=False``) there is no such record and that state restarts empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field

from driftline.config import Settings
from driftline.errors import ConfigError, DriftlineError
from driftline.runtime import metrics as m

__all__ = [
    "Decision",
    "RetrainPolicy",
    "RetrainRequest",
    "RetrainService",
    "RetrainTrigger",
    "parse_duration_ms",
    "request_id",
]

log = logging.getLogger("driftline.retrain")

RequestStatus = Literal["requested", "pending_approval"]
Outcome = Literal["requested", "debounced", "filtered", "resolved", "duplicate"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"1w"`` (a bare number is seconds).

    >>> parse_duration_ms("24h")
    86400000
    """
    match = _DURATION_RE.match(text)
    if not match:
        raise ConfigError(f"duration {text!r}: expected a number and a unit (90s, 30m, 24h, 7d)")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


def request_id(model_id: str, model_version: str, trigger_alert_id: str) -> str:
    """Deterministic id of the request a triggering alert causes (32 hex digits)."""
    raw = "\x1f".join(("retrain", model_id, model_version, trigger_alert_id)).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass(frozen=True)
class RetrainPolicy:
    """Which alerts turn into retraining requests, and how often."""

    kinds: frozenset[str] = frozenset(
        {"input_drift", "output_drift", "concept_drift", "performance"}
    )
    severities: frozenset[str] = frozenset({"warning", "critical"})
    ignore_diagnoses: frozenset[str] = frozenset({"input_drift_benign", "data_quality"})
    #: Minimum event time between two requests for the same model.
    debounce_ms: int = 24 * 3_600_000
    #: Publish requests as ``pending_approval`` instead of ``requested``.
    require_approval: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, recorded in every request."""
        return {
            "kinds": sorted(self.kinds),
            "severities": sorted(self.severities),
            "ignore_diagnoses": sorted(self.ignore_diagnoses),
            "debounce_ms": self.debounce_ms,
            "require_approval": self.require_approval,
        }


class RetrainRequest(BaseModel):
    """One retraining request, as published on ``retrain-requests`` and POSTed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    model_id: str
    model_version: str
    status: RequestStatus
    #: Human-readable why, e.g. ``"concept_drift (critical) on churn:3"``.
    reason: str
    trigger_alert_id: str
    kind: str
    severity: str
    diagnosis: str | None
    #: The triggering alert first, then the model's other alerts still firing.
    alerts: list[dict[str, Any]]
    #: Event time of the triggering alert (its ``detected_at``), epoch ms.
    requested_at: int
    policy: dict[str, Any]
    schema_version: Literal[1] = 1

    def to_json(self) -> bytes:
        """Wire form (orjson)."""
        return orjson.dumps(self.model_dump(mode="json"))


@dataclass(frozen=True)
class Decision:
    """What the trigger decided for one alert."""

    outcome: Outcome
    alert_id: str
    model_id: str
    reason: str
    request: RetrainRequest | None = None


def _episode_key(a: Mapping[str, Any]) -> tuple[str, str, str]:
    seg = a.get("segment") or {}
    seg_key = ",".join(f"{k}={seg[k]}" for k in sorted(seg))
    return (str(a["model_version"]), seg_key, str(a["kind"]))


@dataclass
class RetrainTrigger:
    """The pure decision logic: feed alerts in order, get :class:`Decision` s.

    State: the last request time per model (debounce), the alerts still firing per
    model (context for a request), the alert ids seen (bounded, for deduplication).
    """

    policy: RetrainPolicy = field(default_factory=RetrainPolicy)
    max_seen: int = 100_000
    last_request_ms: dict[str, int] = field(default_factory=dict)
    open_alerts: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = field(default_factory=dict)
    seen: dict[str, None] = field(default_factory=dict)

    def _remember_id(self, alert_id: str) -> None:
        self.seen[alert_id] = None
        while len(self.seen) > self.max_seen:
            del self.seen[next(iter(self.seen))]

    def remember(self, request: RetrainRequest) -> None:
        """Restore state from a request published earlier (on restart)."""
        model = request.model_id
        self.last_request_ms[model] = max(
            self.last_request_ms.get(model, request.requested_at), request.requested_at
        )
        self._remember_id(request.trigger_alert_id)

    def feed(self, alert: Mapping[str, Any]) -> Decision:
        """Decide for one alert event (a decoded ``drift-alerts`` record)."""
        alert_id = str(alert["alert_id"])
        model = str(alert["model_id"])
        if alert_id in self.seen:
            return Decision("duplicate", alert_id, model, "alert id already seen")
        self._remember_id(alert_id)
        key = _episode_key(alert)
        if alert["status"] != "firing":
            self.open_alerts.get(model, {}).pop(key, None)
            return Decision("resolved", alert_id, model, "a resolved alert never triggers")
        self.open_alerts.setdefault(model, {})[key] = dict(alert)

        pol = self.policy
        kind, severity = str(alert["kind"]), str(alert["severity"])
        diagnosis = alert.get("diagnosis")
        if kind not in pol.kinds:
            return Decision("filtered", alert_id, model, f"kind {kind} not in the policy")
        if severity not in pol.severities:
            return Decision("filtered", alert_id, model, f"severity {severity} not in the policy")
        if diagnosis in pol.ignore_diagnoses:
            return Decision("filtered", alert_id, model, f"diagnosis {diagnosis} is ignored")
        at = int(alert["detected_at"])
        last = self.last_request_ms.get(model)
        if last is not None and at - last < pol.debounce_ms:
            return Decision(
                "debounced",
                alert_id,
                model,
                f"last request {max(at - last, 0) / 1000:.0f}s ago "
                f"(debounce {pol.debounce_ms / 1000:.0f}s)",
            )
        self.last_request_ms[model] = at
        context = [
            a for k, a in sorted(self.open_alerts[model].items()) if a["alert_id"] != alert_id
        ]
        version = str(alert["model_version"])
        reason = f"{kind} ({severity}) on {model}:{version}"
        request = RetrainRequest(
            request_id=request_id(model, version, alert_id),
            model_id=model,
            model_version=version,
            status="pending_approval" if pol.require_approval else "requested",
            reason=reason,
            trigger_alert_id=alert_id,
            kind=kind,
            severity=severity,
            diagnosis=diagnosis if isinstance(diagnosis, str) else None,
            alerts=[dict(alert), *context],
            requested_at=at,
            policy=pol.to_dict(),
        )
        return Decision("requested", alert_id, model, reason, request)

    def feed_all(self, alerts: Iterable[Mapping[str, Any]]) -> list[Decision]:
        """:meth:`feed` every alert in order."""
        return [self.feed(a) for a in alerts]


# ---------------------------------------------------------------------------- the I/O shell


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


class RetrainService:
    """Consumes alerts, runs :class:`RetrainTrigger`, publishes and POSTs requests.

    Parameters
    ----------
    settings
        The configuration object (Kafka, topic names).
    policy
        The retraining policy.
    group_id
        The service's own consumer group on the alert topic.
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
        group_id: str = "driftline-retrain",
        webhook_url: str | None = None,
        publish: bool = True,
        from_start: bool = False,
        webhook_timeout_s: float = 10.0,
    ) -> None:
        if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
            raise ConfigError("retrain webhook must be an http:// or https:// URL")
        if not publish and webhook_url is None:
            raise ConfigError("retrain: nothing to do (no topic and no webhook)")
        self.settings = settings
        self.trigger = RetrainTrigger(policy)
        self.group_id = group_id
        self.webhook_url = webhook_url
        self.publish = publish
        self.from_start = from_start
        self.webhook_timeout_s = webhook_timeout_s
        self.requests: list[RetrainRequest] = []
        self.decisions = 0
        self._stop = asyncio.Event()
        self.consumer: Any = None
        self.producer: Any = None

    def stop(self) -> None:
        """Finish the current batch, commit and exit."""
        self._stop.set()

    async def start(self) -> None:
        """Create topics, restore state from the request topic, join the group."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        from driftline.runtime.monitor import ensure_topics

        s = self.settings
        topics = [s.topics.alerts] + ([s.topics.retrain_requests] if self.publish else [])
        await ensure_topics(s, topics)
        kw = s.kafka.client_kwargs()
        if self.publish:
            self.producer = AIOKafkaProducer(**kw, acks="all")
            await self.producer.start()
            restored = await self._restore()
            log.info("restored %d earlier requests from %s", restored, s.topics.retrain_requests)
        self.consumer = AIOKafkaConsumer(
            s.topics.alerts,
            **kw,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_start else "latest",
        )
        await self.consumer.start()

    async def _restore(self) -> int:
        """Read every request published so far (the topic is small) into the trigger."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = self.settings.topics.retrain_requests
        reader = AIOKafkaConsumer(**self.settings.kafka.client_kwargs(), group_id=None)
        await reader.start()
        count = 0
        try:
            await reader.topics()
            parts = reader.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return 0
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            end = await reader.end_offsets(tps)
            while True:
                positions = [await reader.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return count
                batch = await reader.getmany(timeout_ms=500)
                for recs in batch.values():
                    for r in recs:
                        try:
                            self.trigger.remember(RetrainRequest.model_validate_json(r.value))
                            count += 1
                        except ValueError:
                            log.warning("unreadable retrain request at offset %d", r.offset)
        finally:
            await reader.stop()

    async def close(self) -> None:
        """Leave the group and close the connections."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def run(self, idle_exit_s: float | None = None) -> None:
        """Process alerts until :meth:`stop` (or ``idle_exit_s`` without records)."""
        assert self.consumer is not None
        idle_since = time.monotonic()
        while not self._stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=300, max_records=500)
            if not batch:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for r in records:
                    await self._handle(r.value, r.offset)
            # Offsets are committed after the batch's requests were delivered: a crash
            # re-reads them, and the restored state makes that a no-op.
            await self.consumer.commit()

    async def _handle(self, value: bytes | None, offset: int) -> None:
        try:
            alert = orjson.loads(value or b"")
            decision = self.trigger.feed(alert)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("skipped an unreadable alert at offset %d", offset)
            return
        self.decisions += 1
        m.RETRAIN_ALERTS.labels(decision.outcome).inc()
        req = decision.request
        if req is None:
            log.debug("alert %s: %s (%s)", decision.alert_id, decision.outcome, decision.reason)
            return
        await self._deliver(req)
        self.requests.append(req)
        m.RETRAIN_REQUESTS.labels(req.model_id, req.status).inc()
        log.info("retraining request %s (%s): %s", req.request_id, req.status, req.reason)

    async def _deliver(self, req: RetrainRequest) -> None:
        body = req.to_json()
        if self.publish:
            await self.producer.send_and_wait(
                self.settings.topics.retrain_requests,
                value=body,
                key=req.model_id.encode(),
                headers=[("dl.request_id", req.request_id.encode())],
            )
        if self.webhook_url is not None:
            await self._post(body, req.request_id)

    async def _post(self, body: bytes, key: str) -> None:
        """POST until the webhook answers 2xx (capped backoff) or the service stops."""
        assert self.webhook_url is not None
        delay = 0.5
        while True:
            try:
                status = await asyncio.to_thread(
                    _post_json, self.webhook_url, body, key, self.webhook_timeout_s
                )
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
            if self._stop.is_set():
                # Not delivered: the offset is not committed, a restart sends it again.
                raise DriftlineError("stopped before the retrain webhook accepted a request")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
