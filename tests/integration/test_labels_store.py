"""The label joiner's Redis side against a real redis-server: the join commit script,
batched lookups, expiries, the documented ACL, and the memory of a pending prediction."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from driftline.config import LabelsSettings, RedisSettings
from driftline.core.slowloop import (
    TOMBSTONE,
    DriftIndex,
    UnitState,
    join_batch,
    plan_lookups,
    record_key,
)
from driftline.demo.sea import SeaScenario
from driftline.errors import StateCorrupt
from driftline.runtime.devstack import RedisServer
from driftline.runtime.store import CommitResult, RecordWrites, StateStore

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
TOPIC = "labels"


@pytest.fixture
async def store(redis_client, settings) -> StateStore:
    return StateStore.from_settings(redis_client, settings.redis, settings.labels.group_id)


async def commit_records(
    store: StateStore,
    lease: Any,
    last_offset: int,
    states: dict[str, bytes],
    outbox: Any = (),
    *,
    puts: Any = None,
    expire_at_ms: Any = None,
    tombs: Any = None,
    expected_offset: int | None = None,
) -> CommitResult:
    """The joiner's commit: StateStore.commit with record hashes (the tombstone of the core)."""
    return await store.commit(
        lease,
        last_offset,
        states,
        outbox,
        expected_offset=expected_offset,
        records=RecordWrites(puts or {}, expire_at_ms or {}, tombs or {}, TOMBSTONE),
    )


def far_future() -> int:
    return int(time.time() * 1000) + 3_600_000


async def test_commit_records_writes_everything_or_nothing(store, redis_client):
    lease = await store.acquire(TOPIC, 0)
    puts = {"pp:a:1:0": {b"d1": b"r1", b"d2": b"r2"}, "pp:a:1:1": {b"d3": b"r3"}}
    at = far_future()
    res = await commit_records(
        store,
        lease,
        0,
        {"u": b"s0"},
        [b"alert"],
        puts=puts,
        expire_at_ms=dict.fromkeys(puts, at),
        expected_offset=-1,
    )
    assert res == CommitResult.OK
    k = store.record_key(TOPIC, 0, "pp:a:1:0")
    assert await redis_client.hgetall(k) == {b"d1": b"r1", b"d2": b"r2"}
    assert abs(await redis_client.pexpiretime(k) - at) <= 1
    assert await store.outbox_peek(lease, 5) == [b"alert"]
    found = await store.lookup_records(
        TOPIC,
        0,
        ["pp:a:1:9", "pp:a:1:0", "pp:a:1:1"],
        [(b"d2", [0, 1]), (b"d3", [0, 1, 2]), (b"zz", [1, 2]), (b"d1", [])],
    )
    assert found == [(1, b"r2"), (2, b"r3"), None, None]

    # Tombstones land only where the hash still exists (a vanished one stays gone).
    await redis_client.delete(store.record_key(TOPIC, 0, "pp:a:1:1"))
    tombs = {"pp:a:1:0": [b"d1"], "pp:a:1:1": [b"d3"]}
    assert await commit_records(store, lease, 1, {}, tombs=tombs, expected_offset=0) == "ok"
    assert await redis_client.hget(k, "d1") == TOMBSTONE
    assert not await redis_client.exists(store.record_key(TOPIC, 0, "pp:a:1:1"))

    # Replays, stale leases and lost commits write nothing.
    again = {"pp:a:1:0": {b"d9": b"x"}}
    kw = {"puts": again, "expire_at_ms": {"pp:a:1:0": at}}
    assert await commit_records(store, lease, 1, {"u": b"x"}, **kw) == CommitResult.DUPLICATE
    assert await commit_records(store, lease, 5, {}, expected_offset=3, **kw) == "rewound"
    newer = await store.acquire(TOPIC, 0)
    assert await commit_records(store, lease, 2, {}, expected_offset=1, **kw) == "fenced"
    assert await redis_client.hget(k, "d9") is None
    assert (await store.peek(TOPIC, 0)) == (1, {"u": b"s0"})
    assert await store.load(newer) == {"u": b"s0"}

    # A record hash of the wrong type is refused before any write.
    await redis_client.set(store.record_key(TOPIC, 0, "pp:a:2:0"), b"oops")
    with pytest.raises(StateCorrupt, match="another Redis type"):
        await commit_records(
            store,
            newer,
            2,
            {"u": b"s2"},
            puts={"pp:a:2:0": {b"d": b"r"}},
            expire_at_ms={"pp:a:2:0": at},
            expected_offset=1,
        )
    assert await store.peek(TOPIC, 0) == (1, {"u": b"s0"})
    with pytest.raises(ValueError, match="without an expiry"):
        await commit_records(store, newer, 2, {}, puts={"pp:a:3:0": {b"d": b"r"}})


async def test_peek_does_not_fence_and_verifies(store, redis_client):
    lease = await store.acquire(TOPIC, 1)
    assert await commit_records(store, lease, 0, {"u": b"s"}) == "ok"
    assert await store.peek(TOPIC, 1) == (0, {"u": b"s"})
    assert await commit_records(store, lease, 1, {"u": b"t"}) == "ok"  # still the owner
    await redis_client.hset(store.keys(TOPIC, 1).state, "u", b"DL\x01" + bytes(40))
    with pytest.raises(StateCorrupt):
        await store.peek(TOPIC, 1)
    assert await store.peek(TOPIC, 7) is None


async def test_packed_records_and_tombstones_land_whole(store, redis_client):
    """Records and tombstones go to the script packed, one argument a hash: more than
    one HSET slice of them lands whole, values of any byte, up to 255 bytes."""
    lease = await store.acquire(TOPIC, 1)
    recs = {f"d{i}".encode(): bytes([i % 256]) * (i % 255 + 1) for i in range(1300)}
    puts = {"pp:p:1:0": recs, "pp:p:1:1": {b"": b"\x00\xff"}}
    at = far_future()
    kw = {"expire_at_ms": dict.fromkeys(puts, at)}
    assert await commit_records(store, lease, 0, {}, puts=puts, expected_offset=-1, **kw) == "ok"
    k = store.record_key(TOPIC, 1, "pp:p:1:0")
    assert await redis_client.hgetall(k) == recs
    assert await redis_client.hgetall(store.record_key(TOPIC, 1, "pp:p:1:1")) == {b"": b"\x00\xff"}
    joined = [f"d{i}".encode() for i in range(0, 1300, 2)]
    assert await commit_records(store, lease, 1, {}, tombs={"pp:p:1:0": joined}) == "ok"
    want = {d: (TOMBSTONE if d in set(joined) else v) for d, v in recs.items()}
    assert await redis_client.hgetall(k) == want
    with pytest.raises(ValueError, match="at most 255 bytes"):
        too_long = {"pp:p:1:0": {b"d": bytes(256)}}
        await commit_records(store, lease, 2, {}, puts=too_long, **kw)


async def test_one_lookup_script_answers_like_the_first_hit_oracle(store, redis_client):
    """Many probes (more fields per hash than one HMGET slice), several candidates
    each, hits at every level, missing hashes, tombstones: the script's answer is the
    first hit in candidate order (MemoryRecords, the dict oracle), probe by probe."""
    import random

    from driftline.core.slowloop import LookupPlan, MemoryRecords

    rng = random.Random(7)
    names = [f"pp:o:{g}:{b}" for g in range(4) for b in range(3)] + ["pp:o:gone:0"]
    mem = MemoryRecords()
    for name in names[:-1]:
        mem.data[name] = {
            hashlib.blake2b(f"{name}/{i}".encode(), digest_size=12).digest(): (
                TOMBSTONE if i % 7 == 0 else bytes([0x20, i % 256]) * rng.randint(1, 20)
            )
            for i in range(rng.randint(1000, 5000))
        }
        await redis_client.hset(store.record_key(TOPIC, 0, name), mapping=mem.data[name])
    stored = [(j, d) for j, name in enumerate(names[:-1]) for d in mem.data[name]]
    probes: list[tuple[bytes, tuple[int, ...]]] = []
    for _ in range(60_000):  # about 4,600 a hash in round one: more than one slice
        j, d = rng.choice(stored)
        if rng.random() < 0.1:
            d = rng.randbytes(12)
        cands = rng.sample(range(len(names)), rng.randint(0, 6))
        if cands and j not in cands and rng.random() < 0.8:
            cands[rng.randrange(len(cands))] = j  # its hash, at any level
        probes.append((d, tuple(cands)))
    found = await store.lookup_records(TOPIC, 0, names, probes)
    assert found == mem.lookup(LookupPlan(keys=names, probes=probes))
    assert sum(f is not None for f in found) > 30_000
    assert await store.lookup_records(TOPIC, 0, names, [(b"x", ())]) == [None]


# ------------------------------------------------------------------ memory


async def commit_pending(store: StateStore, n: int, partition: int) -> tuple[StateStore, int]:
    """Store ``n`` pending SEA predictions through the core and the join commit."""
    cfg = LabelsSettings()
    preds, _ = SeaScenario(model_id="mem").events(n)
    unit = UnitState()
    lease = await store.acquire(TOPIC, partition)
    seq = lease.offset
    for i in range(0, n, 5000):
        chunk = preds[i : i + 5000]
        plan = plan_lookups(chunk, [], unit, cfg)
        found = await store.lookup_records(TOPIC, partition, plan.keys, plan.probes)
        res = join_batch(chunk, [], plan, found, unit, lambda m, v: None, DriftIndex(), cfg)
        at = {k: far_future() for k in res.puts}
        r = await commit_records(
            store,
            lease,
            seq + 1,
            unit.to_fields(res.dirty),
            puts=res.puts,
            expire_at_ms=at,
            expected_offset=seq,
        )
        assert r == "ok"
        seq += 1
    return store, len(unit.models["mem"].gens)


async def test_a_pending_prediction_costs_under_100_bytes(store, redis_client):
    n = 20_000
    before = (await redis_client.info("memory"))["used_memory"]
    _, gens = await commit_pending(store, n, 2)
    after = (await redis_client.info("memory"))["used_memory"]
    pattern = store.record_key(TOPIC, 2, "pp:*")
    keys = [k async for k in redis_client.scan_iter(match=pattern, count=1000)]
    assert len(keys) == 64 * gens  # initial_buckets per generation
    usage = 0
    for k in keys:
        usage += await redis_client.memory_usage(k, samples=0)
        assert await redis_client.object("encoding", k) == b"listpack"
        assert await redis_client.pttl(k) > 0
    per_prediction = usage / n
    print(
        f"MEMORY USAGE per pending prediction: {per_prediction:.1f} B; "
        f"used_memory delta {(after - before) / n:.1f} B"
    )
    assert per_prediction <= 100
    assert (after - before) / n <= 100


# ------------------------------------------------------------------ ACL


def acl_line() -> str:
    lines = [ln.strip() for ln in DOCS.read_text().splitlines() if ln.startswith("user driftline ")]
    assert len(lines) == 1
    return lines[0]


@pytest.fixture
async def acl_url(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    password, admin = secrets.token_hex(16), secrets.token_hex(16)
    line = acl_line().replace("<sha256-of-password>", hashlib.sha256(password.encode()).hexdigest())
    assert re.search(r"#[0-9a-f]{64}", line)
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default off\nuser admin on >{admin} ~* &* +@all\n{line}\n")
    server = RedisServer(extra_args=["--aclfile", str(acl)])
    server.start(tmp_path / "acl")
    try:
        yield server.url, password, admin
    finally:
        server.stop()


async def test_the_joiner_works_under_the_documented_acl(acl_url):
    url, password, admin_password = acl_url
    rs = RedisSettings(
        url=url,
        username="driftline",
        password=password,
        state_signing_key="integration-test-signing-key",
    )
    client = aioredis.Redis.from_url(rs.url, **rs.client_kwargs())
    admin = aioredis.Redis.from_url(url, username="admin", password=admin_password)
    try:
        await admin.execute_command("ACL", "LOG", "RESET")
        store = StateStore.from_settings(client, rs, "driftline-labels")
        await commit_pending(store, 6000, 0)  # lookups, commit script with PEXPIREAT
        got = await store.peek(TOPIC, 0)
        assert got is not None and got[0] == 1
        lease = await store.acquire(TOPIC, 0)
        await store.outbox_ack(lease, 0)
        key = record_key("mem", 0, 0)
        assert await commit_records(store, lease, 2, {}, tombs={key: [b"x"]}) == "ok"
        assert await admin.execute_command("ACL", "LOG") == []
    finally:
        await client.aclose()
        await admin.aclose()
