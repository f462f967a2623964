"""A message's life (docs/protocol.md): edits, deletes, replies and reactions on real
instances and a real Redis, in stream order, after a reconnect and a subscriber cut, and
in every later reader's view."""

from __future__ import annotations

import asyncio
import json

import pytest

from client import STREAM_FRAMES, ChatClient, get_json, id_key, stream_id
from cluster import kill_pubsub_links, layout_of, redis_client, scrape

pytestmark = pytest.mark.portable


async def post(client: ChatClient, room: str, text: str, cid: str, **extra) -> str:
    """Send a message and return its id (from the ack)."""
    await client.send({"type": "message", "room": room, "text": text, "client_id": cid, **extra})
    return (await client.until(lambda f: f["type"] == "ack" and f["client_id"] == cid))["id"]


async def refused(client: ChatClient, frame: dict) -> dict:
    """Send ``frame`` and return the error it gets."""
    await client.send(frame)
    return await client.until(lambda f: f["type"] == "error")


def everything_in(url: str, room: str) -> str:
    """Every value Redis holds for ``room``, as one text (to look for what must be gone)."""
    r = redis_client(url, decode_responses=True)
    try:
        out = []
        for key in r.scan_iter(f"*{room}*"):
            kind = r.type(key)
            if kind == "stream":
                out += [json.dumps(fields, ensure_ascii=False) for _, fields in r.xrange(key)]
            elif kind == "hash":
                out.append(json.dumps(r.hgetall(key), ensure_ascii=False))
            elif kind == "string":
                out.append(r.get(key) or "")
            elif kind == "zset":
                out.append(json.dumps(r.zrange(key, 0, -1), ensure_ascii=False))
        return "\n".join(out)
    finally:
        r.close()


async def test_changes_reach_every_instance_once_in_stream_order(cluster, room):
    """Edits, a delete and reactions made on one instance while others send: every client on
    every instance gets the same frames, once each, in stream order."""
    alice, bob, carol = [await ChatClient.connect(cluster[k].ws_url) for k in range(3)]
    for client, name in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
        await client.join(room, name)
    first = await post(alice, room, "helo", "a1")
    second = await post(alice, room, "oops, wrong room", "a2")

    async def changes() -> None:
        await alice.change("edit", room, first, text="hello")
        await alice.change("react", room, first, emoji="👍", on=True)
        await carol.change("react", room, first, emoji="👍", on=True)
        await carol.change("react", room, first, emoji="🎉", on=True)
        await alice.change("delete", room, second)
        await carol.change("react", room, first, emoji="🎉", on=False)

    async def chatter() -> None:
        for n in range(30):
            await bob.say(room, f"b{n}")

    await asyncio.gather(changes(), chatter())
    total = 2 + 6 + 30
    got = await asyncio.gather(*(c.seen_at_least(total, timeout=15) for c in (alice, bob, carol)))
    order = [stream_id(f) for f in got[0]]
    assert order == sorted(order, key=id_key) and len(set(order)) == total
    for frames in got[1:]:
        assert frames == got[0]  # the same frames, byte for byte after decoding, in one order
    changes_of = {
        who: [(f["type"], f.get("emoji"), f.get("on")) for f in got[0]
              if f["type"] != "message" and f.get("user", "Alice") == who]
        for who in ("Alice", "Carol")}
    # One connection's changes keep the order it sent them in.
    assert changes_of == {
        "Alice": [("message_edited", None, None), ("reaction", "👍", True), ("message_deleted", None, None)],
        "Carol": [("reaction", "👍", True), ("reaction", "🎉", True), ("reaction", "🎉", False)]}
    edited = next(f for f in got[0] if f["type"] == "message_edited")
    assert (edited["id"], edited["text"], edited["room"]) == (first, "hello", room)
    assert isinstance(edited["edited_ts"], int) and id_key(edited["change_id"]) > id_key(first)
    assert next(f for f in got[0] if f["type"] == "message_deleted") == {
        "type": "message_deleted", "room": room, "id": second,
        "change_id": next(f["change_id"] for f in got[0] if f["type"] == "message_deleted")}
    reaction = next(f for f in got[0] if f["type"] == "reaction" and f["user"] == "Alice")
    assert {k: reaction[k] for k in ("id", "emoji", "user", "on")} == {
        "id": first, "emoji": "👍", "user": "Alice", "on": True}
    for c in (alice, bob, carol):
        assert [f for f in await c.quiet(0.3) if f["type"] in STREAM_FRAMES] == []


async def test_later_readers_see_the_latest_state(cluster, room):
    """A plain join and the REST history show edited text, reactions, replies; a deleted message
    is left out everywhere, and its text (first or edited) is in no Redis key any more."""
    alice, bob = [await ChatClient.connect(cluster[k].ws_url) for k in range(2)]
    await alice.join(room, "Alice")
    await bob.join(room, "Bob")
    m1 = await post(alice, room, "first draft", "m1")
    m2 = await post(alice, room, "my password is hunter2", "m2")
    m3 = await post(bob, room, "a reply", "m3", reply_to=m1)
    await alice.change("edit", room, m1, text="first, edited", client_id="e1")
    await alice.change("edit", room, m2, text="still hunter2 oops", client_id="e2")
    await bob.change("react", room, m1, emoji="👍", on=True, client_id="r1")
    await bob.until(lambda f: f["type"] == "ack" and f["client_id"] == "r1")  # Bob's first: the users' order
    await alice.change("react", room, m1, emoji="👍", on=True, client_id="r2")
    await alice.change("react", room, m3, emoji="❤️", on=True, client_id="r3")
    await alice.change("delete", room, m2, client_id="d1")
    for cid in ("e1", "e2", "r3", "d1"):
        await alice.until(lambda f, cid=cid: f["type"] == "ack" and f["client_id"] == cid)

    def check(messages: list[dict]) -> None:
        assert [m["id"] for m in messages] == [m1, m3]
        one, three = messages
        assert (one["text"], one["user"], one["reactions"]) == ("first, edited", "Alice", {"👍": ["Bob", "Alice"]})
        assert isinstance(one["edited_ts"], int) and one["edited_ts"] >= one["ts"]
        assert (three["reply_to"], three["reactions"], three["text"]) == (m1, {"❤️": ["Alice"]}, "a reply")
        assert "edited_ts" not in three

    late = await ChatClient.connect(cluster[2].ws_url)
    check((await late.join(room, "Carol"))["history"])
    status, page = get_json(f"{cluster[1].http_url}/rooms/{room}/history")
    assert status == 200 and not page["has_more"]
    check(page["messages"])
    # Pages count messages, not the changes between them.
    status, page = get_json(f"{cluster[1].http_url}/rooms/{room}/history?limit=1")
    assert [m["id"] for m in page["messages"]] == [m3] and page["has_more"]
    status, page = get_json(f"{cluster[1].http_url}/rooms/{room}/history?limit=1&before={m3}")
    assert [m["id"] for m in page["messages"]] == [m1] and not page["has_more"]
    stored = everything_in(cluster.redis.url, room)
    assert "hunter2" not in stored and "first draft" in stored  # an edit keeps the original entry
    # A deleted message is gone for every change, and for replies.
    for frame in ({"type": "edit", "room": room, "id": m2, "text": "again"},
                  {"type": "delete", "room": room, "id": m2},
                  {"type": "react", "room": room, "id": m2, "emoji": "👍", "on": True},
                  {"type": "message", "room": room, "text": "re", "reply_to": m2}):
        err = await refused(alice, frame)
        assert (err["code"], err["ref"]) == ("not_found", frame["type"])


async def test_since_rejoin_replays_the_missed_changes(cluster, room):
    """A client that drops and rejoins with `since` gets the messages it missed in their latest
    state, then the changes made meanwhile to the messages it already had, as frames."""
    alice = await ChatClient.connect(cluster[0].ws_url)
    bob = await ChatClient.connect(cluster[1].ws_url)
    await alice.join(room, "Alice")
    await bob.join(room, "Bob")
    m1 = await post(alice, room, "one", "m1")
    m2 = await post(alice, room, "two", "m2")
    seen = [stream_id(f) for f in await bob.stream(2)]
    await bob.close()
    await alice.change("edit", room, m1, text="one!")
    await alice.change("react", room, m2, emoji="👀", on=True)
    m3 = await post(alice, room, "three", "m3")
    await alice.change("react", room, m3, emoji="🔥", on=True)
    await alice.change("delete", room, m2, client_id="d")
    await alice.until(lambda f: f["type"] == "ack" and f["client_id"] == "d")
    bob = await ChatClient.connect(cluster[2].ws_url)
    joined = await bob.join(room, "Bob", since=seen[-1])
    assert joined["gap"] is False
    [three] = joined["history"]
    assert (three["id"], three["text"], three["reactions"]) == (m3, "three", {"🔥": ["Alice"]})
    replayed = await bob.stream(3)
    assert [(f["type"], f["id"]) for f in replayed] == [
        ("message_edited", m1), ("reaction", m2), ("message_deleted", m2)]
    assert replayed[0]["text"] == "one!"
    # And live from there, nothing twice.
    await alice.change("react", room, m1, emoji="✅", on=True)
    [live] = await bob.stream(1)
    assert (live["type"], live["emoji"]) == ("reaction", "✅")
    assert [f for f in await bob.quiet(0.3) if f["type"] in STREAM_FRAMES] == []


async def test_only_the_author_edits_or_deletes_anyone_reacts(cluster, room):
    alice, bob = [await ChatClient.connect(cluster[k].ws_url) for k in range(2)]
    await alice.join(room, "Alice")
    await bob.join(room, "Bob")
    m1 = await post(alice, room, "mine", "m1")
    for frame in ({"type": "edit", "room": room, "id": m1, "text": "yours now", "client_id": "x1"},
                  {"type": "delete", "room": room, "id": m1, "client_id": "x2"}):
        err = await refused(bob, frame)
        assert (err["code"], err["ref"]) == ("forbidden", frame["client_id"])
    await bob.change("react", room, m1, emoji="😂", on=True, client_id="ok")
    ack = await bob.until(lambda f: f["type"] == "ack")
    assert ack["client_id"] == "ok" and id_key(ack["id"]) > id_key(m1)
    # The same name on another connection is the same author in open mode.
    again = await ChatClient.connect(cluster[2].ws_url)
    await again.join(room, "Alice")
    await again.change("edit", room, m1, text="mine, edited", client_id="e")
    assert (await again.until(lambda f: f["type"] == "ack"))["client_id"] == "e"
    await bob.seen_at_least(3)
    [frame] = [f for f in bob.seen() if f["type"] == "message_edited"]
    assert frame["text"] == "mine, edited"


async def test_bad_changes_get_clear_errors_and_change_nothing(cluster, room):
    alice = await ChatClient.connect(cluster[0].ws_url)
    await alice.join(room, "Alice")
    m1 = await post(alice, room, "target", "m1")
    reaction = {"type": "react", "room": room, "id": m1, "on": True}
    cases = [
        ({"type": "edit", "room": room, "id": m1, "text": "   "}, "invalid_text"),
        ({"type": "edit", "room": room, "id": m1, "text": "x" * 2001}, "invalid_text"),
        ({"type": "edit", "room": room, "id": m1}, "bad_request"),
        ({"type": "edit", "room": room, "id": "yesterday", "text": "x"}, "bad_request"),
        ({"type": "edit", "room": room, "id": "1-0", "text": "x"}, "not_found"),
        ({"type": "delete", "room": room + "x", "id": m1}, "not_joined"),
        ({**reaction, "emoji": ""}, "bad_request"),
        ({**reaction, "emoji": "x" * 17}, "bad_request"),
        ({**reaction, "emoji": "a b"}, "bad_request"),
        ({**reaction, "emoji": "👍", "on": "yes"}, "bad_request"),
        ({"type": "message", "room": room, "text": "re", "reply_to": 5}, "bad_request"),
        ({"type": "message", "room": room, "text": "re", "reply_to": "1-0"}, "not_found"),
    ]
    for frame, code in cases:
        err = await refused(alice, frame)
        assert (err["code"], err["ref"]) == (code, frame["type"]), frame
    # A change entry is not a message: it cannot be edited, reacted to or answered.
    await alice.change("react", room, m1, emoji="👍", on=True, client_id="r")
    change = (await alice.until(lambda f: f["type"] == "ack"))["id"]
    err = await refused(alice, {"type": "edit", "room": room, "id": change, "text": "x"})
    assert err["code"] == "not_found"
    # At most 20 different emoji on one message; more of an existing one is fine.
    for n in range(19):
        await alice.change("react", room, m1, emoji=f"e{n}", on=True)
    err = await refused(alice, {**reaction, "emoji": "one-too-many", "client_id": "21"})
    assert (err["code"], err["ref"]) == ("limit_exceeded", "21")
    await alice.change("react", room, m1, emoji="👍", on=False, client_id="off")
    await alice.until(lambda f: f["type"] == "ack" and f["client_id"] == "off")
    await alice.change("react", room, m1, emoji="one-more", on=True, client_id="in")
    await alice.until(lambda f: f["type"] == "ack" and f["client_id"] == "in")
    status, page = get_json(f"{cluster[0].http_url}/rooms/{room}/history")
    [message] = page["messages"]
    assert message["text"] == "target" and len(message["reactions"]) == 20 and "👍" not in message["reactions"]
    metrics = scrape(cluster[0])
    assert metrics['quart_chat_changes_refused_total{reason="not_found"}'] >= 2
    assert metrics['quart_chat_changes_refused_total{reason="limit_exceeded"}'] >= 1
    assert metrics['quart_chat_changes_stored_total{kind="react"}'] >= 22


async def test_a_resent_change_applies_once(cluster, room):
    """G8 for changes: the same client_id from another connection and instance is acked with
    the first change's id, and nobody gets the change twice."""
    alice, watcher = [await ChatClient.connect(cluster[k].ws_url) for k in range(2)]
    await alice.join(room, "Alice")
    await watcher.join(room, "Watcher")
    m1 = await post(alice, room, "count", "m1")
    await alice.change("react", room, m1, emoji="👍", on=True, client_id="tap-1")
    first = (await alice.until(lambda f: f["type"] == "ack"))["id"]
    await alice.close()
    resend = await ChatClient.connect(cluster[2].ws_url)
    await resend.join(room, "Alice")
    await resend.change("react", room, m1, emoji="👍", on=True, client_id="tap-1")
    assert (await resend.until(lambda f: f["type"] == "ack"))["id"] == first
    frames = await watcher.stream(2)
    assert [f["type"] for f in frames] == ["message", "reaction"]
    assert [f for f in await watcher.quiet(0.5) if f["type"] in STREAM_FRAMES] == []


async def test_subscriber_cut_mid_changes_loses_none(make_cluster, room):
    """CLIENT KILL TYPE pubsub three times while 300 changes flow: every watcher gets every
    entry of the stream once, in its order (G5 for changes)."""
    cluster = make_cluster(2)
    alice = await ChatClient.connect(cluster[0].ws_url)
    await alice.join(room, "Alice")
    watchers = [await ChatClient.connect(cluster[k].ws_url) for k in (0, 1)]
    for k, w in enumerate(watchers):
        await w.join(room, f"W{k}")
    m1 = await post(alice, room, "react to me", "m1")
    r = redis_client(cluster.redis.url, decode_responses=True)

    async def changes() -> None:
        for n in range(300):
            if n % 50 == 49:
                await alice.change("edit", room, m1, text=f"edit {n}", client_id=f"c{n}")
            else:
                await alice.change("react", room, m1, emoji=f"e{n % 7}", on=n % 2 == 0, client_id=f"c{n}")
            await alice.until(lambda f, n=n: f["type"] == "ack" and f["client_id"] == f"c{n}")

    async def killer() -> None:
        for _ in range(3):
            await asyncio.sleep(0.15)
            await asyncio.to_thread(kill_pubsub_links, r)

    try:
        await asyncio.gather(changes(), killer())
        ids = [sid for sid, _ in r.xrange(layout_of(r).history(room))]
        assert len(ids) == 301
        for w in watchers:
            frames = await w.seen_at_least(301, timeout=30)
            assert [stream_id(f) for f in frames] == ids
            assert [f for f in await w.quiet(0.3) if f["type"] in STREAM_FRAMES] == []
        status, page = get_json(f"{cluster[1].http_url}/rooms/{room}/history")
        assert page["messages"][0]["text"] == "edit 299"
        for inst in cluster.instances:
            assert scrape(inst)["quart_chat_subscriber_reconnects_total"] >= 1  # the cuts happened
    finally:
        r.close()
