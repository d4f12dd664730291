"""The one configuration object. This is the only module that reads the environment.

Every setting has an environment variable ``DRIFTLINE_<NAME>`` (nested fields use
``__``, e.g. ``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS``). Secrets are ``SecretStr`` so they
never appear in ``repr``, logs or metric labels.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftline.errors import ConfigError

__all__ = [
    "HealthSettings",
    "KafkaSettings",
    "LabelsSettings",
    "MonitorSettings",
    "RedisSettings",
    "RetrainSettings",
    "load_settings",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
]


class KafkaSettings(BaseModel):
    """How to reach Kafka, including SASL and TLS."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    client_id: str = "driftline"

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(
                    "SASL protocols need kafka.sasl_mechanism, sasl_username and sasl_password"
                )
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the TLS context for ``SSL``/``SASL_SSL``, or ``None`` for plaintext."""
        if not self.security_protocol.endswith("SSL"):
            return None
        ctx = ssl.create_default_context(cafile=self.ssl_cafile)
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        ctx = self.ssl_context()
        if ctx is not None:
            kw["ssl_context"] = ctx
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # checked by the validator
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kw


#: Keys that were published with Driftline (the old development fallback): anyone can
#: forge records with them, so they are refused like a missing key.
_PUBLIC_KEYS = frozenset({"driftline-dev-signing-key"})


class RedisSettings(BaseModel):
    """How to reach Redis: ``redis://`` or ``rediss://`` (TLS), optionally an ACL user.

    With ``cluster=True`` the URL names any one node of a Redis Cluster; the client
    discovers the others and routes every command to the master of its key's slot
    (docs/redis.md, "Redis Cluster").
    """

    url: str = "redis://127.0.0.1:6379/0"
    #: The URL is a node of a Redis Cluster (redis-py's cluster client), not one server.
    cluster: bool = False
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    key_prefix: str = "dl"
    #: Seconds a command may wait for its reply (a stalled server or network); the
    #: worker then retries, which the commit protocol makes safe. ``None``: wait forever.
    socket_timeout: float | None = Field(default=10.0, gt=0)
    #: Seconds to establish a connection.
    socket_connect_timeout: float | None = Field(default=5.0, gt=0)
    #: HMAC key that signs every stored record (state, references); a tampered or
    #: foreign record is refused. Required by every command that reads or writes Redis
    #: state: there is no default (see :meth:`signing_key`).
    state_signing_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss"):
            raise ValueError("redis.url must start with redis:// or rediss://")
        return v

    @model_validator(mode="after")
    def _cluster_db(self) -> RedisSettings:
        db = urlsplit(self.url).path.strip("/")
        if self.cluster and db not in ("", "0"):
            raise ValueError(f"redis.url selects database {db!r}: a Redis Cluster has only 0")
        return self

    def signing_key(self) -> SecretStr:
        """The configured state signing key; :class:`ConfigError` when there is none.

        Every worker and command that signs or verifies stored records calls this
        before it connects, so a missing key stops it with one clear line.
        """
        key = self.state_signing_key
        if key is None or not key.get_secret_value():
            raise ConfigError(
                "no state signing key: set DRIFTLINE_REDIS__STATE_SIGNING_KEY "
                "(e.g. to the output of `openssl rand -hex 32`); there is no default"
            )
        if key.get_secret_value() in _PUBLIC_KEYS:
            raise ConfigError(
                "redis.state_signing_key is the former built-in development key, which is "
                "public: generate a key of your own (`openssl rand -hex 32`)"
            )
        return key

    def redacted_url(self) -> str:
        """The URL without any password, safe for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_url(self.url, **kwargs)`` of redis-py's asyncio
        ``Redis`` or, with :attr:`cluster`, ``RedisCluster`` (they take the same ones)."""
        kw: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
        }
        if self.username:
            kw["username"] = self.username
        if self.password is not None:
            kw["password"] = self.password.get_secret_value()
        if urlsplit(self.url).scheme == "rediss":
            if self.ssl_ca_certs:
                kw["ssl_ca_certs"] = self.ssl_ca_certs
            if self.ssl_certfile:
                kw["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                kw["ssl_keyfile"] = self.ssl_keyfile
        return kw


class TopicSettings(BaseModel):
    """Topic names. Dead letters go to ``<topic><dlq_suffix>``."""

    predictions: str = "predictions"
    labels: str = "labels"
    alerts: str = "drift-alerts"
    #: Retraining requests published by ``driftline retrain`` (driftline.runtime.retrain).
    retrain_requests: str = "retrain-requests"
    dlq_suffix: str = ".dlq"

    def dlq(self, topic: str) -> str:
        """Name of the dead-letter topic for ``topic``."""
        return f"{topic}{self.dlq_suffix}"

    def retrain_state(self) -> str:
        """The retraining trigger's state table (its faust changelog topic).

        Named after the request topic, not the consumer group, so the trigger's memory
        belongs to the requests it made: a new group (lost offsets) finds it again.
        """
        return f"{self.retrain_requests}.state"


class WorkerSettings(BaseModel):
    """What every Kafka worker shell reads (:mod:`driftline.runtime.worker`).

    The monitor (``monitor.*``) and the label joiner (``labels.*``) each have their own
    values; the fields mean the same for both.
    """

    #: Kafka consumer group (and the Redis key space of the group's state).
    group_id: str
    #: Upper bound of records fetched per poll (one micro-batch).
    max_batch_events: int = Field(default=5000, ge=1)
    #: Kafka group session timeout: how long a silent worker (crashed, paused) keeps its
    #: partitions before the group moves them. Heartbeats go every tenth of it.
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    #: Seconds a reference profile read from Redis is used before it is read again
    #: (how soon a new or rebuilt reference is picked up).
    reference_ttl_seconds: float = Field(default=30.0, gt=0)
    #: Largest record fetched per partition and sent (dead letters keep the original
    #: bytes); a dead letter the broker still refuses is truncated.
    max_record_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    #: Most (model, version) references kept in memory (least recently used evicted).
    reference_cache_size: int = Field(default=1024, ge=1)
    #: Seconds before a quarantined partition or a held-back model is checked again.
    quarantine_recheck_seconds: float = Field(default=30.0, gt=0)
    #: Models this worker processes (``fnmatch`` patterns, e.g. ``fraud-*``); empty:
    #: all. Events of other models go to the dead-letter topic (stage ``model_limit``).
    allowed_models: list[str] = Field(default_factory=list)
    #: Most model ids exported as metric label values by one worker; counters of the
    #: others are summed under ``model="other"`` and their gauges are not exported.
    metrics_max_models: int = Field(default=200, ge=1)


class MonitorSettings(WorkerSettings):
    """The fast loop (``driftline monitor``); a model's reference may override the
    window and alert defaults."""

    group_id: str = "driftline-monitor"
    #: Events per count window (tumbling) per (model, version, segment).
    window_events: int = Field(default=500, ge=50)
    #: Event-time window length in seconds; 0 disables time windows.
    window_seconds: float = Field(default=0.0, ge=0)
    #: The one number a user sets: expected events between false alarms per model.
    false_alarm_events: float = Field(default=1_000_000.0, gt=0)
    #: Clean windows in a row before a firing episode resolves (hysteresis).
    resolve_after_windows: int = Field(default=2, ge=1)
    #: Windows after a resolution during which the same episode kind cannot fire again.
    cooldown_windows: int = Field(default=2, ge=0)
    #: Maximum features exported as metric label values per model (others -> "other").
    metrics_max_features: int = Field(default=50, ge=1)
    #: Most model states (model, version, segment) kept decoded in memory by one worker,
    #: least recently used evicted first (their state stays in Redis).
    max_states_in_memory: int = Field(default=2_000, ge=1)
    #: Most streams (model, version, segment) with state in one partition; events of a
    #: new stream past it go to the dead-letter topic (stage ``model_limit``).
    max_streams_per_partition: int = Field(default=10_000, ge=1)
    #: How far ahead of the monitor's clock an event time may be (clock skew between
    #: model servers and the monitor) before the event counts as future-dated: it is
    #: then placed at the newest trusted event time and never moves the event clock.
    future_tolerance_seconds: float = Field(default=300.0, ge=0)
    #: The CUSUM banks' pass compiled with numba (``pip install 'driftline[compiled]'``):
    #: the same results, about a fifth less CPU an event. ``auto`` uses it when numba is
    #: installed, ``on`` requires it, ``off`` keeps the numpy pass.
    compiled_core: Literal["auto", "on", "off"] = "auto"


#: Change detectors the slow loop can run on the label error stream.
ConceptDetectorName = Literal["adwin", "ddm", "eddm", "hddm_a", "hddm_w", "kswin"]


class LabelsSettings(WorkerSettings):
    """The slow loop (``driftline labels``): label join, performance, concept drift.

    See docs/slow-loop.md for what each knob does.
    """

    group_id: str = "driftline-labels"
    #: Label horizon: a label later than this after its prediction (event time) is
    #: counted as expired; pending predictions are kept about this long in Redis.
    horizon_seconds: float = Field(default=7 * 86_400.0, gt=0)
    #: Per-model horizons (model id -> seconds), overriding ``horizon_seconds``.
    model_horizons: dict[str, float] = Field(default_factory=dict)
    #: Pending predictions live in this many time generations per horizon.
    generations: int = Field(default=7, ge=1, le=64)
    #: Hash buckets of the first generation of a model (later ones are sized from it).
    initial_buckets: int = Field(default=64, ge=1, le=65_536)
    #: A label whose prediction is not stored yet is held until the model's prediction
    #: event time passes the label's time by this much, then counted as an orphan.
    grace_seconds: float = Field(default=300.0, ge=0)
    #: Labels held per partition (arrived before their predictions) at which the joiner
    #: stops reading that partition's labels until half as many are held
    #: (backpressure: labels wait in Kafka, none is dropped).
    max_held_labels: int = Field(default=20_000, ge=1)
    #: Width of the event-time buckets of the performance history.
    bucket_seconds: float = Field(default=3600.0, gt=0)
    #: Labelled predictions per performance window (tumbling, per model/version/segment).
    window_labels: int = Field(default=250, ge=20)
    #: ADWIN significance on the per-prediction error stream.
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    #: Change detector on the per-prediction error: ``adwin`` (ours, river-exact) or one
    #: of river's ``ddm``, ``eddm``, ``hddm_a``, ``hddm_w``, ``kswin`` (docs/slow-loop.md).
    concept_detector: ConceptDetectorName = "adwin"
    #: Per-model choices (model id -> detector name), overriding ``concept_detector``.
    model_concept_detectors: dict[str, ConceptDetectorName] = Field(default_factory=dict)
    #: Detector parameters by detector name, e.g. ``{"ddm": {"drift_threshold": 3.5}}``
    #: (river's parameter names; ADWIN's ``delta`` defaults to ``adwin_delta``).
    concept_detector_params: dict[ConceptDetectorName, dict[str, float | bool]] = Field(
        default_factory=dict
    )
    #: ADWIN change counted as concept drift only if the error rate rose this much
    #: (classification) or by this fraction of the old mean absolute error (regression).
    min_error_increase: float = Field(default=0.03, ge=0)
    #: Performance alert: windowed accuracy clearly below ``max(accuracy_floor,
    #: reference accuracy - accuracy_margin - confidence_z x its standard error)`` (upper
    #: confidence bound under it; docs/slow-loop.md).
    accuracy_floor: float = Field(default=0.0, ge=0, le=1)
    accuracy_margin: float = Field(default=0.05, ge=0, le=1)
    #: Performance alert of a regression model whose reference has labels: windowed mean
    #: absolute error clearly above ``reference MAE x (1 + mae_margin)`` (lower
    #: confidence bound over it).
    mae_margin: float = Field(default=0.25, ge=0)
    #: z of the one-sided confidence bound used by the performance rules (2.33 = 99%).
    confidence_z: float = Field(default=2.33, gt=0)
    #: Without a reference accuracy, learn it from this many first labels.
    learn_reference_labels: int = Field(default=1000, ge=1)
    resolve_after_windows: int = Field(default=2, ge=1)
    cooldown_windows: int = Field(default=2, ge=0)


class RetrainSettings(BaseModel):
    """The retraining trigger (``driftline retrain``, a faust app on the alert topic)."""

    #: Kafka consumer group, also the faust app id.
    group_id: str = "driftline-retrain"
    #: Kafka group session timeout. A new member joins in about half of it on Tansu.
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    #: Alert ids remembered per model to drop re-published alerts (the oldest go first).
    max_seen_per_model: int = Field(default=64, ge=1)
    #: Seconds a stop (SIGTERM) may take before the process exits anyway (below the
    #: 10 s Docker and 30 s Kubernetes grace periods before SIGKILL).
    stop_timeout_seconds: float = Field(default=8.0, gt=0)
    #: Seconds one webhook POST may take.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)


class HealthSettings(BaseModel):
    """Bounds of a worker's liveness and shutdown (docs/operations.md, "Health")."""

    #: ``/livez`` fails when the worker's loop has not turned for this long (a blocking
    #: call, a deadlock, an await that never returns).
    loop_stall_seconds: float = Field(default=60.0, gt=0)
    #: ``/livez`` fails when the worker's start or a consumer-group join has not finished
    #: for this long; a healthy join ends within the group's rebalance timeout.
    join_stall_seconds: float = Field(default=120.0, gt=0)
    #: SIGTERM or SIGINT ends the process within this long, in every state: a worker
    #: that has not finished its batch, committed and left the group by then exits 1.
    shutdown_seconds: float = Field(default=20.0, gt=0)


class Settings(BaseSettings):
    """All of Driftline's configuration, read from ``DRIFTLINE_*`` environment variables.

    Examples
    --------
    >>> s = Settings(kafka={"bootstrap_servers": "broker:9092"})
    >>> s.topics.dlq(s.topics.predictions)
    'predictions.dlq'
    """

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    labels: LabelsSettings = Field(default_factory=LabelsSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    metrics_certfile: str | None = None
    metrics_keyfile: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment into :class:`Settings`, raising :class:`ConfigError` on bad values."""
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        # Name the fields and the rule, never the offending value: it may be a secret.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
