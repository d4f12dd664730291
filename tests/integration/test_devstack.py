from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration


async def test_broker_round_trip(stack, unique):
    topic = f"smoke-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap)
    await prod.start()
    for i in range(10):
        await prod.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    await prod.stop()
    cons = AIOKafkaConsumer(
        topic, bootstrap_servers=stack.broker.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await cons.start()
    got = []
    while len(got) < 10:
        batch = await cons.getmany(timeout_ms=2000)
        assert batch, "no records within 2s"
        for recs in batch.values():
            got.extend(r.value for r in recs)
    await cons.stop()
    assert got == [f"v{i}".encode() for i in range(10)]


async def test_redis_answers(redis_client):
    assert await redis_client.ping() is True
    info = await redis_client.config_get("appendonly")
    assert {str(k): v for k, v in info.items()}["appendonly"] in ("yes", b"yes")
