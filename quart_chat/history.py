"""Pure rules about room history: recovery gaps, REST paging arguments, and a message's
latest state (docs/protocol.md, "A message's life")."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from .codes import ErrorCode
from .protocol import ProtocolError, StreamId, dumps, message_json, parse_stream_id, validate_room

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_ROOMS_PAGE = 1000


def has_gap(since: StreamId, oldest_retained: StreamId | None, trimmed: bool) -> bool:
    """True when messages after ``since`` may have been trimmed away (errs only towards True).

    Redis 6.2 cannot say which IDs a trim removed, so the broker keeps a flag per room set
    the first time a trim happens; a client asking from before the oldest kept entry of a
    trimmed stream has (or may have) lost messages.
    """
    if not trimmed:
        return False
    return oldest_retained is None or since < oldest_retained


def _limit(args: Mapping[str, str], default: int, most: int) -> int:
    raw = args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"limit must be a whole number from 1 to {most}")
    return int(raw)


def parse_rooms_args(args: Mapping[str, str]) -> tuple[int, str | None]:
    """Validate ``limit`` (1-1000, default 1000) and ``after`` (a room name) of ``GET /rooms``."""
    after = args.get("after")
    return _limit(args, MAX_ROOMS_PAGE, MAX_ROOMS_PAGE), None if after is None else validate_room(after)


MAX_QUERY = 200
DEFAULT_RESULTS = 20
MAX_RESULTS = 100


def parse_search_args(args: Mapping[str, str]) -> tuple[str, int, StreamId | None]:
    """Validate ``q`` (1-200 characters), ``limit`` (1-100, default 20) and ``before`` of a search."""
    query = (args.get("q") or "").strip()
    if not 1 <= len(query) <= MAX_QUERY:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"q must be 1 to {MAX_QUERY} characters of words to look for")
    limit = _limit(args, DEFAULT_RESULTS, MAX_RESULTS)
    return query, limit, _before(args)


def _before(args: Mapping[str, str]) -> StreamId | None:
    raw_before = args.get("before")
    if raw_before is None:
        return None
    before = parse_stream_id(raw_before)
    if before is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "before must be a message id such as '1764085000000-0'")
    return before


def parse_page_args(args: Mapping[str, str]) -> tuple[int, StreamId | None]:
    """Validate ``limit`` (1-500, default 50) and ``before`` (a stream id) of a history request."""
    return _limit(args, DEFAULT_PAGE, MAX_PAGE), _before(args)


# ---------------------------------------------------------------- latest state
def latest(sid: str, data: str, state: str | None) -> str:
    """A stored message object (``data`` without its id) in its latest state, as JSON.

    ``state`` is the message's entry in the room's state hash (store.py), written by the
    change script: ``text`` and ``edited_ts`` of the last edit, ``reactions`` as
    ``{emoji: [user, ...]}``, and ``edits`` (their stream ids, which readers never see).
    Most messages were never changed: they are served as stored, without being parsed.
    """
    if not state:
        return message_json(sid, data)
    message = orjson.loads(data)
    changes = orjson.loads(state)
    if "text" in changes:
        message["text"] = changes["text"]
        message["edited_ts"] = changes["edited_ts"]
    if changes.get("reactions"):
        message["reactions"] = changes["reactions"]
    return dumps({"id": sid, **message})


def change_target(data: str) -> StreamId | None:
    """The id of the message a change entry's ``data`` is about."""
    return parse_stream_id(orjson.loads(data)["id"])
