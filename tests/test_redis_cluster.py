"""The deployment on a real Redis Cluster (docs/protocol.md section 14): Debian's redis-server 7,
three primaries and their replicas on loopback, instances with a redis+cluster:// REDIS_URL.

Rooms are picked so that their slots fall on every shard. What one Redis guarantees holds:
everyone sees every message once and in order, history and REST read the room's shard, room
events reach every instance, the room cap counts across shards; and when a primary is
SIGKILLed or a slot moves while messages flow, nothing acked is lost, nothing is doubled, and
no client reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from client import ChatClient, get_json, id_key
from cluster import Cluster, scrape
from redis_cluster import RedisClusterSet
from test_links import Collector

pytestmark = [pytest.mark.timeout(120), pytest.mark.redis_cluster]

FAST = {"CHAT_RATE": "100000/1"}
_names = itertools.count()


def rooms_on_every_shard(rc: RedisClusterSet, prefix: str) -> list[str]:
    """One room name per primary, each in a slot that primary owns."""
    owners: dict[int, str] = {}
    primaries = {p.port for p in rc.primaries()}
    for k in range(1000):
        name = f"{prefix}{k}"
        port = rc.node_for_slot(rc.slot_of(name)).port
        if port in primaries and port not in owners:
            owners[port] = name
        if len(owners) == len(primaries):
            return list(owners.values())
    raise AssertionError("no room names found for every shard")


def room_keys(rc: RedisClusterSet, room: str) -> dict[int, list[str]]:
    """Every key whose name carries ``{room}``, by the port of the primary holding it."""
    found: dict[int, list[str]] = {}
    for node in rc.primaries():
        keys = node.client().keys(f"*{{{room}}}*")
        if keys:
            found[node.port] = sorted(keys)
    return found


async def test_three_instances_share_rooms_on_every_shard(redis_cluster, tmp_path):
    rc = redis_cluster
    rooms = rooms_on_every_shard(rc, f"g{next(_names)}_")
    c = Cluster(3, env=FAST, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        alice, bob, charlie = [await ChatClient.connect(c[k].ws_url) for k in range(3)]
        watcher = await ChatClient.connect(c[2].ws_url)  # in no room: hears room events only
        for room in rooms:
            for cl, name in ((alice, "Alice"), (bob, "Bob"), (charlie, "Charlie")):
                joined = await cl.join(room, name)
            assert sorted(joined["members"]) == ["Alice", "Bob", "Charlie"]
        created = [f["room"] for f in await watcher.quiet(0.5) if f["type"] == "room_created"]
        assert sorted(created) == sorted(rooms)
        # Whatever one types, all three see, room by room, in one order.
        for k, room in enumerate(rooms):
            for n, cl in enumerate((alice, bob, charlie)):
                await cl.say(room, f"{room} #{n}", client_id=f"m{k}-{n}")
                await cl.until(lambda f, cid=f"m{k}-{n}": f["type"] == "ack" and f["client_id"] == cid)
        for cl in (alice, bob, charlie):
            got = [f for f in await cl.seen_at_least(9) if f["type"] == "message"]
            for room in rooms:
                mine = [m for m in got if m["room"] == room]
                assert [m["text"] for m in mine] == [f"{room} #{n}" for n in range(3)]
                assert [m["id"] for m in mine] == sorted((m["id"] for m in mine), key=id_key)
        # A resend of a client_id is the same message (G8), on a cluster too.
        await alice.say(rooms[0], "again", client_id="m0-0")
        ack = await alice.until(lambda f: f["type"] == "ack" and f["client_id"] == "m0-0")
        first = next(f for f in alice.frames if f["type"] == "ack" and f["client_id"] == "m0-0")
        assert ack["id"] == first["id"] and ack is not first
        # Each room's keys live on the shard that owns its slot, and nowhere else.
        for room in rooms:
            where = room_keys(rc, room)
            assert list(where) == [rc.node_for_slot(rc.slot_of(room)).port], where
            assert f"chat:history:{{{room}}}" in where[rc.node_for_slot(rc.slot_of(room)).port]
        # REST reads from the room's shard; the room list spans the shards.
        status, page = get_json(f"{c[1].http_url}/rooms/{rooms[1]}/history")
        assert status == 200 and [m["text"] for m in page["messages"]] == [f"{rooms[1]} #{n}" for n in range(3)]
        status, listed = get_json(f"{c[0].http_url}/rooms?limit=1000")
        assert status == 200 and set(rooms) <= {r["name"] for r in listed["rooms"]}
        assert get_json(f"{c[0].http_url}/rooms/never_made_{next(_names)}/history")[0] == 404
        # Changes, typing and read markers travel on the room's channel.
        await bob.quiet(0.2)
        target = next(m for m in alice.frames if m["type"] == "message")
        await alice.change("edit", target["room"], target["id"], client_id="e1", text="edited")
        edited = await bob.until(lambda f: f["type"] == "message_edited")
        assert edited["id"] == target["id"] and edited["text"] == "edited"
        await charlie.send({"type": "typing", "room": rooms[2]})
        typing = await bob.until(lambda f: f["type"] == "typing")
        assert typing == {"type": "typing", "room": rooms[2], "user": "Charlie"}
        # A member leaving is announced to the others, on every instance.
        await charlie.send({"type": "leave", "room": rooms[1]})
        left = await alice.until(lambda f: f["type"] == "user_left")
        assert left["room"] == rooms[1] and left["user"] == "Charlie"
        for inst in c.instances:
            assert inst.health_status() == 200
    finally:
        c.close()


async def test_the_room_cap_counts_rooms_on_every_shard(redis_cluster, tmp_path):
    rc = redis_cluster
    rooms = rooms_on_every_shard(rc, f"cap{next(_names)}_")
    c = Cluster(2, env={**FAST, "CHAT_MAX_ROOMS": "2"}, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        a = await ChatClient.connect(c[0].ws_url)
        b = await ChatClient.connect(c[1].ws_url)
        await a.join(rooms[0], "Ann")
        await b.join(rooms[1], "Bea")
        await a.send({"type": "join", "room": rooms[2]})
        refused = await a.expect("error")
        assert refused["code"] == "limit_exceeded"
        assert not room_keys(rc, rooms[2]), "a refused room left keys behind"
        await b.join(rooms[0])  # an existing room is still joined
    finally:
        c.close()


async def test_an_instance_that_stops_leaves_every_shard(redis_cluster, tmp_path):
    rc = redis_cluster
    rooms = rooms_on_every_shard(rc, f"st{next(_names)}_")
    c = Cluster(2, env=FAST, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        ann = await ChatClient.connect(c[0].ws_url)
        sam = await ChatClient.connect(c[1].ws_url)
        for room in rooms:
            await ann.join(room, "Ann")
            await sam.join(room, "Sam")
        await ann.quiet(0.3)
        await asyncio.to_thread(c[1].stop)
        gone = set()
        while len(gone) < len(rooms):
            f = await ann.until(lambda f: f["type"] == "user_left", timeout=10)
            gone.add(f["room"])
        assert gone == set(rooms)
        for room in rooms:
            members = [v for keys in room_keys(rc, room).values() for k in keys if k.startswith("chat:members:")
                       for v in rc.node_for_slot(rc.slot_of(room)).client().hvals(k)]
            assert members == ["Ann"]
    finally:
        c.close()


async def _traffic(rc: RedisClusterSet, tmp_path, room: str, fault, env: dict[str, str] | None = None) -> list[dict]:
    """Three instances, one sender per instance and watchers, messages flowing through ``fault``;
    then: every acked message in the room's history once, every watcher's copy whole and in
    order. Returns the acks."""
    env = {**FAST, "CHAT_HISTORY_MAXLEN": "5000", **(env or {})}
    c = Cluster(3, env=env, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    watchers: list[Collector] = []
    try:
        for k in range(3):
            cl = await ChatClient.connect(c[k].ws_url)
            await cl.join(room, f"U{k}")
            watchers.append(Collector(cl))
        sent = [0, 0, 0]
        stop = asyncio.Event()

        async def send(k: int) -> None:
            # Each client_id is sent until acked (G8 makes the resends harmless).
            w = watchers[k]
            while not stop.is_set():
                cid = f"u{k}-{sent[k]}"
                await w.client.say(room, f"{cid}", client_id=cid)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 4
                while cid not in w.acks and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                if cid in w.acks:
                    sent[k] += 1
                else:
                    await asyncio.sleep(0.1)

        senders = [asyncio.create_task(send(k)) for k in range(3)]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(fault)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*senders)
        assert min(sent) > 10, sent
        await asyncio.sleep(1.5)
        errors = [e for w in watchers for e in w.errors]
        assert {e["code"] for e in errors} <= {"unavailable"}, errors[:3]
        messages: list[dict] = []
        before = ""
        while True:
            status, page = get_json(f"{c[0].http_url}/rooms/{room}/history?limit=500{before}")
            assert status == 200
            messages = page["messages"] + messages
            if not page["has_more"]:
                break
            before = f"&before={page['messages'][0]['id']}"
        stored = [m["id"] for m in messages]
        texts = [m["text"] for m in messages]
        assert len(texts) == len(set(texts)), "a message was stored twice"
        acked = {cid: sid for w in watchers for cid, sid in w.acks.items()}
        assert set(acked.values()) <= set(stored), "an acked message is not in the room's history"
        for w in watchers:
            assert w.closed is None, "a client was disconnected"
            ids = [m["id"] for m in w.messages]
            assert ids == stored, (f"a client's copy differs from the history: {len(ids)} vs {len(stored)}, "
                                   f"missing {len(set(stored) - set(ids))}")
        # Every instance took the break for what it was: subscribed again, then caught up (G5).
        for inst in c.instances:
            assert scrape(inst)["quart_chat_subscriber_reconnects_total"] >= 1
        print(f"\n{sum(sent)} acked, {len(errors)} unavailable, {len(stored)} stored")
        return [f for w in watchers for f in w.client.frames if f["type"] == "ack"]
    finally:
        try:
            for w in watchers:
                await w.stop()
        finally:
            c.close()


async def test_a_primary_killed_mid_traffic_loses_nothing_acked(redis_cluster, tmp_path):
    """With durable acks (CHAT_REDIS_WAIT_REPLICAS=1) an acked message is on the replica that
    takes over: none may be missing from the history afterwards (G7 on a shard)."""
    rc = redis_cluster
    room = f"kill{next(_names)}"
    victim = rc.node_for_slot(rc.slot_of(room))

    def fault() -> None:
        rc.kill(victim)
        rc.wait_failover(victim)

    acks = await _traffic(rc, tmp_path, room, fault,
                          env={"CHAT_REDIS_WAIT_REPLICAS": "1", "CHAT_REDIS_WAIT_MS": "500"})
    # Before the kill each ack waited for the replica; after it the new primary has none left,
    # and its acks honestly say `durable: false`. Every one of them is in the history (above).
    durable = [a["id"] for a in acks if a["durable"] is True]
    plain = [a["id"] for a in acks if a["durable"] is False]
    assert durable and len(durable) + len(plain) == len(acks)
    assert max(durable, key=id_key) < min(plain, key=id_key) if plain else True


async def test_a_slot_migrated_mid_traffic_loses_and_doubles_nothing(redis_cluster, tmp_path):
    rc = redis_cluster
    room = f"move{next(_names)}"
    slot = rc.slot_of(room)
    source = rc.node_for_slot(slot)
    target = next(p for p in rc.primaries() if p.port != source.port)

    def fault() -> None:
        moved = rc.migrate_slot(slot, target)
        assert moved > 0

    await _traffic(rc, tmp_path, room, fault)
    assert rc.node_for_slot(slot).port == target.port
    print(json.dumps({"slot": slot, "from": source.port, "to": target.port}))


async def test_the_archive_takes_every_shard(redis_cluster, tmp_path, pg_url):
    """With CHAT_ARCHIVE_URL on a cluster, rooms on every shard are archived: REST pages back
    past their capped streams, each message once and in order, and search finds them."""
    from test_archive import archived

    rc = redis_cluster
    rooms = rooms_on_every_shard(rc, f"arc{next(_names)}_")
    env = {**FAST, "CHAT_ARCHIVE_URL": pg_url, "CHAT_HISTORY_MAXLEN": "50", "CHAT_ARCHIVE_BACKLOG": "100"}
    c = Cluster(2, env=env, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        ann = await ChatClient.connect(c[0].ws_url)
        sent: dict[str, list[str]] = {}
        for room in rooms:
            await ann.join(room, "Ann")
        for room in rooms:
            sent[room] = []
            for n in range(120):
                await ann.say(room, f"{room} note {n}" + (" zebra" if n == 7 else ""), client_id=f"{room}-{n}")
                ack = await ann.until(lambda f, cid=f"{room}-{n}": f["type"] == "ack" and f["client_id"] == cid)
                sent[room].append(ack["id"])
        for room in rooms:
            await archived(pg_url, room, 120)
        for room in rooms:
            seen: list[str] = []
            before = ""
            while True:
                status, page = get_json(f"{c[1].http_url}/rooms/{room}/history?limit=40{before}")
                assert status == 200
                seen = [m["id"] for m in page["messages"]] + seen
                if not page["has_more"]:
                    break
                before = f"&before={page['messages'][0]['id']}"
            assert seen == sent[room]
            status, found = get_json(f"{c[1].http_url}/rooms/{room}/search?q=zebra")
            assert status == 200 and [m["text"] for m in found["results"]] == [f"{room} note 7 zebra"]
    finally:
        c.close()


async def test_idle_rooms_expire_on_every_shard(redis_cluster, tmp_path):
    """CHAT_ROOM_TTL on a cluster: a room left idle is removed from its shard and from the
    room list, everyone hears `room_removed` once, and a join makes it anew."""
    rc = redis_cluster
    rooms = rooms_on_every_shard(rc, f"ttl{next(_names)}_")
    env = {**FAST, "CHAT_ROOM_TTL": "1", "CHAT_JANITOR_SECONDS": "1"}
    c = Cluster(2, env=env, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        ann = await ChatClient.connect(c[0].ws_url)
        watcher = await ChatClient.connect(c[1].ws_url)
        for room in rooms:
            await ann.join(room, "Ann")
        for room in rooms:
            await ann.say(room, "hello", client_id=f"h-{room}")
            await ann.until(lambda f, room=room: f["type"] == "message" and f["room"] == room)
            await ann.send({"type": "leave", "room": room})
        removed: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20  # the janitor passes every second or so
        while len(removed) < len(rooms) and loop.time() < deadline:
            try:
                f = await watcher.recv(timeout=max(0.1, deadline - loop.time()))
            except TimeoutError:
                break
            if f["type"] == "room_removed":
                removed.append(f["room"])
        assert sorted(removed) == sorted(rooms)
        for room in rooms:  # (a G8 key expires by itself, CHAT_DEDUPE_SECONDS after its send)
            left = [k for keys in room_keys(rc, room).values() for k in keys if not k.startswith("chat:sent:")]
            assert not left, f"{room} left keys behind: {left}"
        status, listed = get_json(f"{c[0].http_url}/rooms?limit=1000")
        assert not set(rooms) & {r["name"] for r in listed["rooms"]}
        assert get_json(f"{c[0].http_url}/rooms/{rooms[0]}/history")[0] == 404
        await ann.quiet(0.2)  # the `left` answers
        joined = await ann.join(rooms[0])
        assert joined["history"] == []
        assert (await watcher.until(lambda f: f["type"] == "room_created"))["room"] == rooms[0]
    finally:
        c.close()


def test_check_reaches_every_primary(redis_cluster):
    """`quart-chat check` on a redis+cluster:// URL: the cluster whole, its primaries Redis 7;
    a URL naming no live node is EX_UNAVAILABLE, with the password never shown."""
    import re

    from test_startup import QUART_CHAT, run

    code, out = run([*QUART_CHAT, "check"], {"REDIS_URL": redis_cluster.url})
    assert code == 0, out
    assert re.search(r"^redis: ok \(Redis Cluster of 3 primaries, Redis 7\.\d+\.\d+ at redis\+cluster://:\*\*\*@", out,
                     re.M), out
    from quart_chat.procs import HOST, free_port

    code, out = run([*QUART_CHAT, "check"], {"REDIS_URL": f"redis+cluster://:cl-pw@{HOST}:{free_port()}"})
    assert code == 69 and "cl-pw" not in out, out


async def test_a_burst_of_first_joins_subscribes_every_room(redis_cluster, tmp_path):
    """Thirty rooms joined at once on a fresh instance: each join waits for its room's own
    subscription, and every room then gets its messages live (no SSUBSCRIBE on a connection
    that nothing reads)."""
    rc = redis_cluster
    c = Cluster(1, env=FAST, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        rooms = [f"burst{next(_names)}" for _ in range(30)]
        clients = await asyncio.gather(*(ChatClient.connect(c[0].ws_url) for _ in rooms))
        await asyncio.gather(*(cl.join(room, f"u{k}") for k, (cl, room) in enumerate(zip(clients, rooms))))
        for k, (cl, room) in enumerate(zip(clients, rooms)):
            await cl.say(room, f"hello {room}", client_id=f"b{k}")
        for cl, room in zip(clients, rooms):
            got = await cl.until(lambda f: f["type"] == "message", timeout=5)
            assert got["text"] == f"hello {room}"
        subscribers = sum(1 for node in rc.primaries() for info in node.client().client_list()
                          if info.get("ssub") not in (None, "0"))
        assert subscribers <= len(rc.primaries()), "more than one shard link per primary"
    finally:
        c.close()


async def test_more_sends_at_once_than_connections_all_stored(redis_cluster, tmp_path):
    """150 senders at once on one instance, three times its 50 connections to a shard: sends
    wait their turn for a connection, none is told `unavailable` (the cluster's pool fails at
    once when full; store._WaitingCluster)."""
    rc = redis_cluster
    room = f"many{next(_names)}"
    c = Cluster(1, env=FAST, logdir=tmp_path, redis=rc).start()  # type: ignore[arg-type]
    try:
        clients = await asyncio.gather(*(ChatClient.connect(c[0].ws_url) for _ in range(150)))
        for k, cl in enumerate(clients):
            await cl.join(room, f"s{k}")
        def reply(cid: str):  # the send's ack, or any error
            return lambda f: f["type"] == "error" or (f["type"] == "ack" and f["client_id"] == cid)

        for turn in range(3):
            await asyncio.gather(*(cl.say(room, f"s{k}", client_id=f"x{turn}-{k}") for k, cl in enumerate(clients)))
            replies = await asyncio.gather(*(cl.until(reply(f"x{turn}-{k}"), timeout=10)
                                             for k, cl in enumerate(clients)))
            refused = [r for r in replies if r["type"] != "ack"]
            assert not refused, refused[:3]
    finally:
        c.close()
