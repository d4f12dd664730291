"""StateStore against a real redis-server: commit protocol, fencing, envelopes, ACL, slots."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ClusterCrossSlotError, NoPermissionError, ResponseError

from driftline.config import RedisSettings
from driftline.errors import ConfigError, FencedError, StateCorrupt, StateMissing
from driftline.runtime.devstack import RedisServer, free_port
from driftline.runtime.keyspace import (
    key_slot,
    reference_index_key,
    reference_key,
    state_record_name,
)
from driftline.runtime.sealer import ENVELOPE_OVERHEAD
from driftline.runtime.store import CommitResult, StateStore

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
SIGNING_KEY = "integration-test-signing-key"


@pytest.fixture
def store(redis_client, settings) -> StateStore:
    return StateStore.from_settings(redis_client, settings.redis, settings.monitor.group_id)


@pytest.fixture
def topic(settings) -> str:
    return settings.topics.predictions


async def snapshot(client: aioredis.Redis, store: StateStore, topic: str, partition: int = 0):
    """Everything stored for one partition, raw."""
    k = store.keys(topic, partition)
    return (
        await client.hgetall(k.meta),
        await client.hgetall(k.state),
        await client.lrange(k.outbox, 0, -1),
    )


# ------------------------------------------------------------------ acquire / resume


async def test_acquire_fresh_then_resume(store, topic):
    lease = await store.acquire(topic, 0)
    assert (lease.epoch, lease.offset, lease.fresh, lease.resume_offset) == (1, -1, True, None)
    assert await store.commit(lease, 41, {"m\x1fv1\x1fall": b"s41"}) == CommitResult.OK

    again = await store.acquire(topic, 0)
    assert (again.epoch, again.offset, again.fresh, again.resume_offset) == (2, 41, False, 42)
    assert await store.load(again) == {"m\x1fv1\x1fall": b"s41"}
    # Partitions are independent.
    other = await store.acquire(topic, 1)
    assert (other.epoch, other.offset, other.fresh) == (1, -1, True)


async def test_acquired_but_never_committed_is_not_fresh(store, topic):
    await store.acquire(topic, 0)
    lease = await store.acquire(topic, 0)
    assert (lease.epoch, lease.offset, lease.fresh, lease.resume_offset) == (2, -1, False, None)


# ------------------------------------------------------------------ commit protocol


async def test_commit_ok_then_duplicates_write_nothing(store, topic, redis_client):
    lease = await store.acquire(topic, 0)
    assert await store.commit(lease, 10, {"a": b"1"}, [b"alert-1"]) == CommitResult.OK
    before = await snapshot(redis_client, store, topic)
    assert before[0][b"offset"] == b"10"
    assert before[2] == [b"alert-1"]

    for offset in (10, 5, 0):  # the same offset, then lower ones
        result = await store.commit(lease, offset, {"a": b"2", "b": b"3"}, [b"alert-2"])
        assert result == CommitResult.DUPLICATE == "duplicate"
        assert await store.commit_or_raise(lease, offset, {"a": b"4"}) is CommitResult.DUPLICATE
    assert await snapshot(redis_client, store, topic) == before
    assert await store.load(lease) == {"a": b"1"}


async def test_offsets_compare_as_numbers(store, topic):
    lease = await store.acquire(topic, 0)
    assert await store.commit(lease, 9, {}) == CommitResult.OK
    assert await store.commit(lease, 10, {}) == CommitResult.OK  # "10" < "9" as strings
    big = 2**62 + 1  # beyond a double's exact integers
    assert await store.commit(lease, big, {}) == CommitResult.OK
    assert await store.commit(lease, big - 1, {}) == CommitResult.DUPLICATE
    assert await store.commit(lease, big + 1, {}) == CommitResult.OK
    assert (await store.acquire(topic, 0)).offset == big + 1


async def test_commit_without_states_advances_the_offset(store, topic):
    lease = await store.acquire(topic, 0)
    assert await store.commit(lease, 3, {}, ()) == CommitResult.OK
    assert (await store.acquire(topic, 0)).offset == 3


@pytest.mark.parametrize("bad", [-1, True, 1.5])
async def test_bad_offset_is_refused(store, topic, bad):
    lease = await store.acquire(topic, 0)
    with pytest.raises(ValueError):
        await store.commit(lease, bad, {})


async def test_older_lease_is_fenced_and_writes_nothing(store, topic, redis_client):
    old = await store.acquire(topic, 0)
    assert await store.commit(old, 5, {"a": b"old"}, [b"x1", b"x2"]) == CommitResult.OK
    new = await store.acquire(topic, 0)
    assert new.epoch == old.epoch + 1 and new.offset == 5
    before = await snapshot(redis_client, store, topic)

    assert await store.commit(old, 6, {"a": b"zombie", "z": b"z"}, [b"zz"]) == "fenced"
    with pytest.raises(FencedError, match="stale"):
        await store.commit_or_raise(old, 7, {"a": b"zombie"})
    with pytest.raises(FencedError):
        await store.outbox_ack(old, 2)  # a zombie cannot trim the outbox
    assert await snapshot(redis_client, store, topic) == before
    assert await store.outbox_peek(new, 10) == [b"x1", b"x2"]

    assert await store.commit(new, 6, {"a": b"new"}, [b"x3"]) == CommitResult.OK
    assert await store.load(new) == {"a": b"new"}
    assert await store.outbox_peek(new, 10) == [b"x1", b"x2", b"x3"]


async def test_racing_workers_only_the_latest_writes(store, topic):
    leases = [await store.acquire(topic, 0) for _ in range(5)]
    results = await asyncio.gather(
        *(store.commit(lease, 100, {"owner": str(lease.epoch).encode()}) for lease in leases)
    )
    assert results == [CommitResult.FENCED] * 4 + [CommitResult.OK]
    assert await store.load(leases[-1]) == {"owner": b"5"}


async def test_fencing_survives_redis_data_loss(settings, topic):
    """After FLUSHDB the epoch restarts at 1; the random token still fences the old lease."""
    url = settings.redis.url.rsplit("/", 1)[0] + "/1"  # a database of our own to flush
    client = aioredis.Redis.from_url(url)
    try:
        store = StateStore.from_settings(client, settings.redis, "g")
        old = await store.acquire(topic, 0)
        assert await store.commit(old, 9, {"a": b"1"}, [b"x"]) == CommitResult.OK
        await client.flushdb()

        new = await store.acquire(topic, 0)
        assert new.fresh and new.offset == -1 and new.epoch == old.epoch == 1
        assert await store.commit(old, 10, {"a": b"zombie"}, [b"y"]) == CommitResult.FENCED
        assert await store.load(new) == {}
        assert await store.outbox_len(new) == 0
        assert await store.commit(new, 10, {"a": b"2"}) == CommitResult.OK
    finally:
        await client.flushdb()
        await client.aclose()


async def test_wrong_typed_key_aborts_before_any_write(store, topic, redis_client):
    """A script is not rolled back on error: all checks run before the first write."""
    lease = await store.acquire(topic, 0)
    assert await store.commit(lease, 1, {"a": b"1"}) == CommitResult.OK
    k = store.keys(topic, 0)
    await redis_client.set(k.outbox, b"not a list")
    before = await snapshot_no_outbox(redis_client, k)

    with pytest.raises(StateCorrupt, match="holds another Redis type"):
        await store.commit(lease, 2, {"a": b"2", "b": b"2"}, [b"alert"])
    assert await snapshot_no_outbox(redis_client, k) == before
    assert await redis_client.get(k.outbox) == b"not a list"
    with pytest.raises(StateCorrupt):
        await store.acquire(topic, 0)


async def snapshot_no_outbox(client, k):
    return await client.hgetall(k.meta), await client.hgetall(k.state)


async def test_readers_never_see_a_half_commit(store, topic, redis_client):
    lease = await store.acquire(topic, 0)
    k = store.keys(topic, 0)
    done = asyncio.Event()
    observed = 0

    async def writer() -> None:
        for offset in range(1, 150):
            await store.commit_or_raise(lease, offset, {"s": str(offset).encode()}, [b"a"])
        done.set()

    async def reader() -> None:
        nonlocal observed
        while not done.is_set():
            async with redis_client.pipeline(transaction=True) as pipe:
                pipe.hget(k.meta, "offset").hget(k.state, "s").llen(k.outbox)
                offset, blob, n = await pipe.execute()
            if offset != b"-1":
                name = state_record_name(k.state, "s")
                assert store.sealer.open_sealed(name, blob) == offset
                assert n == int(offset)
                observed += 1
            await asyncio.sleep(0)

    await asyncio.gather(writer(), reader())
    assert observed > 0


async def test_large_batch_in_one_commit(store, topic):
    lease = await store.acquire(topic, 0)
    states = {f"m\x1fv\x1fseg{i}": f"{i}".encode() * 10 for i in range(5000)}
    alerts = [f"alert-{i}".encode() for i in range(5000)]
    assert await store.commit(lease, 1, states, alerts) == CommitResult.OK
    assert await store.load(lease) == states
    assert await store.outbox_len(lease) == 5000
    assert await store.outbox_peek(lease, 3) == alerts[:3]
    # meta.nstate counted them, so the next acquire sees nothing missing
    assert (await store.acquire(topic, 0)).offset == 1


# ------------------------------------------------------------------ load and envelopes


async def test_load_subset_and_missing_keys(store, topic):
    lease = await store.acquire(topic, 0)
    await store.commit(lease, 1, {"a": b"1", "b": b"2", "c": b""})
    assert await store.load(lease, ["a", "c", "nope", "a"]) == {"a": b"1", "c": b""}
    assert await store.load(lease, []) == {}
    assert await store.load(lease, iter(["b"])) == {"b": b"2"}
    with pytest.raises(TypeError):
        await store.load(lease, "a")


async def test_stored_record_size_is_payload_plus_envelope(store, topic, redis_client):
    lease = await store.acquire(topic, 0)
    await store.commit(lease, 1, {"a": b"x" * 100})
    size = await redis_client.hstrlen(store.keys(topic, 0).state, "a")
    assert size == 100 + ENVELOPE_OVERHEAD


async def test_tampered_state_is_refused(store, topic, redis_client):
    lease = await store.acquire(topic, 0)
    await store.commit(lease, 1, {"a": b"alpha", "b": b"beta"})
    k = store.keys(topic, 0)
    good = await redis_client.hget(k.state, "a")

    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    await redis_client.hset(k.state, "a", bytes(flipped))
    with pytest.raises(StateCorrupt, match="signature mismatch"):
        await store.load(lease)
    with pytest.raises(StateCorrupt):
        await store.load(lease, ["a"])
    assert await store.load(lease, ["b"]) == {"b": b"beta"}  # only what was asked

    await redis_client.hset(k.state, "a", good)
    await redis_client.hset(k.state, "b", good)  # "a"'s record moved to field "b"
    with pytest.raises(StateCorrupt, match="signature mismatch"):
        await store.load(lease, ["b"])

    other = await store.acquire(topic, 1)  # "a"'s record moved to another partition
    await redis_client.hset(store.keys(topic, 1).state, "a", good)
    with pytest.raises(StateCorrupt):
        await store.load(other)

    versioned = bytearray(good)
    versioned[2] = 2  # the format version byte
    await redis_client.hset(k.state, "b", bytes(versioned))
    with pytest.raises(StateCorrupt, match="format version 2"):
        await store.load(lease, ["b"])


async def test_another_signing_key_cannot_read(store, topic, redis_client, settings):
    lease = await store.acquire(topic, 0)
    await store.commit(lease, 1, {"a": b"1"})
    foreign = StateStore(
        redis_client,
        prefix=settings.redis.key_prefix,
        group=settings.monitor.group_id,
        signing_key="a-completely-different-signing-key",
    )
    with pytest.raises(StateCorrupt):
        await foreign.load(lease)


# ------------------------------------------------------------------ outbox


async def test_outbox_peek_ack_len(store, topic):
    lease = await store.acquire(topic, 0)
    await store.commit(lease, 1, {}, [b"a1", b"a2"])
    await store.commit(lease, 2, {}, [b"a3"])
    assert await store.outbox_len(lease) == 3
    assert await store.outbox_peek(lease, 2) == [b"a1", b"a2"]
    assert await store.outbox_peek(lease, 0) == []
    assert await store.outbox_ack(lease, 0) == 3
    assert await store.outbox_ack(lease, 2) == 1
    assert await store.outbox_peek(lease, 10) == [b"a3"]
    assert await store.outbox_ack(lease, 5) == 0
    assert await store.outbox_len(lease) == 0
    with pytest.raises(ValueError):
        await store.outbox_ack(lease, -1)


# ------------------------------------------------------------------ recovery paths


async def test_script_is_reloaded_after_script_flush(store, topic, redis_client):
    lease = await store.acquire(topic, 0)
    await redis_client.script_flush()
    assert await store.commit(lease, 1, {"a": b"1"}) == CommitResult.OK  # NOSCRIPT -> EVAL
    assert await store.commit(lease, 2, {"a": b"2"}) == CommitResult.OK  # cached again


async def test_missing_meta_or_lost_fields_raise_state_missing(store, topic, redis_client):
    lease = await store.acquire(topic, 0)
    await store.commit(lease, 7, {"a": b"1", "b": b"2"}, [b"x"])
    k = store.keys(topic, 0)

    await redis_client.hdel(k.state, "b")  # e.g. evicted
    meta_before = await redis_client.hgetall(k.meta)
    with pytest.raises(StateMissing, match="state has 1 fields but meta records 2"):
        await store.acquire(topic, 0)
    assert await redis_client.hgetall(k.meta) == meta_before  # epoch not bumped

    await redis_client.delete(k.meta)
    with pytest.raises(StateMissing, match="meta is missing"):
        await store.acquire(topic, 0)
    assert not await redis_client.exists(k.meta)

    assert await store.reset_partition(topic, 0) == 2
    fresh = await store.acquire(topic, 0)
    assert fresh.fresh and fresh.offset == -1
    assert await store.commit(lease, 8, {"a": b"zombie"}) == CommitResult.FENCED


async def test_meta_of_another_format_is_refused(store, topic, redis_client):
    await store.acquire(topic, 0)
    k = store.keys(topic, 0)
    await redis_client.hset(k.meta, "format", "99")
    with pytest.raises(StateCorrupt, match="meta format '99'"):
        await store.acquire(topic, 0)
    assert await redis_client.hget(k.meta, "epoch") == b"1"


async def test_client_that_decodes_responses_is_refused(stack, settings):
    client = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        with pytest.raises(ConfigError, match="decode_responses"):
            StateStore.from_settings(client, settings.redis, "g")
    finally:
        await client.aclose()


# ------------------------------------------------------------------ references


async def test_references_fall_back_to_default(store, redis_client, settings):
    model = "fraud-model"
    assert await store.get_reference(model, "v1") is None
    assert await store.list_references(model) == []

    await store.put_reference(model, "default", b"ref-default")
    await store.put_reference(model, "v1", b"ref-v1")
    assert await store.get_reference(model, "v1") == b"ref-v1"
    assert await store.get_reference(model, "v2") == b"ref-default"
    assert await store.resolve_reference(model, "v2") == ("default", b"ref-default")
    assert await store.get_reference(model, "default") == b"ref-default"
    assert await store.list_references(model) == ["default", "v1"]
    assert await store.get_reference("other-model", "v1") is None

    await store.put_reference(model, "v1", b"ref-v1-new")  # overwrite
    assert await store.get_reference(model, "v1") == b"ref-v1-new"
    assert await store.list_references(model) == ["default", "v1"]

    prefix = settings.redis.key_prefix
    # A record moved to another version's key is refused, never silently used.
    blob = await redis_client.get(reference_key(prefix, model, "v1"))
    await redis_client.set(reference_key(prefix, model, "v2"), blob)
    with pytest.raises(StateCorrupt):
        await store.get_reference(model, "v2")
    # A tampered default is refused too.
    await redis_client.set(reference_key(prefix, model, "default"), blob[:-1] + b"X")
    with pytest.raises(StateCorrupt):
        await store.get_reference(model, "v3")
    assert await redis_client.smembers(reference_index_key(prefix, model)) == {
        b"default",
        b"v1",
    }


# ------------------------------------------------------------------ extra servers


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Start additional redis-servers; every one started is stopped by PID afterwards."""
    servers: list[RedisServer] = []
    yield servers
    for server in servers:
        server.stop()


def start_server(servers: list[RedisServer], data_dir: Path, extra: list[str]) -> RedisServer:
    server = RedisServer(extra_args=extra)
    servers.append(server)
    return server.start(data_dir)


async def exercise(store: StateStore, topic: str) -> None:
    """Every StateStore operation the service uses, once."""
    lease = await store.acquire(topic, 0)
    assert await store.commit_or_raise(lease, 1, {"m\x1fv1\x1fall": b"s"}, [b"a1", b"a2"]) == "ok"
    assert await store.commit(lease, 1, {"m\x1fv1\x1fall": b"s2"}) == "duplicate"
    assert await store.load(lease) == {"m\x1fv1\x1fall": b"s"}
    assert await store.load(lease, ["m\x1fv1\x1fall", "x"]) == {"m\x1fv1\x1fall": b"s"}
    assert await store.outbox_peek(lease, 5) == [b"a1", b"a2"]
    assert await store.outbox_ack(lease, 1) == 1
    assert await store.outbox_len(lease) == 1
    side = {"w\x00m\x1fv1\x1fall\x000": b"rows"}
    assert await store.commit(lease, 2, {}, side=side, expected_offset=1) == "ok"
    assert await store.load_fields(lease, list(side), side=True) == (side, {})
    assert await store.commit(lease, 3, {}, side_deletes=list(side)) == "ok"
    assert await store.load_fields(lease, list(side), side=True) == ({}, {})
    newer = await store.acquire(topic, 0)
    assert (newer.offset, newer.fields) == (3, 1)
    assert await store.commit(lease, 4, {}) == "fenced"
    await store.put_reference("m", "default", b"ref")
    assert await store.get_reference("m", "v1") == b"ref"
    assert await store.list_references("m") == ["default"]
    (found,) = await store.lookup_references([("m", "v1")])
    assert (found.payload, found.version, found.listed) == (b"ref", "default", True)


async def test_keys_share_one_slot_on_a_cluster_node(redis_server_factory, tmp_path, topic):
    """CLUSTER KEYSLOT agrees with key_slot, and the store runs where CROSSSLOT is enforced."""
    data = tmp_path / "cluster"
    server = start_server(
        redis_server_factory,
        data,
        # An explicit bus port: the default (port + 10000) overflows for high ports.
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(data / "nodes.conf"),
            "--cluster-port",
            str(free_port()),
        ],
    )
    client = aioredis.Redis.from_url(server.url)
    try:
        store = StateStore(client, prefix="dl", group="driftline-monitor", signing_key=SIGNING_KEY)
        k = store.keys(topic, 3)
        slots = {await client.execute_command("CLUSTER", "KEYSLOT", key) for key in k.every()}
        assert slots == {key_slot(k.meta)}
        samples = [*k.every(), reference_key("dl", "m", "v1"), reference_index_key("dl", "m")]
        samples += ["foo", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap"]
        samples += [secrets.token_hex(8) for _ in range(50)]
        for key in samples:
            assert await client.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key), key
        assert key_slot(reference_key("dl", "m", "v1")) == key_slot(reference_index_key("dl", "m"))

        # A one-node cluster owning every slot: cross-slot commands fail with CROSSSLOT.
        await client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 15
        while b"cluster_state:ok" not in await client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "cluster did not become ok"
            await asyncio.sleep(0.1)
        with pytest.raises(ClusterCrossSlotError):
            await client.mget(["dl:a", "dl:b"])  # the check is really on
        await exercise(store, topic)
    finally:
        await client.aclose()


def acl_line_from_docs() -> str:
    lines = [ln.strip() for ln in DOCS.read_text().splitlines() if ln.startswith("user driftline ")]
    assert len(lines) == 1, "docs/redis.md must hold exactly one `user driftline ...` line"
    return lines[0]


@pytest.fixture
async def acl_server(redis_server_factory, tmp_path) -> AsyncIterator[tuple[str, str]]:
    """A second redis-server loading the ACL from docs/redis.md; yields (url, password)."""
    password, admin_password = secrets.token_hex(16), secrets.token_hex(16)
    line = acl_line_from_docs()
    digest = hashlib.sha256(password.encode()).hexdigest()
    line = line.replace("<sha256-of-password>", digest)
    assert re.search(r"#[0-9a-f]{64}", line), "the documented ACL line stores a password hash"
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default off\nuser admin on >{admin_password} ~* &* +@all\n{line}\n")
    server = start_server(redis_server_factory, tmp_path / "acl", ["--aclfile", str(acl)])
    yield server.url, f"{password}:{admin_password}"


async def test_store_works_under_the_documented_acl(acl_server, topic):
    url, passwords = acl_server
    password, admin_password = passwords.split(":")
    settings = RedisSettings(
        url=url, username="driftline", password=password, state_signing_key=SIGNING_KEY
    )
    client = aioredis.Redis.from_url(settings.url, **settings.client_kwargs())
    admin = aioredis.Redis.from_url(url, username="admin", password=admin_password)
    try:
        await admin.set("other:secret", b"s")
        await admin.execute_command("ACL", "LOG", "RESET")

        assert await client.ping() is True
        await exercise(StateStore.from_settings(client, settings, "driftline-monitor"), topic)
        # Nothing the store did was refused: the ACL grants all it needs (this also
        # covered the NOSCRIPT -> EVAL fallback: a new server knows no script).
        assert await admin.execute_command("ACL", "LOG") == []

        refused = [
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("CONFIG", "GET", "*"),
            ("CONFIG", "SET", "appendonly", "no"),
            ("KEYS", "*"),
            ("SCAN", "0"),
            ("GET", "other:secret"),
            ("SET", "other:key", "v"),
            ("HSET", "other:hash", "f", "v"),
            ("DEL", "dl:anything"),
            ("SCRIPT", "FLUSH"),
            ("SHUTDOWN", "NOSAVE"),
            ("ACL", "LIST"),
            ("PUBLISH", "chan", "msg"),
        ]
        for cmd in refused:
            with pytest.raises(NoPermissionError):
                await client.execute_command(*cmd)
        # Keys outside the prefix are refused to scripts too, and so are commands.
        with pytest.raises(NoPermissionError):
            await client.eval("return redis.call('MGET', KEYS[1])", 1, "other:secret")
        with pytest.raises(ResponseError, match="can't access at least one of the keys"):
            await client.eval("return redis.call('MGET', 'other:secret')", 1, "dl:x")
        with pytest.raises(ResponseError, match="can't run this command"):
            await client.eval("return redis.call('FLUSHALL')", 1, "dl:x")
        assert await admin.get("other:secret") == b"s"
        assert await admin.dbsize() > 1
    finally:
        await client.aclose()
        await admin.aclose()
