"""Integration: three real instances on one real Redis, spoken to over real WebSockets."""

from __future__ import annotations

import asyncio
import json

import pytest

from client import ChatClient, get_json, id_key
from cluster import layout_of, redis_client

# Run again on the portable path (CHAT_FAST_PATH=0): scripts/test's portable pass.
pytestmark = pytest.mark.portable


async def test_seed_scenario_three_instances(cluster, room):
    alice, bob, charlie = [await ChatClient.connect(cluster[k].ws_url) for k in range(3)]
    for client, name in ((alice, "Alice"), (bob, "Bob"), (charlie, "Charlie")):
        joined = await client.join(room, name)
        assert joined["user"] == name and name in joined["members"]
    assert set((await charlie.join(room))["members"]) == {"Alice", "Bob", "Charlie"}
    await alice.say(room, "bonjour", client_id="a-1")
    for client in (alice, bob, charlie):
        [msg] = await client.messages(1)
        assert (msg["user"], msg["text"], msg["room"]) == ("Alice", "bonjour", room)
    assert msg["client_id"] == "a-1" and isinstance(msg["ts"], int)


async def test_concurrent_senders_exactly_once_in_order(cluster, room):
    clients = [await ChatClient.connect(cluster[k % 3].ws_url) for k in range(6)]
    for k, c in enumerate(clients):
        await c.join(room, f"user{k}")
    per_sender = 40

    async def send_all(k: int, c: ChatClient) -> None:
        for n in range(per_sender):
            await c.say(room, f"{k}:{n}")

    await asyncio.gather(*(send_all(k, c) for k, c in enumerate(clients)))
    expected = per_sender * len(clients)
    received = await asyncio.gather(*(c.messages(expected, timeout=20) for c in clients))
    reference = [m["id"] for m in received[0]]
    assert len(set(reference)) == expected
    assert reference == sorted(reference, key=id_key)
    for msgs in received[1:]:
        assert [m["id"] for m in msgs] == reference  # same order on every instance
    for k in range(len(clients)):
        mine = [int(m["text"].split(":")[1]) for m in received[0] if m["text"].startswith(f"{k}:")]
        assert mine == list(range(per_sender))  # a sender's messages keep their order
    for c in clients:
        assert await c.quiet(0.3) == []


async def test_rooms_are_isolated(cluster, room):
    dev = room + "_dev"
    a = await ChatClient.connect(cluster[0].ws_url)
    b = await ChatClient.connect(cluster[1].ws_url)
    await a.join(room, "Alice")
    await b.join(dev, "Bob")
    await b.say(dev, "dev only")
    await a.say(room, "general only")
    [mb] = await b.messages(1)
    [ma] = await a.messages(1)
    assert mb["text"] == "dev only" and ma["text"] == "general only"
    # no foreign messages, no foreign member events
    assert all(f["type"] in ("room_created",) for f in await a.quiet(0.3) + await b.quiet(0.1))


async def test_room_created_reaches_every_client(cluster, room):
    watchers = [await ChatClient.connect(cluster[k].ws_url) for k in range(3)]
    creator = await ChatClient.connect(cluster[2].ws_url)
    await creator.join(room, "Maker")
    for w in watchers:
        ev = await w.until(lambda f: f["type"] == "room_created" and f["room"] == room)
        assert isinstance(ev["ts"], int)
    status, body = get_json(cluster[0].http_url + "/rooms")
    assert status == 200 and room in [r["name"] for r in body["rooms"]]


async def test_member_events_and_leave(cluster, room):
    a = await ChatClient.connect(cluster[0].ws_url)
    b = await ChatClient.connect(cluster[1].ws_url)
    await a.join(room, "Alice")
    await b.join(room, "Bob")
    ev = await a.expect("user_joined")
    assert (ev["room"], ev["user"]) == (room, "Bob")
    await b.send({"type": "leave", "room": room})
    assert (await b.expect("left"))["room"] == room
    ev = await a.expect("user_left")
    assert ev["user"] == "Bob"
    await b.say(room, "still here?")
    err = await b.expect("error")
    assert err["code"] == "not_joined"
    c = await ChatClient.connect(cluster[2].ws_url)
    assert (await c.join(room, "Carol"))["members"] == ["Alice", "Carol"]
    await c.close()
    ev = await a.until(lambda f: f["type"] == "user_left" and f["user"] == "Carol")
    assert ev["room"] == room


async def test_history_on_join_and_since_on_other_instance(cluster, room):
    writer = await ChatClient.connect(cluster[0].ws_url)
    await writer.join(room, "Writer")
    for n in range(60):
        await writer.say(room, f"m{n}")
    sent = await writer.messages(60)
    late = await ChatClient.connect(cluster[1].ws_url)
    joined = await late.join(room, "Late")
    assert [m["text"] for m in joined["history"]] == [f"m{n}" for n in range(10, 60)]  # last 50
    assert joined["gap"] is False
    other = await ChatClient.connect(cluster[2].ws_url)
    joined = await other.join(room, "Back", since=sent[4]["id"])
    assert [m["text"] for m in joined["history"]] == [f"m{n}" for n in range(5, 60)]
    joined = await (await ChatClient.connect(cluster[2].ws_url)).join(room, "Zero", since="0-0")
    assert len(joined["history"]) == 60 and joined["gap"] is False


async def test_gap_free_join_while_flooding(cluster, room):
    writer = await ChatClient.connect(cluster[0].ws_url)
    await writer.join(room, "Flood")
    total = 400

    async def flood() -> None:
        for n in range(total):
            await writer.say(room, str(n))
            if n % 20 == 0:
                await asyncio.sleep(0.005)

    task = asyncio.create_task(flood())
    joiners = []
    k = 0
    # Joins go on, one instance after the other, for as long as the flood lasts.
    while not task.done() and k < 60:
        await asyncio.sleep(0.02)
        c = await ChatClient.connect(cluster[k % 3].ws_url)
        joiners.append((c, await c.join(room, f"J{k}", since="0-0")))
        k += 1
    await task
    # The point of the test: joins that landed mid-flood, with part of it in their history
    # and the rest to come live (a join before or after the flood would prove nothing).
    mid = [joined for _, joined in joiners if 0 < len(joined["history"]) < total]
    assert len(mid) >= 3, [len(joined["history"]) for _, joined in joiners]
    for c, joined in joiners:
        seen = [int(m["text"]) for m in joined["history"]]
        live = await c.messages(total - len(seen), timeout=20)
        seen += [int(m["text"]) for m in live]
        assert seen == list(range(total))
        assert await c.quiet(0.2) == []


async def test_rest_history_paging(cluster, room):
    w = await ChatClient.connect(cluster[0].ws_url)
    await w.join(room, "Pager")
    for n in range(120):
        await w.say(room, f"p{n}")
    await w.messages(120)
    base = cluster[1].http_url + f"/rooms/{room}/history"
    status, page = get_json(base)
    assert status == 200 and page["room"] == room and page["has_more"] is True
    assert [m["text"] for m in page["messages"]] == [f"p{n}" for n in range(70, 120)]
    collected = page["messages"]
    while page["has_more"]:
        status, page = get_json(f"{base}?limit=30&before={collected[0]['id']}")
        assert status == 200
        collected = page["messages"] + collected
    assert [m["text"] for m in collected] == [f"p{n}" for n in range(120)]
    assert len({m["id"] for m in collected}) == 120
    status, page = get_json(f"{base}?limit=500")
    assert len(page["messages"]) == 120 and page["has_more"] is False


@pytest.mark.parametrize("query, code", [
    ("?limit=0", "bad_request"), ("?limit=501", "bad_request"), ("?limit=x", "bad_request"),
    ("?before=abc", "bad_request"), ("?before=1-2-3", "bad_request"),
])
async def test_rest_history_bad_args(cluster, room, query, code):
    c = await ChatClient.connect(cluster[0].ws_url)
    await c.join(room, "X")
    status, body = get_json(cluster[0].http_url + f"/rooms/{room}/history{query}")
    assert status == 400 and body["error"]["code"] == code


async def test_rest_unknown_and_invalid_room(cluster):
    status, body = get_json(cluster[0].http_url + "/rooms/never_created_here/history")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = get_json(cluster[0].http_url + "/rooms/bad%20name/history")
    assert status == 400 and body["error"]["code"] == "invalid_room"


@pytest.mark.once  # it asserts the direct path; test_wire.py checks /healthz under either setting
async def test_healthz(cluster, room):
    status, body = get_json(cluster[1].http_url + "/healthz")
    assert status == 200
    assert (body["status"], body["instance"], body["redis"]) == ("ok", cluster[1].name, "ok")
    client = await ChatClient.connect(cluster[1].ws_url)
    await client.join(room, "Probe")
    status, body = get_json(cluster[1].http_url + "/healthz")
    assert body["connections"] >= 1
    # Under Hypercorn over HTTP/1.1 every connection takes the direct outbound path: an upgrade
    # of Hypercorn or wsproto that silently falls back to the slow path fails here.
    assert body["direct"] == body["connections"]


async def test_stream_is_capped_and_gap_reported(make_cluster, room):
    c = make_cluster(2, env={"CHAT_HISTORY_MAXLEN": "100", "CHAT_HISTORY_ON_JOIN": "10"})
    w = await ChatClient.connect(c[0].ws_url)
    await w.join(room, "Cap")
    for n in range(400):
        await w.say(room, f"c{n}")
    msgs = await w.messages(400, timeout=20)
    r = redis_client(c.redis.url)
    length = r.xlen(layout_of(r).history(room))
    assert 100 <= length < 400  # MAXLEN ~ keeps at least the cap, trims whole nodes
    entry = r.xrange(layout_of(r).history(room), "-", "+", count=1)[0]
    assert json.loads(entry[1][b"data"])["room"] == room
    late = await ChatClient.connect(c[1].ws_url)
    joined = await late.join(room, "Late")
    assert [m["text"] for m in joined["history"]] == [f"c{n}" for n in range(390, 400)]
    back = await ChatClient.connect(c[1].ws_url)
    joined = await back.join(room, "Back", since=msgs[0]["id"])
    assert joined["gap"] is True and len(joined["history"]) == length
    joined = await (await ChatClient.connect(c[1].ws_url)).join(room, "Recent", since=msgs[-5]["id"])
    assert joined["gap"] is False and len(joined["history"]) == 4
