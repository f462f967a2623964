"""The WebSocket route ``/ws``: origin check, a tight receive loop, an outbox that never waits.

Quart runs it through `asgi.DirectWebsocketConnection`, which keeps Quart's routing and
contexts but drops the extra task and queue Quart adds per connection.
"""

from __future__ import annotations

import asyncio
import logging

from quart import Blueprint, Response, websocket

from ..app import get_chat
from ..asgi import RAW_SEND
from ..fdlimit import refuse_handshake
from ..forwarded import client_address, is_loopback, origin_allowed, request_origin
from ..session import CLOSE_TOO_SLOW, Session
from ..wire import QueueOutbox, direct_outbox

bp = Blueprint("ws", __name__)
log = logging.getLogger("quart_chat.ws")

PATH = "/ws"
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TIMEOUT = 1.0
CLOSE_REASONS = {CLOSE_TOO_BIG: "frame over CHAT_MAX_FRAME", CLOSE_TOO_SLOW: "client too slow: send queue full",
                 CLOSE_INTERNAL: "internal error"}


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
    at_fd_limit = refuse_handshake(len(chat.hub.receivers))
    if at_fd_limit is not None:
        return at_fd_limit  # 503 before accept: out of open files (fdlimit.py)
    settings = chat.settings
    headers = websocket.headers
    peer = (websocket.scope.get("client") or (None,))[0]
    trusted = settings.trusted_proxies
    scheme, host = request_origin(websocket.scope.get("scheme", "ws"), headers.get("Host"), peer, headers, trusted)
    if not origin_allowed(headers.get("Origin"), scheme, host, settings.allowed_origins):
        # Returned before anything accepts: Quart answers the handshake with this 403.
        chat.refused["origin"] += 1
        log.warning("refused a WebSocket from origin %.100r for %.100r (403)", headers.get("Origin"), host,
                    extra={"status": 403, "reason": "origin", "origin": headers.get("Origin", "")[:100],
                           "client": client_address(peer, headers, trusted)})
        return Response("cross-origin WebSocket refused", status=403, content_type="text/plain")
    address = client_address(peer, headers, trusted) or "?"
    cap = settings.max_connections_per_ip
    # Loopback is the machine itself: a local proxy not (yet) in CHAT_TRUSTED_PROXIES, the demo,
    # a load test. Capping it would cap the whole instance at `cap` connections.
    if cap and chat.per_ip.get(address, 0) >= cap and not is_loopback(address):
        chat.refused["per_ip"] += 1
        log.warning("refused a WebSocket from %s: %d already open (CHAT_MAX_CONNECTIONS_PER_IP, 429)", address, cap,
                    extra={"status": 429, "reason": "per_ip", "client": address})
        return Response("too many connections from your address", status=429, content_type="text/plain")
    view = asyncio.current_task()
    await websocket.accept()
    # Straight to the socket under Hypercorn/HTTP 1.1; through Quart's send elsewhere.
    # (CHAT_FAST_PATH=0: always the latter.) A dead writer closes with 1011 through the session.
    outbox = ((settings.fast_path and direct_outbox(websocket.scope.get(RAW_SEND), settings.send_queue))
              or QueueOutbox(websocket.send, settings.send_queue))
    session = Session(settings, chat.hub, chat.broker, outbox, on_abort=lambda _code: view.cancel())
    if isinstance(outbox, QueueOutbox):  # (not a closure over session: no cell per connection)
        outbox.on_error = session.abort
    chat.hub.attach(session)
    limit = settings.max_frame
    receive = websocket.receive
    per_ip = chat.per_ip
    per_ip[address] = per_ip.get(address, 0) + 1
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
        if (left := per_ip.pop(address) - 1) > 0:
            per_ip[address] = left
        outbox.close()
        session.close()
        if session.close_code is not None:
            chat.hub.stats.closes[session.close_code] += 1
            reason = CLOSE_REASONS.get(session.close_code, "closed by the server")
            log.warning("closed a WebSocket from %s with %d (%s)", address, session.close_code, reason,
                        extra={"close_code": session.close_code, "reason": reason, "client": address})
            try:
                await asyncio.wait_for(websocket.close(session.close_code), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, Exception):
                pass
            if session.close_code == CLOSE_TOO_SLOW:
                outbox.abort(CLOSE_TIMEOUT)  # it may never read its close frame: free the socket
    return None
