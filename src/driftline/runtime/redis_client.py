"""The Redis client Driftline talks through: one server, or a Redis Cluster.

:func:`connect_redis` is the one place a client is built from
:class:`~driftline.config.RedisSettings` (``open_store`` calls it). Both kinds are
redis-py asyncio clients with the same commands, so the store does not branch on the
kind: every script and every transaction it runs names keys of one hash slot
(:mod:`driftline.runtime.keyspace`), and the cluster client sends each to the master
that owns the slot. Non-transactional pipelines may span slots; the cluster client
splits them per node.
"""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster

from driftline.config import RedisSettings

__all__ = ["RedisClient", "connect_redis", "decodes_responses"]

#: A single-server or a cluster client (redis-py asyncio, ``decode_responses=False``).
RedisClient: TypeAlias = "aioredis.Redis | aiocluster.RedisCluster"


def connect_redis(settings: RedisSettings) -> RedisClient:
    """A client for ``settings.url``: ``RedisCluster`` when ``settings.cluster``.

    Connections open lazily, on the first command (the cluster client then reads the
    slot map from the node in the URL). The caller closes it (``await client.aclose()``).
    """
    if settings.cluster:
        return aiocluster.RedisCluster.from_url(settings.url, **settings.client_kwargs())
    return aioredis.Redis.from_url(settings.url, **settings.client_kwargs())


def decodes_responses(client: RedisClient) -> bool:
    """Whether ``client`` turns replies into ``str`` (state records need bytes)."""
    return bool(client.get_encoder().decode_responses)
