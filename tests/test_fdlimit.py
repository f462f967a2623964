"""The open-file limit is no silent ceiling on connections (quart_chat/fdlimit.py).

Real Hypercorn instances are started with a low RLIMIT_NOFILE: with a soft limit of 256 and
a higher hard one the instance raises its own limit and holds 600 connections; with a hard
limit of 256 it answers the handshakes it cannot hold with HTTP 503, logs that once, counts
it in /healthz, keeps serving the connections it has and accepts again once some close. A
flood of raw TCP connections (which never reach the WebSocket check) is reported too, under
both event loops. The pure parts are tested with fakes first.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import resource
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from quart_chat import fdlimit
from quart_chat.fdlimit import FdGuard, NofileLimit, Throttle
from quart_chat.procs import HOST

from cluster import ChatInstance, RedisProcess, scrape

pytestmark = pytest.mark.timeout(120)

INF = resource.RLIM_INFINITY
# No per-address cap: every client of these tests comes from 127.0.0.1.
ENV = {"CHAT_MAX_CONNECTIONS_PER_IP": "0", "CHAT_RATE": "100000/1"}
REFUSED_LINE = "at the open-file limit"
_names = itertools.count()


# ---------------------------------------------------------------- pure parts
def fake_rlimit(soft: int, hard: int, grant: int | None = None):
    """getrlimit/setrlimit over a fake limit; setrlimit refuses soft limits above ``grant``."""
    state = {"limit": (soft, hard)}

    def get(_which: int) -> tuple[int, int]:
        return state["limit"]

    def set_(_which: int, limit: tuple[int, int]) -> None:
        if grant is not None and limit[0] > grant:
            raise ValueError("not allowed")
        state["limit"] = limit

    return state, get, set_


def test_soft_limit_is_raised_to_the_hard_one():
    state, get, set_ = fake_rlimit(1024, 524288)
    limit = fdlimit.raise_nofile_limit(get, set_, nr_open=1048576)
    assert limit == NofileLimit(524288, 524288, 1024)
    assert state["limit"] == (524288, 524288)


def test_infinite_hard_limit_falls_back_to_what_the_kernel_grants():
    state, get, set_ = fake_rlimit(1024, INF, grant=1048576)
    limit = fdlimit.raise_nofile_limit(get, set_, nr_open=1048576)
    assert (limit.soft, limit.was) == (1048576, 1024)
    assert state["limit"] == (1048576, INF)


def test_limit_is_never_lowered_and_a_refusal_changes_nothing():
    _, get, set_ = fake_rlimit(4096, 4096)
    assert fdlimit.raise_nofile_limit(get, set_, nr_open=1048576) == NofileLimit(4096, 4096, 4096)
    state, get, set_ = fake_rlimit(1024, 4096, grant=1024)
    assert fdlimit.raise_nofile_limit(get, set_, nr_open=1048576) == NofileLimit(1024, 4096, 1024)
    assert state["limit"] == (1024, 4096)


def test_reserve_is_a_backlog_at_least_a_few_percent_and_capped():
    assert fdlimit.reserve_for(256) == fdlimit.RESERVE_MIN
    assert fdlimit.reserve_for(65536) == 2048
    assert fdlimit.reserve_for(1 << 20) == fdlimit.RESERVE_MAX


def test_count_open_fds_sees_each_socket():
    before = fdlimit.count_open_fds()
    socks = [socket.socket() for _ in range(10)]
    try:
        assert fdlimit.count_open_fds() == before + 10
    finally:
        for s in socks:
            s.close()


def test_throttle_lets_one_through_per_period_and_counts_the_rest():
    now = [0.0]
    throttle = Throttle(60.0, clock=lambda: now[0])
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(5)] == [None] * 5
    now[0] = 61.0
    assert throttle.allow() == 5
    assert throttle.allow() is None


class FakeProcess:
    """A clock and a count of open descriptors that a test moves by hand."""

    def __init__(self, open_fds: int) -> None:
        self.now = 0.0
        self.open = open_fds

    def clock(self) -> float:
        return self.now

    def count(self) -> int:
        return self.open


async def test_check_refuses_near_the_limit_logs_once_and_recovers(caplog):
    proc = FakeProcess(20)
    guard = FdGuard(clock=proc.clock, count=proc.count, raise_limit=lambda: NofileLimit(1024, 1024, 1024))
    guard.start()
    try:
        ceiling = 1024 - guard.reserve
        assert guard.capacity() == ceiling - 20
        caplog.set_level(logging.WARNING, "quart_chat.fdlimit")
        assert not guard.check(ceiling - 21)  # far enough below: no count needed
        proc.open = ceiling + 5  # other sockets (HTTP, handshakes in flight) took some
        proc.now += fdlimit.SAMPLE_NEAR
        assert guard.check(ceiling - 21)  # the estimate was near, so it counted again
        for _ in range(9):
            assert guard.check(ceiling - 21)
        assert guard.refusals == {"fd_limit": 10, "fd_accept": 0}
        assert sum(REFUSED_LINE in r.message for r in caplog.records) == 1
        proc.open = ceiling - 50  # some closed
        proc.now += fdlimit.SAMPLE_NEAR
        assert not guard.check(ceiling - 70)
        proc.open = ceiling
        proc.now += fdlimit.LOG_EVERY
        assert guard.check(ceiling - 20)
        lines = [r.message for r in caplog.records if REFUSED_LINE in r.message]
        assert len(lines) == 2 and "9 more refused since the last warning" in lines[1]
        assert guard.health()["nofile"] == {"soft": 1024, "hard": 1024, "reserve": guard.reserve,
                                             "open": ceiling}
    finally:
        guard.stop()


async def test_accept_errors_are_counted_and_the_rest_passed_on(caplog):
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    guard = FdGuard(raise_limit=lambda: NofileLimit(1024, 1024, 1024))
    try:
        guard.start()
        caplog.set_level(logging.WARNING, "quart_chat.fdlimit")
        emfile = OSError(errno.EMFILE, "Too many open files")
        for _ in range(3):  # what the standard loop reports, once per failed accept()
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": emfile})
        other = {"message": "something else", "exception": ValueError("x")}
        loop.call_exception_handler(other)
        assert seen == [other]
        assert guard.refusals["fd_accept"] == 3
        assert sum("accept() failed" in r.message for r in caplog.records) == 1
        # uvloop closes the listening socket when libuv cannot shed the load: an error, always.
        loop.call_exception_handler({"message": "Fatal error on server TCPServer", "exception": emfile})
        assert any(r.levelno == logging.ERROR and "closed the listening socket" in r.message
                   for r in caplog.records)
        assert guard.refusals["fd_accept"] == 4
    finally:
        guard.stop()
        loop.set_exception_handler(previous)


# ---------------------------------------------------------------- real instances
@pytest.fixture(scope="module", autouse=True)
def client_side_files():
    """This process opens 600+ sockets itself: raise its own soft limit for the module."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != INF and hard < 2048:
        pytest.skip(f"the test process may open only {hard} files")
    want = 8192 if hard == INF else min(hard, 8192)
    if soft != INF and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
async def start_instance(redis_proc: RedisProcess, tmp_path: Path):
    """Start an instance with an open-file limit; stopped (its connections closed) after the test."""
    started: list[ChatInstance] = []
    opened: list = []

    def start(nofile: tuple[int, int], env: dict[str, str] | None = None) -> ChatInstance:
        inst = ChatInstance(tmp_path, redis_proc.url, f"fd{next(_names)}-{os.getpid()}",
                            env={**ENV, **(env or {})}, nofile=nofile)
        started.append(inst)
        return inst.start()

    start.opened = opened
    yield start
    await _close_all(opened)  # first: an open WebSocket makes an instance wait out its graceful timeout
    for inst in started:
        inst.stop()


async def _close_all(conns: list) -> None:
    await asyncio.gather(*(asyncio.wait_for(ws.close(), 2) for ws in conns), return_exceptions=True)


def healthz(inst: ChatInstance) -> tuple[int, dict]:
    """Status and body of /healthz."""
    try:
        with urllib.request.urlopen(inst.http_url + "/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def wait_healthz(inst: ChatInstance, pred, timeout: float, what: str) -> dict:
    """Poll /healthz until ``pred(body)``; returns that body."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            _, body = await asyncio.to_thread(healthz, inst)
            if pred(body):
                return body
        except OSError:
            pass  # not accepted right now
        await asyncio.sleep(0.25)
    raise AssertionError(f"/healthz never showed {what}; last: {body}\n{inst.tail()}")


async def attempt(inst: ChatInstance):
    """One WebSocket handshake: (connection, None) or (None, 503 and its body, or what failed)."""
    try:
        return await websockets.connect(inst.ws_url, open_timeout=10, close_timeout=2), None
    except InvalidStatus as err:
        return None, (err.response.status_code, err.response.body.decode(errors="replace"))
    except Exception as err:  # a reset, a timeout: what this feature must not let happen
        return None, repr(err)


async def pong_count(conns: list) -> int:
    """How many of ``conns`` answer a ping with a pong."""
    async def one(ws) -> bool:
        try:
            await ws.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
        except Exception:
            return False
    return sum(await asyncio.gather(*(one(ws) for ws in conns)))


def worker_fds(inst: ChatInstance) -> int:
    """Descriptors the instance's Hypercorn worker holds (the process of its group with most)."""
    counts = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pgrp = int(f.read().rsplit(")", 1)[1].split()[2])
            if pgrp == inst.proc.pid:
                counts.append(len(os.listdir(f"/proc/{pid}/fd")))
        except (OSError, ValueError, IndexError):
            continue
    return max(counts)


def log_lines(inst: ChatInstance, needle: str) -> list[str]:
    return [line for line in inst.log_path.read_text(errors="replace").splitlines() if needle in line]


async def test_soft_limit_is_raised_and_600_connections_are_held(start_instance):
    own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if own_hard == INF else min(4096, own_hard)
    inst = start_instance((256, hard))
    status, body = healthz(inst)
    assert status == 200 and body["nofile"]["soft"] == hard and body["nofile"]["hard"] == hard
    assert log_lines(inst, f"open files: {hard} (hard {hard}, raised from 256)")
    before = worker_fds(inst)

    sem = asyncio.Semaphore(50)

    async def one():
        async with sem:
            return await attempt(inst)

    results = await asyncio.gather(*(one() for _ in range(600)))
    conns = [ws for ws, _ in results if ws is not None]
    start_instance.opened.extend(conns)
    failures = [why for ws, why in results if ws is None]
    assert not failures, f"{len(failures)} of 600 refused, e.g. {failures[:3]}\n{inst.tail()}"
    assert await pong_count(conns) == 600

    # One descriptor per connection: its socket, nothing else.
    per_connection = (worker_fds(inst) - before) / 600
    assert 0.99 <= per_connection <= 1.01, per_connection
    status, body = healthz(inst)
    assert status == 200 and body["connections"] == 600
    assert body["refused"] == {"fd_limit": 0, "fd_accept": 0}
    assert not log_lines(inst, REFUSED_LINE) and not log_lines(inst, "descriptors are in use")


async def test_hard_limit_refuses_with_503_logs_once_and_recovers(start_instance):
    inst = start_instance((256, 256))
    assert log_lines(inst, "open-file limit is only 256")  # the start-up warning

    conns, refusals = [], []
    for _ in range(300):  # one after another, as a page's reconnects would come
        ws, why = await attempt(inst)
        if ws is not None:
            conns.append(ws)
            start_instance.opened.append(ws)
        else:
            refusals.append(why)
    assert all(isinstance(why, tuple) and why[0] == 503 for why in refusals), \
        f"refused other than with 503: {[w for w in refusals if not isinstance(w, tuple)][:3]}"
    assert refusals[-1][0] == 503 and "open-file limit" in refusals[-1][1]  # the 300th
    # Everything up to the reserve is used, nothing beyond it.
    assert 256 - fdlimit.reserve_for(256) - 40 <= len(conns) < 256 - fdlimit.reserve_for(256)

    # Still serving: its connections, /healthz (the reserve keeps room for it), the count.
    assert await pong_count(conns) == len(conns)
    status, body = healthz(inst)
    assert status == 200 and body["connections"] == len(conns)
    assert body["refused"]["fd_limit"] == len(refusals) and body["refused"]["fd_accept"] == 0
    assert body["nofile"]["soft"] == 256 and body["nofile"]["hard"] == 256
    assert len(log_lines(inst, REFUSED_LINE)) == 1  # once, not once per attempt

    # Some leave: new ones are accepted again.
    leaving, conns = conns[:30], conns[30:]
    await _close_all(leaving)
    held = len(conns)
    await wait_healthz(inst, lambda b: b["connections"] == held, 10, f"{held} connections")
    fresh = []
    for _ in range(10):
        ws, why = await attempt(inst)
        assert ws is not None, f"not accepted after 30 closed: {why}"
        fresh.append(ws)
        start_instance.opened.append(ws)
    assert await pong_count(fresh + conns) == len(fresh) + len(conns)

    # Full again: refused again, counted, and still logged only once in the minute.
    more = 0
    for _ in range(40):
        ws, why = await attempt(inst)
        if ws is None:
            assert why[0] == 503
            more += 1
        else:
            start_instance.opened.append(ws)
    assert more > 0
    _, body = healthz(inst)
    assert body["refused"]["fd_limit"] == len(refusals) + more
    assert len(log_lines(inst, REFUSED_LINE)) == 1
    metrics = scrape(inst)  # the same count, where a monitoring system reads it
    assert metrics['quart_chat_refused_handshakes_total{reason="fd_limit"}'] == len(refusals) + more


async def flood(inst: ChatInstance, seconds: float, size: int = 300) -> None:
    """Keep ``size`` raw TCP connections open to ``inst`` (no request ever sent) for ``seconds``,
    replacing those the server closes; then close them all."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def connect() -> socket.socket | None:
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (HOST, inst.port)), 2)
            return s
        except (TimeoutError, OSError):
            s.close()
            return None

    def alive(s: socket.socket) -> bool:
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                raise ConnectionResetError
            return True
        except BlockingIOError:
            return True
        except OSError:
            s.close()
            return False

    deadline = loop.time() + seconds
    try:
        while loop.time() < deadline:
            socks = [s for s in socks if alive(s)]
            socks += [s for s in await asyncio.gather(*(connect() for _ in range(size - len(socks)))) if s]
            await asyncio.sleep(0.2)
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("uvloop", ["1", "0"], ids=["uvloop", "asyncio"])
async def test_descriptors_used_up_by_other_sockets_are_reported(start_instance, uvloop):
    inst = start_instance((256, 256), env={"CHAT_UVLOOP": uvloop})
    assert log_lines(inst, "event loop: uvloop" if uvloop == "1" else "event loop: asyncio")
    # Longer than the look every WATCH_EVERY seconds, so that one of them sees it.
    await flood(inst, fdlimit.WATCH_EVERY + 3)
    # Hypercorn lets a connection that never sent a request go after its 5 s keep-alive
    # timeout; then everything works again.
    await wait_healthz(inst, lambda b: b["status"] == "ok", 20, "an answer")
    for _ in range(40):
        ws, why = await attempt(inst)
        if ws is not None:
            break
        await asyncio.sleep(0.5)
    assert ws is not None, f"not accepting after the flood: {why}"
    start_instance.opened.append(ws)
    assert await pong_count([ws]) == 1
    assert len(log_lines(inst, "all 256 descriptors are in use")) == 1
    _, body = healthz(inst)
    if uvloop == "0":  # the standard loop reports each accept() that failed; uvloop cannot
        assert body["refused"]["fd_accept"] > 0
        assert len(log_lines(inst, "accept() failed")) == 1
    assert not log_lines(inst, "Traceback")
