"""The retraining trigger: drift alerts in, retraining requests out.

``driftline retrain`` consumes the alert topic with its own consumer group, decides
under a :class:`RetrainPolicy` which alerts warrant retraining a model, and publishes a
:class:`RetrainRequest` to the ``retrain-requests`` topic and/or POSTs it to a webhook
(a training pipeline, a ticketing system, a chat bridge).

This module is the pure part: :class:`RetrainTrigger` decides (no I/O, deterministic)
and :func:`decide` runs it on one model's :class:`ModelState`. The shell is
:mod:`driftline.runtime.retrain_app`, a faust app: an agent over the alert topic, the
per-model state in a faust Table whose changelog topic is ``topics.retrain_state()``,
Kafka and HTTP out, metrics.

Policy, per alert, in this order:

1. ``resolved`` alerts close the model's open episode and never trigger; ``updated``
   alerts (the monitor's open episode changed: another feature started drifting, or it
   became critical) replace the episode's alert in the request context, and trigger
   only with ``trigger_on_updates`` (then through the checks below, like a firing one);
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

Restarts: the state table (debounce clock, open alerts and seen alert ids per model,
signed) is restored from its changelog before the agent reads an alert, whatever the
consumer group, so alerts consumed again after a crash or with lost offsets neither
re-request nor escape the debounce, in webhook-only mode too. Per alert the shell
delivers the request first, then writes the state; faust commits the alert's offset
only after the state write is flushed. A crash between the delivery and the state
write re-delivers the same request id (at least once; consumers deduplicate on it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from driftline.contract.codec import pack, unpack
from driftline.errors import ConfigError, StateCorrupt

__all__ = [
    "Decision",
    "ModelState",
    "RetrainPolicy",
    "RetrainRequest",
    "RetrainTrigger",
    "decide",
    "parse_duration_ms",
    "request_id",
]

RequestStatus = Literal["requested", "pending_approval"]
Outcome = Literal["requested", "debounced", "filtered", "resolved", "updated", "duplicate"]

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
    #: An ``updated`` alert (an open episode changed) may trigger a request, e.g. when
    #: only ``critical`` alerts do and an episode became critical. Off: it only
    #: refreshes the open episode's context.
    trigger_on_updates: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, recorded in every request."""
        return {
            "kinds": sorted(self.kinds),
            "severities": sorted(self.severities),
            "ignore_diagnoses": sorted(self.ignore_diagnoses),
            "debounce_ms": self.debounce_ms,
            "require_approval": self.require_approval,
            "trigger_on_updates": self.trigger_on_updates,
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
        status = alert["status"]
        if status not in ("firing", "updated"):
            self.open_alerts.get(model, {}).pop(key, None)
            return Decision("resolved", alert_id, model, "a resolved alert never triggers")
        self.open_alerts.setdefault(model, {})[key] = dict(alert)
        if status == "updated" and not self.policy.trigger_on_updates:
            return Decision("updated", alert_id, model, "an update refreshes the open episode")

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


# ------------------------------------------------------------------ one model's state (pure)

EpisodeKey = tuple[str, str, str]

#: Type tag and format version of a :class:`ModelState` record (contract.codec).
STATE_TAG = "retrain_state"
STATE_VERSION = 1


@dataclass(frozen=True)
class ModelState:
    """What the trigger remembers about one model: one row of the state table.

    Stored as a versioned JSON record (:func:`driftline.contract.codec.pack`), signed by
    the shell; reading it can only give numbers, strings, lists and dicts.
    """

    #: Event time of the model's last request (the debounce clock), epoch ms.
    last_request_ms: int | None = None
    #: Requests made for the model so far.
    requests: int = 0
    #: The model's alerts still firing, by episode (version, segment, kind).
    open_alerts: Mapping[EpisodeKey, Mapping[str, Any]] = field(default_factory=dict)
    #: The model's alert ids seen, oldest first (bounded by the trigger's ``max_seen``).
    seen: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        """The versioned record."""
        return pack(
            STATE_TAG,
            STATE_VERSION,
            {
                "last_request_ms": self.last_request_ms,
                "requests": self.requests,
                "open": [[*k, dict(a)] for k, a in sorted(self.open_alerts.items())],
                "seen": list(self.seen),
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelState:
        """Read a record written by :meth:`to_bytes`.

        Raises
        ------
        StateCorrupt
            Not such a record, another version, or fields of the wrong shape.
        """
        f = unpack(data, STATE_TAG, STATE_VERSION)
        last, requests = f.get("last_request_ms"), f.get("requests")
        opened, seen = f.get("open"), f.get("seen")
        if not (
            (last is None or type(last) is int)
            and type(requests) is int
            and isinstance(opened, list)
            and all(_is_open_entry(e) for e in opened)
            and isinstance(seen, list)
            and all(isinstance(x, str) for x in seen)
        ):
            raise StateCorrupt(f"{STATE_TAG}: fields of the wrong shape")
        return cls(
            last_request_ms=last,
            requests=requests,
            open_alerts={(e[0], e[1], e[2]): e[3] for e in opened},
            seen=tuple(seen),
        )


def _is_open_entry(e: object) -> bool:
    """``[version, segment key, kind, alert]``, as :meth:`ModelState.to_bytes` writes."""
    return (
        isinstance(e, list)
        and len(e) == 4
        and all(isinstance(x, str) for x in e[:3])
        and isinstance(e[3], dict)
    )


def decide(
    policy: RetrainPolicy, state: ModelState, alert: Mapping[str, Any], *, max_seen: int
) -> tuple[Decision, ModelState]:
    """Run one alert through :class:`RetrainTrigger` holding its model's state.

    Models are independent in the trigger (alert ids include the model), so feeding a
    trigger that holds one model's state decides exactly as the one trigger holding
    every model would. ``max_seen`` bounds the model's seen ids.

    Raises
    ------
    KeyError, TypeError, ValueError
        The alert lacks a field the policy reads, or has one of the wrong type.
    """
    model = str(alert["model_id"])
    trigger = RetrainTrigger(
        policy,
        max_seen=max_seen,
        last_request_ms={} if state.last_request_ms is None else {model: state.last_request_ms},
        open_alerts={model: {k: dict(a) for k, a in state.open_alerts.items()}},
        seen=dict.fromkeys(state.seen),
    )
    decision = trigger.feed(alert)
    return decision, ModelState(
        last_request_ms=trigger.last_request_ms.get(model),
        requests=state.requests + (decision.request is not None),
        open_alerts=trigger.open_alerts.get(model, {}),
        seen=tuple(trigger.seen),
    )
