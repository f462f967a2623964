"""Who is here and what they do (docs/protocol.md, "Typing, read markers, mentions"), on
real instances and a real Redis: typing hints, read markers shared by a user's connections,
and mentions."""

from __future__ import annotations

import asyncio

import pytest

from client import ChatClient
from cluster import layout_of, redis_client

pytestmark = pytest.mark.portable


async def test_typing_reaches_the_room_on_every_instance_throttled(cluster, room):
    alice, bob, carol, other = [await ChatClient.connect(cluster[k % 3].ws_url) for k in range(4)]
    for client, name in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
        await client.join(room, name)
    await other.join(room + "_elsewhere", "Dan")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await alice.send({"type": "typing", "room": room})
    for client in (bob, carol):
        frame = await client.expect("typing", timeout=1.0)
        assert frame == {"type": "typing", "room": room, "user": "Alice"}
    assert loop.time() - started < 1.0
    # A burst of 50 over 2.5 s: one forwarded every 2 s at most (the first went out above).
    for _ in range(50):
        await alice.send({"type": "typing", "room": room})
        await asyncio.sleep(0.05)
    got = [f for f in await bob.quiet(0.5) if f["type"] == "typing"]
    assert 1 <= len(got) <= 2
    # Never to the typist, nor to the typist's other tabs, never to another room, never
    # stored, never an error.
    alice_tab = await ChatClient.connect(cluster[2].ws_url)
    await alice_tab.join(room, "Alice")
    await alice.send({"type": "typing", "room": room})  # throttled or not: nothing for Alice's tabs
    await asyncio.sleep(2.1)
    await alice.send({"type": "typing", "room": room})
    assert (await carol.expect("typing", timeout=2))["user"] == "Alice"
    assert [f for f in await alice.quiet(0.2) if f["type"] in ("typing", "error")] == []
    assert [f for f in await alice_tab.quiet(0.2) if f["type"] == "typing"] == []
    assert [f for f in await other.quiet(0.2) if f["type"] == "typing"] == []
    r = redis_client(cluster.redis.url)
    try:
        assert r.xlen(layout_of(r).history(room)) == 0
    finally:
        r.close()
    # Outside a joined room it is refused like a message.
    await other.send({"type": "typing", "room": room})
    err = await other.expect("error")
    assert (err["code"], err["ref"]) == ("not_joined", "typing")


async def test_read_markers_follow_the_user_across_connections(cluster, room):
    phone = await ChatClient.connect(cluster[0].ws_url)
    laptop = await ChatClient.connect(cluster[1].ws_url)
    bob = await ChatClient.connect(cluster[2].ws_url)
    assert (await phone.join(room, "Alice"))["read"] is None
    await laptop.join(room, "Alice")
    await bob.join(room, "Bob")
    for n in range(3):
        await bob.say(room, f"m{n}")
    ids = [m["id"] for m in await phone.messages(3)]
    await laptop.messages(3)
    await phone.send({"type": "read", "room": room, "id": ids[1]})
    assert await laptop.expect("read", timeout=2) == {"type": "read", "room": room, "id": ids[1]}
    # Not to others, and not to the connection that sent it.
    assert [f for f in await bob.quiet(0.3) if f["type"] == "read"] == []
    assert [f for f in await phone.quiet(0.1) if f["type"] == "read"] == []
    # An older marker changes nothing; one past the newest message stops at it.
    await laptop.send({"type": "read", "room": room, "id": ids[0]})
    assert [f for f in await phone.quiet(0.3) if f["type"] == "read"] == []
    await laptop.send({"type": "read", "room": room, "id": "99999999999999-0"})
    assert (await phone.expect("read", timeout=2))["id"] == ids[2]
    # A new device starts from the marker; a user who never read has none.
    tablet = await ChatClient.connect(cluster[2].ws_url)
    assert (await tablet.join(room, "Alice"))["read"] == ids[2]
    assert (await bob.join(room))["read"] is None
    # Bad input: a clear error, nothing changed.
    for frame, code in (({"type": "read", "room": room}, "bad_request"),
                        ({"type": "read", "room": room, "id": "last"}, "bad_request"),
                        ({"type": "read", "room": room + "x", "id": ids[0]}, "not_joined")):
        await tablet.send(frame)
        err = await tablet.expect("error")
        assert (err["code"], err["ref"]) == (code, "read")


async def test_mentions_name_members(cluster, room):
    alice, bob, mary = [await ChatClient.connect(cluster[k].ws_url) for k in range(3)]
    await alice.join(room, "Alice")
    await bob.join(room, "Bob")
    await mary.join(room, "Mary Ann")
    cases = [
        ("@Bob can you look?", ["Bob"]),
        ("thanks @Mary Ann and @Bob!", ["Bob", "Mary Ann"]),
        ("@Bobby is not here, nor @Al", None),  # a longer word is another name
        ("mail bob@example.org", None),
        ("no at sign at all", None),
        ("@Bob @Bob twice", ["Bob"]),
        ("@Alice, me", ["Alice"]),
        ("@Bob—then", ["Bob"]),  # a dash is no letter, in any script
        ("@Bobé is another name", None),  # é is a letter: not Bob
        ("ask @Mary Ann", ["Mary Ann"]),
    ]
    for text, _ in cases:
        await alice.say(room, text)
    got = await bob.messages(len(cases))
    assert [(m["text"], m.get("mentions")) for m in got] == cases
    late = await ChatClient.connect(cluster[2].ws_url)
    history = (await late.join(room, "Late"))["history"]
    assert [m.get("mentions") for m in history][-len(cases):] == [mentions for _, mentions in cases]
