"""The archive (docs/archive.md) on a real PostgreSQL and real instances: every entry
written once in its latest state, history paged past the stream with no gap or duplicate
at the seam, a join from far back, search, and the archive's recovery from its faults."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import urllib.parse

import pytest
import redis

from quart_chat.archive import Archive, Entry, parse_entry
from quart_chat.protocol import dumps

from client import ChatClient, get_json, id_key
from cluster import scrape

pytestmark = pytest.mark.timeout(180)


def entry(where: str, sid: str, **fields) -> Entry:
    data = dumps(fields)
    parsed = parse_entry(where, sid, data)
    assert parsed is not None
    return parsed


async def rows(url: str, sql: str, *args) -> list:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def archived(url: str, room: str, count: int, timeout: float = 30.0, changes: int = 0) -> None:
    """Wait until ``count`` rows of ``room`` (messages not deleted, and changes), ``changes`` of
    them changes, are in the archive. (A count alone cannot tell a delete from its message.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    import asyncpg

    have = None
    while True:
        try:
            [row] = await rows(url, "SELECT (SELECT count(*) FROM chat_messages WHERE room = $1 AND ts IS NOT NULL "
                               "AND NOT deleted) AS m, (SELECT count(*) FROM chat_changes WHERE room = $1) AS c", room)
            have = row["m"] + row["c"] if row["c"] >= changes else None
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError):
            pass  # a PostgreSQL starting up again
        if have is not None and have >= count:
            return
        assert loop.time() < deadline, f"{have} of {count} entries archived after {timeout} s"
        await asyncio.sleep(0.2)


_batches = itertools.count()


async def send_many(client: ChatClient, room: str, texts: list[str]) -> list[str]:
    """Send ``texts`` in order, each acked before the next; their ids. (Client ids are new
    for each call: one sent again within 10 minutes would be taken as a resend, G8.)"""
    ids = []
    batch = next(_batches)
    for k, text in enumerate(texts):
        cid = f"s{batch}-{k}"
        await client.send({"type": "message", "room": room, "text": text, "client_id": cid})
        ids.append((await client.until(lambda f, cid=cid: f["type"] == "ack" and f["client_id"] == cid))["id"])
    return ids


# ---------------------------------------------------------------- PostgreSQL alone
def test_entries_become_rows():
    assert parse_entry("r", "5-0", None) is None
    assert parse_entry("r", "5-0", "not json") is None
    message = entry("r", "5-0", room="r", user="A", text="hi", ts=5)
    assert (message.kind, message.id) == ("message", (5, 0))
    change = entry("r", "6-1", type="reaction", room="r", id="5-0", emoji="👍", user="B", on=True)
    assert (change.kind, change.fields["target"]) == ("reaction", (5, 0))
    assert parse_entry("r", "7-0", dumps({"type": "other", "id": "5-0"})) is None


async def test_writes_are_idempotent_and_order_free(pg_url):
    """Each entry written twice, the batches in every order two archivers could make: the
    same rows (a message after its own edit, a reaction's on and off swapped, a delete first)."""
    room = "r"
    batch = [
        entry(room, "10-0", room=room, user="A", text="first", ts=10, client_id="c1"),
        entry(room, "11-0", room=room, user="B", text="secret", ts=11, mentions=["A"]),
        entry(room, "12-0", type="message_edited", room=room, id="10-0", text="first, edited", edited_ts=12),
        entry(room, "13-0", type="reaction", room=room, id="10-0", emoji="👍", user="B", on=True),
        entry(room, "14-0", type="message_edited", room=room, id="10-0", text="first, edited twice", edited_ts=14),
        entry(room, "15-0", type="reaction", room=room, id="10-0", emoji="👍", user="B", on=False),
        entry(room, "16-0", type="reaction", room=room, id="10-0", emoji="🎉", user="C", on=True),
        entry(room, "17-0", type="reaction", room=room, id="11-0", emoji="😂", user="A", on=True),
        entry(room, "18-0", type="message_deleted", room=room, id="11-0"),
    ]
    expected = None
    for attempt in range(6):
        archive = Archive(pg_url)
        await archive.open()
        try:
            await archive.migrate()  # a second run changes nothing
            shuffled = batch[:]
            random.Random(attempt).shuffle(shuffled)
            for k in range(0, len(shuffled), 2):  # small batches, each its own transaction
                await archive.write(shuffled[k:k + 2])
            await archive.write(batch)  # and all of it again
            page, more = await archive.before(room, (99, 0), 10)
            state = [json.loads(m) for m in page]
        finally:
            await archive.close()
        assert not more
        assert state == [{"id": "10-0", "room": room, "user": "A", "text": "first, edited twice", "ts": 10,
                          "client_id": "c1", "edited_ts": 14, "reactions": {"🎉": ["C"]}}]
        assert expected in (None, state)
        expected = state
        stored = await rows(pg_url, "SELECT body, username, deleted FROM chat_messages WHERE room = $1 AND ms = 11",
                            room)
        assert [tuple(r) for r in stored] == [(None, None, True)]  # the deleted text is gone
        assert await rows(pg_url, "SELECT 1 FROM chat_reactions WHERE ms = 11") == []
        await rows(pg_url, "TRUNCATE chat_messages, chat_reactions, chat_changes")


async def test_expiry_removes_old_rows_and_says_so(pg_url):
    archive = Archive(pg_url)
    await archive.open()
    try:
        await archive.write([entry("r", f"{ms}-0", room="r", user="A", text=f"m{ms}", ts=ms) for ms in (10, 20, 30)])
        assert await archive.covers("r", (0, 0))
        assert await archive.expire(25) == 2
        page, _ = await archive.before("r", (99, 0), 10)
        assert [json.loads(m)["id"] for m in page] == ["30-0"]
        assert not await archive.covers("r", (15, 0))  # a join from before the hole: gap
        assert await archive.covers("r", (20, 0))
    finally:
        await archive.close()


# ---------------------------------------------------------------- with instances
def archive_env(url: str, **extra: str) -> dict[str, str]:
    return {"CHAT_ARCHIVE_URL": url, **extra}


async def test_history_pages_past_the_stream_and_an_old_since_join(make_cluster, pg_url, room):
    """3,000 messages in a room capped at 1,000: paged back from the newest to the first,
    each once and in order; a join from the tenth gets all the rest, gap false."""
    cluster = make_cluster(2, env=archive_env(pg_url))
    alice = await ChatClient.connect(cluster[0].ws_url)
    await alice.join(room, "Alice")
    texts = [f"message {k}" for k in range(3000)]
    ids = await send_many(alice, room, texts)
    await archived(pg_url, room, 3000, timeout=60)
    r = redis.Redis.from_url(cluster.redis.url)
    try:
        for _ in range(100):  # the archiver trims the stream back once it has everything
            if r.xlen(f"chat:history:{room}") <= 1100:
                break
            await asyncio.sleep(0.2)
        assert r.xlen(f"chat:history:{room}") <= 1100
    finally:
        r.close()
    seen: list[str] = []
    before = None
    while True:
        query = {"limit": "500"} | ({"before": before} if before else {})
        status, page = get_json(f"{cluster[1].http_url}/rooms/{room}/history?{urllib.parse.urlencode(query)}")
        assert status == 200
        seen = [m["id"] for m in page["messages"]] + seen
        if not page["has_more"]:
            break
        before = page["messages"][0]["id"]
    assert seen == ids
    late = await ChatClient.connect(cluster[1].ws_url)
    joined = await late.join(room, "Late", since=ids[9])
    assert joined["gap"] is False
    assert [m["id"] for m in joined["history"]] == ids[10:]
    assert [m["text"] for m in joined["history"][:2]] == ["message 10", "message 11"]


async def test_search(make_cluster, pg_url, room):
    cluster = make_cluster(1, env=archive_env(pg_url))
    alice = await ChatClient.connect(cluster[0].ws_url)
    await alice.join(room, "Alice")
    await alice.join(room + "_other")
    texts = ["the deploy went fine", "rollback the deploy now", "lunch at noon", "deploy friday? never",
             "the quick brown fox", "quick lunch today"]
    ids = await send_many(alice, room, texts)
    await send_many(alice, room + "_other", ["deploy in the other room"])
    await alice.send({"type": "delete", "room": room, "id": ids[3], "client_id": "del"})
    await alice.until(lambda f: f["type"] == "ack" and f["client_id"] == "del")
    await archived(pg_url, room, len(texts), changes=1)  # one deleted, and the delete

    def search(q: str, **extra: str) -> tuple[int, dict]:
        query = urllib.parse.urlencode({"q": q, **extra})
        return get_json(f"{cluster[0].http_url}/rooms/{room}/search?{query}")

    def texts_of(found: dict) -> list[str]:
        return [m["text"] for m in found["results"]]

    status, found = search("deploy")
    assert status == 200 and found["room"] == room and found["next"] is None
    assert texts_of(found) == ["rollback the deploy now", "the deploy went fine"]  # newest first, not deleted
    assert texts_of(search('"quick brown"')[1]) == ["the quick brown fox"]
    assert texts_of(search("quick -lunch")[1]) == ["the quick brown fox"]
    assert texts_of(search("LUNCH")[1]) == ["quick lunch today", "lunch at noon"]
    status, first = search("deploy OR lunch OR quick", limit="2")
    assert len(first["results"]) == 2 and first["next"] == first["results"][-1]["id"]
    status, second = search("deploy OR lunch OR quick", limit="2", before=first["next"])
    assert all(id_key(m["id"]) < id_key(first["next"]) for m in second["results"])
    assert search("")[0] == 400 and search("x", limit="0")[0] == 400
    assert get_json(f"{cluster[0].http_url}/rooms/never_made/search?q=x")[0] == 404


async def test_search_without_an_archive_is_501(cluster, room):
    status, body = get_json(f"{cluster[0].http_url}/rooms/{room}/search?q=x")
    assert status == 501 and body["error"]["code"] == "not_implemented"


async def test_two_archivers_write_each_entry_once_and_edits_arrive(make_cluster, pg_url, room):
    cluster = make_cluster(2, env=archive_env(pg_url))
    alice, bob = [await ChatClient.connect(cluster[k].ws_url) for k in range(2)]
    await alice.join(room, "Alice")
    await bob.join(room, "Bob")
    a_ids, b_ids = await asyncio.gather(send_many(alice, room, [f"a{k}" for k in range(300)]),
                                        send_many(bob, room, [f"b{k}" for k in range(300)]))
    await alice.send({"type": "edit", "room": room, "id": a_ids[0], "text": "a0, edited", "client_id": "e"})
    await bob.send({"type": "react", "room": room, "id": a_ids[0], "emoji": "👍", "on": True, "client_id": "r"})
    await alice.until(lambda f: f["type"] == "ack" and f["client_id"] == "e")
    await bob.until(lambda f: f["type"] == "ack" and f["client_id"] == "r")
    await archived(pg_url, room, 602, changes=2)
    await asyncio.sleep(1.0)  # a second write of anything would show in the counters now
    written = sum(scrape(inst)["quart_chat_archive_rows_written_total"] for inst in cluster.instances)
    assert written == 602
    [row] = await rows(pg_url, "SELECT body, edited_ts FROM chat_messages WHERE room = $1 AND ms = $2 AND seq = $3",
                       room, *id_key(a_ids[0]))
    assert row["body"] == "a0, edited" and row["edited_ts"]
    assert [tuple(r) for r in await rows(pg_url, "SELECT emoji, username FROM chat_reactions WHERE active")] == [
        ("👍", "Bob")]
    assert scrape(cluster[0])["quart_chat_archive_up"] == 1


async def test_archive_down_catches_up_nothing_lost(make_cluster, pg_dir, room):
    """PostgreSQL stopped for a while: sends go on, the archive is reported down, and it
    catches up by itself when PostgreSQL is back."""
    from quart_chat.postgres import start_postgres
    from quart_chat.procs import free_port

    port = free_port()
    data = pg_dir
    pg = start_postgres(data, port)
    try:
        url = pg.database_url("chat")
        cluster = make_cluster(1, env=archive_env(url))
        alice = await ChatClient.connect(cluster[0].ws_url)
        await alice.join(room, "Alice")
        first = await send_many(alice, room, [f"before {k}" for k in range(20)])
        await archived(url, room, 20)
        pg.stop()
        later = await send_many(alice, room, [f"during {k}" for k in range(200)])
        for _ in range(50):
            if scrape(cluster[0])["quart_chat_archive_up"] == 0:
                break
            await asyncio.sleep(0.2)
        assert scrape(cluster[0])["quart_chat_archive_up"] == 0
        pg = start_postgres(data, port)
        await archived(url, room, 220, timeout=60)
        found = await rows(url, "SELECT ms, seq FROM chat_messages WHERE room = $1 ORDER BY ms, seq", room)
        assert [f"{r['ms']}-{r['seq']}" for r in found] == first + later
    finally:
        pg.stop()


@pytest.mark.slow
async def test_an_archiver_killed_mid_batch_loses_nothing(make_cluster, pg_url, room):
    """SIGKILL the instance whose archiver is writing: the other takes its pending entries
    over (XAUTOCLAIM, after 15 s) and every entry reaches the archive."""
    cluster = make_cluster(2, env=archive_env(pg_url))
    alice = await ChatClient.connect(cluster[1].ws_url)
    await alice.join(room, "Alice")
    victim = cluster[0]
    sending = asyncio.create_task(send_many(alice, room, [f"m{k}" for k in range(2000)]))
    await asyncio.sleep(1.0)
    victim.signal(signal.SIGKILL)
    ids = await sending
    await archived(pg_url, room, 2000, timeout=90)
    found = await rows(pg_url, "SELECT ms, seq FROM chat_messages WHERE room = $1 ORDER BY ms, seq", room)
    assert [f"{r['ms']}-{r['seq']}" for r in found] == ids


async def test_migrate_command(pg_url):
    """`quart-chat migrate` creates the tables once (a second run changes nothing) and says
    what is wrong in one line: no URL, an unknown language, no PostgreSQL there."""
    import os
    import subprocess
    import sys

    def migrate(**env: str) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")} | env
        return subprocess.run([sys.executable, "-m", "quart_chat.cli", "migrate"], env=full, capture_output=True,
                              text=True, timeout=60)

    for _ in range(2):
        done = migrate(CHAT_ARCHIVE_URL=pg_url)
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
    assert [r["version"] for r in await rows(pg_url, "SELECT version FROM chat_schema")] == [1]
    assert migrate().returncode == 78
    wrong = migrate(CHAT_ARCHIVE_URL=pg_url, CHAT_ARCHIVE_LANGUAGE="klingon")
    assert wrong.returncode == 1 and "klingon" in wrong.stderr and "Traceback" not in wrong.stderr
    from quart_chat.procs import free_port

    away = migrate(CHAT_ARCHIVE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    assert away.returncode == 69 and "cannot reach" in away.stderr
