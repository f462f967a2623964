"""nginx in front of the instances, with the shipped deploy/nginx.conf (PROTOCOL.md section 8).

One URL over every instance: WebSockets and REST pass through it; with CHAT_TRUSTED_PROXIES
naming nginx the client address and the Origin check use its forwarded headers, which a
client talking to an instance directly cannot forge; and a rolling deploy behind it (every
instance SIGTERMed and started again in turn while clients send) loses and duplicates nothing.

The trust setup, as the tests run it: nginx connects to the instances from 127.0.0.1, so
CHAT_TRUSTED_PROXIES=127.0.0.1. nginx appends the address it saw to X-Forwarded-For, and an
instance reads that header right to left, taking the first hop it does not trust. A real
client's address is not trusted, so that is what counts. Here the test client itself sits
on 127.0.0.1 as well, trusted like nginx: it plays a trusted proxy in front of nginx (a load
balancer, a CDN) that says which client it speaks for, with X-Forwarded-For: 203.0.113.7.
A client talking to an instance directly connects from 127.0.0.2 (all of 127.0.0.0/8 is
this machine), an address nobody trusts: what it claims is ignored.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from quart_chat.procs import HOST, free_port, listening
from quart_chat.proxy import TEMPLATE, find_nginx, nginx_argv, render_config, write_config

from client import ChatClient, id_key
from cluster import ROOT, NginxProcess, Process

pytestmark = [pytest.mark.proxy, pytest.mark.timeout(60)]

TRUSTED = {"CHAT_TRUSTED_PROXIES": "127.0.0.1"}
UNTRUSTED_SOURCE = ("127.0.0.2", 0)  # a direct client from an address nobody trusts


def need_nginx() -> str:
    """The nginx binary; skip (fail on CI) when there is none."""
    binary = find_nginx()
    if binary is None:
        reason = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the nginx tests must run)", pytrace=False)
        pytest.skip(reason)
    return binary


@pytest.fixture
def make_nginx(tmp_path: Path) -> Iterator[Callable[[list[int]], NginxProcess]]:
    """Start nginx (the shipped config) in front of the given instance ports; stopped by its
    process group after the test, before the instances (so their WebSockets are gone)."""
    need_nginx()
    started: list[NginxProcess] = []

    def make(ports: list[int]) -> NginxProcess:
        proc = NginxProcess(tmp_path, ports)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


async def stop_together(cluster) -> None:
    """SIGTERM every instance at once (each may wait out its 3 s graceful timeout)."""
    await asyncio.gather(*(asyncio.to_thread(inst.stop) for inst in cluster.instances))


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


async def handshake(url: str, **kwargs: Any) -> int:
    """The HTTP status of a WebSocket handshake (101 when it opened; closed at once)."""
    try:
        ws = await websockets.connect(url, open_timeout=5, **kwargs)
    except InvalidStatus as err:
        return err.response.status_code
    await ws.close()
    return 101


async def wait_until_async(probe: Callable[[], Any], want: Any, timeout: float) -> bool:
    """Await ``probe()`` until it returns ``want``; False after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await probe() != want:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def health_connections(cluster) -> list[int]:
    """Each instance's own count of open WebSockets (asked directly, not through nginx)."""
    out = []
    for inst in cluster.instances:
        _, _, body = await asyncio.to_thread(http, inst.http_url + "/healthz")
        out.append(json.loads(body)["connections"])
    return out


# ---------------------------------------------------------------- the shipped file
def test_shipped_config_renders_and_passes_nginx_t(tmp_path):
    """The file as shipped is the demo's config; a rendered one changes only the ports,
    and nginx itself accepts both."""
    binary = need_nginx()
    assert render_config(8080, [3000, 3001, 3002]) == TEMPLATE.read_text()
    text = render_config(18080, [4000, 4001])
    changed = {line.strip() for line in set(text.splitlines()) ^ set(TEMPLATE.read_text().splitlines())}
    options = "max_fails=0;"
    assert changed == {"listen 127.0.0.1:8080;", "listen 127.0.0.1:18080;",
                       *(f"server 127.0.0.1:{p} {options}" for p in (3000, 3001, 3002, 4000, 4001))}
    for name, conf in (("shipped", TEMPLATE), ("rendered", write_config(tmp_path / "p", 18080, [4000, 4001]))):
        prefix = tmp_path / name
        prefix.mkdir(exist_ok=True)
        argv = nginx_argv(binary, prefix, conf) + ["-t", "-q"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        # Nothing outside the private directory: its pid file, logs and temp paths are in it.
        assert {p.name for p in prefix.iterdir()} >= {"error.log", "client_body_temp", "proxy_temp"}


# ---------------------------------------------------------------- (a) one URL
async def test_websocket_and_rest_through_one_url(make_cluster, make_nginx, room):
    """Three instances behind one nginx URL: clients spread over them and chat across them;
    the page, /rooms, /rooms/<r>/history and /healthz answer through it. No trust needed for
    the page's own origin: nginx passes Host with its port."""
    c = make_cluster(3, config=True)
    ng = make_nginx([inst.port for inst in c])
    clients = [await ChatClient.connect(ng.ws_url, origin=ng.http_url) for _ in range(3)]
    try:
        for name, cl in zip("ABC", clients):
            await cl.join(room, name)
        # least_conn: one client on each instance, all through the same URL.
        assert await health_connections(c) == [1, 1, 1]
        await clients[0].say(room, "hello from A", client_id="a1")
        await clients[2].say(room, "hello from C", client_id="c1")
        for cl in clients:
            got = await cl.messages(2, timeout=5)
            assert sorted(m["text"] for m in got) == ["hello from A", "hello from C"]
        ids = [m["id"] for m in got]
        # REST through the same URL.
        status, _, body = await asyncio.to_thread(http, f"{ng.http_url}/rooms")
        assert status == 200 and room in [r["name"] for r in json.loads(body)["rooms"]]
        status, _, body = await asyncio.to_thread(http, f"{ng.http_url}/rooms/{room}/history")
        assert status == 200 and [m["id"] for m in json.loads(body)["messages"]] == ids
        status, _, body = await asyncio.to_thread(http, f"{ng.http_url}/healthz")
        assert status == 200 and json.loads(body)["instance"] in {inst.name for inst in c}
        status, headers, body = await asyncio.to_thread(http, ng.http_url + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'id="messages"' in body and b'id="status"' in body
        # A page from the nginx URL may open /ws; one served by an instance's own port is
        # another origin, and a foreign one is refused.
        assert await handshake(ng.ws_url, origin=ng.http_url) == 101
        assert await handshake(ng.ws_url, origin=c[0].http_url) == 403
        assert await handshake(ng.ws_url, origin="http://evil.example") == 403
    finally:
        for cl in clients:
            await cl.close()
        await stop_together(c)


# ---------------------------------------------------------------- (b) trusted proxy
async def test_trusted_proxy_address_cap_and_origin(make_cluster, make_nginx, room):
    """CHAT_TRUSTED_PROXIES=127.0.0.1 (nginx): the per-address cap counts the client address
    nginx forwards; the Origin check uses nginx's Host/Proto; a client talking to the
    instance directly cannot forge either."""
    c = make_cluster(1, env={**TRUSTED, "CHAT_MAX_CONNECTIONS_PER_IP": "3"}, config=True)
    ng = make_nginx([c[0].port])
    claim = {"X-Forwarded-For": "203.0.113.7"}
    held = [await ChatClient.connect(ng.ws_url, additional_headers=claim) for _ in range(3)]
    try:
        for k, cl in enumerate(held):
            await cl.join(room, f"Held{k}")
        # The fourth from 203.0.113.7 is refused; another address is not.
        assert await handshake(ng.ws_url, additional_headers=claim) == 429
        assert await handshake(ng.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.8"}) == 101
        log = c[0].tail(50)
        assert "refused a WebSocket from 203.0.113.7: 3 already open" in log, log
        # A direct client from an untrusted address claiming to be 203.0.113.7 is counted as
        # itself (loopback: uncapped), so the full count of 203.0.113.7 does not stop it.
        assert await handshake(c[0].ws_url, additional_headers=claim, local_addr=UNTRUSTED_SOURCE) == 101
        # One of the three leaves: 203.0.113.7 may open one again.
        await held.pop().close()
        assert await wait_until_async(lambda: handshake(ng.ws_url, additional_headers=claim), 101, 5)

        # Origin: the nginx URL passes, anything else is refused.
        assert await handshake(ng.ws_url, origin=ng.http_url) == 101
        assert await handshake(ng.ws_url, origin="http://evil.example") == 403
        assert await handshake(ng.ws_url, origin=c[0].http_url) == 403
        # nginx sets X-Forwarded-Proto and -Host itself: a client's own claims do not pass.
        https_claim = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
        assert await handshake(ng.ws_url, origin=f"https://{HOST}:{ng.port}", additional_headers=https_claim) == 403
        assert await handshake(ng.ws_url, origin="http://evil.example", additional_headers=https_claim) == 403
        # Directly from an untrusted address, forged forwarded headers are ignored...
        forged = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
        assert await handshake(c[0].ws_url, origin="http://evil.example", additional_headers=forged,
                               local_addr=UNTRUSTED_SOURCE) == 403
        # ...and believed only from the trusted address (so list nothing but the proxies).
        assert await handshake(c[0].ws_url, origin="http://evil.example", additional_headers=forged) == 101
    finally:
        for cl in held:
            await cl.close()
        await stop_together(c)


# ---------------------------------------------------------------- (c) rolling deploy
def backoff(attempt: int) -> float:
    """The page's reconnect delay: exponential from 0.1 s to 2 s, with jitter."""
    return min(2.0, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0)


class Roamer:
    """A client that behaves as the page does (PROTOCOL.md section 7): it reconnects through
    nginx with backoff, joins each of its rooms again with `since` = the last id it saw,
    then resends what is still unacknowledged with the same client_id. It keeps every
    message frame it gets, as it gets it (no deduplication: the test checks the server's)."""

    def __init__(self, url: str, user: str, rooms: list[str]) -> None:
        self.url, self.user, self.rooms = url, user, rooms
        self.got: dict[str, list[dict]] = {r: [] for r in rooms}
        self.last = {r: "0-0" for r in rooms}
        self.pending: dict[str, tuple[str, str]] = {}  # client_id -> (room, text), in send order
        self.acked: dict[str, str] = {}
        self.sent: list[str] = []
        self.ack_conflicts: list[tuple[str, str, str]] = []
        self.errors: list[dict] = []
        self.ws: Any = None
        self.ready = asyncio.Event()
        self.connects = 0
        self.failed_connects = 0
        self.connect_errors: Counter[str] = Counter()
        self.resent = 0
        self.closes: Counter[int | None] = Counter()
        self.running = True
        self.task = asyncio.create_task(self._run())

    def _take(self, frame: dict) -> None:
        room = frame["room"]
        self.got[room].append(frame)
        self.last[room] = frame["id"]

    async def _run(self) -> None:
        attempt = 0
        while self.running:
            try:
                ws = await websockets.connect(self.url, open_timeout=8, max_size=None, close_timeout=2)
            except (OSError, InvalidHandshake, TimeoutError) as err:
                self.failed_connects += 1
                self.connect_errors[f"{type(err).__name__}: {err}"[:80]] += 1
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            self.connects += 1
            try:
                for r in self.rooms:
                    await ws.send(json.dumps({"type": "join", "room": r, "user": self.user, "since": self.last[r]}))
                joined: set[str] = set()
                while True:
                    frame = json.loads(await ws.recv())
                    kind = frame["type"]
                    if kind == "message":
                        self._take(frame)
                    elif kind == "joined":
                        for m in frame["history"]:
                            self._take(m)
                        joined.add(frame["room"])
                        if joined == set(self.rooms):
                            for cid, (r, text) in list(self.pending.items()):
                                self.resent += 1
                                frame = {"type": "message", "room": r, "text": text, "client_id": cid}
                                await ws.send(json.dumps(frame))
                            self.ws = ws
                            self.ready.set()
                            attempt = 0
                    elif kind == "ack":
                        cid, sid = frame["client_id"], frame["id"]
                        if self.acked.setdefault(cid, sid) != sid:
                            self.ack_conflicts.append((cid, self.acked[cid], sid))
                        self.pending.pop(cid, None)
                    elif kind == "error":
                        self.errors.append(frame)
            except ConnectionClosed as err:
                self.closes[err.rcvd.code if err.rcvd else None] += 1
            finally:
                self.ready.clear()
                self.ws = None
                await ws.close()
            if self.running:
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def send(self, room: str, text: str, client_id: str) -> None:
        """Send when connected; kept as pending (resent after a reconnect) until acknowledged."""
        self.pending[client_id] = (room, text)
        self.sent.append(client_id)
        ws = self.ws
        if ws is not None:
            try:
                await ws.send(json.dumps({"type": "message", "room": room, "text": text, "client_id": client_id}))
            except ConnectionClosed:
                pass

    async def stop(self) -> None:
        self.running = False
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def read_streams(url: str, rooms: list[str]) -> dict[str, list[tuple[str, dict]]]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {room: [(sid, json.loads(f["data"])) for sid, f in r.xrange(f"chat:history:{room}")]
                for room in rooms}
    finally:
        r.close()


# Once, on .venv's Python: the stop under SIGTERM it relies on is per_version in test_lifecycle.py.
@pytest.mark.slow
async def test_rolling_deploy_behind_nginx_loses_nothing(make_cluster, make_nginx, room):
    """30 clients in 3 rooms through nginx, 9 of them sending all the time; each of the 3
    instances is SIGTERMed and started again in turn. At the end every client has exactly its
    rooms' streams, each message once and in order, and every client_id is stored once."""
    c = make_cluster(3, env={**TRUSTED, "CHAT_HISTORY_MAXLEN": "10000"}, config=True)
    ng = make_nginx([inst.port for inst in c])
    loop = asyncio.get_running_loop()
    rooms = [f"{room}_{k}" for k in range(3)]
    roamers = [Roamer(ng.ws_url, f"u{k:02d}", [rooms[k % 3], rooms[(k + 1) % 3]]) for k in range(30)]
    senders = roamers[::10] + roamers[3::10] + roamers[6::10]  # 9, over every pair of rooms
    stop_sending = asyncio.Event()

    async def keep_sending(who: Roamer) -> None:
        k = 0
        while not stop_sending.is_set():
            if who.ready.is_set():
                r = who.rooms[k % 2]
                await who.send(r, f"{who.user} #{k}", f"{who.user}-{k}")
                k += 1
            await asyncio.sleep(0.1)

    t_start = loop.time()
    try:
        assert await wait_until(lambda: all(w.ready.is_set() for w in roamers), 15), "clients did not all join"
        spread = await health_connections(c)
        assert sorted(spread) == [10, 10, 10], spread
        sending = [asyncio.create_task(keep_sending(w)) for w in senders]
        restarts = []
        for inst in c.instances:
            await asyncio.sleep(1.5)  # traffic flows through every instance meanwhile
            t0 = loop.time()
            code = await asyncio.to_thread(inst.stop, 15)
            assert code == 0, inst.tail()
            t1 = loop.time()
            await asyncio.to_thread(inst.start)  # the same port; waits until healthy
            restarts.append((t1 - t0, loop.time() - t1))
        await asyncio.sleep(1.5)
        stop_sending.set()
        await asyncio.gather(*sending)

        # Every sender ends connected with nothing unacknowledged...
        settled = await wait_until(lambda: all(w.ready.is_set() and not w.pending for w in roamers), 15)
        assert settled, [(w.user, w.ready.is_set(), len(w.pending), w.errors[:2], w.connects, w.failed_connects,
                          dict(w.closes), w.connect_errors, w.task.done() and w.task.exception()) for w in roamers
                         if not w.ready.is_set() or w.pending]
        streams = read_streams(c.redis.url, rooms)
        ids = {r: [sid for sid, _ in streams[r]] for r in rooms}
        # ...every client then has every message of its rooms...
        done = await wait_until(lambda: all(len(w.got[r]) >= len(ids[r]) for w in roamers for r in w.rooms), 15)
        assert done, "some clients never got all their rooms' messages"
        await asyncio.sleep(0.3)  # a late duplicate would arrive now
        for w in roamers:
            assert not w.errors, (w.user, w.errors[:3])
            assert not w.ack_conflicts, (w.user, w.ack_conflicts[:3])
            for r in w.rooms:
                got = [m["id"] for m in w.got[r]]
                assert len(got) == len(set(got)), f"{w.user} in {r}: {len(got) - len(set(got))} duplicates"
                assert got == sorted(got, key=id_key), f"{w.user} in {r}: out of order"
                assert got == ids[r], f"{w.user} in {r}: {len(got)} messages, the stream has {len(ids[r])}"
        # ...and every client_id sent is stored exactly once, under the id its ack named.
        stored = Counter((m["user"], m.get("client_id")) for r in rooms for _, m in streams[r])
        stored_id = {(m["user"], m.get("client_id")): sid for r in rooms for sid, m in streams[r]}
        sent = [(w.user, cid) for w in senders for cid in w.sent]
        assert len(sent) == len(set(sent))
        assert all(stored[key] == 1 for key in sent), [key for key in sent if stored[key] != 1][:5]
        assert sum(stored.values()) == len(sent), "a message was stored that nobody sent"
        assert all(stored_id[(w.user, cid)] == sid for w in senders for cid, sid in w.acked.items())

        closes = sum((w.closes for w in roamers), Counter())
        figures = {
            "seconds": round(loop.time() - t_start, 1),
            "restarts (stop s, start s)": [(round(a, 1), round(b, 1)) for a, b in restarts],
            "sent (client_ids)": len(sent),
            "resent after reconnect": sum(w.resent for w in roamers),
            "stored": sum(len(v) for v in ids.values()),
            "per room": [len(ids[r]) for r in rooms],
            "delivered": sum(len(w.got[r]) for w in roamers for r in w.rooms),
            "reconnects": sum(w.connects for w in roamers) - len(roamers),
            "failed connect attempts": sum(w.failed_connects for w in roamers),
            "close codes": dict(closes),
            "connections per instance at the end": await health_connections(c),
        }
        print("\nrolling deploy behind nginx:", json.dumps(figures))
        # Everyone on a stopped instance was moved: 10 clients x 3 instances at least.
        assert figures["reconnects"] >= 30 and closes[1001] >= 30, figures
    finally:
        stop_sending.set()
        await asyncio.gather(*(w.stop() for w in roamers))
        await stop_together(c)


# ---------------------------------------------------------------- the demo
def alive_in_groups(groups: set[int]) -> list[tuple[int, str]]:
    """Processes (not zombies) still in one of these process groups."""
    import psutil

    left = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups and proc.status() != psutil.STATUS_ZOMBIE:
                left.append((proc.pid, proc.name()))
        except (ProcessLookupError, psutil.Error):
            continue
    return left


@pytest.mark.slow
async def test_demo_serves_the_instances_on_one_url(redis_proc, tmp_path, room):
    """`quart-chat demo` with nginx installed: the three instances and nginx on
    --proxy-port, the instances trusting it (the cap counts the forwarded address); a second
    demo on the same proxy port says so at once; on SIGTERM everything it started stops."""
    need_nginx()
    import psutil

    ports, proxy = [free_port() for _ in range(3)], free_port()
    env = {**os.environ, "REDIS_URL": redis_proc.url, "CHAT_MAX_CONNECTIONS_PER_IP": "1"}
    env.pop("CHAT_TRUSTED_PROXIES", None)
    argv = [sys.executable, "-m", "quart_chat.cli", "demo", "--ports", ",".join(map(str, ports))]
    demo = Process("demo", tmp_path)
    demo.launch([*argv, "--proxy-port", str(proxy)], env=env, cwd=ROOT)
    groups: set[int] = set()
    clients: list[ChatClient] = []
    try:
        up = await wait_until(lambda: f"http://localhost:{proxy}" in demo.tail(), 30)
        assert up, demo.tail()
        assert all(f"http://localhost:{p}" in demo.tail() for p in ports)
        groups = {os.getpgid(c.pid) for c in psutil.Process(demo.proc.pid).children()}
        # Three instances and nginx, each its own group; and the archive's PostgreSQL when
        # one is installed (the demo says so).
        archive = "Starting a private PostgreSQL" in demo.tail(200) and "Archive off" not in demo.tail(200)
        assert len(groups) == 4 + archive, demo.tail()
        url = f"ws://{HOST}:{proxy}/ws"
        claim = {"X-Forwarded-For": "203.0.113.9"}
        for k in range(3):  # least_conn: one on each instance, each allowed one from 203.0.113.9
            clients.append(await ChatClient.connect(url, origin=f"http://{HOST}:{proxy}", additional_headers=claim))
            await clients[-1].join(room, f"D{k}")
        assert await handshake(url, additional_headers=claim) == 429
        await clients[0].say(room, "through the demo's nginx")
        for cl in clients:
            assert [m["text"] for m in await cl.messages(1)] == ["through the demo's nginx"]
        # Another demo wanting the same proxy port stops at once, saying why, starting nothing.
        t0 = time.monotonic()
        other = await asyncio.to_thread(
            subprocess.run, [*argv[:-1], ",".join(str(free_port()) for _ in range(3)), "--proxy-port", str(proxy)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=20, check=False)
        assert other.returncode == 1 and time.monotonic() - t0 < 10, other
        assert f"Port {proxy}" in other.stderr and "--proxy-port" in other.stderr, other.stderr
    finally:
        for cl in clients:
            await cl.close()
        code = await asyncio.to_thread(demo.stop, 20)
        left = alive_in_groups(groups)
        for pgid in groups:  # only if the demo failed to stop what it started
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not left, f"outlived the demo: {left}"
    assert code == 0, demo.tail()
    assert "stopping..." in demo.tail()
    assert not any(listening(p) for p in [*ports, proxy])
