"""The WebSocket route ``/ws``: origin check, a tight receive loop, an outbox that never waits.

Quart runs it through `fastpath.quart.LeanWebsocketConnection` (unless the start-up verdict
says otherwise), which keeps Quart's routing and contexts but drops the extra task and queue
Quart adds per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time

from quart import Blueprint, Response, websocket

from ..asgi import RAW_SEND
from ..auth import Identity, TokenRefused, bearer, query_token
from ..chat import Chat, get_chat
from ..codes import CloseCode
from ..fastpath.hypercorn import decline_compression, direct_outbox
from ..fdlimit import refuse_handshake
from ..forwarded import client_address, is_loopback, origin_allowed, request_origin
from ..session import Session
from ..wire import QueueOutbox

bp = Blueprint("ws", __name__)
log = logging.getLogger("quart_chat.ws")

PATH = "/ws"
CLOSE_TIMEOUT = 1.0
# Closes that may not complete their closing handshake: the socket is reset after CLOSE_TIMEOUT.
# (1013: a client that stopped reading; 1001: a stopping server must not wait on any client.)
CLOSE_THEN_RESET = frozenset((CloseCode.TRY_AGAIN_LATER, CloseCode.GOING_AWAY))


def _frame_too_big(data: str | bytes, limit: int) -> bool:
    # Cheap bounds first: a str of n code points is n to 4n bytes in UTF-8.
    if isinstance(data, str):
        if len(data) * 4 <= limit:
            return False
        if len(data) > limit:
            return True
        return len(data.encode("utf-8", "surrogatepass")) > limit
    return data is not None and len(data) > limit


# Kept out of the view: the view's frame lives as long as the connection, so every local
# it needs only here would cost each idle connection a slot.
def _admit(chat: Chat) -> tuple[str, Response | None]:
    """The client's address, and the refusal to answer instead of upgrading, if any: 503 when
    stopping or near the open-file limit (fdlimit.py), 403 for a foreign Origin, 429 past
    CHAT_MAX_CONNECTIONS_PER_IP."""
    if chat.stopping:
        return "?", Response("server shutting down", status=503, content_type="text/plain")
    at_fd_limit = refuse_handshake(len(chat.hub.receivers))
    if at_fd_limit is not None:
        return "?", at_fd_limit
    settings = chat.settings
    headers = websocket.headers
    peer = (websocket.scope.get("client") or (None,))[0]
    trusted = settings.trusted_proxies
    address = client_address(peer, headers, trusted) or "?"
    scheme, host = request_origin(websocket.scope.get("scheme", "ws"), headers.get("Host"), peer, headers, trusted)
    origin = headers.get("Origin")
    if not origin_allowed(origin, scheme, host, settings.allowed_origins):
        chat.refused["origin"] += 1
        log.warning("refused a WebSocket from origin %.100r for %.100r (403)", origin, host,
                    extra={"status": 403, "reason": "origin", "origin": (origin or "")[:100], "client": address})
        return address, Response("cross-origin WebSocket refused", status=403, content_type="text/plain")
    cap = settings.max_connections_per_ip
    # Loopback is the machine itself: a local proxy not (yet) in CHAT_TRUSTED_PROXIES, the demo,
    # a load test. Capping it would cap the whole instance at `cap` connections.
    if cap and chat.per_ip.get(address, 0) >= cap and not is_loopback(address):
        chat.refused["per_ip"] += 1
        log.warning("refused a WebSocket from %s: %d already open (CHAT_MAX_CONNECTIONS_PER_IP, 429)", address, cap,
                    extra={"status": 429, "reason": "per_ip", "client": address})
        return address, Response("too many connections from your address", status=429, content_type="text/plain")
    return address, None


def _closing(chat: Chat, address: str, code: int) -> None:
    """Count and log a connection the server closes (1009, 1011, 1013...)."""
    chat.hub.stats.closes[code] += 1
    if code == CloseCode.GOING_AWAY:
        return  # every connection at once: `Chat.going_away` logs one line for all of them
    reason = CloseCode(code).reason
    log.warning("closed a WebSocket from %s with %d (%s)", address, code, reason,
                extra={"close_code": code, "reason": reason, "client": address})


def _authenticate(chat: Chat, address: str) -> tuple[Identity | None, Response | None]:
    """Token mode (docs/token-mode.md): who the ``?token=`` (or ``Authorization: Bearer``)
    says the client is, or the 401 to answer instead of upgrading. Open mode: (None, None)."""
    if chat.verifier is None:
        return None, None
    try:
        token = query_token(websocket.scope.get("query_string", b"")) or bearer(websocket.headers.get("Authorization"))
        return chat.verifier.verify(token), None
    except TokenRefused as err:
        chat.refused["token"] += 1
        log.warning("refused a WebSocket from %s: token %s (401)", address, err.reason,
                    extra={"status": 401, "reason": "token", "detail": err.reason, "client": address})
        return None, Response(f"token refused: {err.reason}", status=401, content_type="text/plain",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _expire(session: Session, exp: float) -> asyncio.TimerHandle:
    """Close ``session`` with 1008 when its token expires (one timer, cancelled at close)."""
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + (exp - time.time()), session.abort, CloseCode.POLICY_VIOLATION)


@bp.websocket(PATH)
async def ws() -> Response | None:
    """One chat connection, as docs/protocol.md, "Frames from the client" and "Frames from the server" describes."""
    chat = get_chat()
    address, refusal = _admit(chat)
    if refusal is not None:
        return refusal  # before anything accepts: Quart answers the handshake with it
    identity, refusal = _authenticate(chat, address)
    if refusal is not None:
        return refusal  # 401, before the upgrade too
    settings = chat.settings
    view = asyncio.current_task()
    assert view is not None  # a view always runs in a task
    if chat.verdict.direct:
        decline_compression(websocket.scope.get(RAW_SEND))  # (wire.py says why)
    await websocket.accept()
    chat.pacer.connected()
    # The request headers were read for the last time above, and an idle connection would keep
    # them for its whole life: Quart's parsed copy and the server's raw list, about 2.4 KB.
    websocket.headers.clear()
    websocket.scope["headers"] = ()
    # Straight to the socket under Hypercorn/HTTP 1.1; through Quart's send elsewhere.
    # (CHAT_FAST_PATH=0: always the latter.) A dead writer closes with 1011 through the session.
    outbox = ((chat.verdict.direct and direct_outbox(websocket.scope.get(RAW_SEND), settings.send_queue))
              or QueueOutbox(websocket.send, settings.send_queue))
    session = Session(settings, chat.hub, chat.broker, outbox, on_abort=view.cancel,
                      identity=identity)
    outbox.on_error = session.abort  # a dead writer: 1011 (a bound method: no cell per connection)
    chat.hub.attach(session)
    expiry = None if identity is None else _expire(session, identity.exp)
    limit = settings.max_frame
    receive = websocket.receive
    per_ip = chat.per_ip
    per_ip[address] = per_ip.get(address, 0) + 1
    try:
        while True:
            data = await receive()
            if _frame_too_big(data, limit):
                session.close_code = CloseCode.MESSAGE_TOO_BIG
                break
            await session.handle(data)
    except asyncio.CancelledError:
        if session.close_code is None:
            raise  # the client left, or the server is stopping
        view.uncancel()  # our own abort (a client too slow, a token expired): close below
    except Exception:
        session.close_code = CloseCode.INTERNAL_ERROR
        raise
    finally:
        if expiry is not None:
            expiry.cancel()
        if (left := per_ip.pop(address) - 1) > 0:
            per_ip[address] = left
        outbox.close()
        session.close()
        if session.close_code is not None:
            _closing(chat, address, session.close_code)
            try:
                await asyncio.wait_for(websocket.close(session.close_code), CLOSE_TIMEOUT)
            except Exception as err:  # the client is gone already, or will not answer in time
                log.debug("close %d not sent cleanly: %r", session.close_code, err)
            if session.close_code in CLOSE_THEN_RESET:
                outbox.abort(CLOSE_TIMEOUT)  # it may never answer its close frame: free the socket
    return None
