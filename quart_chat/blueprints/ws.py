"""The WebSocket route ``/ws``: origin check, a tight receive loop, an outbox that never waits.

Quart runs it through `asgi.DirectWebsocketConnection`, which keeps Quart's routing and
contexts but drops the extra task and queue Quart adds per connection.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from quart import Blueprint, Response, websocket

from ..app import get_chat
from ..asgi import RAW_SEND
from ..session import CLOSE_TOO_SLOW, Session
from ..wire import QueueOutbox, direct_outbox

bp = Blueprint("ws", __name__)

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


@bp.websocket(PATH)
async def ws() -> Response | None:
    """One chat connection, as PROTOCOL.md section 4 describes."""
    chat = get_chat()
    settings = chat.settings
    if not origin_allowed(websocket.headers.get("Origin"), websocket.headers.get("Host"),
                          settings.allowed_origins):
        # Returned before anything accepts: Quart answers the handshake with this 403.
        return Response("cross-origin WebSocket refused", status=403, content_type="text/plain")
    view = asyncio.current_task()
    await websocket.accept()
    # Straight to the socket under Hypercorn/HTTP 1.1; through Quart's send elsewhere.
    outbox = (direct_outbox(websocket.scope.get(RAW_SEND), settings.send_queue)
              or QueueOutbox(websocket.send, settings.send_queue))
    session = Session(settings, chat.hub, chat.broker, outbox, on_abort=lambda _code: view.cancel())
    chat.hub.attach(session)
    limit = settings.max_frame
    receive = websocket.receive
    try:
        while True:
            data = await receive()
            if _frame_too_big(data, limit):
                session.close_code = CLOSE_TOO_BIG
                break
            await session.handle(data)
    except asyncio.CancelledError:
        if session.close_code is None:
            raise  # the client left, or the server is stopping
        view.uncancel()  # our own abort (a client too slow): close below
    except Exception:
        session.close_code = CLOSE_INTERNAL
        raise
    finally:
        outbox.close()
        session.close()
        if session.close_code is not None:
            try:
                await asyncio.wait_for(websocket.close(session.close_code), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, Exception):
                pass
            if session.close_code == CLOSE_TOO_SLOW:
                outbox.abort(CLOSE_TIMEOUT)  # it may never read its close frame: free the socket
    return None
