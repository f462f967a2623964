"""Every code the server sends, in one place: WebSocket close codes and ``error`` frame codes.

Close codes are RFC 6455's (section 7.4.1), as ``websockets`` names them in its
``CloseCode``; error codes are those of `docs/protocol.md` (section 4, "Error codes"). Both
are plain ints and strings on the wire: the enums only keep their spelling in one place.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """The close codes this server sends, and why."""

    GOING_AWAY = 1001  # the instance is stopping: reconnect (elsewhere)
    POLICY_VIOLATION = 1008  # token mode: the token expired while connected
    MESSAGE_TOO_BIG = 1009  # a frame over CHAT_MAX_FRAME
    INTERNAL_ERROR = 1011  # a bug of ours, or a writer that died
    TRY_AGAIN_LATER = 1013  # a client too slow: its send queue is full

    @property
    def reason(self) -> str:
        """What the log says of a connection closed with this code."""
        return _REASONS[self]


_REASONS = {
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.POLICY_VIOLATION: "token expired",
    CloseCode.MESSAGE_TOO_BIG: "frame over CHAT_MAX_FRAME",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.TRY_AGAIN_LATER: "client too slow: send queue full",
}


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_ROOM = "invalid_room"
    INVALID_USER = "invalid_user"
    INVALID_TEXT = "invalid_text"
    NOT_JOINED = "not_joined"
    RATE_LIMITED = "rate_limited"
    LIMIT_EXCEEDED = "limit_exceeded"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
