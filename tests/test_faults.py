"""Faults caused for real: Redis goes away, an instance is SIGKILLed or SIGTERMed, a client
stops reading. Every test runs its own private cluster so the shared one is never disturbed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest
import redis
from websockets.exceptions import ConnectionClosed

from client import ChatClient, id_key
from cluster import RedisProcess, layout_of, redis_client

pytestmark = [pytest.mark.timeout(90), pytest.mark.per_version, pytest.mark.portable]


# ---------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
async def close_clients(make_cluster, monkeypatch):
    """Close every client a test opened before its cluster stops (an open WebSocket makes
    each instance wait out its graceful timeout)."""
    opened: list[ChatClient] = []
    connect = ChatClient.connect.__func__

    async def recording_connect(cls, url, **kwargs):
        client = await connect(cls, url, **kwargs)
        opened.append(client)
        return client

    monkeypatch.setattr(ChatClient, "connect", classmethod(recording_connect))
    yield
    await asyncio.gather(*(asyncio.wait_for(cl.ws.close(), 2) for cl in opened), return_exceptions=True)


def http_get(url: str) -> tuple[int | None, dict | None]:
    """Status and JSON body of a GET, or (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
    except OSError:
        return None, None


async def wait_for_health(inst, status: int, timeout: float) -> float:
    """Poll /healthz until it answers ``status``; return how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        got, body = await asyncio.to_thread(http_get, inst.http_url + "/healthz")
        if got == status:
            if status == 503:
                assert body["redis"] == "down"
            return loop.time() - start
        assert loop.time() - start < timeout, f"/healthz of {inst.name} still {got}, wanted {status}"
        await asyncio.sleep(0.2)


class Reader:
    """Reads one connection in the background and sorts what arrives."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.messages: list[dict] = []
        self.events: list[dict] = []
        self.others: list[dict] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = json.loads(await self.client.ws.recv())
                if frame["type"] == "message":
                    self.messages.append(frame)
                elif frame["type"] in ("user_joined", "user_left", "room_created"):
                    self.events.append(frame)
                else:
                    self.others.append(frame)
                self.changed.set()
        except ConnectionClosed as err:
            self.close_code = err.rcvd.code if err.rcvd is not None else None
        finally:
            self.closed.set()
            self.changed.set()

    async def wait(self, pred, timeout: float, what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            assert left > 0, f"timed out waiting for {what}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    def texts(self, room: str | None = None) -> list[str]:
        return [m["text"] for m in self.messages if room is None or m["room"] == room]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def stream_texts(r: redis.Redis, room: str) -> list[tuple[str, str]]:
    """(id, text) of every entry of a room's stream, in stream order."""
    return [(sid.decode(), json.loads(f[b"data"])["text"]) for sid, f in r.xrange(layout_of(r).history(room))]


def assert_in_order_once(msgs: list[dict]) -> None:
    ids = [m["id"] for m in msgs]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert ids == sorted(ids, key=id_key), "messages out of id order"


# Frames a test passes over while it waits for another: room events and acks of its sends.
SKIP = ("room_created", "user_joined", "user_left", "ack")


async def ping(client: ChatClient) -> None:
    await client.send({"type": "ping"})
    await client.expect("pong", timeout=3, skip=SKIP)


async def nothing_more(client: ChatClient, seconds: float = 1.0) -> list[dict]:
    """The message frames that still arrive: what comes within ``seconds``, then until a pong.

    The pong is queued behind whatever the instance had already queued for this client, and
    ``seconds`` leaves time for a late duplicate still on its way through Redis.
    """
    got = await client.quiet(seconds)
    await client.send({"type": "ping"})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while (frame := await client.recv(max(0.01, deadline - loop.time())))["type"] != "pong":
        got.append(frame)
    return [f for f in got if f["type"] == "message"]


# ---------------------------------------------------------------- 1. Redis goes away
@pytest.mark.single_redis  # stops and starts the Redis
async def test_redis_outage_unavailable_then_recovery_with_catch_up(make_cluster, room):
    c = make_cluster(3)
    r = redis.Redis.from_url(c.redis.url)
    clients = [await ChatClient.connect(c[k].ws_url) for k in range(3)]
    for k, cl in enumerate(clients):
        await cl.join(room, f"U{k}")
    a, b, d = clients
    await a.say(room, "before", client_id="b-0")
    for cl in clients:
        assert [m["text"] for m in await cl.messages(1)] == ["before"]
    stored_before = r.xlen(f"chat:history:{room}")
    assert stored_before == 1
    ws_objects = [cl.ws for cl in clients]

    await asyncio.to_thread(c.redis.stop)
    loop = asyncio.get_running_loop()
    # A send fails at once with `unavailable`, on every instance, and the socket stays open.
    for k, cl in enumerate(clients):
        t0 = loop.time()
        await cl.say(room, f"lost-{k}", client_id=f"lost-{k}")
        err = await cl.expect("error", timeout=2, skip=SKIP)
        assert loop.time() - t0 < 2
        assert (err["code"], err["ref"]) == ("unavailable", f"lost-{k}")
        await cl.say(room, "lost again")  # no client_id: ref is the type
        err = await cl.expect("error", timeout=2, skip=SKIP)
        assert (err["code"], err["ref"]) == ("unavailable", "message")
        await ping(cl)
    # A join fails the same way and leaves nothing half-done.
    await a.send({"type": "join", "room": room + "_x", "user": "U0"})
    err = await a.expect("error", timeout=2, skip=SKIP)
    assert (err["code"], err["ref"]) == ("unavailable", "join")
    for inst in c.instances:
        assert await wait_for_health(inst, 503, timeout=6) < 6

    # Instance 2 is paused while its subscriber is still trying to reconnect (its /healthz
    # said so above), so what the others store meanwhile can only reach its client through
    # catch-up from the stream.
    c[2].signal(signal.SIGSTOP)
    try:
        await asyncio.to_thread(c.redis.start)
        restarted = loop.time()
        sent: list[str] = []
        n = 0
        while len(sent) < 10:
            assert loop.time() - restarted < 10, "Redis is back but sends still fail"
            text = f"after-{n}"
            await a.say(room, text, client_id=f"c-{n}")
            n += 1
            # Either the echo (stored) or `unavailable` (not yet reconnected) comes back.
            frame = await a.until(lambda f: f["type"] in ("message", "error"), timeout=10)
            if frame["type"] == "error":
                assert frame["code"] == "unavailable"
                await asyncio.sleep(0.1)
                continue
            assert frame["text"] == text
            sent.append(text)
        # Across instances, with nobody reconnecting.
        got_b = await b.messages(10, timeout=10)
        assert [m["text"] for m in got_b] == sent
        assert loop.time() - restarted < 10
        assert r.pubsub_numsub("chat:messages")[0][1] == 2  # instance 2 is not subscribed
    finally:
        c[2].signal(signal.SIGCONT)
    got_d = await d.messages(10, timeout=10)
    assert [m["text"] for m in got_d] == sent
    assert_in_order_once(got_b)
    assert [m["id"] for m in got_d] == [m["id"] for m in got_b]
    # No duplicate comes late (the catch-up and the live path both had these messages).
    assert await asyncio.gather(*(nothing_more(cl) for cl in clients)) == [[], [], []]
    assert [cl.ws for cl in clients] == ws_objects
    # Nothing of the outage was stored.
    assert [t for _, t in stream_texts(r, room)] == ["before", *sent]
    for inst in c.instances:
        await wait_for_health(inst, 200, timeout=10)
    # And live delivery goes on everywhere, instance 2 included.
    await d.say(room, "from the paused one")
    for cl in clients:
        assert [m["text"] for m in await cl.messages(1)] == ["from the paused one"]


@pytest.mark.once  # the same on either outbound path: not again in the portable pass
@pytest.mark.single_redis  # freezes the Redis (SIGSTOP)
async def test_redis_frozen_unavailable_means_not_stored(make_cluster, room):
    """Redis stops answering without closing anything (SIGSTOP: a stalled host, a long fork).
    A send must still be answered `unavailable` within a few seconds, and since that answer
    promises "neither stored nor delivered", the command Redis runs late must do nothing."""
    c = make_cluster(2)
    r = redis.Redis.from_url(c.redis.url)
    a = await ChatClient.connect(c[0].ws_url)
    b = await ChatClient.connect(c[1].ws_url)
    await a.join(room, "A")
    await b.join(room, "B")
    loop = asyncio.get_running_loop()
    c.redis.signal(signal.SIGSTOP)
    try:
        t0 = loop.time()
        await a.say(room, "into the freeze", client_id="f-1")
        err = await a.expect("error", timeout=6, skip=SKIP)
        waited = loop.time() - t0
        assert (err["code"], err["ref"]) == ("unavailable", "f-1")
        assert waited < 4.5, f"`unavailable` took {waited:.1f} s"
        await ping(a)  # the connection itself is fine
        status, body = await asyncio.to_thread(http_get, c[1].http_url + "/healthz")
        assert status == 503 and body["redis"] == "down"
    finally:
        c.redis.signal(signal.SIGCONT)
    # Redis now runs the queued command, past its deadline: it must store and send nothing.
    await a.say(room, "after the thaw", client_id="f-2")
    got = await b.messages(1, timeout=10)
    assert [m["text"] for m in got] == ["after the thaw"]
    assert [t for _, t in stream_texts(r, room)] == ["after the thaw"]
    assert [m["text"] for m in await a.messages(1)] == ["after the thaw"]
    assert await asyncio.gather(nothing_more(a), nothing_more(b)) == [[], []]
    for inst in c.instances:
        await wait_for_health(inst, 200, timeout=10)


class Collecting:
    """A hub receiver that keeps the frames it is given."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.frames: list[dict] = []

    def deliver(self, frame: str) -> None:
        self.frames.append(json.loads(frame))

    deliver_lazy = deliver


@pytest.mark.once  # the same on either outbound path: not again in the portable pass
@pytest.mark.single_redis  # its own redis-server, the single-Redis subscriber and key names
async def test_catch_up_covers_a_join_in_flight(tmp_path, room):
    """G2 and G5 together, at the one moment they meet: a join whose history was read before
    this instance's subscriber (re)subscribed, but which completes after the catch-up ran.
    What was stored in between is neither in its history nor ever published to this
    instance again: only the catch-up can deliver it. (Found by the soak test, on clients
    reconnecting to an instance that was starting; replayed here step by step, with the
    same calls `Session._join` and the subscriber make, on a real Redis.)"""
    from quart_chat.broker import Broker
    from quart_chat.config import Settings
    from quart_chat.rooms import Hub
    from quart_chat.subscriber import on_message

    proc = RedisProcess(tmp_path).start()
    hub = Hub()
    here = Broker(Settings(redis_url=proc.url, instance="here"), hub)
    there = Broker(Settings(redis_url=proc.url, instance="there"), Hub())
    try:
        await there.append(room, "W", "m0", None)
        joiner = Collecting(here.node + "|1")
        hub.begin_join(joiner, room)  # Session._join: register, then read history
        result = await here.join(room, "R", joiner.key, None)
        assert [json.loads(m)["text"] for m in result.history] == ["m0"]
        await there.append(room, "W", "m1", None)  # stored before this instance subscribes
        await here.subscriber.catch_up()  # the subscriber has just (re)subscribed
        hub.finish_join(joiner, room, result.last)  # the join completes
        await there.append(room, "W", "m2", None)
        [(sid, fields)] = (await there.redis.xrange(f"chat:history:{room}"))[2:]
        payload = f'{{"id":"{sid}",{fields["data"][1:-1]},"origin":"there"}}'  # as store.APPEND_LUA
        on_message(hub, payload)  # m2 arrives live through pub/sub
        assert [f["text"] for f in joiner.frames if f["type"] == "message"] == ["m1", "m2"]
    finally:
        await here.redis.aclose()
        await there.redis.aclose()
        proc.stop()


# ---------------------------------------------------------------- 2. SIGKILL
@pytest.mark.once  # the same on either outbound path: not again in the portable pass
@pytest.mark.single_redis  # counts the deployment's instances in Redis: on the shared cluster there are more
async def test_instance_sigkilled_mid_traffic(make_cluster, room):
    c = make_cluster(3)
    r = redis.Redis.from_url(c.redis.url)
    loop = asyncio.get_running_loop()
    senders = [await ChatClient.connect(c[k].ws_url) for k in (0, 1)]
    watchers = [await ChatClient.connect(c[k].ws_url) for k in (0, 1)]
    victim = await ChatClient.connect(c[2].ws_url)  # will reconnect
    ghost = await ChatClient.connect(c[2].ws_url)  # will not
    for k, s in enumerate(senders):
        await s.join(room, f"Sender{k}")
    for k, w in enumerate(watchers):
        await w.join(room, f"Watcher{k}")
    await victim.join(room, "Victim")
    assert set((await ghost.join(room, "Ghost"))["members"]) == {
        "Sender0", "Sender1", "Watcher0", "Watcher1", "Victim", "Ghost"}
    readers = [Reader(cl) for cl in (*senders, *watchers, victim, ghost)]
    per_sender = 150

    async def send_all(k: int, s: ChatClient) -> None:
        for n in range(per_sender):
            await s.say(room, f"{k}:{n}", client_id=f"{k}-{n}")
            await asyncio.sleep(0.01)

    traffic = asyncio.gather(*(send_all(k, s) for k, s in enumerate(senders)))
    victim_reader = readers[4]
    await victim_reader.wait(lambda: len(victim_reader.messages) >= 40, 10, "traffic to reach the victim")
    await asyncio.to_thread(c[2].kill)
    killed = loop.time()
    await traffic
    total = 2 * per_sender
    # The clients of the other instances keep receiving everything, once and in order.
    for rd in readers[:4]:
        await rd.wait(lambda rd=rd: len(rd.messages) >= total, 15, "every message on the survivors")
    for rd in readers[:4]:
        assert_in_order_once(rd.messages)
        assert len(rd.messages) == total and rd.close_code is None
    reference = [m["id"] for m in readers[0].messages]
    assert all([m["id"] for m in rd.messages] == reference for rd in readers[1:4])
    stored = stream_texts(r, room)
    assert [sid for sid, _ in stored] == reference
    # The killed instance's clients lost their connection without a close frame.
    for rd in readers[4:]:
        await asyncio.wait_for(rd.closed.wait(), 5)
        assert rd.close_code is None
    seen = victim_reader.messages
    assert 0 < len(seen) < total
    assert_in_order_once(seen)

    await asyncio.to_thread(c[2].start)
    again = await ChatClient.connect(c[2].ws_url)
    joined = await again.join(room, "Victim", since=seen[-1]["id"])
    assert joined["gap"] is False
    recovered = [m["id"] for m in seen] + [m["id"] for m in joined["history"]]
    assert recovered == reference  # every message, once, in order, with nothing lost
    await senders[0].say(room, "live again")
    [live] = await again.messages(1)
    assert live["text"] == "live again"

    # The dead node's members are swept (heartbeat every 5 s, dead after 15 s silence) and
    # a user_left is published for them.
    watcher = readers[2]
    def left() -> list[dict]:
        return [e for e in watcher.events if e["type"] == "user_left"]

    await watcher.wait(lambda: any(e["user"] == "Ghost" for e in left()),
                       30 - (loop.time() - killed), "user_left for the dead node's member")
    swept_after = loop.time() - killed
    assert swept_after < 30
    # Member events are per name: Victim is back (on the new node), so no user_left for it,
    # and Ghost's is announced once. A join published after the sweep's user_left arrived
    # reaches the watcher after anything that sweep published; the second keeps room for
    # a late one from another instance's janitor.
    swept = loop.time()
    fresh = await ChatClient.connect(c[0].ws_url)
    members = (await fresh.join(room, "Fresh"))["members"]
    await watcher.wait(lambda: any(e["type"] == "user_joined" and e["user"] == "Fresh" for e in watcher.events),
                       5, "user_joined for Fresh")
    await asyncio.sleep(max(0.0, swept + 1.0 - loop.time()))
    assert [(e["room"], e["user"]) for e in left()] == [(room, "Ghost")]
    assert "Ghost" not in members
    assert set(members) == {"Sender0", "Sender1", "Watcher0", "Watcher1", "Victim", "Fresh"}
    # In Redis too: every member left in the room belongs to a node that is alive.
    alive = {n.decode() for n in r.zrange("chat:instances", 0, -1)}
    assert len(alive) == 3
    owners = {f.decode().partition("|")[0] for f in r.hgetall(f"chat:members:{room}")}
    assert owners <= alive
    for rd in readers:
        await rd.stop()


# ---------------------------------------------------------------- 4. a client that stops reading
class RawWebSocket:
    """A WebSocket client over a bare socket: handshake by hand, then it reads only when told.

    A small SO_RCVBUF (set before connecting, so the window is small from the start) makes
    the server's writes back up quickly once it stops reading.
    """

    def __init__(self, host: str, port: int, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _frame(self) -> tuple[int, bytes] | None:
        """One whole frame parsed from the buffer, if there is one."""
        buf = self.buf
        if len(buf) < 2:
            return None
        opcode, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < pos + n:
            return None
        self.buf = buf[pos + n:]
        return opcode, buf[pos:pos + n]

    def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame (opcode, payload), or None at EOF."""
        self.sock.settimeout(timeout)
        while (frame := self._frame()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        return frame

    def drain(self, timeout: float) -> tuple[list[dict], int | None, bool]:
        """Read until EOF: (the text frames, the close code if a close frame came, reached EOF)."""
        texts: list[dict] = []
        code = None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                frame = self.read_frame(max(0.05, deadline - time.monotonic()))
                if frame is None:
                    return texts, code, True
                opcode, payload = frame
                if opcode == 1:
                    texts.append(json.loads(payload))
                elif opcode == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except ConnectionResetError:
            return texts, code, True  # aborted by the server: closed all the same
        except TimeoutError:
            pass
        return texts, code, False

    def close(self) -> None:
        self.sock.close()


def worker_of(inst):
    """The process of an instance that serves (see `ChatInstance.serving_process`)."""
    return inst.serving_process()


def server_side_open(inst, client_port: int) -> bool:
    """Whether the instance still holds a TCP connection to our ``client_port``."""
    return any(conn.raddr and conn.raddr.port == client_port
               for conn in worker_of(inst).net_connections(kind="tcp"))


async def join_raw(inst, room: str, user: str) -> RawWebSocket:
    """A `RawWebSocket` joined to ``room`` (its ``joined`` read), that then reads nothing."""
    raw = await asyncio.to_thread(RawWebSocket, "127.0.0.1", inst.port)
    raw.send_text(json.dumps({"type": "join", "room": room, "user": user}))
    opcode, payload = await asyncio.to_thread(raw.read_frame)
    while opcode == 9:  # Hypercorn's websocket_ping_interval (hypercorn.toml) pings at once
        opcode, payload = await asyncio.to_thread(raw.read_frame)
    assert opcode == 1 and json.loads(payload)["type"] == "joined"
    return raw


async def member_gone(r: redis.Redis, room: str, user: str, timeout: float) -> None:
    """Wait until the server has removed ``user`` from the room's members (it dropped them)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while user.encode() in await asyncio.to_thread(r.hvals, layout_of(r).members(room)):
        assert loop.time() < deadline, f"{user} is still a member"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
async def test_client_that_stops_reading_is_dropped_others_unharmed(make_cluster, room, loop_kind):
    c = make_cluster(1, env={"CHAT_SEND_QUEUE": "50"}, config=(loop_kind == "uvloop"))
    r = redis_client(c.redis.url)
    loop = asyncio.get_running_loop()
    flooder = await ChatClient.connect(c[0].ws_url)
    normal = await ChatClient.connect(c[0].ws_url)
    await flooder.join(room, "Flooder")
    await normal.join(room, "Normal")
    # Two clients stop reading after their join. "Late" reads again as soon as the server
    # has dropped it, so it must find the close frame (1013) behind what was in flight;
    # "Stuck" never reads again, so the server must let go of its connection by itself.
    late = await join_raw(c[0], room, "Late")
    stuck = await join_raw(c[0], room, "Stuck")
    await normal.until(lambda f: f["type"] == "user_joined" and f["user"] == "Stuck")
    # Big frames (~2000 three-byte characters) so that the kernel's buffers (up to
    # tcp_wmem's 4 MiB) fill up quickly.
    total, pad = 1500, "\u20ac" * 1960
    latencies: list[float] = []
    texts: list[str] = []
    left: list[str] = []

    async def read_normal() -> None:
        while len(texts) < total:
            frame = await normal.recv(10)
            if frame["type"] == "message":
                texts.append(frame["text"])
                latencies.append(loop.time() - float(frame["text"].split(" ", 2)[1]))
            elif frame["type"] == "user_left":
                left.append(frame["user"])

    async def read_late_once_dropped() -> tuple[list[dict], int | None, bool]:
        await member_gone(r, room, "Late", timeout=60)  # the server dropped it: read at once
        return await asyncio.to_thread(late.drain, 15)

    reader = asyncio.create_task(read_normal())
    late_reader = asyncio.create_task(read_late_once_dropped())
    echoes = Reader(flooder)  # the flooder reads its echoes, or it would be a slow client too
    for n in range(total):
        # Self-clocked: at most 100 messages in flight, so a latency here is fan-out delay,
        # not a backlog of the sender's own frames on a busy machine.
        await echoes.wait(lambda n=n: n - len(echoes.messages) < 100, 10, "the flooder's echoes")
        await flooder.say(room, f"{n} {loop.time()} {pad}")
    await asyncio.wait_for(reader, 30)
    assert [int(t.split(" ", 1)[0]) for t in texts] == list(range(total))
    assert max(latencies) < 2.0, f"the normal client waited {max(latencies):.2f} s for a message"
    # Both were dropped: they left the room (user_left reached the others)...
    while set(left) < {"Late", "Stuck"}:
        ev = await normal.until(lambda f: f["type"] == "user_left", timeout=5)
        left.append(ev["user"])
    assert sorted(left) == ["Late", "Stuck"]
    fresh = await ChatClient.connect(c[0].ws_url)
    assert (await fresh.join(room, "Fresh"))["members"] == ["Flooder", "Fresh", "Normal"]
    # ...and the one that read on got exactly "too slow", after at most what was in flight.
    frames, code, eof = await asyncio.wait_for(late_reader, 30)
    late.close()
    print(f"late client: {len(frames)} frames before the end, close code {code}")
    assert code == 1013
    assert eof, "the server never closed the late client's connection"
    assert len([f for f in frames if f["type"] == "message"]) < total
    # The server let go of the one that still reads nothing: a client must not be able to
    # pin megabytes of socket buffer (and an fd) forever. Only the direct path can do that:
    # plain ASGI (CHAT_FAST_PATH=0) has no way to reset a connection.
    status, health = await asyncio.to_thread(http_get, c[0].http_url + "/healthz")
    assert status == 200 and health["connections"] == 3  # flooder, normal, fresh
    port = stuck.sock.getsockname()[1]
    if health["outbound"] == "direct":
        deadline = loop.time() + 5
        while server_side_open(c[0], port):
            assert loop.time() < deadline, "the server still holds the dropped client's connection"
            await asyncio.sleep(0.2)
    else:
        assert health["outbound"] == "portable (CHAT_FAST_PATH=0)", health
    frames, code, eof = await asyncio.to_thread(stuck.drain, 15)
    stuck.close()
    print(f"stuck client: {len(frames)} frames before the end, close code {code}")
    assert eof, "the server never closed the stuck client's connection"
    assert code in (1013, None)  # None: reset with the close frame still in the server's buffer
    assert len([f for f in frames if f["type"] == "message"]) < total
    await echoes.wait(lambda: len(echoes.messages) == total, 10, "the flooder's echoes")
    assert echoes.close_code is None and not echoes.closed.is_set()
    await echoes.stop()
    # The instance is still healthy and serving.
    await flooder.say(room, "0 0 after")
    assert (await normal.messages(1))[0]["text"] == "0 0 after"
    assert await asyncio.to_thread(c[0].health_status) == 200
    for cl in (flooder, normal, fresh):
        await cl.close()
