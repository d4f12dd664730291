"""Fixtures of the fault-injection suite (issue 8).

Every scenario checks one invariant: after the fault and the recovery, the stored Redis
state and the set of alert ids equal those of a clean single-pass replay of the same
input (:class:`driftline.offline.replay.Replayer`, compared with ``support.assert_close``).

The crash matrix shares one published stream (``stream``): each test gets its own
consumer group and Redis key prefix over the same topic, so the stream is published and
replayed once per session.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reliability_support import Stream, clean_replay, references, settings_for, stream_events

from driftline.config import Settings
from driftline.runtime.devstack import DevStack, RedisServer
from support import publish, put_reference


@pytest.fixture(scope="session")
async def stream(stack: DevStack) -> Stream:
    """The shared stream, published once to the session's broker."""
    topic = f"rel-predictions-{uuid.uuid4().hex[:8]}"
    events = stream_events()
    await publish(stack.broker.bootstrap, topic, events)
    refs = references()
    return Stream(topic, events, refs, clean_replay(refs, events))


@pytest.fixture
async def on_stream(stack: DevStack, stream: Stream) -> Settings:
    """Settings over the shared stream, with its own group, prefix and references."""
    s = settings_for(stack.broker.bootstrap, stack.redis.url, stream.topic)
    for ref in stream.references:
        await put_reference(s, ref)
    return s


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own (AOF, appendfsync everysec): to kill, fill, edit."""
    server = RedisServer().start(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
