from __future__ import annotations

import logging

import pytest

from driftline.config import RedisSettings, Settings, load_settings
from driftline.errors import ConfigError


def test_defaults_and_dlq_names():
    s = Settings()
    assert (s.topics.predictions, s.topics.labels, s.topics.alerts) == (
        "predictions",
        "labels",
        "drift-alerts",
    )
    assert s.topics.dlq("predictions") == "predictions.dlq"
    assert s.kafka.client_kwargs()["security_protocol"] == "PLAINTEXT"


def test_environment_is_read_with_prefix_and_nesting(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("DRIFTLINE_REDIS__URL", "rediss://driftline@redis:6380/0")
    monkeypatch.setenv("DRIFTLINE_REDIS__PASSWORD", "s3cret-redis")
    monkeypatch.setenv("DRIFTLINE_TOPICS__ALERTS", "alerts-x")
    monkeypatch.setenv("DRIFTLINE_METRICS_PORT", "9200")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.topics.alerts == "alerts-x" and s.metrics_port == 9200
    assert s.redis.client_kwargs()["password"] == "s3cret-redis"
    assert "s3cret" not in repr(s) and "s3cret" not in s.redis.redacted_url()


def test_sasl_ssl_settings_build_client_kwargs(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL_USERNAME", "driftline")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL_PASSWORD", "hunter2-kafka")
    s = load_settings()
    kw = s.kafka.client_kwargs()
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_password"] == "hunter2-kafka"
    assert kw["ssl_context"] is not None
    assert "hunter2" not in repr(s.kafka)


def test_incomplete_sasl_is_a_config_error_without_the_secret(monkeypatch, caplog):
    monkeypatch.setenv("DRIFTLINE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL_PASSWORD", "hunter2-kafka")
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as err:
        load_settings()
    assert "sasl_mechanism" in str(err.value)
    assert "hunter2" not in str(err.value) and "hunter2" not in caplog.text


@pytest.mark.parametrize("url", ["http://x", "localhost:6379"])
def test_redis_url_scheme_is_checked(url):
    with pytest.raises(ConfigError):
        load_settings(redis={"url": url})


def test_only_config_reads_the_environment():
    import pathlib

    src = pathlib.Path(__file__).resolve().parents[2] / "src" / "driftline"
    offenders = [
        p.name
        for p in src.rglob("*.py")
        if "os.environ" in p.read_text() and p.name not in ("config.py", "devstack.py")
    ]
    assert offenders == []


def test_redis_cluster_flag_picks_the_cluster_client(monkeypatch):
    import redis.asyncio as aioredis
    import redis.asyncio.cluster as aiocluster

    from driftline.runtime.redis_client import connect_redis

    monkeypatch.setenv("DRIFTLINE_REDIS__URL", "redis://10.0.0.7:7000")
    monkeypatch.setenv("DRIFTLINE_REDIS__CLUSTER", "true")
    s = load_settings()
    assert s.redis.cluster is True
    # Built lazily: no connection is opened here.
    assert isinstance(connect_redis(s.redis), aiocluster.RedisCluster)
    assert type(connect_redis(RedisSettings())) is aioredis.Redis


@pytest.mark.parametrize("url", ["redis://h:7000/1", "rediss://h:7000/15"])
def test_a_cluster_url_with_a_database_other_than_0_is_refused(url):
    with pytest.raises(ConfigError, match="a Redis Cluster has only 0"):
        load_settings(redis={"url": url, "cluster": True})
    assert load_settings(redis={"url": url}).redis.url == url  # one server has databases


# --- no default secrets (issue 16, item 3) --------------------------------------------


def test_there_is_no_default_signing_key(monkeypatch):
    monkeypatch.delenv("DRIFTLINE_REDIS__STATE_SIGNING_KEY", raising=False)
    s = load_settings()
    assert s.redis.state_signing_key is None
    with pytest.raises(ConfigError, match="no state signing key: set DRIFTLINE_REDIS__STATE"):
        s.redis.signing_key()


def test_the_former_development_key_is_refused(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_REDIS__STATE_SIGNING_KEY", "driftline-dev-signing-key")
    with pytest.raises(ConfigError, match="former built-in development key") as err:
        load_settings().redis.signing_key()
    assert "driftline-dev-signing-key" not in str(err.value)  # never echo a key


def test_a_configured_key_is_used(monkeypatch):
    monkeypatch.setenv("DRIFTLINE_REDIS__STATE_SIGNING_KEY", "k" * 32)
    assert load_settings().redis.signing_key().get_secret_value() == "k" * 32


def test_open_store_refuses_to_build_a_client_without_a_key(monkeypatch):
    from driftline.runtime.store import open_store

    monkeypatch.delenv("DRIFTLINE_REDIS__STATE_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match="no state signing key"):
        open_store(load_settings().redis, "g")


@pytest.mark.parametrize(
    "argv",
    [
        ["monitor"],
        ["labels"],
        ["retrain", "--no-metrics"],
        ["serve", "--port", "0"],
        ["reference", "show", "--model", "m", "--version", "1"],
        ["report", "--model", "m", "--out", "/dev/null"],
    ],
)
def test_commands_that_sign_or_verify_refuse_to_start_without_a_key(argv):
    """One clear line on stderr, exit 2, no traceback; nothing is contacted (the
    Kafka and Redis addresses point nowhere)."""
    import os
    import subprocess
    import sys

    import driftline

    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(driftline.__file__))
    env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
    env["DRIFTLINE_REDIS__URL"] = "redis://127.0.0.1:1/0"
    out = subprocess.run(
        [sys.executable, "-m", "driftline", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no state signing key" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
