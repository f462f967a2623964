"""The WebSocket endpoint ``/ws``: origin check, a tight receive loop, an outbox that never waits.

It is served as plain ASGI, in front of the Quart app (`ChatSockets`), because a chat server
holds thousands of mostly idle connections and Quart's per-connection machinery (two tasks,
a second inbound queue, a request context, a Websocket object with its headers, a signal per
inbound frame) roughly doubles what each one costs. Pages, REST, and the broker's start and
stop stay with Quart. The behaviour is the one PROTOCOL.md section 4 describes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ..asgi import RAW_SEND
from ..session import CLOSE_TOO_SLOW, Session
from ..wire import QueueOutbox, direct_outbox

PATH = "/ws"
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TIMEOUT = 1.0


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Allow non-browser clients (no Origin), same host:port, or a listed origin."""
    if origin is None or "*" in allowed:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or host is None:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    own = urlsplit("//" + host.strip().lower())
    try:
        own_port = own.port or port
    except ValueError:
        return False
    return parts.hostname == own.hostname and port == own_port


def _frame_too_big(data: str | bytes, limit: int) -> bool:
    # Cheap bounds first: a str of n code points is n to 4n bytes in UTF-8.
    if isinstance(data, str):
        if len(data) * 4 <= limit:
            return False
        if len(data) > limit:
            return True
        return len(data.encode("utf-8", "surrogatepass")) > limit
    return data is not None and len(data) > limit


def _header(scope: dict, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _refuse(scope: dict, send: Callable[[dict], Awaitable[None]]) -> None:
    """Answer the handshake with HTTP 403 (a body when the server supports it)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = b"cross-origin WebSocket refused"
        await send({"type": "websocket.http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close"})  # before accept: the server answers 403


def _text_sender(send: Callable[[dict], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    return send_text


async def serve(chat: Any, scope: dict, receive: Callable[[], Awaitable[dict]],
                send: Callable[[dict], Awaitable[None]]) -> None:
    """One chat connection, as PROTOCOL.md section 4 describes."""
    settings = chat.settings
    if (await receive())["type"] != "websocket.connect":
        return
    if not origin_allowed(_header(scope, b"origin"), _header(scope, b"host"), settings.allowed_origins):
        await _refuse(scope, send)
        return
    view = asyncio.current_task()
    await send({"type": "websocket.accept"})
    # Straight to the socket under Hypercorn/HTTP 1.1; through ASGI send elsewhere.
    outbox = (direct_outbox(scope.get(RAW_SEND), settings.send_queue)
              or QueueOutbox(_text_sender(send), settings.send_queue))
    session = Session(settings, chat.hub, chat.broker, outbox, on_abort=lambda _code: view.cancel())
    chat.hub.attach(session)
    limit = settings.max_frame
    try:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                data = event.get("text")
                if data is None:
                    data = event.get("bytes") or b""
                if _frame_too_big(data, limit):
                    session.close_code = CLOSE_TOO_BIG
                    break
                await session.handle(data)
            elif kind == "websocket.disconnect":
                break
    except asyncio.CancelledError:
        if session.close_code is None:
            raise  # the server is stopping
        view.uncancel()  # our own abort (a client too slow): close below
    except Exception:
        session.close_code = CLOSE_INTERNAL
        raise
    finally:
        outbox.close()
        session.close()
        if session.close_code is not None:
            try:
                await asyncio.wait_for(send({"type": "websocket.close", "code": session.close_code}),
                                       CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, Exception):
                pass
            if session.close_code == CLOSE_TOO_SLOW:
                outbox.abort(CLOSE_TIMEOUT)  # it may never read its close frame: free the socket


class ChatSockets:
    """ASGI middleware: ``/ws`` WebSockets go to `serve`; everything else to the Quart app."""

    def __init__(self, app: Any, chat: Any) -> None:
        self.app = app
        self.chat = chat

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope.get("path") == PATH:
            return await serve(self.chat, scope, receive, send)
        return await self.app(scope, receive, send)
