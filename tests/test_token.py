"""Token mode for real (PROTOCOL.md section 9): instances with CHAT_AUTH=token, tokens signed
here with PyJWT (HS256 with a shared secret, RS256 with a key pair made for the run) or by
hand for the attacks PyJWT will not sign.

Every refusal is an HTTP 401 before the upgrade; the user is the token's; a room the token
does not allow gets `forbidden` and nothing is created (checked in Redis); REST needs the
token, 403 for a forbidden room; a token that expires while connected closes with 1008.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
import redis
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus

from client import ChatClient
from cluster import Cluster, RedisProcess, scrape

pytestmark = pytest.mark.timeout(90)

SECRET = "test-secret-" + "x" * 60  # long enough for HS384 too (no key-length warning)
AUDIENCE = "quart-chat-test"
ISSUER = "https://site.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(name: str = "Alice", ttl: float = 600, **over) -> dict:
    base = {"sub": f"id-{name}", "name": name, "exp": int(time.time() + ttl)}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def hs(name: str = "Alice", rooms: list[str] | None = None, ttl: float = 600, **over) -> str:
    if rooms is not None:
        over["rooms"] = rooms
    return jwt.encode(claims(name, ttl, **over), SECRET, algorithm="HS256")


# ---------------------------------------------------------------- the instances
@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "site.pub"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path


@pytest.fixture(scope="module")
def token_redis(tmp_path_factory):
    """A Redis for these tests alone: their rooms stay out of other tests' room lists."""
    proc = RedisProcess(tmp_path_factory.mktemp("token-redis")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def hs_cluster(token_redis, tmp_path_factory):
    """Two instances, HS256."""
    env = {"CHAT_RATE": "100000/1", "CHAT_AUTH": "token", "CHAT_JWT_SECRET": SECRET}
    c = Cluster(2, env=env, logdir=tmp_path_factory.mktemp("token-hs"), redis=token_redis).start()
    yield c
    c.close()


@pytest.fixture(scope="module")
def rs_cluster(token_redis, rsa_key, tmp_path_factory):
    """One instance, RS256 with the public key in a file, audience and issuer required."""
    env = {"CHAT_RATE": "100000/1", "CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": str(rsa_key[1]),
           "CHAT_JWT_AUDIENCE": AUDIENCE, "CHAT_JWT_ISSUER": ISSUER}
    c = Cluster(1, env=env, logdir=tmp_path_factory.mktemp("token-rs"), redis=token_redis).start()
    yield c
    c.close()


@pytest.fixture
def r(token_redis):
    client = redis.Redis.from_url(token_redis.url, decode_responses=True)
    yield client
    client.close()


def rs(key, name: str = "Alice", **over) -> str:
    return jwt.encode(claims(name, aud=AUDIENCE, iss=ISSUER, **over), key, algorithm="RS256")


# ---------------------------------------------------------------- helpers
async def connect(inst, token: str | None = None, **kwargs) -> ChatClient:
    url = inst.ws_url + (f"?token={token}" if token is not None else "")
    return await ChatClient.connect(url, **kwargs)


async def handshake_status(inst, token: str | None = None, headers: dict | None = None) -> tuple[int, str]:
    """The handshake's HTTP status (101 when it upgraded) and the refusal's body."""
    url = inst.ws_url + (f"?token={token}" if token is not None else "")
    try:
        ws = await asyncio.wait_for(websockets.connect(url, additional_headers=headers or {}), 5)
    except InvalidStatus as err:
        return err.response.status_code, err.response.body.decode(errors="replace")
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    await ws.close()
    return 101, ""


def http(url: str, token: str | None = None, scheme: str = "Bearer") -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


async def expect_close(client: ChatClient, timeout: float) -> int | None:
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), timeout)
    except ConnectionClosed as err:
        return err.rcvd.code if err.rcvd is not None else None


def created(r: redis.Redis, room: str) -> bool:
    return r.zscore("chat:rooms", room) is not None or r.exists(f"chat:history:{room}") > 0


# ---------------------------------------------------------------- the handshake
def hand_signed(header: dict, payload: dict, key: bytes) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


async def test_handshake_refusals_hs256(hs_cluster):
    inst = hs_cluster[0]
    before = scrape(inst)
    now = int(time.time())
    cases = {
        "no token": None,
        "empty token": "",
        "not a JWT": "abc.def.ghi",
        "bad signature": jwt.encode(claims(), "another-secret-" + "y" * 32, algorithm="HS256"),
        "tampered payload": (lambda t: t.split(".")[0] + "." + b64(json.dumps(claims("Mallory")).encode())
                             + "." + t.split(".")[2])(hs()),
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode()) + ".",
        "HS384 with the right secret": jwt.encode(claims(), SECRET, algorithm="HS384"),
        "expired": jwt.encode(claims(exp=now - 5), SECRET, algorithm="HS256"),
        "no exp": jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
        "no name": jwt.encode(claims(name=None), SECRET, algorithm="HS256"),
        "bad name": hs("x" * 40),
        "not yet valid": jwt.encode(claims(nbf=now + 600), SECRET, algorithm="HS256"),
        "unexpected audience": jwt.encode(claims(aud="elsewhere"), SECRET, algorithm="HS256"),
    }
    for what, token in cases.items():
        status, body = await handshake_status(inst, token)
        assert status == 401, (what, status, body)
        assert body.startswith("token refused: "), (what, body)
        if token:
            assert token not in body
    # The same refusals through the Authorization header (clients other than browsers).
    assert (await handshake_status(inst, headers={"Authorization": "Bearer " + cases["expired"]}))[0] == 401
    assert (await handshake_status(inst, headers={"Authorization": "Basic " + hs()}))[0] == 401
    # The good ones upgrade, by query or by header.
    assert (await handshake_status(inst, hs()))[0] == 101
    assert (await handshake_status(inst, headers={"Authorization": "Bearer " + hs()}))[0] == 101
    after = scrape(inst)
    key = 'quart_chat_refused_handshakes_total{reason="token"}'
    assert after.get(key, 0) - before.get(key, 0) == len(cases) + 2, {k: v for k, v in after.items() if "refused" in k}
    log = inst.tail(400)
    assert "token expired (401)" in log and "token bad signature (401)" in log
    for token in cases.values():
        if token:
            assert token not in log  # never logged


async def test_handshake_refusals_rs256(rs_cluster, rsa_key):
    key, pub_path = rsa_key
    inst = rs_cluster[0]
    pem = pub_path.read_bytes()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "another key": rs(other),
        "HS256 keyed with the public key (key confusion)": hand_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(aud=AUDIENCE, iss=ISSUER), pem),
        "HS256 with the test secret": jwt.encode(claims(aud=AUDIENCE, iss=ISSUER), SECRET, algorithm="HS256"),
        "no audience": jwt.encode(claims(iss=ISSUER), key, algorithm="RS256"),
        "wrong audience": jwt.encode(claims(aud="other", iss=ISSUER), key, algorithm="RS256"),
        "no issuer": jwt.encode(claims(aud=AUDIENCE), key, algorithm="RS256"),
        "wrong issuer": jwt.encode(claims(aud=AUDIENCE, iss="https://evil.example"), key, algorithm="RS256"),
        "expired": rs(key, exp=int(time.time()) - 1),
    }
    for what, token in cases.items():
        status, body = await handshake_status(inst, token)
        assert status == 401, (what, status, body)
    assert (await handshake_status(inst, rs(key)))[0] == 101


# ---------------------------------------------------------------- who, and where
async def test_the_user_is_the_tokens(hs_cluster, room):
    alice = await connect(hs_cluster[0], hs("Alice"))
    bob = await connect(hs_cluster[1], hs("Bob"))
    try:
        joined = await alice.join(room)  # no user: the token's
        assert joined["user"] == "Alice" and joined["members"] == ["Alice"]
        assert (await bob.join(room, "Bob"))["user"] == "Bob"  # repeating it is fine
        assert (await alice.expect("user_joined"))["user"] == "Bob"
        # Any other name: invalid_user, before and after the first join.
        await bob.send({"type": "join", "room": room + "_2", "user": "Alice"})
        err = await bob.expect("error")
        assert (err["code"], err["ref"]) == ("invalid_user", "join")
        carol = await connect(hs_cluster[0], hs("Carol"))
        await carol.send({"type": "join", "room": room, "user": "Alice"})
        assert (await carol.expect("error"))["code"] == "invalid_user"
        await carol.send({"type": "ping"})
        await carol.expect("pong")
        await carol.close()
        await alice.say(room, "hello", client_id="c1")
        for cl in (alice, bob):
            msg = (await cl.messages(1, room=room))[0]
            assert (msg["user"], msg["text"]) == ("Alice", "hello")
    finally:
        await alice.close()
        await bob.close()


async def test_edits_belong_to_the_tokens_sub_not_its_name(hs_cluster, room):
    """Two tokens with one name and two subs are two authors: neither edits or deletes the
    other's messages; the author's sub, kept in Redis, is never served."""
    alice = await connect(hs_cluster[0], hs("Alice"))
    other = await connect(hs_cluster[1], hs("Alice", sub="id-someone-else"))
    again = await connect(hs_cluster[0], hs("Alice"))
    try:
        for cl in (alice, other, again):
            await cl.join(room)
        await alice.send({"type": "message", "room": room, "text": "mine", "client_id": "m"})
        mid = (await alice.until(lambda f: f["type"] == "ack"))["id"]
        for kind, extra in (("edit", {"text": "not yours"}), ("delete", {})):
            await other.send({"type": kind, "room": room, "id": mid, "client_id": kind, **extra})
            err = await other.until(lambda f: f["type"] == "error")
            assert (err["code"], err["ref"]) == ("forbidden", kind)
        await again.send({"type": "edit", "room": room, "id": mid, "text": "mine, edited", "client_id": "e"})
        assert (await again.until(lambda f: f["type"] == "ack"))["client_id"] == "e"
        late = await connect(hs_cluster[1], hs("Carol"))
        history = (await late.join(room))["history"]
        await late.close()
        assert [(m["text"], m["user"]) for m in history] == [("mine, edited", "Alice")]
        assert "id-Alice" not in json.dumps(history)
    finally:
        for cl in (alice, other, again):
            await cl.close()


async def test_forbidden_rooms_create_nothing(hs_cluster, r, room):
    token = hs("Dana", rooms=[room + "_general", room + "_team-*"])
    dana = await connect(hs_cluster[0], token)
    watcher = await connect(hs_cluster[1], hs("Watcher"))
    try:
        await watcher.join(room + "_w")
        for name in (room + "_dev", room + "_team", room + "_teamx", room + "_general2", "general"):
            await dana.send({"type": "join", "room": name})
            err = await dana.expect("error")
            assert (err["code"], err.get("ref")) == ("forbidden", "join"), err
            assert not created(r, name), name
        assert (await dana.join(room + "_general"))["user"] == "Dana"
        assert (await dana.join(room + "_team-red"))["room"] == room + "_team-red"
        # Forbidden rooms made no room_created anywhere; the allowed ones did.
        # (the watcher's own room's room_created may come after its joined: pub/sub is not the reply)
        seen = [f["room"] for f in await watcher.quiet(0.5)
                if f["type"] == "room_created" and f["room"] != room + "_w"]
        assert sorted(seen) == sorted([room + "_general", room + "_team-red"])
        # A message to a forbidden room is not_joined (it was never joined).
        await dana.say(room + "_dev", "x")
        assert (await dana.expect("error"))["code"] == "not_joined"
        # An empty list allows nothing.
        nobody = await connect(hs_cluster[0], hs("Nobody", rooms=[]))
        await nobody.send({"type": "join", "room": room + "_general"})
        assert (await nobody.expect("error"))["code"] == "forbidden"
        await nobody.close()
    finally:
        await dana.close()
        await watcher.close()


# ---------------------------------------------------------------- REST
async def test_rest_needs_the_token(hs_cluster, room):
    inst = hs_cluster[0]
    base = inst.http_url
    allowed, hidden = room + "_open", room + "_secret"
    alice = await connect(inst, hs("Alice"))  # every room
    try:
        await alice.join(allowed)
        await alice.join(hidden)
        await alice.say(allowed, "in the open")
        await alice.messages(1, room=allowed)
    finally:
        await alice.close()
    limited = hs("Lim", rooms=[allowed])
    for path in ("/rooms", "/rooms?limit=1", f"/rooms/{allowed}/history", "/rooms/never_made/history"):
        for token, scheme in ((None, "Bearer"), ("", "Bearer"), (hs(ttl=-10), "Bearer"), (hs(), "Basic"),
                              (jwt.encode(claims(), "nope-" * 10, algorithm="HS256"), "Bearer")):
            status, headers, body = http(base + path, token, scheme)
            assert status == 401, (path, token, status)
            assert json.loads(body)["error"]["code"] == "unauthorized"
            assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = http(base + f"/rooms/{allowed}/history", limited)
    assert status == 200 and [m["text"] for m in json.loads(body)["messages"]] == ["in the open"]
    # A room the token does not allow: 403, whether it exists or not (nothing said about it).
    for name in (hidden, room + "_never"):
        status, _, body = http(base + f"/rooms/{name}/history", limited)
        assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
    assert http(base + "/rooms/bad%20name/history", limited)[0] == 400
    # Open to anyone: the page, its files, health and metrics.
    for path in ("/", "/static/app.js", "/healthz", "/metrics"):
        assert http(base + path)[0] == 200, path


async def test_room_list_shows_only_allowed_rooms(hs_cluster, room):
    inst = hs_cluster[1]
    names = [f"{room}_{k}_{kind}" for k in range(6) for kind in ("team", "other")]
    alice = await connect(inst, hs("Alice"))
    try:
        for name in names:
            await alice.join(name)
    finally:
        await alice.close()
    limited = hs("Lim", rooms=[f"{room}_*_team"])
    every, after = [], ""
    while after is not None:  # the whole list (other tests' rooms too), page by page
        page = json.loads(http(inst.http_url + "/rooms" + (f"?after={after}" if after else ""), hs())[2])
        every += [r["name"] for r in page["rooms"]]
        after = page["next"]
    mine = [n for n in every if n.startswith(room + "_")]  # creation order (ms, then name)
    assert sorted(mine) == sorted(names)
    # Page by page, two at a time: every `next` is a room the token allows.
    got, after, pages = [], None, 0
    while True:
        url = inst.http_url + "/rooms?limit=2" + (f"&after={after}" if after else "")
        status, _, body = http(url, limited)
        assert status == 200
        page = json.loads(body)
        got += [r["name"] for r in page["rooms"]]
        pages += 1
        if page["next"] is None:
            break
        assert page["next"].endswith("_team"), page
        after = page["next"]
    assert got == [n for n in mine if n.endswith("_team")]
    assert pages == 3
    # A forbidden room as `after` is a 403, as its history is.
    assert http(inst.http_url + f"/rooms?after={room}_0_other", limited)[0] == 403


# ---------------------------------------------------------------- expiry while connected
async def test_a_token_that_expires_while_connected_closes_1008(hs_cluster, room):
    inst = hs_cluster[0]
    before = scrape(inst)
    short = jwt.encode(claims("Eve", ttl=2.5), SECRET, algorithm="HS256")
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    eve = await connect(inst, short)
    peer = await connect(hs_cluster[1], hs("Peer"))
    try:
        await peer.join(room)
        await eve.join(room)
        assert (await peer.expect("user_joined"))["user"] == "Eve"
        await eve.say(room, "before expiry")
        assert (await eve.messages(1, room=room))[0]["text"] == "before expiry"
        code = await expect_close(eve, timeout=10)
        closed_at = time.time()
        assert code == 1008
        assert exp - 0.1 <= closed_at <= exp + 2.0, (exp, closed_at)
        left = await peer.until(lambda f: f["type"] == "user_left", timeout=10)
        assert left["user"] == "Eve"
        # The same token cannot come back.
        assert (await handshake_status(inst, short))[0] == 401
        after = scrape(inst)
        assert after.get('quart_chat_closes_total{close_code="1008"}', 0) - \
            before.get('quart_chat_closes_total{close_code="1008"}', 0) == 1
        assert "with 1008 (token expired)" in inst.tail(100)
    finally:
        await eve.close()
        await peer.close()


async def test_a_connection_that_closes_first_leaves_no_timer_behind(tmp_path):
    """The expiry timer goes with its connection. In process (Quart's test client on a real
    redis-server): once a connection whose token has not expired yet is closed, nothing may
    still hold its session (a timer left in the loop would, until the token expires)."""
    import gc
    import weakref

    from quart_chat import auth
    from quart_chat.app import create_app
    from quart_chat.chat import get_chat
    from quart_chat.config import Settings

    proc = RedisProcess(tmp_path).start()
    try:
        app = create_app(Settings(redis_url=proc.url, instance="in-process", auth="token", jwt_secret=SECRET))
        async with app.test_app() as test_app:
            token = auth.issue(SECRET.encode(), "HS256", "Tim", "tim", None, 3600, "", "")
            sessions = []
            for _ in range(3):
                async with test_app.test_client().websocket(f"/ws?token={token}") as ws:
                    await ws.send(json.dumps({"type": "ping"}))
                    assert json.loads(await ws.receive()) == {"type": "pong"}
                    async with app.app_context():
                        [session] = list(get_chat().hub.receivers)
                    sessions.append(weakref.ref(session))
                    del session
                for _ in range(20):  # the view's clean-up runs as the test connection closes
                    if not get_receivers(app):
                        break
                    await asyncio.sleep(0.05)
            gc.collect()
            assert [ref() for ref in sessions] == [None, None, None], "a closed connection is still held"
    finally:
        proc.stop()


def get_receivers(app) -> list:
    return list(app.extensions["quart_chat"].hub.receivers)


async def test_rs256_end_to_end(rs_cluster, rsa_key, room):
    key, _ = rsa_key
    inst = rs_cluster[0]
    rita = await connect(inst, rs(key, "Rita", rooms=[room]))
    try:
        assert (await rita.join(room))["user"] == "Rita"
        await rita.send({"type": "join", "room": room + "_x"})
        assert (await rita.expect("error"))["code"] == "forbidden"
        await rita.say(room, "signed by the site")
        await rita.messages(1, room=room)
        status, _, body = http(inst.http_url + f"/rooms/{room}/history", rs(key, "Rita", rooms=[room]))
        assert status == 200 and json.loads(body)["messages"][0]["user"] == "Rita"
        assert http(inst.http_url + f"/rooms/{room}/history", hs())[0] == 401  # an HS256 token here
    finally:
        await rita.close()
