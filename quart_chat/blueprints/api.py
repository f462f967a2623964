"""REST routes: rooms, paged history and health (docs/protocol.md, "HTTP routes")."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, g, jsonify, request

from ..auth import Identity, TokenRefused, bearer
from ..broker import Unavailable
from ..chat import get_chat
from ..fastpath import STATUS as OUTBOUND
from ..fdlimit import health_fields
from ..history import parse_page_args, parse_rooms_args, parse_search_args
from ..protocol import ProtocolError, dumps, validate_room
from ..wire import DirectOutbox

bp = Blueprint("api", __name__)


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


# Token mode: every route here needs the token, except these (monitoring is not a user).
OPEN_ENDPOINTS = frozenset({"api.healthz", "api.metrics"})
# GET /rooms for a token limited to some rooms reads the full list this many at a time.
ROOMS_SCAN = 1000


@bp.before_request
async def require_token() -> tuple[Response, int] | None:
    """Token mode: 401 without a valid ``Authorization: Bearer`` token; the identity in ``g``."""
    verifier = get_chat().verifier
    g.identity = None
    if verifier is None or request.endpoint in OPEN_ENDPOINTS:
        return None
    try:
        g.identity = verifier.verify(bearer(request.headers.get("Authorization")))
    except TokenRefused as err:
        response, status = _error(401, "unauthorized", f"token refused: {err.reason}")
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response, status
    return None


def _forbidden(room: str) -> tuple[Response, int] | None:
    """403 when the request's token does not allow ``room`` (token mode), else None."""
    identity: Identity | None = g.get("identity")
    if identity is not None and not identity.allows(room):
        return _error(403, "forbidden", f"your token does not allow room {room!r}")
    return None


async def _allowed_rooms(identity: Identity, limit: int,
                         after: str | None) -> tuple[list[dict[str, Any]], str | None] | None:
    """A page of the rooms ``identity`` allows: the full list is read in order and filtered,
    so ``next`` is always a room the token allows (names of the others never show)."""
    found: list[dict[str, Any]] = []
    cursor = after
    while len(found) <= limit:
        page = await get_chat().broker.rooms(ROOMS_SCAN, cursor)
        if page is None:  # `after`, or the last room read, is gone (removed meanwhile)
            if not found:
                return None
            return found[:limit], found[min(limit, len(found)) - 1]["name"]  # go on from there
        found.extend(r for r in page[0] if identity.allows(r["name"]))
        if page[1] is None:
            break
        cursor = page[1]
    return found[:limit], (found[limit - 1]["name"] if len(found) > limit else None)


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
    identity: Identity | None = g.get("identity")
    if identity is not None and identity.rooms is not None:
        if after is not None and (refused := _forbidden(after)):
            return refused
        page = await _allowed_rooms(identity, limit, after)
    else:
        page = await get_chat().broker.rooms(limit, after)
    if page is None:
        return _error(404, "not_found", f"no room named {after!r} (it may have been removed)")
    return jsonify({"rooms": page[0], "next": page[1]})


@bp.get("/rooms/<name>/history")
async def history(name: str) -> Response | tuple[Response, int]:
    """A page of a room's history, oldest first; page back with ``before``."""
    room = validate_room(name)
    if refused := _forbidden(room):
        return refused  # before any lookup: whether it exists is not the token's business
    limit, before = parse_page_args(request.args)
    page = await get_chat().broker.history_page(room, limit, before)
    if page is None:
        return _error(404, "not_found", f"no room named {room!r}")
    messages, has_more = page
    # Stored messages are already JSON: splice them in rather than decode and re-encode.
    body = f'{{"room":{dumps(room)},"messages":[{",".join(messages)}],"has_more":{dumps(has_more)}}}'
    return Response(body, content_type="application/json")


@bp.get("/rooms/<name>/search")
async def search(name: str) -> Response | tuple[Response, int]:
    """Messages of a room matching ``q``, newest first, from the archive (docs/archive.md);
    page on with ``before`` = the answer's ``next``. 501 without an archive."""
    room = validate_room(name)
    if refused := _forbidden(room):
        return refused
    query, limit, before = parse_search_args(request.args)
    broker = get_chat().broker
    if broker.archive is None:
        return _error(501, "not_implemented", "search needs the archive: set CHAT_ARCHIVE_URL (docs/archive.md)")
    if broker.archiver is None or not broker.archiver.ready:
        return _error(503, "unavailable", "the archive is not reachable yet")
    found = await broker.search(room, query, limit, before)
    if found is None:
        return _error(404, "not_found", f"no room named {room!r}")
    results, following = found
    body = f'{{"room":{dumps(room)},"results":[{",".join(results)}],"next":{dumps(following)}}}'
    return Response(body, content_type="application/json")


@bp.get("/healthz")
async def healthz() -> tuple[Response, int]:
    """200 while Redis answers and the subscriber is alive, else 503; with connection counts."""
    chat = get_chat()
    ok = await chat.broker.health()
    sessions = list(chat.hub.receivers)
    # Connections on the direct outbound path (wire.py); the rest use the portable one.
    direct = sum(isinstance(getattr(s, "outbox", None), DirectOutbox) for s in sessions)
    body = {"status": "ok" if ok else "degraded", "instance": chat.settings.instance,
            "redis": "ok" if ok else "down", "connections": len(sessions), "direct": direct,
            # "direct", "portable (CHAT_FAST_PATH=0)" or "fallback: <why>" (now); "fallbacks" counted.
            **OUTBOUND.describe(chat.settings.fast_path, len(sessions) - direct)}
    body.update(health_fields())  # "refused" handshakes by reason, "nofile" limits (fdlimit.py)
    return jsonify(body), 200 if ok else 503


@bp.get("/metrics")
async def metrics() -> Response:
    """This instance's metrics in the Prometheus text format (docs/observability.md)."""
    return Response(generate_latest(get_chat().registry), content_type=CONTENT_TYPE_LATEST)
