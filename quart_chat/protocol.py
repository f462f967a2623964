"""The wire protocol (docs/protocol.md, "Frames from the client" and "Frames from the server")
as plain functions: no sockets, no Redis.

`parse_frame` turns one client frame into a command or raises `ProtocolError`; the
``encode_*`` helpers build server frames. Everything here is pure and unit-tested.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .codes import ErrorCode

ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_USER = 32
MAX_CLIENT_ID = 64
MAX_EMOJI = 16
_U64 = 2**64 - 1

StreamId = tuple[int, int]
"""A Redis stream entry ID as a comparable ``(ms, seq)`` pair."""


class ProtocolError(Exception):
    """A frame the server refuses: becomes an ``error`` frame, never a closed socket."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self) -> str:
        """The ``error`` frame that answers the refused frame."""
        return encode_error(self.code, self.message, self.ref)


@dataclass(frozen=True, slots=True)
class Join:
    """Join ``room`` as ``user`` (None: keep the connection's name), from ``since`` if given."""

    room: str
    user: str | None
    since: StreamId | None


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave ``room``."""

    room: str


@dataclass(frozen=True, slots=True)
class Message:
    """Send ``text`` to ``room``; ``client_id`` is echoed back to match the sender's copy;
    ``reply_to`` is the id of the earlier message of the room it answers."""

    room: str
    text: str
    client_id: str | None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace the text of one's own message ``id`` in ``room``."""

    room: str
    id: str
    text: str
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove one's own message ``id`` from ``room``."""

    room: str
    id: str
    client_id: str | None


@dataclass(frozen=True, slots=True)
class React:
    """Add (``on``) or remove this user's ``emoji`` on message ``id`` of ``room``."""

    room: str
    id: str
    emoji: str
    on: bool
    client_id: str | None


Change = Edit | Delete | React
"""A frame that changes a stored message (docs/protocol.md, "A message's life")."""


@dataclass(frozen=True, slots=True)
class Typing:
    """This user is typing in ``room`` (never stored; forwarded at most every 2 s)."""

    room: str


@dataclass(frozen=True, slots=True)
class Read:
    """This user has read ``room`` up to message ``id``."""

    room: str
    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a ``pong``."""

    pass


Command = Join | Leave | Message | Ping | Edit | Delete | React | Typing | Read


# ---------------------------------------------------------------- stream ids
def parse_stream_id(raw: str) -> StreamId | None:
    """Parse ``"<ms>-<seq>"`` into a pair, or None when it is not a valid stream ID."""
    m = STREAM_ID_RE.fullmatch(raw)
    if not m:
        return None
    ms, seq = int(m.group(1)), int(m.group(2))
    # (2**64-1, 2**64-1) has no successor, so Redis refuses it as an exclusive bound.
    if ms > _U64 or seq > _U64 or (ms == _U64 and seq == _U64):
        return None
    return ms, seq


def format_stream_id(sid: StreamId) -> str:
    """The Redis text form of a stream ID pair."""
    return f"{sid[0]}-{sid[1]}"


# ---------------------------------------------------------------- validation
# Unicode's White_Space property: what docs/protocol.md, "Limits and validation" trims. Not str.strip()'s set,
# which also strips the control characters U+001C..U+001F, so "\x1fBob" passed as "Bob".
WHITE_SPACE = ("\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680\u2000\u2001\u2002"
               "\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _has_control(s: str, allowed: str = "") -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in s)


def validate_room(value: Any) -> str:
    """Return the room name, or raise ``invalid_room`` / ``bad_request``."""
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "room must be a string")
    if not ROOM_RE.fullmatch(value):
        raise ProtocolError(ErrorCode.INVALID_ROOM, "room names are 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def validate_user(value: Any) -> str:
    """Return the trimmed user name, or raise ``invalid_user`` / ``bad_request``."""
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "user must be a string")
    name = value.strip(WHITE_SPACE)
    if not 1 <= len(name) <= MAX_USER:
        raise ProtocolError(ErrorCode.INVALID_USER, f"user names are 1-{MAX_USER} characters")
    if _has_control(name):
        raise ProtocolError(ErrorCode.INVALID_USER, "user names may not contain control characters")
    return name


def validate_text(value: Any, max_text: int) -> str:
    """Return the trimmed text, or raise ``invalid_text`` / ``bad_request``."""
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "text must be a string")
    text = value.strip(WHITE_SPACE)
    if not text:
        raise ProtocolError(ErrorCode.INVALID_TEXT, "text is empty")
    if len(text) > max_text:
        raise ProtocolError(ErrorCode.INVALID_TEXT, f"text is longer than {max_text} characters")
    if _has_control(text, "\n\t"):
        raise ProtocolError(ErrorCode.INVALID_TEXT,
                            "text may not contain control characters other than newline and tab")
    return text


def word_map(text: str) -> str:
    """One character per UTF-8 byte of ``text``: ``w`` where a character that may continue a
    name (a letter or digit of any script, or ``_``) starts, ``.`` elsewhere. The append
    script reads it to tell ``@Al`` in "@Al, hi" or "@Al—ok" (a mention) from "@Alice"."""
    return "".join(("w" if c.isalnum() or c == "_" else ".") + "." * (len(c.encode()) - 1) for c in text)


# ---------------------------------------------------------------- parsing
def decode_json(raw: str | bytes) -> Any:
    """Decode a frame's JSON, raising ``bad_json`` on anything that is not JSON."""
    try:
        return orjson.loads(raw)
    except (ValueError, RecursionError):
        # orjson caps nesting itself; RecursionError is kept for safety against other decoders.
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None


def parse_frame(raw: str | bytes, max_text: int) -> Command:
    """Parse and validate one client frame; raise `ProtocolError` for anything invalid."""
    if isinstance(raw, bytes):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not accepted: send JSON as text")
    obj = decode_json(raw)
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a frame needs a string field 'type'")
    try:
        return _PARSERS[kind](obj, max_text)
    except KeyError:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", kind) from None
    except ProtocolError as err:
        if err.ref is None:
            err.ref = _ref_of(obj, kind)
        raise


def _ref_of(obj: dict[str, Any], kind: str) -> str:
    cid = obj.get("client_id")
    if kind in CARRY_CLIENT_ID and isinstance(cid, str) and len(cid) <= MAX_CLIENT_ID:
        return cid
    return kind


def _required(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"missing field '{name}'")
    return obj[name]


def _parse_join(obj: dict[str, Any], _max_text: int) -> Join:
    room = validate_room(_required(obj, "room"))
    user = obj.get("user")
    user = None if user is None else validate_user(user)
    since = obj.get("since")
    if since is not None:
        if not isinstance(since, str) or (parsed := parse_stream_id(since)) is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "since must be a stream id such as '1764085000000-0'")
        since = parsed
    return Join(room, user, since)


def _parse_leave(obj: dict[str, Any], _max_text: int) -> Leave:
    return Leave(validate_room(_required(obj, "room")))


def _client_id(obj: dict[str, Any]) -> str | None:
    client_id = obj.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"client_id must be a string of at most {MAX_CLIENT_ID} characters")
    return client_id


def _message_id(value: Any, name: str = "id") -> str:
    """A message id field: the canonical text of a stream id (what Redis hands out)."""
    if isinstance(value, str) and (sid := parse_stream_id(value)) is not None:
        return format_stream_id(sid)  # "0001-0" and "1-0" name one entry: keep one spelling
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name} must be a message id such as '1764085000000-0'")


def validate_emoji(value: Any) -> str:
    """Return a reaction's emoji: 1-16 characters, no white space or control characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_EMOJI:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"emoji must be a string of 1 to {MAX_EMOJI} characters")
    if _has_control(value) or any(c in WHITE_SPACE for c in value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "emoji may not contain white space or control characters")
    return value


def _parse_message(obj: dict[str, Any], max_text: int) -> Message:
    client_id = _client_id(obj)
    room = validate_room(_required(obj, "room"))
    text = validate_text(_required(obj, "text"), max_text)
    reply_to = obj.get("reply_to")
    return Message(room, text, client_id, None if reply_to is None else _message_id(reply_to, "reply_to"))


def _parse_edit(obj: dict[str, Any], max_text: int) -> Edit:
    client_id = _client_id(obj)
    room = validate_room(_required(obj, "room"))
    target = _message_id(_required(obj, "id"))
    return Edit(room, target, validate_text(_required(obj, "text"), max_text), client_id)


def _parse_delete(obj: dict[str, Any], _max_text: int) -> Delete:
    client_id = _client_id(obj)
    return Delete(validate_room(_required(obj, "room")), _message_id(_required(obj, "id")), client_id)


def _parse_react(obj: dict[str, Any], _max_text: int) -> React:
    client_id = _client_id(obj)
    room = validate_room(_required(obj, "room"))
    target = _message_id(_required(obj, "id"))
    emoji = validate_emoji(_required(obj, "emoji"))
    on = _required(obj, "on")
    if not isinstance(on, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "on must be true or false")
    return React(room, target, emoji, on, client_id)


def _parse_ping(_obj: dict[str, Any], _max_text: int) -> Ping:
    return Ping()


def _parse_typing(obj: dict[str, Any], _max_text: int) -> Typing:
    return Typing(validate_room(_required(obj, "room")))


def _parse_read(obj: dict[str, Any], _max_text: int) -> Read:
    return Read(validate_room(_required(obj, "room")), _message_id(_required(obj, "id")))


_PARSERS: dict[str, Callable[[dict[str, Any], int], Command]] = {
    "join": _parse_join, "leave": _parse_leave, "message": _parse_message, "ping": _parse_ping,
    "edit": _parse_edit, "delete": _parse_delete, "react": _parse_react, "typing": _parse_typing,
    "read": _parse_read}
# Frames whose refusal names their client_id in `ref` (docs/protocol.md, "Error codes").
CARRY_CLIENT_ID = frozenset(("message", "edit", "delete", "react"))


# ---------------------------------------------------------------- encoding
def dumps(obj: Any) -> str:
    """Encode a JSON value to text (orjson: compact, UTF-8, no ASCII escaping)."""
    return orjson.dumps(obj).decode()


def encode_error(code: str, message: str, ref: str | None = None) -> str:
    """An ``error`` frame; ``ref`` is left out when None."""
    frame = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return dumps(frame)


PONG = dumps({"type": "pong"})


def encode_left(room: str) -> str:
    """The ``left`` reply."""
    return dumps({"type": "left", "room": room})


def encode_joined(room: str, user: str, history_json: list[str], members: list[str], gap: bool,
                  read: str | None = None) -> str:
    """The ``joined`` reply; history items are message objects already encoded as JSON;
    ``read`` is the user's read marker in the room (None: none yet)."""
    head = dumps({"type": "joined", "room": room, "user": user, "members": members, "gap": gap, "read": read})
    return f'{head[:-1]},"history":[{",".join(history_json)}]}}'


def encode_ack(client_id: str, sid: str, durable: bool | None = None) -> str:
    """The ``ack`` frame telling a sender its message is stored under ``sid``."""
    frame: dict[str, Any] = {"type": "ack", "client_id": client_id, "id": sid}
    if durable is not None:
        frame["durable"] = durable
    return dumps(frame)


def message_json(sid: str, data: bytes | str) -> str:
    """A stored message object (``data`` field, without ``id``) with its ``id`` put first."""
    if isinstance(data, bytes):
        data = data.decode()
    return f'{{"id":"{sid}",{data[1:]}'


# A stream entry's ``data`` is a message object without its id, or a change: the frame its
# members get, without ``change_id``, which always starts with its type (broker.py writes it so).
CHANGE_PREFIX = '{"type":'


def is_change(data: str) -> bool:
    """True when a stream entry's ``data`` is a change (edit, delete, reaction), not a message."""
    return data.startswith(CHANGE_PREFIX)


def entry_frame(sid: str, data: str) -> str:
    """The frame a stream entry becomes for clients: a ``message``, or a change with its ``change_id``."""
    if data.startswith(CHANGE_PREFIX):
        return f'{{"change_id":"{sid}",{data[1:]}'
    return f'{{"type":"message","id":"{sid}",{data[1:]}'


def message_frame(payload: bytes | str) -> str:
    """Turn a ``chat:messages`` payload (a JSON object) into the frame clients get: ``message``,
    or a change (``message_edited``...) whose payload starts with its ``change_id``.

    The publishing instance's ``origin`` is the payload's last field (see `store.APPEND_LUA`)
    and is cut off: clients never see instance names. ``,"origin":`` cannot occur inside a
    JSON string (its quote would be escaped), so the last occurrence is the field.
    """
    if isinstance(payload, bytes):
        payload = payload.decode()
    cut = payload.rfind(',"origin":')
    if cut != -1:
        payload = payload[:cut] + "}"
    if payload.startswith('{"change_id":'):
        return payload  # a change's payload is its frame already (store.CHANGE_LUA)
    return '{"type":"message",' + payload[1:]
