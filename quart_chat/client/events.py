"""The client's typed events and the frames it sends: pure functions, no socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# A refused `message` or change with one of these codes is kept and sent again; any other code drops it.
RETRYABLE = frozenset({"rate_limited", "unavailable", "not_joined"})


# ------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class Message:
    """A chat message: ``live``, or from a ``joined``'s history (``live=False``).

    ``reply_to``: the id of the message it answers. ``edited_ts`` and ``reactions`` (emoji ->
    users, in the order they reacted) come only in history, which gives a message's latest
    state; a live message is as it was sent. Each is None when absent."""

    id: str
    room: str
    user: str
    text: str
    ts: int
    client_id: str | None = None
    live: bool = True
    # New fields go last, with defaults: positional construction by older code stays valid.
    reply_to: str | None = None
    edited_ts: int | None = None
    reactions: dict[str, list[str]] | None = None


@dataclass(frozen=True, slots=True)
class MessageEdited:
    """Message ``id`` now reads ``text`` (edited at ``edited_ts``); ``change_id`` is the edit's place in the room."""

    room: str
    id: str
    text: str
    edited_ts: int
    change_id: str


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    """Message ``id`` was deleted; ``change_id`` is the deletion's place in the room."""

    room: str
    id: str
    change_id: str


@dataclass(frozen=True, slots=True)
class Reaction:
    """``user`` has (``on``) or has not reacted ``emoji`` to message ``id``: a state, never a toggle."""

    room: str
    id: str
    emoji: str
    user: str
    on: bool
    change_id: str


@dataclass(frozen=True, slots=True)
class Joined:
    """The answer to a join: the members now, ``gap`` (history trimmed) and the history."""

    room: str
    user: str
    members: list[str]
    gap: bool
    history: list[Message]


@dataclass(frozen=True, slots=True)
class Left:
    room: str


@dataclass(frozen=True, slots=True)
class Ack:
    """A sent message or change is stored: ``id`` is the message's id, or the change's
    ``change_id``; ``durable`` only with CHAT_REDIS_WAIT_REPLICAS."""

    client_id: str
    id: str
    durable: bool | None = None


@dataclass(frozen=True, slots=True)
class Error:
    """A refused frame; ``ref`` is the ``client_id`` of a refused message or change, else the frame's type."""

    code: str
    message: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class UserJoined:
    room: str
    user: str
    ts: int


@dataclass(frozen=True, slots=True)
class UserLeft:
    room: str
    user: str
    ts: int


@dataclass(frozen=True, slots=True)
class RoomCreated:
    room: str
    ts: int


@dataclass(frozen=True, slots=True)
class RoomRemoved:
    room: str
    ts: int


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame type this client does not know (a newer server): the decoded frame."""

    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Connected:
    """The client (re)connected to ``url`` and joined its rooms again; ``count`` from 1."""

    url: str
    count: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection to ``url`` ended (``code``: the close code, None without a close frame)."""

    url: str
    code: int | None
    reason: str = ""


# The changes of a message's life (docs/protocol.md, "A message's life"), each with its change_id.
Change = MessageEdited | MessageDeleted | Reaction

Event = (Message | Joined | Left | Ack | Error | UserJoined | UserLeft | RoomCreated | RoomRemoved | Pong
         | Unknown | Connected | Disconnected | MessageEdited | MessageDeleted | Reaction)


class ChatError(Exception):
    """The server refused a frame (an ``error`` frame): ``code`` as in docs/protocol.md, Errors."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def _message(m: dict[str, Any], live: bool) -> Message:
    return Message(m["id"], m["room"], m["user"], m["text"], m["ts"], m.get("client_id"), live,
                   m.get("reply_to"), m.get("edited_ts"), m.get("reactions"))


def parse_event(raw: str | bytes | dict[str, Any]) -> Event:
    """One server frame (JSON text, or already decoded) as its event; `Unknown` for other types."""
    f = raw if isinstance(raw, dict) else orjson.loads(raw)
    kind = f.get("type")
    if kind == "message":
        return _message(f, True)
    if kind == "message_edited":
        return MessageEdited(f["room"], f["id"], f["text"], f["edited_ts"], f["change_id"])
    if kind == "message_deleted":
        return MessageDeleted(f["room"], f["id"], f["change_id"])
    if kind == "reaction":
        return Reaction(f["room"], f["id"], f["emoji"], f["user"], bool(f["on"]), f["change_id"])
    if kind == "joined":
        return Joined(f["room"], f["user"], list(f.get("members", [])), bool(f.get("gap")),
                      [_message(m, False) for m in f.get("history", [])])
    if kind == "ack":
        return Ack(f["client_id"], f["id"], f.get("durable"))
    if kind == "error":
        return Error(str(f.get("code")), str(f.get("message", "")), f.get("ref"))
    if kind in ("user_joined", "user_left"):
        return (UserJoined if kind == "user_joined" else UserLeft)(f["room"], f["user"], f["ts"])
    if kind in ("room_created", "room_removed"):
        return (RoomCreated if kind == "room_created" else RoomRemoved)(f["room"], f["ts"])
    if kind == "left":
        return Left(f["room"])
    if kind == "pong":
        return Pong()
    return Unknown(f)


def id_key(message_id: str) -> tuple[int, int]:
    """A message id as the pair of integers it is compared by (ms, then seq)."""
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


def join_frame(room: str, user: str | None = None, since: str | None = None) -> dict[str, Any]:
    """A ``join`` frame (``user`` and ``since`` left out when None)."""
    frame: dict[str, Any] = {"type": "join", "room": room}
    if user is not None:
        frame["user"] = user
    if since is not None:
        frame["since"] = since
    return frame


def _with(frame: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``frame`` with each of ``optional`` that is not None (the server takes no nulls)."""
    frame.update((k, v) for k, v in optional.items() if v is not None)
    return frame


def message_frame(room: str, text: str, client_id: str | None = None,
                  reply_to: str | None = None) -> dict[str, Any]:
    """A ``message`` frame; ``reply_to``: the id of the message it answers."""
    return _with({"type": "message", "room": room, "text": text}, client_id=client_id, reply_to=reply_to)


def edit_frame(room: str, id: str, text: str, client_id: str | None = None) -> dict[str, Any]:
    """An ``edit`` frame: message ``id`` (one's own) to read ``text``."""
    return _with({"type": "edit", "room": room, "id": id, "text": text}, client_id=client_id)


def delete_frame(room: str, id: str, client_id: str | None = None) -> dict[str, Any]:
    """A ``delete`` frame: message ``id`` (one's own) removed."""
    return _with({"type": "delete", "room": room, "id": id}, client_id=client_id)


def react_frame(room: str, id: str, emoji: str, on: bool = True, client_id: str | None = None) -> dict[str, Any]:
    """A ``react`` frame: this user's ``emoji`` on message ``id`` added (``on``) or taken back."""
    return _with({"type": "react", "room": room, "id": id, "emoji": emoji, "on": on}, client_id=client_id)


