"""One WebSocket speaking the protocol, without reconnecting; and the reconnect delays."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import orjson

from .events import ChatError, join_frame

# What a WebSocket is opened with (the caller may override any): no compression (the server
# offers none), no size cap on what comes in, no proxy, no User-Agent.
CONNECT_OPTIONS: dict[str, Any] = {"compression": None, "max_size": None, "close_timeout": 2,
                                   "user_agent_header": None, "proxy": None}


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays, as the bundled page's: attempt k waits a random time in [d/2, d],
    d = ``base`` * 2**k up to ``cap`` seconds; back to attempt 0 once a connection stayed
    open ``reset_after`` seconds. ``base`` 0: reconnect at once."""

    base: float = 0.5
    cap: float = 10.0
    reset_after: float = 5.0

    def delay(self, attempt: int) -> float:
        d = min(self.cap, self.base * 2 ** min(attempt, 30))
        return d / 2 + random.random() * d / 2 if d > 0 else 0.0


# ------------------------------------------------------------------ one connection
class Connection:
    """One WebSocket speaking the protocol, without reconnecting: the lower-level piece.

    Every frame received is handed, in order, to `on_frame` from one reader task; `join`
    waits for the room's ``joined``, which the handler passes on with `joined` (or a refusal
    with `refused`). When the connection ends other than by `close`, `on_closed` is called
    (with the exception that stopped the reader, if one did). Subclasses override those two.
    """

    __slots__ = ("closing", "pending", "reader", "rooms", "url", "user", "ws")

    def __init__(self, url: str, user: str | None = None) -> None:
        self.url = url
        self.user = user
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.rooms: set[str] = set()
        self.closing = False

    async def open(self, timeout: float = 10.0, **options: Any) -> None:
        """Open the WebSocket (`CONNECT_OPTIONS`, then ``options``) and start reading."""
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, **{**CONNECT_OPTIONS, "open_timeout": timeout, **options})
        self.reader = asyncio.create_task(self._read())

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def join(self, room: str, since: str | None = None, timeout: float = 10.0) -> Any:
        """Send ``join`` (with ``self.user`` and ``since``) and wait for what `joined` passes on."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[room] = fut
        await self.send(join_frame(room, self.user, since))
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(room, None)
        self.rooms.add(room)
        return reply

    def joined(self, room: str, reply: Any) -> None:
        """The ``joined`` of ``room`` came: `join` returns ``reply``."""
        fut = self.pending.get(room)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def refused(self, exc: BaseException) -> None:
        """A join was refused (or the connection ended): every waiting `join` raises ``exc``."""
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def on_frame(self, raw: str) -> None:
        """One frame received (JSON text). The default handles ``joined`` and join refusals."""
        frame = orjson.loads(raw)
        if frame.get("type") == "joined":
            self.joined(frame.get("room"), frame)
        elif frame.get("type") == "error" and frame.get("ref") == "join":
            self.refused(ChatError(str(frame.get("code")), str(frame.get("message", ""))))

    def on_closed(self, error: BaseException | None) -> None:
        """The connection ended, not by `close` (``error``: what stopped the reader, if anything)."""

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self.reader is not None:
            self.reader.cancel()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = self.ws
        on_frame = self.on_frame
        error: BaseException | None = None
        try:
            async for raw in ws:
                on_frame(raw if isinstance(raw, str) else raw.decode())
        except ConnectionClosed:
            pass
        except Exception as err:  # a frame the handler could not take: the connection is dropped
            error = err
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        self.refused(ConnectionError("closed before joined"))
        if not self.closing and ws is self.ws:
            self.on_closed(error)


