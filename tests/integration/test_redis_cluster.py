"""The local Redis Cluster of the dev stack and the tests (devstack.RedisCluster): it
forms with three masters over all 16384 slots, and a Lua script runs when its keys share
one hash slot while CROSSSLOT is refused, through redis-py's asyncio cluster client."""

from __future__ import annotations

import pytest
import redis.asyncio.cluster as aiocluster
import redis.exceptions as redis_errors

pytestmark = pytest.mark.integration

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
