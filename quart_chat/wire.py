"""The outbound hot path: each frame encoded once, written straight to the connection's socket.

Sending one frame through Quart's ``websocket.send`` costs a writer-task wake-up, Quart's
ASGI wrapper, Hypercorn's ``WSStream.app_send``, wsproto's encoder, ``H11Protocol`` and a
lock plus ``drain()`` in ``TCPServer``: several dozen microseconds per receiver per message.
With HTTP/1.1 under Hypercorn this module instead (`fastpath.hypercorn.direct_outbox` finds the
connection's transport; nothing here names another library's internals):

- encodes a text frame's WebSocket framing once per frame (`ws_frame` remembers the last
  frame it encoded, and fan-out hands the very same ``str`` to every receiver in a row);
- appends the bytes to the connection's `DirectOutbox` and, once per event-loop pass, writes
  everything pending for a connection in one ``transport.write`` (no task, no await);
- lets member events (``user_joined``, ``user_left``: `put_lazy`) wait up to `LAZY_SECONDS`
  for the connection's next write (or until `LAZY_MAX` frames are pending). Each write costs
  a system call and, on loopback, the receiving side's TCP work too; a burst of joins into a
  room of n members would otherwise be n writes per join. Nothing overtakes anything: a
  frame that cannot wait writes everything pending before it, in order;
- keeps the backpressure contract: past the transport's high-water mark frames wait in the
  outbox, a drain task (created only then) flushes them, and more than ``CHAT_SEND_QUEUE``
  waiting frames means a client too slow to keep (close 1013, done by the view).

Server frames are never masked, fragmented or compressed. `fastpath.hypercorn.decline_compression` keeps
permessage-deflate out of the handshake: a message encoded once for every receiver cannot
share a per-connection compression context, and a client that compresses its own frames
(every browser does) would make the server keep a 32 KB inflate window per connection for
chat messages of a few dozen bytes. (Were it negotiated anyway, an uncompressed message,
RSV1 = 0, is still valid: RFC 7692 section 6.) These frames mix freely with the ones
wsproto writes (pings, pongs, the close frame): every write is whole frames. Nothing is
written once wsproto has left the OPEN state. Where the internals are not what the fast path
expects (HTTP/2, another server or Hypercorn version), the session uses `QueueOutbox`, the
plain ASGI path: never quietly (see `fastpath`). ``CHAT_FAST_PATH=0`` takes it only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .codes import CloseCode

log = logging.getLogger("quart_chat.wire")


_last_text: str | None = None
_last_frame: bytes = b""


def ws_frame(text: str) -> bytes:
    """The WebSocket text frame (FIN, opcode 1, unmasked) carrying ``text``; memoised for the last one."""
    global _last_text, _last_frame
    if text is _last_text:
        return _last_frame
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = bytes((0x81, 126, n >> 8, n & 0xFF))
    else:
        head = b"\x81\x7f" + n.to_bytes(8, "big")
    _last_text, _last_frame = text, head + payload
    return _last_frame


# How long a member event may wait for its connection's next write. A person does not see a
# quarter of a second in a member list; a room of 30 taking 9 joins a second is written to
# 2.5 times less often.
LAZY_SECONDS = 0.25
# Past this many frames pending, member events are written this pass after all: a burst into
# a big room must not fill the send queue (CHAT_SEND_QUEUE) of a client that reads fine.
LAZY_MAX = 32

# A DirectOutbox's `_due`: no flush planned, a flush at the lazy timer, a flush this pass.
_IDLE, _LATER, _SOON = 0, 1, 2


class _Flushes:
    """Outboxes that one callback on the running loop flushes together: at the end of this
    pass (``delay`` 0), or ``delay`` seconds from the first one's frame."""

    __slots__ = ("boxes", "loop", "delay", "due")

    def __init__(self, delay: float, due: int) -> None:
        self.boxes: list[DirectOutbox] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.delay = delay
        self.due = due

    def add(self, box: DirectOutbox) -> None:
        """Have ``box`` flushed by the next callback (scheduled now if there is none)."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # the first since the last callback (or a previous loop died)
            self.boxes.clear()
            self.loop = loop
            if self.delay:
                loop.call_later(self.delay, self.run)
            else:
                loop.call_soon(self.run)
        self.boxes.append(box)

    def run(self) -> None:
        """Flush every box still waiting for this callback (one that wrote since is skipped)."""
        self.loop = None
        boxes = self.boxes[:]
        self.boxes.clear()
        due = self.due
        for box in boxes:
            if box._due == due:
                box.flush()


_soon = _Flushes(0, _SOON)
_later = _Flushes(LAZY_SECONDS, _LATER)


class DirectOutbox:
    """Pending frames of one connection, written to its transport once per loop pass."""

    __slots__ = ("_writer", "_transport", "_conn", "_open", "_out", "_limit", "_high", "_drainer", "_due", "closed",
                 "on_error")

    def __init__(self, writer: asyncio.StreamWriter, conn: Any, open_state: Any, limit: int) -> None:
        self._writer = writer
        self._transport = writer.transport
        self._conn = conn  # the wsproto Connection: its state says whether data frames may still go out
        self._open = open_state
        self._out: list[bytes] = []
        self._limit = limit
        _low, self._high = self._transport.get_write_buffer_limits()
        self._drainer: asyncio.Task | None = None
        self._due = _IDLE
        self.closed = False
        # Called with 1011 when writing fails for another reason than the client leaving.
        self.on_error: Callable[[int], object] | None = None

    def put(self, text: str) -> bool:
        """Queue one frame, written this event-loop pass; False when more than ``limit`` frames
        wait (a client too slow)."""
        out = self._out
        out.append(ws_frame(text))
        if self._due != _SOON and self._drainer is None:
            self._due = _SOON
            _soon.add(self)
        return len(out) <= self._limit or self._overflow()

    def put_lazy(self, text: str) -> bool:
        """Queue one frame that may wait up to `LAZY_SECONDS` for the next write; as `put` otherwise."""
        out = self._out
        out.append(ws_frame(text))
        if self._drainer is None:
            if self._due == _IDLE:
                self._due = _LATER
                _later.add(self)
            elif self._due == _LATER and (len(out) >= LAZY_MAX or len(out) >= self._limit):
                self._due = _SOON
                _soon.add(self)
        return len(out) <= self._limit or self._overflow()

    def _overflow(self) -> bool:
        if self.closed:  # the connection is gone: nothing will be written, nobody is too slow
            self._out.clear()
            return True
        return False

    def flush(self) -> None:
        """Write every pending frame in one call, unless the socket is backed up."""
        self._due = _IDLE
        out = self._out
        if not out or self._drainer is not None or self.closed:
            return
        transport = self._transport
        if transport.is_closing() or self._conn.state is not self._open:
            out.clear()
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        if transport.get_write_buffer_size() > self._high:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except Exception as err:
            self.closed = True
            self._out.clear()
            if not isinstance(err, ConnectionError):  # the client leaving is no error: the view cleans up
                log.warning("outbound drain failed, closing the connection with %d: %r",
                            CloseCode.INTERNAL_ERROR, err, exc_info=err)
                if self.on_error is not None:
                    self.on_error(CloseCode.INTERNAL_ERROR)
            return
        finally:
            self._drainer = None
        self.flush()

    def backlog(self) -> int:
        """Frames waiting for the socket to drain."""
        return len(self._out)

    def close(self) -> None:
        """Drop whatever is pending; nothing more is written."""
        self.closed = True
        self._out.clear()
        if self._drainer is not None:
            self._drainer.cancel()

    def abort(self, delay: float) -> None:
        """Reset the connection in ``delay`` seconds unless it has closed by then.

        A client that stopped reading never takes its close frame, queued behind megabytes
        of socket buffer: without this the server held that buffer and the fd for ever.
        """
        asyncio.get_running_loop().call_later(delay, _abort, self._transport)


class QueueOutbox:
    """The portable path: a bounded queue drained by one writer task through ``send``.

    If ``send`` ever raises (anything but a cancellation), the writer is dead: the outbox
    stops taking frames, drops what is queued and calls ``on_error(1011)`` (the session's
    abort, which closes the connection), so it can never fill up behind a writer that is gone.
    """

    __slots__ = ("_queue", "_send", "_task", "on_error", "closed")

    def __init__(self, send: Callable[[str], Awaitable[None]], limit: int,
                 on_error: Callable[[int], None] | None = None) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(limit)
        self._send = send
        self._task: asyncio.Task | None = None
        self.on_error = on_error
        self.closed = False

    def put(self, text: str) -> bool:
        """Queue one frame; False when the queue is full (a client too slow).

        Once closed (by the view, or because the writer died) frames are dropped: the
        connection is being closed with its own code, so this is not "too slow".
        """
        if self.closed:
            return True
        if self._task is None:  # created on first use: idle connections cost no task
            self._task = asyncio.get_running_loop().create_task(self._pump())
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    put_lazy = put  # one writer task already sends whatever is queued as soon as it can

    async def _pump(self) -> None:
        queue, send = self._queue, self._send
        try:
            while True:
                await send(await queue.get())
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the writer is dead: close rather than queue for nobody
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        self.closed = True
        queue = self._queue
        while not queue.empty():
            queue.get_nowait()
        log.warning("outbound writer failed, closing the connection with %d: %r",
                    CloseCode.INTERNAL_ERROR, err, exc_info=err)
        if self.on_error is not None:
            self.on_error(CloseCode.INTERNAL_ERROR)

    def backlog(self) -> int:
        """Frames queued and not yet handed to ``send``."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the writer task; nothing more is sent."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()

    def abort(self, delay: float) -> None:
        """Nothing to do: plain ASGI offers no way to reset a connection."""


def _abort(transport: asyncio.WriteTransport) -> None:
    try:
        transport.abort()  # a no-op once the connection is closed
    except Exception:  # already torn down
        pass


