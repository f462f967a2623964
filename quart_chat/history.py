"""Pure rules about room history: recovery gaps and REST paging arguments."""

from __future__ import annotations

from typing import Mapping

from .protocol import ProtocolError, StreamId, parse_stream_id

MAX_PAGE = 500
DEFAULT_PAGE = 50


def has_gap(since: StreamId, oldest_retained: StreamId | None, trimmed: bool) -> bool:
    """True when messages after ``since`` may have been trimmed away (errs only towards True).

    Redis 6.2 cannot say which IDs a trim removed, so the broker keeps a flag per room set
    the first time a trim happens; a client asking from before the oldest kept entry of a
    trimmed stream has (or may have) lost messages.
    """
    if not trimmed:
        return False
    return oldest_retained is None or since < oldest_retained


def parse_page_args(args: Mapping[str, str]) -> tuple[int, StreamId | None]:
    """Validate ``limit`` (1-500, default 50) and ``before`` (a stream id) of a history request."""
    raw_limit = args.get("limit")
    if raw_limit is None:
        limit = DEFAULT_PAGE
    else:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_PAGE:
            raise ProtocolError("bad_request", f"limit must be a whole number from 1 to {MAX_PAGE}")
        limit = int(raw_limit)
    raw_before = args.get("before")
    before = None
    if raw_before is not None:
        before = parse_stream_id(raw_before)
        if before is None:
            raise ProtocolError("bad_request", "before must be a message id such as '1764085000000-0'")
    return limit, before
