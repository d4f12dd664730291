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
    "KafkaSettings",
    "MonitorSettings",
    "RedisSettings",
    "load_settings",
    "Settings",
    "TopicSettings",
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


class RedisSettings(BaseModel):
    """How to reach Redis: ``redis://`` or ``rediss://`` (TLS), optionally an ACL user."""

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    key_prefix: str = "dl"
    #: HMAC key that signs every stored state record; a tampered record is rejected.
    state_signing_key: SecretStr = SecretStr("driftline-dev-signing-key")

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss"):
            raise ValueError("redis.url must start with redis:// or rediss://")
        return v

    def redacted_url(self) -> str:
        """The URL without any password, safe for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.Redis.from_url(self.url, **kwargs)``."""
        kw: dict[str, Any] = {}
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
    dlq_suffix: str = ".dlq"

    def dlq(self, topic: str) -> str:
        """Name of the dead-letter topic for ``topic``."""
        return f"{topic}{self.dlq_suffix}"


class MonitorSettings(BaseModel):
    """Defaults of the fast loop; a model's reference may override them."""

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
    #: Upper bound of events fetched per poll (one micro-batch).
    max_batch_events: int = Field(default=5000, ge=1)
    #: Maximum features exported as metric label values per model (others -> "other").
    metrics_max_features: int = Field(default=50, ge=1)


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
