"""Session fixtures: a real Tansu broker and a real redis-server on free ports.

No mocks: integration tests talk to these processes. Each test gets fresh topic names
and its own Redis key prefix, so tests share the two servers without sharing state.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from driftline.config import Settings
from driftline.runtime.devstack import DevStack


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
def settings(stack: DevStack, unique: str) -> Settings:
    """Settings pointing at the session stack, with per-test topics and key prefix."""
    return Settings(
        kafka={"bootstrap_servers": stack.broker.bootstrap},
        redis={"url": stack.redis.url, "key_prefix": f"t{unique}"},
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
