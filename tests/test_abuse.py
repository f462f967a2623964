"""Abuse: every malformed, oversized, hostile or too-fast input, sent for real over WebSockets.

Each refused frame must get an `error` frame with the right `code` and `ref` (PROTOCOL.md
section 4), leave the connection usable (a ping afterwards gets its pong) and store nothing
(checked in Redis itself). Frames that close the connection are checked for their close code.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from client import ChatClient
from cluster import ChatInstance, RedisProcess, layout_of, redis_client

pytestmark = [pytest.mark.timeout(60), pytest.mark.portable]

ABSENT = object()


# ---------------------------------------------------------------- helpers
@pytest.fixture
def r(cluster):
    client = redis_client(cluster.redis.url)
    yield client
    client.close()


def store_snapshot(r: redis.Redis) -> dict:
    """Everything the server stores that a refused frame could have touched."""
    streams = {k: r.xlen(k) for k in r.scan_iter("chat:history:*", count=1000)}
    rooms = r.zrange(layout_of(r).rooms, 0, -1)
    return {"streams": streams, "rooms": rooms}


async def expect_error(client: ChatClient, code: str, ref=ABSENT) -> dict:
    err = await client.expect("error", timeout=5)
    assert err["code"] == code, err
    if ref is ABSENT:
        assert "ref" not in err, err
    else:
        assert err.get("ref") == ref, err
    assert isinstance(err["message"], str) and err["message"]
    return err


async def still_usable(client: ChatClient) -> None:
    await client.send({"type": "ping"})
    await client.expect("pong", timeout=5)


async def expect_close(client: ChatClient, timeout: float = 5) -> int | None:
    """Read until the server closes; return the close code it sent (None if none)."""
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), timeout)
    except ConnectionClosed as err:
        return err.rcvd.code if err.rcvd is not None else None


def http(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
async def joined(cluster, room):
    """A connection that has joined ``room`` as "Abuser", and a peer in the room on another
    instance that must never see anything of the abuse."""
    abuser = await ChatClient.connect(cluster[0].ws_url)
    await abuser.join(room, "Abuser")
    peer = await ChatClient.connect(cluster[1].ws_url)
    await peer.join(room, "Peer")
    await abuser.expect("user_joined")
    yield abuser, peer
    await abuser.close()
    await peer.close()


async def peer_saw_nothing(peer: ChatClient) -> None:
    assert [f for f in await peer.quiet(0.2) if f["type"] not in ("room_created",)] == []


# ---------------------------------------------------------------- error codes on a joined connection
R = "<room>"  # stands for the test's room in the table below

CASES = [
    # bad_json: no readable type, so no ref
    ("not json", "bad_json", ABSENT),
    ("{", "bad_json", ABSENT),
    ('{"type": "ping",}', "bad_json", ABSENT),
    ('{"type": "ping", "x": NaN}', "bad_json", ABSENT),
    ("", "bad_json", ABSENT),
    ("[" * 5000 + "]" * 5000, "bad_json", ABSENT),  # nested deeper than any parser allows
    ('{"type": "ping", "x": ' + "[" * 3000 + "]" * 3000 + "}", "bad_json", ABSENT),
    # bad_request: not an object, or no readable type
    ("[]", "bad_request", ABSENT),
    ('"ping"', "bad_request", ABSENT),
    ("42", "bad_request", ABSENT),
    ("null", "bad_request", ABSENT),
    ({}, "bad_request", ABSENT),
    ({"type": 5}, "bad_request", ABSENT),
    ({"type": None}, "bad_request", ABSENT),
    ({"type": ["join"]}, "bad_request", ABSENT),
    # bad_request: missing fields, wrong kinds (numbers where strings belong)
    ({"type": "join"}, "bad_request", "join"),
    ({"type": "join", "room": 123}, "bad_request", "join"),
    ({"type": "join", "room": R, "user": 5}, "bad_request", "join"),
    ({"type": "join", "room": R, "user": ["Abuser"]}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": "abc"}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": 5}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": "1-2-3"}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": "-1-0"}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": "1764085000000"}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": "99999999999999999999999-0"}, "bad_request", "join"),
    ({"type": "join", "room": R, "since": "\u0661\u0662-0"}, "bad_request", "join"),  # Arabic-Indic digits
    ({"type": "leave"}, "bad_request", "leave"),
    ({"type": "leave", "room": 7}, "bad_request", "leave"),
    ({"type": "message", "room": R}, "bad_request", "message"),
    ({"type": "message", "text": "hi"}, "bad_request", "message"),
    ({"type": "message", "room": R, "text": 42}, "bad_request", "message"),
    ({"type": "message", "room": R, "text": ["hi"]}, "bad_request", "message"),
    ({"type": "message", "room": R, "text": None}, "bad_request", "message"),
    ({"type": "message", "room": R, "text": 42, "client_id": "c-7"}, "bad_request", "c-7"),
    ({"type": "message", "room": R, "text": "hi", "client_id": "x" * 65}, "bad_request", "message"),
    ({"type": "message", "room": R, "text": "hi", "client_id": 5}, "bad_request", "message"),
    ({"type": "message", "room": R, "text": "hi", "client_id": {"a": 1}}, "bad_request", "message"),
    # unknown_type: ref is the type
    ({"type": "hello"}, "unknown_type", "hello"),
    ({"type": ""}, "unknown_type", ""),
    ({"type": "JOIN", "room": R, "user": "Abuser"}, "unknown_type", "JOIN"),
    ({"type": "message "}, "unknown_type", "message "),
    # invalid_room
    ({"type": "join", "room": "bad room"}, "invalid_room", "join"),
    ({"type": "join", "room": ""}, "invalid_room", "join"),
    ({"type": "join", "room": "x" * 65}, "invalid_room", "join"),
    ({"type": "join", "room": "caf\u00e9"}, "invalid_room", "join"),
    ({"type": "join", "room": "a/b"}, "invalid_room", "join"),
    ({"type": "join", "room": "a\u0000"}, "invalid_room", "join"),
    ({"type": "join", "room": "\uff21"}, "invalid_room", "join"),  # fullwidth A
    ({"type": "leave", "room": "bad room"}, "invalid_room", "leave"),
    ({"type": "message", "room": "bad room", "text": "hi", "client_id": "c9"}, "invalid_room", "c9"),
    ({"type": "message", "room": "bad room", "text": "hi"}, "invalid_room", "message"),
    # invalid_user: the connection is "Abuser" already
    ({"type": "join", "room": R, "user": "Someone"}, "invalid_user", "join"),
    ({"type": "join", "room": R, "user": "abuser"}, "invalid_user", "join"),
    # invalid_text
    ({"type": "message", "room": R, "text": ""}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": " \n\t \u3000 ", "client_id": "c1"}, "invalid_text", "c1"),
    ({"type": "message", "room": R, "text": "x" * 2001}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "  " + "\u20ac" * 2001 + "  "}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "a\u0000b"}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "\u001b[31mred"}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "bell\u0007"}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "a\rb"}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "del\u007f"}, "invalid_text", "message"),
    ({"type": "message", "room": R, "text": "c1\u0085ctl"}, "invalid_text", "message"),
    # U+001C..U+001F are control characters, not Unicode white space: not trimmed away
    ({"type": "message", "room": R, "text": "\u001chi\u001f"}, "invalid_text", "message"),
    # not_joined (a valid room this connection is not in)
    ({"type": "message", "room": R + "_other", "text": "hi", "client_id": "n1"}, "not_joined", "n1"),
    ({"type": "message", "room": R + "_other", "text": "hi"}, "not_joined", "message"),
    ({"type": "leave", "room": R + "_other"}, "not_joined", "leave"),
]


def _fill(value, room):
    if isinstance(value, str):
        return value.replace(R, room)
    if isinstance(value, dict):
        return {k: _fill(v, room) for k, v in value.items()}
    return value


@pytest.mark.once  # the same on either outbound path: not again in the portable pass
@pytest.mark.parametrize("frame, code, ref", CASES, ids=[f"{c}-{n}" for n, (_, c, _) in enumerate(CASES)])
async def test_refused_frame(joined, r, room, frame, code, ref):
    abuser, peer = joined
    before = store_snapshot(r)
    frame = _fill(frame, room)
    await abuser.send(frame if isinstance(frame, str) else json.dumps(frame))
    await expect_error(abuser, code, ref)
    await still_usable(abuser)
    assert store_snapshot(r) == before
    await peer_saw_nothing(peer)
    # And the connection still works for real: a valid message goes through.
    await abuser.say(room, "still here", client_id="ok")
    [echo] = await abuser.messages(1)
    assert (echo["text"], echo["client_id"], echo["user"]) == ("still here", "ok", "Abuser")


async def test_first_join_needs_a_valid_user(cluster, r, room):
    before = store_snapshot(r)
    c = await ChatClient.connect(cluster[2].ws_url)
    for frame, code in [
        ({"type": "join", "room": room}, "bad_request"),  # no user on the first join
        ({"type": "join", "room": room, "user": None}, "bad_request"),
        ({"type": "join", "room": room, "user": ""}, "invalid_user"),
        ({"type": "join", "room": room, "user": "   "}, "invalid_user"),
        ({"type": "join", "room": room, "user": "\t\n\u3000"}, "invalid_user"),
        ({"type": "join", "room": room, "user": "x" * 33}, "invalid_user"),
        ({"type": "join", "room": room, "user": "Bob\u0000"}, "invalid_user"),
        ({"type": "join", "room": room, "user": "Bo\u0007b"}, "invalid_user"),
        ({"type": "join", "room": room, "user": "Bob\u001b[0m"}, "invalid_user"),
        ({"type": "join", "room": room, "user": "\u001fBob\u001c"}, "invalid_user"),
        ({"type": "message", "room": room, "text": "before joining"}, "not_joined"),
        ({"type": "leave", "room": room}, "not_joined"),
    ]:
        await c.send(frame)
        await expect_error(c, code, "message" if frame["type"] == "message" else frame["type"])
        await still_usable(c)
    assert store_snapshot(r) == before  # not even the room was created
    # Trimmed to 32 characters is fine, and the trimmed name is the one kept.
    name = "N" * 32
    joined = await c.join(room, f"  {name}\t")
    assert joined["user"] == name and name in joined["members"]
    assert (await c.join(room + "_b", name))["user"] == name  # same name again: fine
    assert (await c.join(room + "_c"))["user"] == name  # or no name at all
    await c.send({"type": "join", "room": room, "user": "Other"})
    await expect_error(c, "invalid_user", "join")
    await c.close()


async def test_unknown_fields_ignored_and_not_stored(joined, r, room):
    abuser, peer = joined
    frame = {"type": "message", "room": room, "text": "  padded  ", "client_id": "u1",
             "user": "Impostor", "id": "1-1", "ts": 1, "origin": "evil", "extra": [1] * 3000,
             "nested": {"a": {"b": {"c": [None, True, 1.5]}}}}
    await abuser.send(frame)
    [echo] = await abuser.messages(1)
    [seen] = await peer.messages(1)
    assert echo == seen
    assert echo["user"] == "Abuser" and echo["text"] == "padded" and echo["client_id"] == "u1"
    assert echo["id"] != "1-1" and echo["ts"] > 1 and echo["room"] == room
    assert not {"extra", "nested"} & set(echo)
    [(sid, fields)] = r.xrange(layout_of(r).history(room))
    stored = json.loads(fields[b"data"])
    assert sid.decode() == echo["id"]
    assert set(stored) <= {"id", "room", "user", "text", "ts", "client_id"}
    assert (stored["user"], stored["text"]) == ("Abuser", "padded")
    # ping and join with junk fields work too
    await abuser.send({"type": "ping", "room": 5, "junk": {"x": [1, 2]}})
    await abuser.expect("pong")
    big = {"type": "ping", "pad": "x" * 16000}
    assert len(json.dumps(big).encode()) < 16384
    await abuser.send(big)  # huge, but under the frame cap
    await abuser.expect("pong")


async def test_valid_edge_texts_are_accepted(joined, r, room):
    abuser, peer = joined
    texts = {
        "x" * 2000: "x" * 2000,  # exactly CHAT_MAX_TEXT
        "  " + "y" * 2000 + "\n ": "y" * 2000,  # trimmed to the limit
        "\u20ac" * 2000: "\u20ac" * 2000,  # 6000 bytes, 2000 characters
        "\U0001F600" * 2000: "\U0001F600" * 2000,  # 2000 code points (4000 UTF-16 units)
        "line 1\nline 2\tcol": "line 1\nline 2\tcol",
        "\u200bzero width\u200b": "\u200bzero width\u200b",  # not white space, not Cc
    }
    for n, text in enumerate(texts):
        # Sent as a browser would (JSON.stringify does not escape non-ASCII): 2000 emoji
        # written as \ud83d\ude00 escapes would be 24000 bytes, over CHAT_MAX_FRAME.
        await abuser.send(json.dumps({"type": "message", "room": room, "text": text, "client_id": f"e{n}"},
                                     ensure_ascii=False))
    got = await peer.messages(len(texts))
    assert [m["text"] for m in got] == list(texts.values())
    assert [json.loads(f[b"data"])["text"] for _, f in r.xrange(layout_of(r).history(room))] == list(texts.values())


# ---------------------------------------------------------------- frames that close the connection
async def test_binary_frames_are_refused(joined, r, room):
    abuser, peer = joined
    before = store_snapshot(r)
    await abuser.send(json.dumps({"type": "message", "room": room, "text": "as bytes"}).encode())
    await expect_error(abuser, "bad_request")
    await abuser.send(b"\x00\xff\xfe")
    await expect_error(abuser, "bad_request")
    await still_usable(abuser)
    assert store_snapshot(r) == before
    await peer_saw_nothing(peer)


async def test_invalid_utf8_text_frame_fails_the_connection(joined, r):
    """A text frame that is not UTF-8 must fail the connection (RFC 6455 section 8.1); the
    app never sees it. wsproto reports 1007, but Hypercorn 0.18 only sends the close frame
    when the *client* started the closing handshake, so it drops the TCP connection without
    one: the client sees 1006. RFC 6455 7.1.7 makes the close frame a SHOULD, so that is
    allowed; 1007 is accepted too should Hypercorn start sending it."""
    abuser, peer = joined
    before = store_snapshot(r)
    await abuser.ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
    assert await expect_close(abuser) in (1007, None)
    assert store_snapshot(r) == before
    left = await peer.until(lambda f: f["type"] == "user_left")  # it left the room as any close does
    assert left["user"] == "Abuser"
    await still_usable(peer)


@pytest.mark.parametrize("char, count, closes", [
    ("x", 16384, False),  # exactly CHAT_MAX_FRAME bytes: fine
    ("x", 16385, True),
    ("\u20ac", 5500, False),  # trimmed in the test to exactly 16384 bytes
    ("\u20ac", 5500, True),  # 5500 characters, 16500 bytes
    ("\U0001F600", 4100, True),  # 4100 code points, 16400 bytes
])
async def test_frame_over_max_frame_closes_1009(joined, r, room, char, count, closes):
    abuser, peer = joined
    before = store_snapshot(r)
    head, tail = '{"type": "ping", "pad": "', '"}'
    frame = head + char * count + tail
    if not closes:  # make it exactly the limit, in UTF-8 bytes
        while len(frame.encode()) > 16384:
            frame = frame[: len(head)] + frame[len(head) + 1:]
        frame = frame[:-2] + "x" * (16384 - len(frame.encode())) + tail
        assert len(frame.encode()) == 16384
    else:
        assert len(frame.encode()) > 16384
        assert len(frame) <= 16384 or char == "x"  # the multi-byte ones are under in characters
    await abuser.send(frame)
    if closes:
        assert await expect_close(abuser) == 1009
        left = await peer.until(lambda f: f["type"] == "user_left")
        assert left["user"] == "Abuser"
    else:
        await abuser.expect("pong")
    assert store_snapshot(r) == before


async def test_oversized_binary_frame_closes_1009(joined):
    abuser, _peer = joined
    await abuser.send(b"\x00" * 16385)
    assert await expect_close(abuser) == 1009


# ---------------------------------------------------------------- rate limit
async def test_rate_limit(make_cluster, room):
    c = make_cluster(2, env={"CHAT_RATE": "5/2"})
    r = redis_client(c.redis.url)
    sender = await ChatClient.connect(c[0].ws_url)
    watcher = await ChatClient.connect(c[1].ws_url)
    await sender.join(room, "Fast")
    await watcher.join(room, "Watch")
    for n in range(8):
        await sender.say(room, f"m{n}", client_id=f"id{n}")
    accepted, refused, first_ts = [], [], None
    while len(accepted) + len(refused) < 8:
        frame = await sender.until(lambda f: f["type"] in ("message", "error"))
        if frame["type"] == "message":
            accepted.append(frame["client_id"])
            first_ts = first_ts or frame["ts"]  # when the server took the first one
        else:
            assert frame["code"] == "rate_limited"
            refused.append(frame["ref"])
    assert accepted == [f"id{n}" for n in range(5)]
    assert refused == [f"id{n}" for n in range(5, 8)]
    await sender.say(room, "no id")
    await expect_error(sender, "rate_limited", "message")
    await still_usable(sender)  # pings are not rate limited and the socket stays open
    assert r.xlen(layout_of(r).history(room)) == 5
    assert [m["text"] for m in await watcher.messages(5)] == [f"m{n}" for n in range(5)]
    assert await watcher.quiet(0.3) == []
    # Refused messages do not count against the window: once 2 s have passed since the server
    # took the first accepted one (its `ts`, same machine clock), sending works again.
    await asyncio.sleep(max(0.0, (first_ts + 2100) / 1000 - time.time()))
    await sender.say(room, "again", client_id="later")
    echo = await sender.until(lambda f: f["type"] in ("message", "error"))
    assert (echo["type"], echo.get("client_id")) == ("message", "later")
    assert r.xlen(layout_of(r).history(room)) == 6
    # Rate limits are per connection: another connection of the same name is not limited.
    other = await ChatClient.connect(c[0].ws_url)
    await other.join(room, "Fast")
    await other.say(room, "from another tab")
    assert (await other.messages(1))[0]["text"] == "from another tab"
    for cl in (sender, watcher, other):
        await cl.close()


# ---------------------------------------------------------------- cross-site WebSocket hijacking
async def _handshake_status(url: str, origin: str | None) -> int:
    kwargs = {"origin": origin} if origin is not None else {}
    try:
        ws = await asyncio.wait_for(websockets.connect(url, **kwargs), 5)
    except InvalidStatus as err:
        return err.response.status_code
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    await ws.close()
    return 101


async def test_cross_site_origins_refused(cluster):
    inst = cluster[0]
    assert await _handshake_status(inst.ws_url, "http://evil.example") == 403
    assert await _handshake_status(inst.ws_url, "https://evil.example") == 403
    assert await _handshake_status(inst.ws_url, "null") == 403
    assert await _handshake_status(inst.ws_url, f"http://127.0.0.1:{inst.port + 1}") == 403  # other port
    assert await _handshake_status(inst.ws_url, f"http://127.0.0.1.evil.example:{inst.port}") == 403
    assert await _handshake_status(inst.ws_url, f"http://localhost:{inst.port}") == 403  # other host name
    assert await _handshake_status(inst.ws_url, f"http://127.0.0.1:{inst.port}") == 101  # same host:port
    assert await _handshake_status(inst.ws_url, f"HTTP://127.0.0.1:{inst.port}/") == 101
    assert await _handshake_status(inst.ws_url, None) == 101  # not a browser: no Origin


async def test_allowed_origins_setting(make_cluster):
    c = make_cluster(1, env={"CHAT_ALLOWED_ORIGINS": "https://chat.example.com, http://localhost:8080"})
    url = c[0].ws_url
    assert await _handshake_status(url, "https://chat.example.com") == 101
    assert await _handshake_status(url, "http://localhost:8080") == 101
    assert await _handshake_status(url, "https://chat.example.com.evil.example") == 403
    assert await _handshake_status(url, "http://chat.example.com") == 403  # scheme matters
    assert await _handshake_status(url, "http://evil.example") == 403
    assert await _handshake_status(url, f"http://127.0.0.1:{c[0].port}") == 101  # same host still fine


# ---------------------------------------------------------------- HTTP hardening
@pytest.mark.parametrize("path", ["/", "/rooms", "/healthz", "/rooms/never_made_xyz/history",
                                  "/rooms/bad%20name/history", "/static/app.js"])
def test_security_headers(cluster, path):
    status, headers, _ = http(cluster[0].http_url + path)
    assert status in (200, 400, 404)
    headers = {k.lower(): v for k, v in headers.items()}
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


async def test_markup_is_data(cluster, r, room):
    user = "<img src=x onerror=alert(1)>"
    text = "<script>alert('x')</script> &amp; \"quotes\" </textarea>"
    a = await ChatClient.connect(cluster[0].ws_url)
    b = await ChatClient.connect(cluster[1].ws_url)
    assert (await a.join(room, user))["user"] == user
    assert user in (await b.join(room, "Reader"))["members"]
    await a.say(room, text)
    [got] = await b.messages(1)
    assert (got["user"], got["text"]) == (user, text)
    stored = json.loads(r.xrange(layout_of(r).history(room))[0][1][b"data"])
    assert (stored["user"], stored["text"]) == (user, text)
    status, headers, body = http(cluster[2].http_url + f"/rooms/{room}/history")
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and headers["content-type"].startswith("application/json")
    [msg] = json.loads(body)["messages"]
    assert (msg["user"], msg["text"]) == (user, text)
    late = await ChatClient.connect(cluster[2].ws_url)
    [hist] = (await late.join(room, "Late"))["history"]
    assert (hist["user"], hist["text"]) == (user, text)
    # The page never carries user data: it is a static shell with no inline script.
    status, headers, page = http(cluster[0].http_url + "/")
    assert status == 200 and b"<script>alert" not in page and b"onerror" not in page
    for cl in (a, b, late):
        await cl.close()


# ---------------------------------------------------------------- secrets
@pytest.mark.once  # the same on either outbound path: not again in the portable pass
@pytest.mark.single_redis  # its own redis-server with a password, stopped and started
async def test_logs_never_show_the_redis_password(make_cluster, tmp_path, room):
    password = "Sup3r-s3cret-pw-7f1c"
    wrong = "Wr0ng-s3cret-pw-a9d2"
    rp = RedisProcess(tmp_path, password=password).start()
    try:
        c = make_cluster(2, redis=rp)
        a = await ChatClient.connect(c[0].ws_url)
        await a.join(room, "A")
        await a.say(room, "hello")
        await a.messages(1)
        # Errors are what gets logged: an outage (reconnect loops, failed sends) ...
        await asyncio.to_thread(rp.stop)
        await a.say(room, "lost")
        await expect_error(a, "unavailable", "message")
        status, _, body = await asyncio.to_thread(http, c[0].http_url + "/healthz")
        assert status == 503 and password.encode() not in body
        await asyncio.sleep(1.5)
        await asyncio.to_thread(rp.start)
        await asyncio.to_thread(c[0].wait_ready, 15)
        # ... and an instance started with a wrong password (authentication errors).
        bad_url = rp.url.replace(password, wrong)
        bad = ChatInstance(tmp_path, bad_url, "bad-auth", {"CHAT_RATE": "100000/1"}).start(wait=False)
        try:
            await asyncio.to_thread(bad.wait_ready, 20, False)
            assert await asyncio.to_thread(bad.health_status) == 503
            ws = await ChatClient.connect(bad.ws_url)
            await ws.send({"type": "join", "room": room, "user": "B"})
            await expect_error(ws, "unavailable", "join")
            await ws.close()
            await asyncio.sleep(1.0)
        finally:
            bad.stop()
        await a.close()
        for inst in c.instances:
            inst.stop()
        logs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
        assert any("***" in text for text in logs.values())  # the redacted URL was logged
        for name, text in logs.items():
            if name.startswith("redis"):
                continue
            assert password not in text, f"{name} shows the Redis password"
            assert wrong not in text, f"{name} shows the (wrong) Redis password"
    finally:
        rp.stop()


async def test_rooms_per_connection_are_bounded(cluster, room):
    """Joins create rooms every client hears of: one connection gets at most ROOMS_PER_CONNECTION of them."""
    from quart_chat.session import ROOMS_PER_CONNECTION as MAX_ROOMS

    r = redis_client(cluster.redis.url)
    c = await ChatClient.connect(cluster[0].ws_url)
    for n in range(MAX_ROOMS):
        await c.join(f"{room}_{n}", "Collector")
    await c.send({"type": "join", "room": f"{room}_extra"})
    await expect_error(c, "rate_limited", "join")
    assert r.zscore(layout_of(r).rooms, f"{room}_extra") is None  # refused means not created
    await c.send({"type": "join", "room": f"{room}_0"})  # the join budget is spent too
    await expect_error(c, "rate_limited", "join")
    await still_usable(c)
