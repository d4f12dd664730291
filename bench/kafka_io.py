"""Topics and bulk publishing for the benchmarks (shared by bench_pipeline.py and
bench_redis_cluster.py): what a benchmark feeds the workers, sent as fast as the broker
takes it, every record acknowledged before the measurement starts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create the topics that do not exist yet, ``partitions`` each."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        have = set(await admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in topics if t not in have]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def publish(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]], partitions: int
) -> None:
    """Send ``(key, value)`` records to ``topic`` (created if missing) and wait for every
    acknowledgement (``acks=all``), 5,000 in flight at most."""
    from aiokafka import AIOKafkaProducer

    await create_topics(bootstrap, [topic], partitions)
    prod = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks="all"
    )
    await prod.start()
    try:
        futs = []
        for key, value in records:
            futs.append(await prod.send(topic, value, key=key))
            if len(futs) >= 5000:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
    finally:
        await prod.stop()
