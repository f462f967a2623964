"""This instance's local view of the rooms: which connections are in which room, and fan-out.

Everything here runs on the event loop without awaiting, so each method is atomic with
respect to the others. That is what makes a join gap-free (docs/protocol.md "Guarantees", G2): a joining
connection is registered *before* its history is read, buffers what the subscriber
delivers meanwhile, and is switched to live delivery in one step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from .metrics import Stats
from .protocol import StreamId

T = TypeVar("T")
# Catch-up waits for clients to read a batch while any of them has more than this pending.
DRAIN_BELOW = 200
DRAIN_WAIT = 5.0


class Receiver(Protocol):
    """What the hub needs of a connection."""

    key: str
    user: str | None

    def deliver(self, frame: str) -> None:
        """Queue one encoded frame for the client without waiting."""

    def deliver_lazy(self, frame: str) -> None:
        """As `deliver`, for a frame that may wait a moment for the connection's next write."""

    def backlog(self) -> int:
        """Frames queued for the client and not yet handed to its socket."""

    def abort(self, code: int) -> None:
        """Close the connection with ``code`` (its own task does the closing)."""


class Room:
    """The local members of one room and where delivery stands for each of them."""

    __slots__ = ("live", "catching", "pending", "last_id")

    def __init__(self) -> None:
        # Receivers that get every dispatched message.
        self.live: dict[Receiver, None] = {}
        # Joined, but history ran ahead of the subscriber: skip ids <= the threshold.
        self.catching: dict[Receiver, StreamId] = {}
        # Join in progress: buffer (id, frame) until the history is known.
        self.pending: dict[Receiver, list[tuple[StreamId, str]]] = {}
        # Highest id dispatched in this room since it got its first local member.
        self.last_id: StreamId | None = None

    def __bool__(self) -> bool:
        return bool(self.live or self.catching or self.pending)


class Hub:
    """Local registry of rooms and connections; the subscriber feeds it, connections drain it."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.receivers: dict[Receiver, None] = {}
        self.stats = Stats()

    # ------------------------------------------------------------ connections
    def attach(self, receiver: Receiver) -> None:
        """Register a connection so it gets room-wide events such as ``room_created``."""
        self.receivers[receiver] = None

    def detach(self, receiver: Receiver, rooms: Iterable[str]) -> None:
        """Forget a connection and drop it from ``rooms``."""
        self.receivers.pop(receiver, None)
        for name in rooms:
            self.remove(receiver, name)

    def begin_join(self, receiver: Receiver, name: str) -> None:
        """Start buffering ``name``'s live messages for ``receiver`` (before reading history)."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room()
        if receiver in room.live or receiver in room.catching:
            return  # already joined: live delivery simply goes on
        room.pending[receiver] = []

    def finish_join(self, receiver: Receiver, name: str, history_last: StreamId | None) -> None:
        """Hand over from history (ending at ``history_last``) to live delivery, gap-free."""
        room = self.rooms.get(name)
        if room is None or receiver not in room.pending:
            return
        buffered = room.pending.pop(receiver)
        last = history_last
        for sid, frame in buffered:
            if last is None or sid > last:
                receiver.deliver(frame)
                self.stats.delivered += 1
                last = sid
        if last is None or (room.last_id is not None and room.last_id >= last):
            room.live[receiver] = None
        else:
            room.catching[receiver] = last

    def remove(self, receiver: Receiver, name: str) -> None:
        """Stop delivering ``name`` to ``receiver``; forget the room when nobody is left."""
        room = self.rooms.get(name)
        if room is None:
            return
        room.live.pop(receiver, None)
        room.catching.pop(receiver, None)
        room.pending.pop(receiver, None)
        if not room:
            del self.rooms[name]

    # ------------------------------------------------------------ fan-out
    def dispatch(self, name: str, sid: StreamId, frame: str) -> bool:
        """Deliver one message frame to the room's local members, once each and in id order.

        Returns False when the room has no local member or the message was delivered already.
        """
        room = self.rooms.get(name)
        if room is None:
            return False
        if room.last_id is not None and sid <= room.last_id:
            return False  # already delivered (catch-up and live pub/sub may overlap)
        room.last_id = sid
        live = room.live
        for receiver in live:
            receiver.deliver(frame)
        self.stats.delivered += len(live)
        if room.catching:
            for receiver, threshold in list(room.catching.items()):
                if sid > threshold:
                    del room.catching[receiver]
                    live[receiver] = None
                    receiver.deliver(frame)
                    self.stats.delivered += 1
        for buffer in room.pending.values():
            buffer.append((sid, frame))
        return True

    async def drained(self) -> None:
        """Wait (a bounded time) until no local client has more than `DRAIN_BELOW` frames queued.

        A catch-up after a long break reads thousands of messages in a burst; handing them
        out batch by batch at the pace clients read keeps a healthy client under its send
        queue's limit, so it is not dropped as too slow (1013) for Redis's hiccup.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_WAIT
        while loop.time() < deadline:
            if all(r.backlog() <= DRAIN_BELOW for r in self.receivers):
                return
            await asyncio.sleep(0.02)

    def joined(self, name: str) -> tuple[Receiver, ...]:
        """The room's joined members on this instance (live or catching up), not the joining."""
        room = self.rooms.get(name)
        return () if room is None else (*room.live, *room.catching)

    def notify_room(self, name: str, frame: str, skip: str | None = None) -> None:
        """Send a member event to the room's joined members, except the connection ``skip``.

        Member events may wait a moment (`wire.LAZY_SECONDS`): a burst of joins then costs each
        member a few writes, not one per join."""
        for receiver in self.joined(name):
            if receiver.key != skip:
                receiver.deliver_lazy(frame)

    def notify_others(self, name: str, user: str | None, frame: str) -> None:
        """Send an event to the room's joined members but ``user``'s connections."""
        for receiver in self.joined(name):
            if receiver.user != user:
                receiver.deliver(frame)

    def notify_user(self, name: str, user: str | None, frame: str, skip: str | None = None) -> None:
        """Send an event to ``user``'s connections among the room's joined members, except ``skip``."""
        for receiver in self.joined(name):
            if receiver.user == user and receiver.key != skip:
                receiver.deliver(frame)

    def notify_all(self, frame: str) -> None:
        """Send an event to every connection of this instance."""
        for receiver in list(self.receivers):
            receiver.deliver(frame)

    async def join(self, receiver: Receiver, name: str, read: Callable[[], Awaitable[T]],
                   reply: Callable[[T], StreamId | None]) -> T:
        """Join ``receiver`` to ``name`` without gap or duplicate (G2).

        Live messages are buffered from before ``read`` fetches the history until ``reply``
        (which sends the ``joined`` frame and returns its history's last id) has run; the
        buffer then hands over to live delivery, all in one event-loop step. On failure the
        receiver is out of the room again, unless it was in it before.
        """
        already = self.is_member(receiver, name)
        self.begin_join(receiver, name)
        try:
            result = await read()
        except BaseException:
            if not already:
                self.remove(receiver, name)
            raise
        self.finish_join(receiver, name, reply(result))
        return result

    def is_member(self, receiver: Receiver, name: str) -> bool:
        """True when ``receiver`` gets ``name``'s messages (live or catching up)."""
        room = self.rooms.get(name)
        return room is not None and (receiver in room.live or receiver in room.catching)

    def catchup_from(self, name: str) -> StreamId | None:
        """Where a catch-up read of ``name`` must start so no local member misses anything."""
        room = self.rooms.get(name)
        if room is None:
            return None
        if room.last_id is not None:
            starts = [room.last_id]
        elif room.live or room.pending:
            # Live since an empty history, or joining with a history read we cannot see (it
            # may predate the subscription): everything stored may be new to them. Joiners
            # buffer it, and `finish_join` keeps only what follows their history.
            starts = [(0, 0)]
        else:
            starts = []
        starts.extend(room.catching.values())
        return min(starts) if starts else None
