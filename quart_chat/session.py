"""One WebSocket connection's state and what it does with each frame.

The session is socket-free: frames come in through `handle`, replies and deliveries go
out through `deliver` into a bounded, never-waiting outbox (`wire`) that the WebSocket view
supplies. That keeps the protocol logic testable and guarantees the fan-out never waits on a
slow client.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from .broker import Broker, JoinResult, LimitExceeded, Unavailable
from .codes import CloseCode, ErrorCode
from .config import Settings
from .metrics import now
from .protocol import (
    PONG,
    Delete,
    Edit,
    Join,
    Leave,
    Message,
    Ping,
    ProtocolError,
    React,
    Read,
    Typing,
    encode_ack,
    encode_error,
    encode_joined,
    encode_left,
    parse_frame,
)
from .ratelimit import SlidingWindow
from .rooms import Hub

if TYPE_CHECKING:
    from .auth import Identity

# Joins cost Redis round trips and may create rooms that every client hears of, so one
# connection gets a bounded number of rooms and of joins (a page re-joins all its rooms at
# once after a reconnect, hence the same figure for both).
ROOMS_PER_CONNECTION = 100
JOIN_WINDOW = 10.0
# At most one `typing` per connection and room is forwarded in this many seconds; the rest
# are dropped without a word (docs/protocol.md, "Frames from the client").
TYPING_EVERY = 2.0
_ids = itertools.count(1)


class Outbox(Protocol):
    """Where a session's outbound frames go (see `wire`): never waits, bounded."""

    def put(self, frame: str) -> bool:
        """Queue one frame for the client; False when too many are waiting already."""

    def put_lazy(self, frame: str) -> bool:
        """As `put`, for a frame that may wait a moment for the next write (a member event)."""

    def close(self) -> None:
        """Drop what is pending and send nothing more."""

    def backlog(self) -> int:
        """Frames queued and not yet written to the socket."""


class Session:
    """A connected client: its user name, its rooms, its outbound queue and its rate limit."""

    __slots__ = ("key", "user", "rooms", "outbox", "limiter", "join_limiter", "close_code", "on_abort",
                 "identity", "typing_at", "_settings", "_hub", "_broker", "__weakref__")

    def __init__(self, settings: Settings, hub: Hub, broker: Broker, outbox: Outbox,
                 on_abort: Callable[[], object] | None = None, identity: Identity | None = None) -> None:
        self.key = f"{broker.node}|{next(_ids)}"
        # Token mode: the token's name from the start, and the rooms it allows (auth.py).
        self.identity = identity
        self.user: str | None = None if identity is None else identity.name
        self.rooms: set[str] = set()
        self.outbox = outbox
        self.limiter = SlidingWindow(settings.rate_count, settings.rate_seconds)
        self.join_limiter = SlidingWindow(ROOMS_PER_CONNECTION, JOIN_WINDOW)
        self.close_code: int | None = None
        self.on_abort = on_abort
        self.typing_at: dict[str, float] | None = None  # room -> when its last `typing` went out
        self._settings = settings
        self._hub = hub
        self._broker = broker

    # ------------------------------------------------------------ outbound
    def deliver(self, frame: str) -> None:
        """Queue a frame for the client; a full queue means a client too slow to keep."""
        if self.close_code is None and not self.outbox.put(frame):
            self.abort(CloseCode.TRY_AGAIN_LATER)

    def deliver_lazy(self, frame: str) -> None:
        """As `deliver`, for a frame that may wait a moment for the next write (a member event)."""
        if self.close_code is None and not self.outbox.put_lazy(frame):
            self.abort(CloseCode.TRY_AGAIN_LATER)

    def backlog(self) -> int:
        """Frames queued for the client and not yet written to its socket."""
        return self.outbox.backlog()

    def abort(self, code: int) -> None:
        """Mark the connection for closing with ``code``; the view does the closing."""
        if self.close_code is None:
            self.close_code = code
            if self.on_abort is not None:
                self.on_abort()

    # ------------------------------------------------------------ inbound
    async def handle(self, raw: str | bytes | None) -> None:
        """Act on one client frame; every failure becomes an ``error`` frame, never an exception."""
        command = None
        try:
            command = parse_frame(b"" if raw is None else raw, self._settings.max_text)
            if isinstance(command, Message):
                await self._message(command)
            elif isinstance(command, (Edit, Delete, React)):
                await self._change(command)
            elif isinstance(command, Typing):
                await self._typing(command)
            elif isinstance(command, Read):
                await self._read(command)
            elif isinstance(command, Join):
                await self._join(command)
            elif isinstance(command, Leave):
                await self._leave(command)
            elif isinstance(command, Ping):
                self.deliver(PONG)
        except ProtocolError as err:
            if err.ref is None:  # refused by Redis's answer, not by parsing
                err.ref = _ref(command)
            stats = self._hub.stats
            stats.errors[err.code] += 1
            if isinstance(command, (Edit, Delete, React)):
                stats.changes_refused[err.code] += 1
            self.deliver(err.frame())
        except LimitExceeded as err:
            self._hub.stats.errors[ErrorCode.LIMIT_EXCEEDED] += 1
            self.deliver(encode_error(ErrorCode.LIMIT_EXCEEDED, str(err), _ref(command)))
        except (Unavailable, RedisError):
            self._hub.stats.errors[ErrorCode.UNAVAILABLE] += 1
            self.deliver(encode_error(ErrorCode.UNAVAILABLE, "the message store is unreachable; nothing was sent",
                                      _ref(command)))

    def _may_send(self, cmd: Message | Edit | Delete | React) -> str:
        """The user, if ``cmd``'s room is joined and the rate limit (messages and changes) allows it."""
        if cmd.room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"join room {cmd.room!r} before sending to it", _ref(cmd))
        if not self.limiter.allow():
            s = self._settings
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"at most {s.rate_count} messages in {s.rate_seconds:g} s",
                                _ref(cmd))
        assert self.user is not None  # joined rooms imply a name
        return self.user

    def _author(self) -> str | None:
        """Who a message belongs to beyond its shown name: the token's ``sub`` (None in open mode)."""
        return None if self.identity is None else self.identity.sub

    async def _message(self, cmd: Message) -> None:
        user = self._may_send(cmd)
        sent = await self._broker.append(cmd.room, user, cmd.text, cmd.client_id, cmd.reply_to, self._author())
        stats = self._hub.stats
        if sent.duplicate:
            stats.duplicates += 1
        else:
            stats.sent += 1
        if cmd.client_id is not None:
            self.deliver(encode_ack(cmd.client_id, sent.id, sent.durable))

    async def _change(self, cmd: Edit | Delete | React) -> None:
        user = self._may_send(cmd)
        sent = await self._broker.change(user, self._author(), cmd)
        stats = self._hub.stats
        if sent.duplicate:
            stats.duplicates += 1
        else:
            stats.changes[type(cmd).__name__.lower()] += 1
        if cmd.client_id is not None:
            self.deliver(encode_ack(cmd.client_id, sent.id, sent.durable))

    def _in_room(self, room: str, ref: str) -> str:
        """The user, if ``room`` is joined (else ``not_joined`` for the frame ``ref``)."""
        if room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"join room {room!r} first", ref)
        assert self.user is not None  # joined rooms imply a name
        return self.user

    async def _typing(self, cmd: Typing) -> None:
        user = self._in_room(cmd.room, "typing")
        at = now()
        sent = self.typing_at
        if sent is None:
            sent = self.typing_at = {}
        elif at - sent.get(cmd.room, -TYPING_EVERY) < TYPING_EVERY:
            return  # throttled: the others were told less than TYPING_EVERY ago
        sent[cmd.room] = at
        try:
            await self._broker.typing(cmd.room, user)
        except Unavailable:
            pass  # a hint, not a message: nothing to report or retry

    async def _read(self, cmd: Read) -> None:
        await self._broker.read(cmd.room, self._in_room(cmd.room, "read"), self.key, cmd.id)

    async def _join(self, cmd: Join) -> None:
        if self.user is not None and cmd.user is not None and cmd.user != self.user:
            raise ProtocolError(ErrorCode.INVALID_USER, f"this connection is already {self.user!r}", "join")
        user = self.user or cmd.user
        if user is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the first join needs a 'user'", "join")
        if self.identity is not None and not self.identity.allows(cmd.room):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"your token does not allow room {cmd.room!r}", "join")
        rejoin = cmd.room in self.rooms
        if not rejoin and len(self.rooms) >= ROOMS_PER_CONNECTION:
            raise ProtocolError(ErrorCode.RATE_LIMITED,
                                f"a connection may be in at most {ROOMS_PER_CONNECTION} rooms", "join")
        if not self.join_limiter.allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED,
                                f"at most {ROOMS_PER_CONNECTION} joins in {JOIN_WINDOW:g} s", "join")
        room = cmd.room

        def reply(result: JoinResult) -> tuple[int, int] | None:
            self.user = user
            self.rooms.add(room)
            self.deliver(encode_joined(room, user, result.history, result.members, result.gap, result.read))
            for frame in result.changes:
                self.deliver(frame)
            return result.last

        started = now()
        try:
            await self._hub.join(self, room, lambda: self._broker.join(room, user, self.key, cmd.since), reply)
            self._hub.stats.join_seconds.observe(now() - started)
        except Unavailable:
            if not rejoin:  # it may have been recorded with the reply lost: no member may stay behind
                self._broker.presence.forget_later(room, self.key, user)
            raise

    async def _leave(self, cmd: Leave) -> None:
        if cmd.room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in room {cmd.room!r}", "leave")
        assert self.user is not None  # joined rooms imply a name
        await self._broker.leave(cmd.room, self.user, self.key)
        self.rooms.discard(cmd.room)
        if self.typing_at:
            self.typing_at.pop(cmd.room, None)
        self._hub.remove(self, cmd.room)
        self.deliver(encode_left(cmd.room))

    def close(self) -> None:
        """Detach from the hub and leave every room in the background."""
        rooms = list(self.rooms)
        self.typing_at = None
        self._hub.detach(self, rooms)
        self.rooms.clear()
        if rooms and self.user is not None:
            self._broker.spawn_cleanup(self._broker.leave_all(rooms, self.user, self.key))


_TYPES = {Join: "join", Leave: "leave", Ping: "ping", Message: "message", Edit: "edit", Delete: "delete",
          React: "react", Typing: "typing", Read: "read"}


def _ref(command: object) -> str | None:
    client_id = getattr(command, "client_id", None)
    return client_id if client_id is not None else _TYPES.get(type(command))
