"""The lookup script's two ways of reading a hash against a real redis-server: one HMGET
of the fields asked, or, for a listpack asked for a third of its fields or more, one
HGETALL kept for the later rounds. Each probe's answer is the first hit in candidate
order (MemoryRecords, the dict oracle) whichever way each hash was read."""

from __future__ import annotations

import hashlib
import random

import pytest

from driftline.core.slowloop import TOMBSTONE, LookupPlan, MemoryRecords
from driftline.runtime.store import StateStore

pytestmark = pytest.mark.integration

TOPIC = "labels"


@pytest.fixture
async def store(redis_client, settings) -> StateStore:
    return StateStore.from_settings(redis_client, settings.redis, settings.labels.group_id)


async def _calls(redis_client, command: str) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.parametrize("seed", range(3))
async def test_both_ways_of_reading_a_hash_answer_like_the_oracle(store, redis_client, seed):
    rng = random.Random(seed)
    # listpacks of every size around a third of the probes asked of them, one hash
    # table (over 512 fields: asked field by field), and a hash that does not exist
    sizes = [rng.choice([1, 5, 40, 120, 250, 400, 512]) for _ in range(14)] + [900]
    names = [f"pp:o:{seed}:{i}" for i in range(len(sizes))] + [f"pp:o:{seed}:gone"]
    mem = MemoryRecords()
    for name, size in zip(names, sizes, strict=False):
        mem.data[name] = {
            hashlib.blake2b(f"{name}/{i}".encode(), digest_size=12).digest(): (
                TOMBSTONE if i % 7 == 0 else bytes([0x20, i % 256]) * rng.randint(1, 20)
            )
            for i in range(size)
        }
        await redis_client.hset(store.record_key(TOPIC, 0, name), mapping=mem.data[name])
    stored = [(j, d) for j, name in enumerate(names[:-1]) for d in mem.data[name]]
    probes: list[tuple[bytes, tuple[int, ...]]] = []
    for _ in range(6_000):
        j, d = rng.choice(stored)
        if rng.random() < 0.15:
            d = rng.randbytes(12)  # in no hash
        cands = rng.sample(range(len(names)), rng.randint(0, 4))
        if cands and j not in cands and rng.random() < 0.8:
            cands[rng.randrange(len(cands))] = j  # its hash, at any level
        probes.append((d, tuple(cands)))
    hgetall, hmget = await _calls(redis_client, "hgetall"), await _calls(redis_client, "hmget")
    found = await store.lookup_records(TOPIC, 0, names, probes)
    assert found == mem.lookup(LookupPlan(keys=names, probes=probes))
    assert sum(f is not None for f in found) > 2_000
    # both ways were taken
    assert await _calls(redis_client, "hgetall") > hgetall
    assert await _calls(redis_client, "hmget") > hmget


async def test_a_few_probes_of_a_listpack_ask_for_their_fields_only(store, redis_client):
    """A hash asked for fewer than a third of its fields is not read whole."""
    name = "pp:o:few:0"
    fields = {hashlib.blake2b(str(i).encode(), digest_size=12).digest(): b"v" for i in range(300)}
    await redis_client.hset(store.record_key(TOPIC, 0, name), mapping=fields)
    asked = list(fields)[:50] + [b"absent-field"]
    hgetall = await _calls(redis_client, "hgetall")
    found = await store.lookup_records(TOPIC, 0, [name], [(d, (0,)) for d in asked])
    assert found == [(0, b"v")] * 50 + [None]
    assert await _calls(redis_client, "hgetall") == hgetall
