"""Helpers shared by tests."""

from __future__ import annotations

import math
from typing import Any

import orjson


def assert_close(a: Any, b: Any, rel: float = 1e-9, path: str = "") -> None:
    """Deep equality, with floats equal to ``rel`` (summation order may differ)."""
    if isinstance(a, bytes | str) and isinstance(b, bytes | str):
        try:
            a2, b2 = orjson.loads(a), orjson.loads(b)
        except orjson.JSONDecodeError:
            assert a == b, f"{path}: {a!r} != {b!r}"
            return
        if isinstance(a2, dict | list):
            assert_close(a2, b2, rel, path)
            return
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys differ"
        for k in a:
            assert_close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-12), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


async def publish(
    bootstrap: str, topic: str, events: list[dict[str, Any]], partitions: int = 2
) -> None:
    """Create ``topic`` and publish events keyed by model id (as the SDK does)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await prod.start()
    try:
        futs = []
        for e in events:
            futs.append(await prod.send(topic, orjson.dumps(e), key=e["model_id"].encode()))
            if len(futs) >= 5000:
                for f in futs:
                    await f
                futs = []
        for f in futs:
            await f
    finally:
        await prod.stop()


async def read_all(bootstrap: str, topic: str, idle_ms: int = 1500) -> list[bytes]:
    """Every record value of ``topic`` from the beginning until it stays idle."""
    from aiokafka import AIOKafkaConsumer

    cons = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await cons.start()
    out: list[bytes] = []
    try:
        while True:
            batch = await cons.getmany(timeout_ms=idle_ms)
            if not batch:
                return out
            for recs in batch.values():
                out.extend(r.value for r in recs)
    finally:
        await cons.stop()


async def stored_states(settings: Any, partitions: int = 2) -> dict[str, bytes]:
    """The monitor's state records in Redis, merged over partitions (verified)."""
    import redis.asyncio as aioredis

    from driftline.store import StateStore

    client = aioredis.Redis.from_url(settings.redis.url)
    store = StateStore(
        client,
        prefix=settings.redis.key_prefix,
        group=settings.monitor.group_id,
        signing_key=settings.redis.state_signing_key.get_secret_value().encode(),
    )
    out: dict[str, bytes] = {}
    try:
        for p in range(partitions):
            # Taking a lease fences any worker still running: call after workers stopped.
            lease = await store.acquire(settings.topics.predictions, p)
            out.update(await store.load(lease))
    finally:
        await client.aclose()
    return out
