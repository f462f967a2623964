"""The client's typed events and the frames it sends: pure functions, no socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# A refused `message` with one of these codes is kept and sent again; any other code drops it.
RETRYABLE = frozenset({"rate_limited", "unavailable", "not_joined"})


# ------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class Message:
    """A chat message: ``live``, or from a ``joined``'s history (``live=False``)."""

    id: str
    room: str
    user: str
    text: str
    ts: int
    client_id: str | None = None
    live: bool = True


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
    """A sent message is stored (``id``); ``durable`` only with CHAT_REDIS_WAIT_REPLICAS."""

    client_id: str
    id: str
    durable: bool | None = None


@dataclass(frozen=True, slots=True)
class Error:
    """A refused frame; ``ref`` is the ``client_id`` of a refused message, else the frame's type."""

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


Event = (Message | Joined | Left | Ack | Error | UserJoined | UserLeft | RoomCreated | RoomRemoved | Pong
         | Unknown | Connected | Disconnected)


class ChatError(Exception):
    """The server refused a frame (an ``error`` frame): ``code`` as in docs/protocol.md, Errors."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def _message(m: dict[str, Any], live: bool) -> Message:
    return Message(m["id"], m["room"], m["user"], m["text"], m["ts"], m.get("client_id"), live)


def parse_event(raw: str | bytes | dict[str, Any]) -> Event:
    """One server frame (JSON text, or already decoded) as its event; `Unknown` for other types."""
    f = raw if isinstance(raw, dict) else orjson.loads(raw)
    kind = f.get("type")
    if kind == "message":
        return _message(f, True)
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
    frame: dict[str, Any] = {"type": "join", "room": room}
    if user is not None:
        frame["user"] = user
    if since is not None:
        frame["since"] = since
    return frame


def message_frame(room: str, text: str, client_id: str | None = None) -> dict[str, Any]:
    frame = {"type": "message", "room": room, "text": text}
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


