"""Session fixtures: a real Tansu broker and a real redis-server on free ports, and (on
first use) a local Redis Cluster of three redis-server masters.

No mocks: integration tests talk to these processes. Each test gets fresh topic names
and its own Redis key prefix, so tests share the servers without sharing state.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster

from driftline.config import Settings
from driftline.runtime.devstack import DevStack, RedisCluster
from support import redis_settings

# There is no default signing key (issue 16): every test run makes its own, and the
# worker children the tests start inherit it through the environment.
os.environ["DRIFTLINE_REDIS__STATE_SIGNING_KEY"] = secrets.token_hex(32)
# A consumer group's first join on Tansu takes about half the session timeout, and a
# killed member's partitions move after all of it. Every worker the suite starts (in
# this process or as a child) uses 6 s, the value tests/reliability always used, instead
# of the production 10 s: 2 s less per join, 4 s less per takeover after a kill.
for _worker in ("MONITOR", "LABELS", "RETRAIN"):
    os.environ[f"DRIFTLINE_{_worker}__SESSION_TIMEOUT_MS"] = "6000"
# The suite's workers run the numpy pass of the banks (the oracle), whether numba is
# installed or not; tests/unit/test_bank_compiled.py and the compiled monitor scenario
# of tests/integration/test_monitor_stream.py turn the compiled pass on.
os.environ.setdefault("DRIFTLINE_MONITOR__COMPILED_CORE", "off")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Tansu + redis-server for the whole session, stopped by PID at the end."""
    s = DevStack(Path(tmp_path_factory.mktemp("stack"))).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, groups and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_kind() -> str:
    """The Redis that :func:`settings` points at: ``"server"`` (the session's
    redis-server) unless a test is parametrised with ``support.ON_BOTH_REDIS``, which
    runs it on the session's Redis Cluster too (``"cluster"``)."""
    return "server"


@pytest.fixture
def settings(
    stack: DevStack, unique: str, redis_kind: str, request: pytest.FixtureRequest
) -> Settings:
    """Settings pointing at the session stack, with per-test topics and key prefix."""
    return Settings(
        kafka={"bootstrap_servers": stack.broker.bootstrap},
        redis={**redis_settings(stack, request, redis_kind), "key_prefix": f"t{unique}"},
        topics={
            "predictions": f"predictions-{unique}",
            "labels": f"labels-{unique}",
            "alerts": f"alerts-{unique}",
        },
        monitor={"group_id": f"monitor-{unique}"},
        metrics_port=0,
    )


@pytest.fixture
async def redis_client(stack: DevStack) -> AsyncIterator[aioredis.Redis]:
    """An async Redis client on the session server."""
    client = aioredis.Redis.from_url(stack.redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local Redis Cluster (three masters, no replicas) for the whole session.

    Started on first use, stopped by PID at the end. ``redis_cluster.url`` is one node;
    a cluster client finds the others from it.
    """
    cluster = RedisCluster().start(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def redis_cluster_client(
    redis_cluster: RedisCluster,
) -> AsyncIterator[aiocluster.RedisCluster]:
    """redis-py's asyncio cluster client on the session cluster."""
    client = aiocluster.RedisCluster.from_url(redis_cluster.url)
    try:
        await client.initialize()
        yield client
    finally:
        await client.aclose()
