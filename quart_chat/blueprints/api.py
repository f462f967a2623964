"""REST routes: rooms, paged history and health (PROTOCOL.md section 5)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, jsonify, request

from ..app import get_chat
from ..broker import Unavailable
from ..fdlimit import health_fields
from ..history import parse_page_args, parse_rooms_args
from ..protocol import ProtocolError, dumps, validate_room
from ..wire import STATUS as OUTBOUND, DirectOutbox

bp = Blueprint("api", __name__)


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


@bp.errorhandler(ProtocolError)
async def bad_request(err: ProtocolError) -> tuple[Response, int]:
    """Refused input is a 400 carrying the same code the WebSocket would use."""
    return _error(400, err.code, err.message)


@bp.errorhandler(Unavailable)
async def unavailable(_err: Unavailable) -> tuple[Response, int]:
    """Redis is down: say so rather than pretend the answer is empty."""
    return _error(503, "unavailable", "the message store is unreachable")


@bp.get("/rooms")
async def rooms() -> Response | tuple[Response, int]:
    """A page of rooms in creation order; ``next`` is the ``after`` of the following page."""
    limit, after = parse_rooms_args(request.args)
    page = await get_chat().broker.rooms(limit, after)
    if page is None:
        return _error(404, "not_found", f"no room named {after!r} (it may have been removed)")
    return jsonify({"rooms": page[0], "next": page[1]})


@bp.get("/rooms/<name>/history")
async def history(name: str) -> Response | tuple[Response, int]:
    """A page of a room's history, oldest first; page back with ``before``."""
    room = validate_room(name)
    limit, before = parse_page_args(request.args)
    page = await get_chat().broker.history_page(room, limit, before)
    if page is None:
        return _error(404, "not_found", f"no room named {room!r}")
    messages, has_more = page
    # Stored messages are already JSON: splice them in rather than decode and re-encode.
    body = f'{{"room":{dumps(room)},"messages":[{",".join(messages)}],"has_more":{dumps(has_more)}}}'
    return Response(body, content_type="application/json")


@bp.get("/healthz")
async def healthz() -> tuple[Response, int]:
    """200 while Redis answers and the subscriber is alive, else 503; with connection counts."""
    chat = get_chat()
    ok = await chat.broker.health()
    sessions = list(chat.hub.receivers)
    body = {"status": "ok" if ok else "degraded", "instance": chat.settings.instance,
            "redis": "ok" if ok else "down", "connections": len(sessions),
            # Connections on the direct outbound path (wire.py); the rest use the ASGI fallback.
            "direct": sum(isinstance(getattr(s, "outbox", None), DirectOutbox) for s in sessions),
            # "direct", "portable (CHAT_FAST_PATH=0)" or "fallback: <why>"; "fallbacks" counted.
            **OUTBOUND.describe(chat.settings.fast_path)}
    body.update(health_fields())  # "refused" handshakes by reason, "nofile" limits (fdlimit.py)
    return jsonify(body), 200 if ok else 503


@bp.get("/metrics")
async def metrics() -> Response:
    """This instance's metrics in the Prometheus text format (PROTOCOL.md section 10)."""
    return Response(generate_latest(get_chat().registry), content_type=CONTENT_TYPE_LATEST)
