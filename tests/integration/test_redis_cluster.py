"""The local Redis Cluster of the dev stack and the tests (devstack.RedisCluster): it
forms with three masters over all 16384 slots, and a Lua script runs when its keys share
one hash slot while CROSSSLOT is refused, through redis-py's asyncio cluster client.
Driftline's store, built by its factory with ``redis.cluster``, runs every operation on
keys of all three masters."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest
import redis.asyncio.cluster as aiocluster
import redis.exceptions as redis_errors

from driftline.config import RedisSettings
from driftline.runtime.keyspace import reference_key
from driftline.runtime.store import HistoryBatch, RecordWrites, open_store

pytestmark = pytest.mark.integration

T = TypeVar("T")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
#: What the cluster client needs beyond the single-server ACL: the slot map, and the
#: command table it extracts keys with.
CLUSTER_RULES = "+cluster|slots +command"

#: Writes its two keys and reads them back: a script that needs both keys on one node.
WRITE_BOTH = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


async def test_the_cluster_forms_with_three_masters_over_every_slot(
    redis_cluster, redis_cluster_client
):
    rc = redis_cluster_client
    assert sorted(n.name for n in rc.get_primaries()) == sorted(redis_cluster.addresses)
    infos = await rc.cluster_info(target_nodes=aiocluster.RedisCluster.ALL_NODES)
    assert set(infos) == set(redis_cluster.addresses)
    for address, info in infos.items():
        assert info["cluster_state"] == "ok", address
        assert (info["cluster_known_nodes"], info["cluster_size"]) == ("3", "3"), address
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == "16384", address
    for node in redis_cluster.nodes:  # AOF, like the single dev server
        assert (node.data_dir / "nodes.conf").is_file()
        assert (node.data_dir / "appendonlydir").is_dir()


async def test_a_script_on_one_hash_slot_runs_on_every_master(redis_cluster_client, unique):
    rc = redis_cluster_client
    # One hash tag per master, so the client must route each script to a different node.
    by_node: dict[str, str] = {}
    for i in range(1000):
        tag = f"{unique}-{i}"
        by_node.setdefault(rc.get_node_from_key(f"{{{tag}}}").name, tag)
        if len(by_node) == 3:
            break
    assert len(by_node) == 3
    script = rc.register_script(WRITE_BOTH)
    for node, tag in by_node.items():
        keys = [f"dl:{{{tag}}}:state", f"dl:{{{tag}}}:meta"]
        assert rc.keyslot(keys[0]) == rc.keyslot(keys[1]) == await rc.cluster_keyslot(keys[0])
        assert await script(keys=keys, args=[node, tag]) == [node.encode(), tag.encode()]
        owner = rc.get_node(node_name=node)
        assert await rc.get(keys[0]) == node.encode()
        assert await rc.execute_command("GET", keys[1], target_nodes=owner) == tag.encode()


async def test_keys_of_two_slots_in_one_script_are_refused(redis_cluster_client, unique):
    rc = redis_cluster_client
    keys = [f"dl:{unique}:a", f"dl:{unique}:b"]
    assert rc.keyslot(keys[0]) != rc.keyslot(keys[1])
    # redis-py refuses before sending ...
    with pytest.raises(redis_errors.RedisClusterException, match="same key slot"):
        await rc.eval(WRITE_BOTH, 2, *keys, "1", "2")
    # ... and the server itself answers CROSSSLOT when the script reaches it anyway.
    owner = rc.get_node_from_key(keys[0])
    with pytest.raises(redis_errors.ClusterCrossSlotError):
        await rc.execute_command("EVAL", WRITE_BOTH, 2, *keys, "1", "2", target_nodes=owner)
    assert await rc.exists(*keys) == 0


# ------------------------------------------------------------------ the store on three masters


def _spread(names: Iterable[T], key_of: Callable[[T], str], rc: aiocluster.RedisCluster) -> list[T]:
    """The first of ``names`` whose key lives on each master (one per master)."""
    by_node: dict[str, T] = {}
    for name in names:
        by_node.setdefault(rc.get_node_from_key(key_of(name)).name, name)
        if len(by_node) == 3:
            return list(by_node.values())
    raise AssertionError(f"keys on {len(by_node)} masters only")


async def test_every_store_operation_runs_on_three_masters(redis_cluster, unique):
    """Partitions, references and history on every master, through the product's factory
    (``cluster=True``): every script, transaction and pipeline finds its keys."""
    settings = RedisSettings(
        url=redis_cluster.url,
        cluster=True,
        key_prefix=f"t{unique}",
        state_signing_key=secrets.token_hex(32),
    )
    client, store = open_store(settings, "monitor")
    try:
        assert isinstance(client, aiocluster.RedisCluster)
        await client.initialize()  # the slot map, for _spread (commands load it themselves)
        topic = f"predictions-{unique}"
        parts = _spread(range(64), lambda p: store.keys(topic, p).meta, client)
        for p in parts:
            lease = await store.acquire(topic, p)
            assert lease.fresh and lease.offset == -1
            states = {f"m{p}\x1fv1\x1f": f"state-{p}".encode()}
            assert await store.commit_or_raise(lease, 7, states, [b"a1", b"a2"]) == "ok"
            assert await store.commit(lease, 7, states) == "duplicate"
            assert await store.load(lease) == states
            assert await store.peek(topic, p) == (7, states)
            assert await store.outbox_peek(lease, 5) == [b"a1", b"a2"]
            assert await store.outbox_ack(lease, 1) == 1
            newer = await store.acquire(topic, p)
            assert (newer.offset, newer.epoch) == (7, lease.epoch + 1)
            assert await store.commit(lease, 8, {}) == "fenced"
            # The label joiner's commit with record hashes, and its batched lookup.
            records = RecordWrites(
                puts={"g1": {b"pred-1": b"p1"}, "g2": {b"pred-2": b"p2"}},
                expire_at_ms={"g1": 2**41, "g2": 2**41},
            )
            assert await store.commit(newer, 9, {}, records=records) == "ok"
            found = await store.lookup_records(
                topic, p, ["g2", "g1"], [(b"pred-1", [0, 1]), (b"pred-2", [0]), (b"x", [1])]
            )
            assert found == [(1, b"p1"), (0, b"p2"), None]
            assert await store.stored_position(topic, p) == (newer.epoch, 9)

        models = _spread(
            (f"model-{i}" for i in range(64)),
            lambda m: reference_key(settings.key_prefix, m, "default"),
            client,
        )
        for m in models:
            await store.put_reference(m, "default", f"ref-{m}".encode())
            await store.put_reference(m, "v1", f"ref-{m}-v1".encode())
            assert await store.resolve_reference(m, "v2") == ("default", f"ref-{m}".encode())
            (found,) = await store.lookup_references([(m, "v1")])
            assert (found.payload, found.version) == (f"ref-{m}-v1".encode(), "v1")
            assert await store.get_reference(m, "v1") == f"ref-{m}-v1".encode()
            assert await store.list_references(m) == ["default", "v1"]

        # History of models on three masters in one pipeline, then read back.
        batches = [
            HistoryBatch(m, windows=[b'{"w":1}', b'{"w":2}'], latest={"v1\x1f": b'{"s":1}'})
            for m in models
        ]
        assert await store.append_history(batches) == 2 * len(models)
        assert await store.history_models() == sorted(models)
        for m in models:
            assert [p for _, p in await store.read_history(m, "windows", count=5)] == [
                b'{"w":2}',
                b'{"w":1}',
            ]
            assert await store.history_latest(m) == {"v1\x1f": b'{"s":1}'}

        for p in parts:
            assert await store.reset_partition(topic, p) == 3  # meta, state, outbox
            assert await store.stored_position(topic, p) is None
    finally:
        await client.aclose()


async def test_the_documented_acl_is_enough_on_a_cluster(redis_cluster, unique):
    """The service user of docs/redis.md plus the rule it names for a cluster, created on
    every master (its key pattern on this test's prefix), runs the store on the cluster
    with nothing denied."""
    admin = aiocluster.RedisCluster.from_url(redis_cluster.url)
    docs = DOCS.read_text()
    (line,) = [ln for ln in docs.splitlines() if ln.startswith("user driftline ")]
    assert f"append `{CLUSTER_RULES}`" in docs
    user, password = f"dl-{unique}", secrets.token_hex(16)
    rules = line.split()[2:]  # after "user driftline"
    rules = [f">{password}" if r.startswith("#") else r for r in rules]
    rules = [f"~t{unique}:*" if r.startswith("~") else r for r in rules]
    rules += CLUSTER_RULES.split()
    try:
        await admin.execute_command(
            "ACL", "SETUSER", user, *rules, target_nodes=aiocluster.RedisCluster.PRIMARIES
        )
        await admin.execute_command(
            "ACL", "LOG", "RESET", target_nodes=aiocluster.RedisCluster.PRIMARIES
        )
        settings = RedisSettings(
            url=redis_cluster.url,
            cluster=True,
            username=user,
            password=password,
            key_prefix=f"t{unique}",
            state_signing_key=secrets.token_hex(32),
        )
        client, store = open_store(settings, "monitor")
        try:
            lease = await store.acquire("predictions", 0)
            assert await store.commit(lease, 0, {"m\x1fv\x1f": b"s"}, [b"alert"]) == "ok"
            assert await store.outbox_ack(lease, 1) == 0
            await store.put_reference("m", "default", b"ref")
            assert await store.get_reference("m", "v1") == b"ref"
            await store.append_history([HistoryBatch("m", windows=[b"{}"])])
            assert await store.history_models() == ["m"]
            assert await store.peek("predictions", 0) == (0, {"m\x1fv\x1f": b"s"})
        finally:
            await client.aclose()
        logs = await admin.execute_command(
            "ACL", "LOG", target_nodes=aiocluster.RedisCluster.PRIMARIES
        )
        denied = [entry for node_log in logs.values() for entry in node_log]
        assert denied == []
    finally:
        await admin.execute_command(
            "ACL", "DELUSER", user, target_nodes=aiocluster.RedisCluster.PRIMARIES
        )
        await admin.aclose()
