"""Scenario 10: TLS and authentication, least privilege, tampering, no leaked secrets.

Redis: redis-server with TLS only (no plaintext port) and the ACL line of
docs/redis.md; the monitor runs as that user over rediss://. Kafka: SASL/SCRAM over TLS
through a test proxy in front of Tansu (see ``scram_proxy.py``). A tampered state
record is refused (StateCorrupt) and its partition quarantined, never started fresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from pydantic import SecretStr
from reliability_support import Stream, settings_for

from driftline.config import Settings
from driftline.runtime import metrics as m
from driftline.runtime.devstack import DevStack, RedisServer
from driftline.runtime.monitor import MonitorWorker
from support import (
    MonitorProc,
    assert_equals_replay,
    metric_value,
    publish,
    put_reference,
    raw_partition_state,
    read_dlq,
    read_records,
    redis_offsets,
)
from tool_checks import require_module

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parents[2] / "docs" / "redis.md"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1, and a second, untrusted CA."""
    d = tmp_path_factory.mktemp("pki")
    trustme = require_module("trustme")
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other-ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    cert.private_key_pem.write_to_path(str(d / "server.key"))
    return {
        k: str(d / f)
        for k, f in [
            ("ca", "ca.pem"),
            ("other_ca", "other-ca.pem"),
            ("cert", "server.pem"),
            ("key", "server.key"),
        ]
    }


@pytest.fixture
def tls_redis(pki: dict[str, str], tmp_path: Path) -> Iterator[tuple[RedisServer, str, str]]:
    """redis-server on a TLS-only port with the documented ACL; (server, password, admin)."""
    password, admin = secrets.token_hex(16), secrets.token_hex(16)
    lines = [ln for ln in DOCS.read_text().splitlines() if ln.startswith("user driftline ")]
    assert len(lines) == 1
    line = lines[0].replace("<sha256-of-password>", hashlib.sha256(password.encode()).hexdigest())
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default off\nuser admin on >{admin} ~* &* +@all\n{line}\n")
    server = RedisServer()
    server.extra_args = [
        "--port", "0",
        "--tls-port", str(server.port),
        "--tls-cert-file", pki["cert"],
        "--tls-key-file", pki["key"],
        "--tls-ca-cert-file", pki["ca"],
        "--tls-auth-clients", "no",
        "--aclfile", str(acl),
    ]  # fmt: skip
    server.start(tmp_path / "redis")
    try:
        yield server, password, admin
    finally:
        server.stop()


def _tls_settings(base: Settings, port: int, password: str, ca: str) -> Settings:
    redis = base.redis.model_copy(
        update={
            "url": f"rediss://127.0.0.1:{port}/0",
            "username": "driftline",
            "password": SecretStr(password),
            "ssl_ca_certs": ca,
            "key_prefix": "dl",  # the ACL line grants ~dl:* only
        }
    )
    return base.model_copy(update={"redis": redis})


async def test_redis_refuses_plaintext_wrong_password_unknown_ca_and_privileges(
    tls_redis: tuple[RedisServer, str, str], pki: dict[str, str]
) -> None:
    server, password, _ = tls_redis
    url = f"rediss://127.0.0.1:{server.port}/0"

    async def ping(u: str, **kw: Any) -> Any:
        c = aioredis.Redis.from_url(u, socket_timeout=3, socket_connect_timeout=3, **kw)
        try:
            return await c.ping()
        finally:
            await c.aclose()

    good = {"username": "driftline", "password": password, "ssl_ca_certs": pki["ca"]}
    assert await ping(url, **good) is True
    with pytest.raises(redis_errors.ConnectionError):  # plaintext to a TLS-only port
        await ping(f"redis://127.0.0.1:{server.port}/0", username="driftline", password=password)
    with pytest.raises(redis_errors.ConnectionError):  # a CA we do not trust
        await ping(url, **{**good, "ssl_ca_certs": pki["other_ca"]})
    with pytest.raises(redis_errors.AuthenticationError):
        await ping(url, **{**good, "password": "wrong"})
    with pytest.raises(redis_errors.AuthenticationError):
        await ping(url, **{**good, "username": "mallory"})
    c = aioredis.Redis.from_url(url, **good)
    try:
        for cmd in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("GET", "x:y")):
            with pytest.raises(redis_errors.NoPermissionError):
                await c.execute_command(*cmd)
    finally:
        await c.aclose()


async def test_monitor_runs_as_the_acl_user_over_tls_and_leaks_no_secret(
    stack: DevStack,
    stream: Stream,
    tls_redis: tuple[RedisServer, str, str],
    pki: dict[str, str],
    tmp_path: Path,
) -> None:
    server, password, _ = tls_redis
    s = _tls_settings(
        settings_for(stack.broker.bootstrap, stack.redis.url, stream.topic),
        server.port,
        password,
        pki["ca"],
    )
    signing_key = secrets.token_hex(24)
    s = s.model_copy(
        update={"redis": s.redis.model_copy(update={"state_signing_key": SecretStr(signing_key)})}
    )
    for ref in stream.references:
        await put_reference(s, ref)
    proc = MonitorProc(
        s,
        tmp_path / "monitor.log",
        idle_exit=6.0,
        DRIFTLINE_REDIS__USERNAME="driftline",
        DRIFTLINE_REDIS__PASSWORD=password,
        DRIFTLINE_REDIS__SSL_CA_CERTS=pki["ca"],
        DRIFTLINE_REDIS__STATE_SIGNING_KEY=signing_key,
        DRIFTLINE_LOG_LEVEL="DEBUG",
    )
    for _ in range(600):
        if sum(o + 1 for o in (await redis_offsets(s)).values()) == len(stream.events):
            break
        await asyncio.sleep(0.05)
    metrics_text = await proc.scrape()
    assert await proc.wait() == 0, proc.log()[-3000:]
    assert metric_value(metrics_text, "driftline_events_total", outcome="processed") == len(
        stream.events
    )
    await assert_equals_replay(s, stream.replay)
    for secret in (password, signing_key):
        assert secret not in proc.log()
        assert secret not in metrics_text
    assert "rediss://127.0.0.1" in proc.log()  # the redacted URL is what gets logged


async def test_tampered_state_quarantines_the_model_loudly(stack: DevStack) -> None:
    """A flipped byte in a stored state record: StateCorrupt, never a silent fresh start
    and never a stopped partition. The model is held back (its events go to the DLQ with
    stage ``state_corrupt``, metric, error log), the evidence stays in place, and the
    rest of its partition and the other partition keep flowing (issue 16 row 6)."""
    from reliability_support import references

    from driftline.demo.simulate import SimulatedModel

    s = settings_for(stack.broker.bootstrap, stack.redis.url)
    for ref in references():
        await put_reference(s, ref)
    churn = list(SimulatedModel(seed=71).events(2_000))
    fraud = list(SimulatedModel(seed=72, model_id="fraud", model_version="7").events(1_000))
    await publish(stack.broker.bootstrap, s.topics.predictions, churn[:1_000] + fraud[:500])
    first = MonitorWorker(s, name="pre-tamper")
    await first.start()
    try:
        await first.run(idle_exit_s=1.5)
    finally:
        await first.close()
    raw = await raw_partition_state(s)
    (bad_p,) = [p for p in (0, 1) if any(k.startswith(b"churn") for k in raw[f"{p}.state"])]
    ok_p = 1 - bad_p
    field, blob = next(iter(raw[f"{bad_p}.state"].items()))
    tampered = blob[:-5] + bytes([blob[-5] ^ 0x01]) + blob[-4:]
    client = aioredis.Redis.from_url(stack.redis.url)
    from support import _store_for

    keys = _store_for(s, client).keys(s.topics.predictions, bad_p)
    await client.hset(keys.state, field, tampered)
    await client.aclose()

    await publish(stack.broker.bootstrap, s.topics.predictions, churn[1_000:] + fraud[500:])
    before = await redis_offsets(s)
    worker = MonitorWorker(s, name="tampered")
    await worker.start()
    try:
        await worker.run(idle_exit_s=2.0)
        assert m.MODELS_QUARANTINED.labels("tampered", "state_corrupt")._value.get() == 1
        assert m.QUARANTINED.labels("tampered", s.topics.predictions)._value.get() == 0
        assert m.READY.labels("tampered")._value.get() == 1
        assert not worker.quarantined
        assert worker.processed == 500, "fraud's events; churn's are held back"
        assert worker.dead_letters == 1_000
    finally:
        await worker.close()
    after = await redis_offsets(s)
    assert after[bad_p] > before[bad_p], "the partition flowed past the held model's events"
    assert after[ok_p] > before[ok_p], "the other partition kept flowing"
    again = await raw_partition_state(s)
    assert again[f"{bad_p}.state"][field] == tampered, "the evidence is left for the operator"
    dead = await read_dlq(s.kafka.bootstrap_servers, s.topics.dlq(s.topics.predictions))
    assert len(dead) == 1_000
    assert {h["dl.error.stage"] for _, h in dead} == {"state_corrupt"}
    assert {orjson.loads(v)["prediction_id"] for v, _ in dead} == {
        e["prediction_id"] for e in churn[1_000:]
    }


# ---------------------------------------------------------------------------- Kafka


@pytest.fixture
async def scram_broker(
    pki: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Tansu behind the TLS + SCRAM proxy; yields (bootstrap, users)."""
    from scram_proxy import ScramTlsProxy

    from driftline.runtime.devstack import TansuBroker, free_port

    users = {"driftline": secrets.token_hex(16)}
    port = free_port()
    broker = TansuBroker(advertised=f"tcp://127.0.0.1:{port}").start(tmp_path)
    proxy = await ScramTlsProxy(broker.port, port, pki["cert"], pki["key"], users).start()
    try:
        yield f"127.0.0.1:{port}", users
    finally:
        await proxy.stop()
        broker.stop()


def _kafka(bootstrap: str, ca: str, user: str, password: str, protocol: str = "SASL_SSL") -> Any:
    from driftline.config import KafkaSettings

    return KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=user,
        sasl_password=password,
        ssl_cafile=ca,
    )


async def _can_connect(kafka: Any) -> bool:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    prod = AIOKafkaProducer(**kafka.client_kwargs(), request_timeout_ms=5_000)
    try:
        await asyncio.wait_for(prod.start(), 15)
    except (KafkaError, ssl.SSLError, OSError, TimeoutError, AssertionError):
        await prod.stop()
        return False
    await prod.stop()
    return True


async def test_kafka_sasl_scram_over_tls_refuses_the_wrong_ones(
    scram_broker: tuple[str, dict[str, str]], pki: dict[str, str]
) -> None:
    bootstrap, users = scram_broker
    pw = users["driftline"]
    assert await _can_connect(_kafka(bootstrap, pki["ca"], "driftline", pw))
    assert not await _can_connect(_kafka(bootstrap, pki["ca"], "driftline", "wrong-password"))
    assert not await _can_connect(_kafka(bootstrap, pki["ca"], "mallory", pw))
    assert not await _can_connect(_kafka(bootstrap, pki["other_ca"], "driftline", pw))
    assert not await _can_connect(
        _kafka(bootstrap, pki["ca"], "driftline", pw, protocol="SASL_PLAINTEXT")
    )


@pytest.mark.slow
async def test_monitor_over_sasl_ssl_kafka_and_tls_redis_leaks_no_secret(
    scram_broker: tuple[str, dict[str, str]],
    stream: Stream,
    tls_redis: tuple[RedisServer, str, str],
    pki: dict[str, str],
    tmp_path: Path,
) -> None:
    from aiokafka import AIOKafkaProducer

    bootstrap, users = scram_broker
    kafka_pw = users["driftline"]
    kafka = _kafka(bootstrap, pki["ca"], "driftline", kafka_pw)
    server, redis_pw, _ = tls_redis
    s = settings_for(bootstrap, "redis://unused:1/0")
    s = _tls_settings(s, server.port, redis_pw, pki["ca"]).model_copy(update={"kafka": kafka})
    for ref in stream.references:
        await put_reference(s, ref)
    prod = AIOKafkaProducer(**kafka.client_kwargs(), linger_ms=20)
    await prod.start()
    try:
        from driftline.runtime.monitor import ensure_topics

        await ensure_topics(s, [s.topics.predictions], partitions=2)
        for e in stream.events:
            await prod.send(s.topics.predictions, orjson.dumps(e), key=e["model_id"].encode())
        await prod.flush()
    finally:
        await prod.stop()

    proc = MonitorProc(
        s,
        tmp_path / "monitor.log",
        idle_exit=6.0,
        DRIFTLINE_KAFKA__SECURITY_PROTOCOL="SASL_SSL",
        DRIFTLINE_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
        DRIFTLINE_KAFKA__SASL_USERNAME="driftline",
        DRIFTLINE_KAFKA__SASL_PASSWORD=kafka_pw,
        DRIFTLINE_KAFKA__SSL_CAFILE=pki["ca"],
        DRIFTLINE_REDIS__USERNAME="driftline",
        DRIFTLINE_REDIS__PASSWORD=redis_pw,
        DRIFTLINE_REDIS__SSL_CA_CERTS=pki["ca"],
        DRIFTLINE_LOG_LEVEL="DEBUG",
    )
    for _ in range(900):
        if sum(o + 1 for o in (await redis_offsets(s)).values()) == len(stream.events):
            break
        await asyncio.sleep(0.05)
    metrics_text = await proc.scrape()
    assert await proc.wait() == 0, proc.log()[-3000:]

    records = await read_records(kafka.client_kwargs(), s.topics.alerts)
    alerts = [r.value for r in records]
    headers = [v for r in records for _, v in r.headers]
    await assert_equals_replay(s, stream.replay, alerts=alerts)
    for secret in (kafka_pw, redis_pw, s.redis.state_signing_key.get_secret_value()):
        assert secret not in proc.log()
        assert secret not in metrics_text
        assert all(secret.encode() not in h for h in headers)
        assert all(secret.encode() not in a for a in alerts)
