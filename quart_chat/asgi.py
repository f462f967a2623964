"""ASGI middleware: close WebSockets with 1001 when the server cancels them at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

CLOSE_GOING_AWAY = 1001

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class GoingAway:
    """Send close 1001 on a WebSocket whose task is cancelled while still open.

    Hypercorn cancels connection tasks once its graceful timeout has passed; without this
    the client would see the TCP connection drop (1006) instead of "going away".
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        state = {"open": False}

        async def tracking_send(message: dict) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                state["open"] = True
            elif kind in ("websocket.close", "websocket.http.response.start"):
                state["open"] = False
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if state["open"]:
                state["open"] = False
                try:
                    await asyncio.wait_for(send({"type": "websocket.close", "code": CLOSE_GOING_AWAY}), 1.0)
                except Exception:  # the transport may already be gone; nothing more to do
                    pass
            raise
