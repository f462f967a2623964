"""The outbound path (wire.py) and the fast paths' verdict (fastpath/) fail loudly, never quietly.

Unit tests without a socket: frames as wsproto makes them, the internals both fast paths
rely on, `QueueOutbox` closing with 1011 when its writer dies, `direct_outbox` falling back
with a reason that is logged once and counted. Then the app itself: in-process through
Quart's test client (a server that is not Hypercorn: the portable path, and a writer that
dies), and on the shared cluster (what `/healthz` says under ``CHAT_FAST_PATH``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import urllib.request

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import TextMessage

from quart_chat import fastpath, wire
from quart_chat.codes import CloseCode
from quart_chat.fastpath import STATUS
from quart_chat.fastpath.hypercorn import direct_outbox
from quart_chat.wire import QueueOutbox, ws_frame

CLOSE_INTERNAL_ERROR = CloseCode.INTERNAL_ERROR

pytestmark = [pytest.mark.timeout(60), pytest.mark.portable]

FAST_PATH = os.environ.get("CHAT_FAST_PATH", "").strip().lower() not in ("0", "false", "no", "off")


@pytest.fixture(autouse=True)
def fresh_status():
    """Each test starts with no fallback recorded, and leaves none behind."""
    STATUS.reset()
    yield
    STATUS.reset()


# ---------------------------------------------------------------- frames and internals
@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70001])
def test_ws_frame_is_what_wsproto_writes(n):
    text = ("a\u20ac" * n)[:n]
    assert ws_frame(text) == Connection(ConnectionType.SERVER).send(TextMessage(data=text))
    assert ws_frame(text) is ws_frame(text)  # memoised for fan-out of the same str


def test_installed_internals_are_the_expected_ones():
    """An upgrade of Hypercorn, wsproto or Quart that changes what the fast paths use fails here
    (and, running, each instance would warn at start-up and take the portable path)."""
    from quart.asgi import ASGIWebsocketConnection

    verdict = fastpath.decide(True)
    assert verdict.lean and verdict.direct and verdict.lean_problems == verdict.direct_problems == ()
    assert fastpath.connection_class(verdict) is fastpath.quart.LeanWebsocketConnection
    off = fastpath.decide(False)
    assert not off.lean and not off.direct
    assert fastpath.connection_class(off) is ASGIWebsocketConnection


def test_start_up_verdict_logs_the_paths(caplog):
    caplog.set_level(logging.INFO, logger="quart_chat")
    fastpath.decide(True).report()
    fastpath.decide(False).report()
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("fast paths on") for line in lines), lines
    assert any(line.startswith("fast paths off (CHAT_FAST_PATH=0)") for line in lines), lines
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_start_up_problem_decides_the_path_warns_and_shows_in_health(caplog, monkeypatch):
    """The verdict is what connections take: with Hypercorn's internals missing no connection
    uses the direct path, and /healthz says why for as long as the process runs."""
    monkeypatch.setattr(fastpath.hypercorn, "problems", lambda: ["hypercorn WSStream.app_send not found"])
    verdict = fastpath.decide(True)
    assert verdict.lean and not verdict.direct
    verdict.report()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "hypercorn WSStream.app_send not found" in warning.getMessage()
    assert STATUS.describe(True) == {"outbound": "fallback: hypercorn WSStream.app_send not found",
                                     "fallbacks": 0}
    monkeypatch.setattr(fastpath.quart, "problems", lambda: ["Quart changed"])
    assert fastpath.connection_class(fastpath.decide(True)) is not fastpath.quart.LeanWebsocketConnection


# ---------------------------------------------------------------- QueueOutbox
def test_both_outboxes_have_all_the_session_asks_of_one():
    """The portable path is no second-class copy: whatever `session.Outbox` grows, both have."""
    from quart_chat.session import Outbox

    needed = [name for name in vars(Outbox) if not name.startswith("_")]
    assert {"put", "put_lazy", "close", "backlog"} <= set(needed)
    for cls in (wire.DirectOutbox, QueueOutbox):
        assert [name for name in needed if not callable(getattr(cls, name, None))] == [], cls


async def test_queue_outbox_sends_in_order_and_is_bounded():
    sent: list[str] = []
    gate = asyncio.Event()

    async def send(text: str) -> None:
        await gate.wait()
        sent.append(text)

    box = QueueOutbox(send, limit=3)
    assert [box.put(f"f{k}") for k in range(4)] == [True, True, True, False]
    assert box.backlog() == 3
    await asyncio.sleep(0)  # the writer takes f0 and waits in send
    assert box.backlog() == 2
    assert [box.put(f"f{k}") for k in (3, 4)] == [True, False]
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sent == ["f0", "f1", "f2", "f3"]
    box.close()


async def test_queue_outbox_whose_writer_dies_closes_1011_and_takes_nothing_more(caplog):
    sent: list[str] = []
    codes: list[int] = []

    async def send(text: str) -> None:
        if text == "f1":
            raise RuntimeError("the transport went away")
        sent.append(text)

    box = QueueOutbox(send, limit=100, on_error=codes.append)
    for k in range(5):
        assert box.put(f"f{k}")
    task = box._task
    await asyncio.wait_for(asyncio.shield(task), 1)
    assert task.done() and not task.cancelled() and task.exception() is None
    assert sent == ["f0"] and codes == [CLOSE_INTERNAL_ERROR] and box.closed
    assert box._queue.empty()  # what was queued is dropped, not kept for nobody
    # No longer accepting: frames are dropped, and "not full" (the close code is 1011, not 1013).
    for k in range(200):
        assert box.put(f"later{k}")
    assert box._queue.empty() and box._task is task and codes == [CLOSE_INTERNAL_ERROR]
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "1011" in record.getMessage() and "the transport went away" in record.getMessage()
    box.close()


async def test_queue_outbox_close_is_not_a_failure():
    codes: list[int] = []

    async def send(text: str) -> None:
        await asyncio.sleep(10)

    box = QueueOutbox(send, limit=10, on_error=codes.append)
    box.put("f0")
    await asyncio.sleep(0)
    box.close()
    await asyncio.gather(box._task, return_exceptions=True)
    assert box._task.cancelled() and codes == []
    assert box.put("after")  # dropped: no new writer task for a closed connection
    assert box._queue.qsize() == 0


async def test_queue_outbox_idle_costs_no_task():
    box = QueueOutbox(lambda text: asyncio.sleep(0), limit=10)
    assert box._task is None
    box.close()
    assert box.put("x") and box._task is None


# ---------------------------------------------------------------- direct_outbox
class WSStream:
    """Shaped like Hypercorn's stream: ``app_send``, ``send`` (the protocol's), ``connection``."""

    def __init__(self, protocol, connection) -> None:
        self.send = protocol.stream_send
        self.connection = connection

    async def app_send(self, message) -> None:
        raise AssertionError("not used")


class H11Protocol:
    def __init__(self, server) -> None:
        self.send = server.protocol_send

    async def stream_send(self, event) -> None:
        raise AssertionError("not used")


class H2Protocol(H11Protocol):
    pass


class TCPServer:
    def __init__(self, writer) -> None:
        self.writer = writer

    async def protocol_send(self, event) -> None:
        raise AssertionError("not used")


@pytest.fixture
async def socket_pair():
    """A real asyncio StreamWriter on one end of a socket pair, and the other end."""
    ours, theirs = socket.socketpair()
    _reader, writer = await asyncio.open_connection(sock=ours)
    theirs.setblocking(False)
    yield writer, theirs
    writer.close()
    theirs.close()


async def test_direct_outbox_writes_whole_frames_once_per_pass(socket_pair):
    writer, peer = socket_pair
    stream = WSStream(H11Protocol(TCPServer(writer)), Connection(ConnectionType.SERVER))
    box = direct_outbox(stream.app_send, 100)
    assert isinstance(box, wire.DirectOutbox)
    assert box.put("one") and box.put("two \u20ac")
    await asyncio.sleep(0.05)
    assert peer.recv(1000) == ws_frame("one") + ws_frame("two \u20ac")
    assert STATUS.describe(True) == {"outbound": "direct", "fallbacks": 0}
    box.close()


async def test_member_events_wait_for_the_next_write_and_never_overtake(socket_pair):
    """`put_lazy` (user_joined, user_left) waits up to LAZY_SECONDS for the connection's next
    write; a frame that cannot wait writes everything pending first, in order, in one write."""
    writer, peer = socket_pair
    stream = WSStream(H11Protocol(TCPServer(writer)), Connection(ConnectionType.SERVER))
    box = direct_outbox(stream.app_send, 3)
    assert box.put_lazy("joined 1") and box.put_lazy("joined 2")
    await asyncio.sleep(0.05)
    with pytest.raises(BlockingIOError):
        peer.recv(1000)  # nothing written yet
    assert box.backlog() == 2
    assert box.put("message")
    await asyncio.sleep(0.05)
    assert peer.recv(1000) == ws_frame("joined 1") + ws_frame("joined 2") + ws_frame("message")
    # Alone, a member event is written when the lazy timer fires (one timer for all
    # connections: within LAZY_SECONDS, not exactly then).
    assert box.put_lazy("left")
    loop = asyncio.get_running_loop()
    start = loop.time()
    while box.backlog():
        assert loop.time() - start < wire.LAZY_SECONDS + 0.5, "a member event was never written"
        await asyncio.sleep(0.01)
    assert peer.recv(1000) == ws_frame("left")
    # The bound counts waiting member events too: more than it in one pass is too slow.
    assert box.put_lazy("a") and box.put_lazy("b") and box.put_lazy("c")
    assert not box.put_lazy("d")
    box.close()


async def test_a_burst_of_member_events_is_written_at_once(socket_pair):
    """`LAZY_MAX` member events pending are written this pass: a burst into a big room never
    fills the send queue of a client that reads fine."""
    writer, peer = socket_pair
    stream = WSStream(H11Protocol(TCPServer(writer)), Connection(ConnectionType.SERVER))
    box = direct_outbox(stream.app_send, 1000)
    names = [f"user {n}" for n in range(wire.LAZY_MAX * 5)]
    got = b""
    for name in names:
        assert box.put_lazy(name)
        assert box.backlog() <= wire.LAZY_MAX
        await asyncio.sleep(0)  # one event-loop pass per frame: a busy subscriber's pace
        await asyncio.sleep(0)
        try:
            got += peer.recv(65536)
        except BlockingIOError:
            pass
    assert box.backlog() < wire.LAZY_MAX  # the rest waits for the timer
    assert got == b"".join(ws_frame(n) for n in names[:len(names) - box.backlog()])
    box.close()


@pytest.mark.parametrize("case, reason", [
    ("none", "the server's send is not in the scope"),
    ("other server", "not Hypercorn's WSStream.app_send"),
    ("http2", "WebSocket over HTTP/2 (RFC 8441)"),
    ("no writer", "has no asyncio StreamWriter"),
    ("no connection", "WSStream.connection is not a wsproto Connection"),
    ("extension", "WebSocket extension 'x-other' negotiated"),
    ("broken", "unexpected RuntimeError: surprise"),
])
async def test_direct_outbox_falls_back_with_a_reason_logged_once(socket_pair, caplog, case, reason):
    writer, _peer = socket_pair
    conn = Connection(ConnectionType.SERVER)
    raw_send = {
        "none": lambda: None,
        "other server": lambda: print,
        "http2": lambda: WSStream(H2Protocol(TCPServer(writer)), conn).app_send,
        "no writer": lambda: WSStream(H11Protocol(TCPServer(None)), conn).app_send,
        "no connection": lambda: WSStream(H11Protocol(TCPServer(writer)), None).app_send,
        "extension": lambda: WSStream(H11Protocol(TCPServer(writer)), conn).app_send,
        "broken": lambda: WSStream(H11Protocol(TCPServer(writer)), conn).app_send,
    }[case]()
    if case == "extension":
        class Other:
            name = "x-other"

            def enabled(self) -> bool:
                return True

        conn._proto.extensions.append(Other())
    if case == "broken":
        class Surprising:
            @property
            def state(self):
                raise RuntimeError("surprise")

        raw_send.__self__.connection = Surprising()
    for _ in range(3):
        assert direct_outbox(raw_send, 100) is None
    status = STATUS.describe(True, portable_now=3)
    assert status["fallbacks"] == 3 and status["outbound"].startswith("fallback: ")
    assert reason in status["outbound"]
    # Once those connections are gone, so is the cause: the count of fallbacks stays.
    assert STATUS.describe(True, portable_now=0) == {"outbound": "direct", "fallbacks": 3}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0]  # once, not per connection
    assert STATUS.describe(False)["outbound"] == "portable (CHAT_FAST_PATH=0)"


async def test_a_connection_no_longer_open_still_gets_the_direct_outbox_and_writes_nothing(socket_pair):
    """Not a fallback: a client that closed at once after the handshake is not an internals change."""
    writer, peer = socket_pair
    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(b"\x88\x82abcd" + bytes(a ^ b for a, b in zip(b"\x03\xe8", b"ab")))  # masked close 1000
    list(conn.events())
    assert conn.state is not ConnectionState.OPEN
    box = direct_outbox(WSStream(H11Protocol(TCPServer(writer)), conn).app_send, 100)
    assert isinstance(box, wire.DirectOutbox) and STATUS.fallbacks == 0
    box.put("dropped")
    await asyncio.sleep(0.05)
    with pytest.raises(BlockingIOError):
        peer.recv(100)


# ---------------------------------------------------------------- the app, in process
async def health(test_app) -> dict:
    response = await test_app.test_client().get("/healthz")
    return await response.get_json()


@pytest.mark.single_redis  # app_on_redis: its own redis-server
async def test_not_hypercorn_means_portable_path_said_once_and_counted(app_on_redis, caplog):
    client = app_on_redis.test_client()
    for _ in range(2):
        async with client.websocket("/ws") as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.receive()) == {"type": "pong"}
            body = await health(app_on_redis)
            assert body["connections"] == 1 and body["direct"] == 0
    assert body["fallbacks"] == 2
    assert body["outbound"].startswith("fallback: the server's send is ")  # while one was open
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "quart_chat.fastpath"]
    assert len(warnings) == 1 and "not Hypercorn's WSStream.app_send" in warnings[0]
    after = await health(app_on_redis)  # the cause went with the connections; the count stays
    assert after["connections"] == 0 and after["outbound"] == "direct" and after["fallbacks"] == 2


@pytest.mark.single_redis  # app_on_redis: its own redis-server
async def test_writer_that_dies_closes_the_connection_with_1011(app_on_redis, monkeypatch, caplog):
    from quart.testing.connections import WebsocketDisconnectError
    from quart.wrappers.websocket import Websocket

    async def failing_send(self, data) -> None:
        raise RuntimeError("send broke")

    client = app_on_redis.test_client()
    async with client.websocket("/ws") as ws:
        monkeypatch.setattr(Websocket, "send", failing_send)
        await ws.send(json.dumps({"type": "ping"}))  # the pong's send fails in the writer task
        with pytest.raises(WebsocketDisconnectError) as closed:
            await asyncio.wait_for(ws.receive(), 5)
    assert closed.value.args[0] == 1011
    assert (await health(app_on_redis))["connections"] == 0
    assert any("send broke" in r.getMessage() and "1011" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- real Hypercorn instances
def test_healthz_names_the_outbound_path(cluster):
    """Every instance of the shared cluster takes the path CHAT_FAST_PATH asks for, says so in
    /healthz, and logged it at start-up; none fell back."""
    import websockets.sync.client as ws_client

    for inst in cluster.instances:
        with ws_client.connect(inst.ws_url) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(5)) == {"type": "pong"}
            with urllib.request.urlopen(inst.http_url + "/healthz", timeout=5) as r:
                body = json.loads(r.read())
        assert body["connections"] >= 1 and body["fallbacks"] == 0
        if FAST_PATH:
            assert body["outbound"] == "direct" and body["direct"] == body["connections"]
        else:
            assert body["outbound"] == "portable (CHAT_FAST_PATH=0)" and body["direct"] == 0
        log = inst.log_path.read_text(errors="replace")
        assert ("fast paths on" if FAST_PATH else "fast paths off (CHAT_FAST_PATH=0)") in log
        assert "not available" not in log and "lean WebSocket connection class off" not in log


def test_permessage_deflate_declined_on_the_fast_path(cluster):
    """A client offering permessage-deflate (browsers always do) gets no extension back, so it
    sends plain frames and the server keeps no inflate window per connection; the portable
    path leaves Hypercorn's handshake alone. Compressed or not, the chat works."""
    import websockets.sync.client as ws_client

    for inst in cluster.instances:
        with ws_client.connect(inst.ws_url, compression="deflate") as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(5)) == {"type": "pong"}
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
        if FAST_PATH:
            assert agreed is None
        else:
            assert agreed is not None and agreed.startswith("permessage-deflate")


class _BackedUpWriter:
    """A StreamWriter whose socket is always backed up and whose drain fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.transport = self
        self.written: list[bytes] = []

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return 0, 0

    def get_write_buffer_size(self) -> int:
        return 1  # over the high-water mark of 0: every flush starts a drain

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    async def drain(self) -> None:
        raise self.error


@pytest.mark.parametrize("error, code", [(RuntimeError("the writer broke"), CLOSE_INTERNAL_ERROR),
                                         (ConnectionResetError(), None)])
async def test_a_failed_drain_is_1011_unless_the_client_left(error, code, caplog):
    """A drain that fails for a reason of ours closes with 1011, logged; a client that reset
    its connection is no error, and never becomes a 'too slow' 1013 either."""
    open_state = object()
    conn = type("Conn", (), {"state": open_state})()
    box = wire.DirectOutbox(_BackedUpWriter(error), conn, open_state, limit=3)
    codes: list[int] = []
    box.on_error = codes.append
    assert box.put("first")
    await asyncio.sleep(0.05)  # flushed, then the drain failed
    assert box.closed
    assert codes == ([] if code is None else [code])
    logged = [r for r in caplog.records if r.levelno == logging.WARNING and "drain failed" in r.getMessage()]
    assert len(logged) == (0 if code is None else 1)
    assert all(box.put(f"more {n}") for n in range(10))  # never 'too slow' once it is gone
    assert box.backlog() <= 4
