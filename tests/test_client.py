"""quart_chat.client against real instances: events, acks, reconnect with ``since`` after an
instance stops or dies, and resends after a reconnect that the server stores once (G8); edits,
deletes, replies and reactions, live and replayed after a rejoin."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from quart_chat.client import (
    Ack,
    Backoff,
    ChatClient,
    ChatError,
    Connected,
    Disconnected,
    Error,
    Event,
    Joined,
    Message,
    MessageDeleted,
    MessageEdited,
    Reaction,
    RoomCreated,
    Unknown,
    UserJoined,
    delete_frame,
    edit_frame,
    id_key,
    message_frame,
    parse_event,
    react_frame,
)

from client import ChatClient as RawClient
from cluster import Cluster

FAST = Backoff(base=0.1, cap=0.5)  # reconnect soon: the tests wait for it


async def until(chat: ChatClient, pred: Callable[[Event], bool], timeout: float = 15.0) -> list[Event]:
    """Every event up to and including the first one for which ``pred`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[Event] = []
    while True:
        ev = await chat.next_event(max(0.01, deadline - loop.time()))
        got.append(ev)
        if pred(ev):
            return got


def life(events: list[Event]) -> list[tuple[Any, ...]]:
    """The messages and changes among ``events``, as comparable tuples (no clock values)."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, Message):
            out.append(("message", e.id, e.text, e.reply_to, e.live))
        elif isinstance(e, MessageEdited):
            out.append(("edited", e.id, e.text, e.change_id))
        elif isinstance(e, MessageDeleted):
            out.append(("deleted", e.id, e.change_id))
        elif isinstance(e, Reaction):
            out.append(("reaction", e.id, e.emoji, e.user, e.on, e.change_id))
    return out


def history(http_url: str, room: str) -> list[dict[str, Any]]:
    """The room's stored messages, oldest first (REST)."""
    with urllib.request.urlopen(f"{http_url}/rooms/{room}/history?limit=500", timeout=5) as r:
        return json.loads(r.read())["messages"]


# ------------------------------------------------------------------ no server
def test_frames_become_typed_events() -> None:
    m = {"id": "17-2", "room": "r", "user": "al", "text": "hi", "ts": 17, "client_id": "c1"}
    assert parse_event(json.dumps({"type": "message", **m})) == Message("17-2", "r", "al", "hi", 17, "c1", True)
    joined = parse_event({"type": "joined", "room": "r", "user": "al", "members": ["al"], "gap": False,
                          "history": [m]})
    assert joined == Joined("r", "al", ["al"], False, [Message("17-2", "r", "al", "hi", 17, "c1", False)])
    assert parse_event('{"type":"ack","client_id":"c1","id":"17-2"}') == Ack("c1", "17-2", None)
    assert parse_event('{"type":"user_joined","room":"r","user":"bo","ts":5}') == UserJoined("r", "bo", 5)
    assert parse_event('{"type":"room_created","room":"r","ts":5}') == RoomCreated("r", 5)
    assert parse_event('{"type":"shiny","x":1}') == Unknown({"type": "shiny", "x": 1}), "newer servers' types"


def test_change_frames_become_typed_events() -> None:
    edited = '{"change_id":"20-0","type":"message_edited","room":"r","id":"17-2","text":"hello","edited_ts":19}'
    assert parse_event(edited) == MessageEdited("r", "17-2", "hello", 19, "20-0")
    deleted = {"change_id": "21-0", "type": "message_deleted", "room": "r", "id": "17-2"}
    assert parse_event(deleted) == MessageDeleted("r", "17-2", "21-0")
    reaction = {"change_id": "22-1", "type": "reaction", "room": "r", "id": "17-2", "emoji": "👍", "user": "bo",
                "on": False}
    assert parse_event(reaction) == Reaction("r", "17-2", "👍", "bo", False, "22-1"), "on: a state, kept as sent"

    # A message's latest state, as joined.history gives it; a live one carries reply_to only.
    m = {"id": "17-2", "room": "r", "user": "al", "text": "hello", "ts": 17, "reply_to": "16-0", "edited_ts": 20,
         "reactions": {"👍": ["bo", "al"]}}
    joined = parse_event({"type": "joined", "room": "r", "user": "al", "members": ["al"], "gap": False,
                          "history": [m]})
    assert isinstance(joined, Joined)
    assert joined.history == [Message("17-2", "r", "al", "hello", 17, None, False, "16-0", 20, {"👍": ["bo", "al"]})]
    plain = parse_event('{"type":"message","id":"18-0","room":"r","user":"al","text":"hi","ts":18}')
    assert isinstance(plain, Message) and (plain.reply_to, plain.edited_ts, plain.reactions) == (None, None, None)
    assert plain == Message("18-0", "r", "al", "hi", 18), "the older positional form still builds the same event"


def test_change_frames_to_send_leave_out_what_is_not_given() -> None:
    assert message_frame("r", "yes", "c1", reply_to="17-2") == {
        "type": "message", "room": "r", "text": "yes", "client_id": "c1", "reply_to": "17-2"}
    assert message_frame("r", "yes") == {"type": "message", "room": "r", "text": "yes"}, "no nulls to the server"
    assert edit_frame("r", "17-2", "hello", "c2") == {
        "type": "edit", "room": "r", "id": "17-2", "text": "hello", "client_id": "c2"}
    assert delete_frame("r", "17-2") == {"type": "delete", "room": "r", "id": "17-2"}
    assert react_frame("r", "17-2", "👍", on=False, client_id="c3") == {
        "type": "react", "room": "r", "id": "17-2", "emoji": "👍", "on": False, "client_id": "c3"}, "on is required"


def test_ids_compare_as_integer_pairs_and_backoff_stays_in_its_window() -> None:
    assert id_key("1796213337436-10") > id_key("1796213337436-9"), "not as strings"
    b = Backoff(base=0.5, cap=10.0)
    for attempt, (lo, hi) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (5.0, 10.0)]):
        assert all(lo <= b.delay(attempt) <= hi for _ in range(50)), attempt
    assert b.delay(100) <= 10.0 and Backoff(base=0).delay(3) == 0.0


# ------------------------------------------------------------------ real instances
@pytest.mark.timeout(60)
async def test_send_ack_and_delivery_across_instances(cluster: Cluster, room: str) -> None:
    async with ChatClient(cluster[0].ws_url, "alice") as alice, ChatClient(cluster[1].ws_url, "bob") as bob:
        first = await alice.join(room)
        assert isinstance(first, Joined) and first.user == "alice" and first.members == ["alice"]
        await bob.join(room)
        await until(alice, lambda e: isinstance(e, UserJoined) and e.user == "bob")
        cid = await alice.send(room, "hello bob")
        mid = await alice.acked(cid, timeout=10)
        assert cid not in alice.unacked, "an acknowledged message is not kept for resending"
        seen = await until(bob, lambda e: isinstance(e, Message) and e.text == "hello bob")
        assert seen[-1] == Message(mid, room, "alice", "hello bob", seen[-1].ts, cid, True)
        await until(alice, lambda e: isinstance(e, Message) and e.id == mid)  # its ack may come first
        assert alice.last_ids[room] == mid and bob.last_ids[room] == mid
        with pytest.raises(ChatError) as refused:
            await alice.join("no spaces")
        assert refused.value.code == "invalid_room"

    carol = ChatClient(cluster[2].ws_url, "carol")
    joined = await carol.join(room)  # connects by itself
    assert carol.connected and "carol" in joined.members
    await carol.close()
    kinds = []
    with pytest.raises(ConnectionError):
        for _ in range(100):
            kinds.append(type(await carol.next_event(1)))
    assert {Joined, Message, Connected} <= set(kinds), "what came before the end is read first (the history too)"


@pytest.mark.timeout(90)
async def test_reconnect_joins_with_since_and_gets_exactly_what_it_missed(
        make_cluster: Callable[..., Cluster], room: str) -> None:
    c = make_cluster(2)
    sender = await RawClient.connect(c[0].ws_url)
    await sender.join(room, user="sender")
    async with ChatClient(c[1].ws_url, "bot", backoff=FAST) as bot:
        await bot.join(room)
        await sender.say(room, "before")
        await until(bot, lambda e: isinstance(e, Message) and e.text == "before")
        await sender.messages(1, room=room)

        await asyncio.to_thread(c[1].stop)  # SIGTERM: the instance closes its WebSockets with 1001
        gone = await until(bot, lambda e: isinstance(e, Disconnected))
        assert gone[-1] == Disconnected(c[1].ws_url, 1001, gone[-1].reason)
        missed = [f"missed {k}" for k in range(5)]
        for text in missed:
            await sender.say(room, text)
        await sender.messages(len(missed), room=room)  # stored: the sender saw them come back
        await asyncio.to_thread(c[1].start)

        events = await until(bot, lambda e: isinstance(e, Connected))
        joined = [e for e in events if isinstance(e, Joined)]
        assert len(joined) == 1 and [m.text for m in joined[0].history] == missed, "since = the last id seen"
        got = [e for e in events if isinstance(e, Message)]
        assert [(m.text, m.live) for m in got] == [(t, False) for t in missed], "each missed one once, in order"
        assert events[-1] == Connected(c[1].ws_url, 2)

        await sender.say(room, "after")
        later = await until(bot, lambda e: isinstance(e, Message) and e.text == "after")
        assert [e for e in later if isinstance(e, Message)] == [later[-1]], "nothing repeated, nothing between"
        assert later[-1].live
    await sender.close()


@pytest.mark.timeout(90)
async def test_a_resend_after_reconnect_of_a_message_already_stored_is_not_stored_again(
        make_cluster: Callable[..., Cluster], room: str) -> None:
    """The lost-ack case made deterministic: "cid-1" is stored (through another connection of
    the same user, as if the bot's own ack had been lost), the bot's instance dies, and the
    bot, holding "cid-1" unacknowledged, reconnects past it (``since`` newer than it) and
    resends: the server answers with the first id and stores nothing (G8)."""
    c = make_cluster(2)
    twin = await RawClient.connect(c[0].ws_url)
    await twin.join(room, user="bot")
    async with ChatClient(c[1].ws_url, "bot", backoff=FAST) as bot:
        await bot.join(room)
        await twin.say(room, "only once", client_id="cid-1")
        first_id = (await twin.until(lambda f: f["type"] == "ack"))["id"]
        await twin.say(room, "newer")
        await until(bot, lambda e: isinstance(e, Message) and e.text == "newer")
        assert id_key(bot.last_ids[room]) > id_key(first_id)

        await asyncio.to_thread(c[1].kill)  # SIGKILL: no close frame
        await until(bot, lambda e: isinstance(e, Disconnected))
        assert await bot.send(room, "only once", client_id="cid-1") == "cid-1"
        assert not bot.connected and list(bot.unacked) == ["cid-1"], "kept while disconnected"
        await asyncio.to_thread(c[1].start)

        assert await bot.acked("cid-1", timeout=20) == first_id, "the first id: a resend, not a new message"
        assert not bot.unacked
        events = await until(bot, lambda e: isinstance(e, Ack) and e.client_id == "cid-1")
        assert not [e for e in events if isinstance(e, Message) and e.client_id == "cid-1"], "no second copy"
    stored = await asyncio.to_thread(history, c[0].http_url, room)
    assert [m["client_id"] for m in stored if m.get("client_id") == "cid-1"] == ["cid-1"]
    await twin.close()


@pytest.mark.timeout(90)
async def test_messages_in_flight_when_the_instance_dies_arrive_once_each(
        make_cluster: Callable[..., Cluster], room: str) -> None:
    """Sends racing a SIGKILL: whatever was stored before the kill and whatever was not, after
    the reconnect (to the other instance) every message is stored once and seen once."""
    c = make_cluster(2)
    async with ChatClient([c[1].ws_url, c[0].ws_url], "bot", backoff=FAST) as bot:
        await bot.join(room)
        cids = [await bot.send(room, f"burst {k}") for k in range(30)]
        await asyncio.to_thread(c[1].kill)
        ids = [await bot.acked(cid, timeout=30) for cid in cids]
        assert not bot.unacked and len(set(ids)) == 30
        events = await until(bot, lambda e: isinstance(e, Connected) and e.count == 2)
        assert events[-1] == Connected(c[0].ws_url, 2), "on to the next URL when one is down"
        # Own messages come back as `message` frames: each once, before or after the reconnect.
        seen: list[str] = [e.client_id or "" for e in events if isinstance(e, Message)]
        while len(seen) < 30:
            ev = await bot.next_event(10)
            if isinstance(ev, Message):
                seen.append(ev.client_id or "")
        assert sorted(seen) == sorted(cids), "every message once"
    stored = await asyncio.to_thread(history, c[0].http_url, room)
    assert sorted(m["client_id"] for m in stored) == sorted(cids), "stored once each (G8)"
    assert [m["text"] for m in stored] == [f"burst {k}" for k in range(30)], "in the order sent"


@pytest.mark.timeout(120)
async def test_a_message_life_reaches_another_instance_in_order_and_once_across_a_reconnect(
        make_cluster: Callable[..., Cluster], room: str) -> None:
    """Alice edits, reacts, replies and deletes on one instance; Bob, on the other, sees each
    change once, in stream order, live and after his instance stopped meanwhile (the changes
    to messages he had come replayed after his rejoin's history, however their ids fall among
    it); his own reaction made while disconnected is sent once he is back; his edit of Alice's
    message is refused."""
    c = make_cluster(2)
    async with ChatClient(c[0].ws_url, "alice") as alice, ChatClient(c[1].ws_url, "bob", backoff=FAST) as bob:
        await alice.join(room)
        await bob.join(room)
        m1 = await alice.acked(await alice.send(room, "helo"), timeout=10)
        cids = [await alice.edit(room, m1, "hello"), await alice.react(room, m1, "👍"),
                await alice.send(room, "see above", reply_to=m1), await alice.react(room, m1, "👍", on=False)]
        e1, r1, m2, r2 = [await alice.acked(cid, timeout=10) for cid in cids]
        assert id_key(m1) < id_key(e1) < id_key(r1) < id_key(m2) < id_key(r2), "acks of changes give change ids"

        seen = await until(bob, lambda e: isinstance(e, Reaction) and e.change_id == r2)
        assert life(seen) == [("message", m1, "helo", None, True), ("edited", m1, "hello", e1),
                              ("reaction", m1, "👍", "alice", True, r1), ("message", m2, "see above", m1, True),
                              ("reaction", m1, "👍", "alice", False, r2)], "each once, in stream order"
        assert bob.last_ids[room] == r2, "a change id is the newest id seen: the next since"

        mine_now = await bob.edit(room, m1, "mine now")
        with pytest.raises(ChatError) as refused:
            await bob.acked(mine_now, timeout=10)
        assert refused.value.code == "forbidden", "only the author edits"
        assert mine_now not in bob.unacked, "a refused change is not sent again"
        await until(bob, lambda e: isinstance(e, Error) and e.ref == mine_now)

        await asyncio.to_thread(c[1].stop)  # SIGTERM: the instance closes its WebSockets with 1001
        await until(bob, lambda e: isinstance(e, Disconnected))
        party = await bob.react(room, m1, "🎉")
        assert list(bob.unacked) == [party], "a change made while disconnected is kept"
        e2 = await alice.acked(await alice.edit(room, m1, "hello again"), timeout=10)
        m3 = await alice.acked(await alice.send(room, "while you were away"), timeout=10)
        r3 = await alice.acked(await alice.react(room, m1, "👀"), timeout=10)
        m4 = await alice.acked(await alice.send(room, "oops"), timeout=10)
        await alice.acked(await alice.delete(room, m4), timeout=10)
        await alice.acked(await alice.react(room, m3, "👍"), timeout=10)
        await asyncio.to_thread(c[1].start)

        back = await until(bob, lambda e: isinstance(e, Reaction) and e.user == "bob")
        rp = await bob.acked(party, timeout=10)
        joined = [e for e in back if isinstance(e, Joined)]
        assert len(joined) == 1 and joined[0].history[0].reactions == {"👍": ["alice"]}, "m3 in its latest state"
        assert life(back) == [("message", m3, "while you were away", None, False),
                              ("edited", m1, "hello again", e2),  # older than m3, yet new to Bob
                              ("reaction", m1, "👀", "alice", True, r3),
                              ("reaction", m1, "🎉", "bob", True, rp)], "the missed ones once; oops never"
        assert bob.last_ids[room] == rp and not bob.unacked

        d1 = await alice.acked(await alice.delete(room, m1), timeout=10)
        after = await until(bob, lambda e: isinstance(e, MessageDeleted))
        assert life(after) == [("deleted", m1, d1)], "nothing repeated, nothing between"
        assert bob.last_ids[room] == d1

        watched = await until(alice, lambda e: isinstance(e, MessageDeleted) and e.change_id == d1)
        assert [x for x in life(watched) if x[0] == "reaction" and x[3] == "bob"] == [
            ("reaction", m1, "🎉", "bob", True, rp)], "the resent reaction applied once"
    stored = await asyncio.to_thread(history, c[0].http_url, room)
    assert [(m["id"], m.get("reply_to"), m.get("reactions")) for m in stored] == [
        (m2, m1, None), (m3, None, {"👍": ["alice"]})], "m1 and m4 deleted; the reply keeps its reply_to"
