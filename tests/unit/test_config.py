from __future__ import annotations

import logging

import pytest

from driftline.config import RedisSettings, Settings, load_settings
from driftline.errors import ConfigError


def test_defaults_and_dlq_names():
    s = Settings()
    assert (s.topics.predictions, s.topics.labels, s.topics.alerts) == (
        "predictions", "labels", "drift-alerts")
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
    offenders = [p.name for p in src.rglob("*.py")
                 if "os.environ" in p.read_text() and p.name not in ("config.py", "devstack.py")]
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
