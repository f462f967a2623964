"""Quart's internals, for the lean WebSocket connection class (named nowhere else).

`LeanWebsocketConnection` runs a WebSocket view in the server's own task, reading frames
straight from the server: Quart's own class adds a reader task and an unbounded inbound
queue per connection. `problems` says what of Quart's it needs and is missing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from quart.asgi import ASGIWebsocketConnection

from .versions import versions

log = logging.getLogger("quart_chat.fastpath")


class _ClientGone(asyncio.CancelledError):
    """The client closed the WebSocket: the view is unwound as Quart does, by cancellation."""


class _Pull:
    """Stands in for Quart's inbound queue: each ``get`` reads the next ASGI event itself."""

    __slots__ = ("_receive",)

    def __init__(self, receive: Callable[[], Awaitable[dict]]) -> None:
        self._receive = receive

    async def get(self) -> str | bytes | None:
        """The next inbound message; a disconnect unwinds the view as a cancellation."""
        while True:
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                return text if text is not None else event.get("bytes")
            if kind == "websocket.disconnect":
                raise _ClientGone()


def _params(func: Any) -> list[str] | None:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def problems() -> list[str]:
    """What `LeanWebsocketConnection` needs from the installed Quart, and is missing."""
    problems = []
    for name, params in (("_create_websocket_from_scope", ["self", "send"]),
                         ("handle_websocket", ["self", "websocket", "send"])):
        got = _params(getattr(ASGIWebsocketConnection, name, None))
        if got != params:
            problems.append(f"Quart's ASGIWebsocketConnection.{name}({', '.join(got or ['?'])}) "
                            f"is not ({', '.join(params)})")
    return problems


def connection_class(lean: bool) -> type[ASGIWebsocketConnection]:
    """The Quart WebSocket connection class: the lean one when the start-up verdict allows it."""
    return LeanWebsocketConnection if lean else ASGIWebsocketConnection


_probe_failed = False


class LeanWebsocketConnection(ASGIWebsocketConnection):
    """Quart's WebSocket handling without the reader task and inbound queue it adds per connection.

    Quart runs each WebSocket as two tasks (one moves ASGI events into an unbounded queue,
    one runs the view) plus the server's own task. A chat server holds thousands of mostly
    idle connections, so here the view runs in the server's task and ``websocket.receive()``
    reads the next event straight from the server: less memory per connection, one hop less
    per frame, and inbound frames are never buffered without bound. Routing,
    blueprints, contexts, ``before_websocket`` hooks and error handling stay Quart's own.
    """

    async def __call__(self, receive: Any, send: Any) -> None:
        # Kept as lean as before the probe: this frame lives as long as the connection.
        websocket = self._lean_websocket(receive, send)
        if websocket is None:
            return await self._quarts_own(receive, send)
        try:
            await self.handle_websocket(websocket, send)
        except _ClientGone:
            pass  # a normal end: the client left

    async def _quarts_own(self, receive: Any, send: Any) -> None:
        await ASGIWebsocketConnection.__call__(self, receive, send)

    def _lean_websocket(self, receive: Any, send: Any) -> Any:
        """Quart's Websocket object reading through `_Pull`; None (warned once) if Quart would not."""
        global _probe_failed
        pull = self.queue = _Pull(receive)  # type: ignore[assignment]
        websocket = self._create_websocket_from_scope(send)
        if getattr(websocket, "_receive", None) == pull.get:
            return websocket
        # Quart no longer reads through self.queue.get: run its own code, loudly.
        if not _probe_failed:
            _probe_failed = True
            log.warning("lean WebSocket connection class off, using Quart's own: Quart %s does not "
                        "read frames through ASGIWebsocketConnection.queue.get", versions())
        self.queue = asyncio.Queue()
        return None
