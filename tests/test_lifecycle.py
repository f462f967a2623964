"""Start and stop, as a process manager sees them: SIGTERM and SIGINT close every WebSocket
with 1001 and the instance exits at once, on every supported Python and under every way of
running Hypercorn (one worker, ``-w 2``, ``-w 0``, hypercorn.toml's uvloop worker).

These are the tests CI runs on each supported Python (README, "Supported Python").
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

from client import ChatClient

pytestmark = [pytest.mark.timeout(90), pytest.mark.per_version]

CLIENTS = 100
# What a stop may take: Hypercorn's graceful timeout (3 s in hypercorn.toml, during which a
# closed WebSocket's ping task may still sleep) and the process exits.
EXIT_WITHIN = 5.0


class KeepAlive:
    """An idle HTTP/1.1 keep-alive connection: Hypercorn closes it the moment its shutdown begins."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(4096)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += self.sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200") and len(body) == length, head

    def wait_closed(self, timeout: float) -> None:
        """Return once the server has closed the connection (EOF); raise after ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            assert self.sock.recv(1) == b"", "unexpected data on an idle keep-alive connection"
        except ConnectionResetError:
            pass
        finally:
            self.sock.close()


def worker_pid(inst) -> int:
    """The pid of Hypercorn's (only) worker process under ``inst``."""
    worker = inst.serving_process()
    assert worker.pid != inst.proc.pid, "no worker process: Hypercorn serves in its own"
    return worker.pid


async def close_code(client: ChatClient) -> int | None:
    """Read ``client`` until the server closes it; the close code it sent (None: no close frame)."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await client.ws.recv()
    except ConnectionClosed as err:
        return err.rcvd.code if err.rcvd is not None else None


# group: SIGTERM to the process group, as systemd's KillMode=control-group and the test
# harness do. worker: to Hypercorn's worker alone. parent: to Hypercorn's parent alone (kill PID).
# sigint: Ctrl+C in a terminal (the group). asyncio: the standard event loop, whose
# Server.wait_closed() waits for open connections from Python 3.12 on (uvloop's does not: the
# case the old shutdown hung in). The rest: other ways of running Hypercorn.
ASYNCIO = {"CHAT_UVLOOP": "0"}
CASES = {
    "group": dict(sig=signal.SIGTERM, to="group"),
    "parent": dict(sig=signal.SIGTERM, to="parent"),
    "worker": dict(sig=signal.SIGTERM, to="worker"),
    "sigint": dict(sig=signal.SIGINT, to="group"),
    "toml-uvloop": dict(sig=signal.SIGTERM, to="group", config=True),
    "w2": dict(sig=signal.SIGTERM, to="parent", workers=2),
    "w0": dict(sig=signal.SIGTERM, to="parent", workers=0),
    "w0-sigint": dict(sig=signal.SIGINT, to="parent", workers=0),
    "asyncio": dict(sig=signal.SIGTERM, to="group", env=ASYNCIO),
    "asyncio-w0": dict(sig=signal.SIGTERM, to="parent", workers=0, env=ASYNCIO),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_stop_closes_every_websocket_with_1001_and_exits(make_cluster, room, case):
    how = CASES[case]
    c = make_cluster(2, config=how.get("config", False), env=how.get("env"))
    victim = c[1]
    if how.get("workers", 1) != 1:
        victim.stop()
        victim.workers = how["workers"]
        victim.start()
    watcher = await ChatClient.connect(c[0].ws_url)
    await watcher.join(room, "Watcher")
    leaving = await asyncio.gather(*(ChatClient.connect(victim.ws_url) for _ in range(CLIENTS)))
    await asyncio.gather(*(cl.join(room, f"Leaving{k}") for k, cl in enumerate(leaving)))
    idle = await asyncio.to_thread(KeepAlive, victim.port)
    codes = [asyncio.create_task(close_code(cl)) for cl in leaving]
    loop = asyncio.get_running_loop()
    target = {"group": -victim.proc.pid, "parent": victim.proc.pid}.get(how["to"]) or worker_pid(victim)
    t0 = loop.time()
    if target < 0:
        os.killpg(-target, how["sig"])
    else:
        os.kill(target, how["sig"])
    # Hypercorn's own part of the shutdown began (it closed the idle keep-alive connection).
    await asyncio.to_thread(idle.wait_closed, EXIT_WITHIN)
    got = await asyncio.wait_for(asyncio.gather(*codes), EXIT_WITHIN)
    closed_after = loop.time() - t0
    assert got == [1001] * CLIENTS, {code: got.count(code) for code in set(got)}
    code = await asyncio.to_thread(victim.proc.wait, EXIT_WITHIN + 5)
    took = loop.time() - t0
    assert code == 0, victim.tail()
    assert took < EXIT_WITHIN, f"exit after {took:.1f} s (every client closed after {closed_after:.1f} s)"
    victim.stop()  # reaps what is left of the group (nothing should be)
    # A clean stop removes its members at once (lifespan shutdown), not after the janitor's 30 s.
    deadline = loop.time() + 5
    left: set[str] = set()
    while len(left) < CLIENTS:
        frame = await watcher.recv(timeout=max(0.1, deadline - loop.time()))
        if frame["type"] == "user_left":
            left.add(frame["user"])
    fresh = await ChatClient.connect(c[0].ws_url)
    assert (await fresh.join(room, "Fresh"))["members"] == ["Fresh", "Watcher"]
    await fresh.close()
    await watcher.close()
    if how.get("env") == ASYNCIO:
        assert "event loop: asyncio" in victim.tail(200)


async def test_going_away_closes_with_1001_and_refuses_new_websockets(app_on_redis):
    """Once the shutdown has begun, open WebSockets get 1001 and a new handshake gets 503, so
    nothing is accepted between that moment and the listening socket's close and then left
    open for Hypercorn to wait on."""
    from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError

    from quart_chat.chat import get_chat

    client = app_on_redis.test_client()
    async with client.websocket("/ws") as ws:
        await ws.send('{"type": "join", "room": "general", "user": "Early"}')
        while '"joined"' not in (frame := await asyncio.wait_for(ws.receive(), 5)):
            assert '"room_created"' in frame  # the room's own event may come first
        async with app_on_redis.app.app_context():
            get_chat().going_away()
        with pytest.raises(WebsocketDisconnectError) as closed:
            while True:  # past the room's own events
                await asyncio.wait_for(ws.receive(), 5)
    assert closed.value.args[0] == 1001
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket("/ws") as late:
            await late.send('{"type": "ping"}')
    assert refused.value.response.status_code == 503


def test_sigterm_to_the_group_never_hangs(make_cluster):
    """Each instance of a group-SIGTERM exits at once when idle (the worker once passed the
    signal on to its parent while the parent was still in its own handler: a deadlock in
    about one stop out of six)."""
    c = make_cluster(8)
    for inst in c.instances:
        t0 = time.monotonic()
        assert inst.stop(8) == 0, inst.tail()
        assert time.monotonic() - t0 < 2
