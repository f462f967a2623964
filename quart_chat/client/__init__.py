"""A Python client for quart_chat servers (asyncio, over the ``websockets`` package), for bots.

It does what `docs/protocol.md`, "Reconnecting correctly", asks of every client: it keeps the
newest message or change id of each room and joins again with ``since`` after a drop, so
nothing is missed and nothing comes twice; it keeps every sent message and change (edit,
delete, react) until its ``ack`` and sends it again, with the same ``client_id``, after a
reconnect (the server applies it once: G8); it reconnects by itself with backoff and jitter,
to the next of its URLs in turn. What comes in is typed events (dataclasses): `Message`,
`MessageEdited`, `MessageDeleted`, `Reaction`, `Joined`, `Ack`, `Error`, `UserJoined`,
`UserLeft`, `RoomCreated`, `RoomRemoved`, `Left`, `Pong`, and the client's own `Connected` and
`Disconnected`.

    import asyncio
    from quart_chat.client import ChatClient, Message

    async def echo_bot() -> None:
        async with ChatClient("ws://127.0.0.1:8000/ws", user="echo") as chat:
            await chat.join("general")
            async for event in chat:
                if isinstance(event, Message) and event.live and event.user != "echo":
                    await chat.send("general", f"{event.user} said: {event.text}")

    asyncio.run(echo_bot())

Every message reaches the events once, in id order per room: those of a ``joined``'s history
(the ones missed, after a reconnect) as `Message` with ``live=False``, right after their
`Joined`, then the live ones. Changes come once too, in stream order among the messages; after
a rejoin, those made meanwhile to messages the client already had follow the history. More in
`docs/client.md`.

The lower-level pieces are public too: `Connection` (one WebSocket: open, send, join and wait
for ``joined``, read every frame in one task; no reconnect), `parse_event`, `Backoff`,
`join_frame`, `message_frame`, `edit_frame`, `delete_frame` and `react_frame`. The load tool
(``quart-chat bench``) is built on them.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .connection import CONNECT_OPTIONS, Backoff, Connection
from .events import (
    RETRYABLE,
    Ack,
    Change,
    ChatError,
    Connected,
    Disconnected,
    Error,
    Event,
    Joined,
    Left,
    Message,
    MessageDeleted,
    MessageEdited,
    Pong,
    Reaction,
    RoomCreated,
    RoomRemoved,
    Unknown,
    UserJoined,
    UserLeft,
    delete_frame,
    edit_frame,
    id_key,
    join_frame,
    message_frame,
    parse_event,
    react_frame,
)

__all__ = [
    "CONNECT_OPTIONS",
    "RETRYABLE",
    "Ack",
    "Backoff",
    "Change",
    "ChatClient",
    "ChatError",
    "Connected",
    "Connection",
    "Disconnected",
    "Error",
    "Event",
    "Joined",
    "Left",
    "Message",
    "MessageDeleted",
    "MessageEdited",
    "Outgoing",
    "Pong",
    "Reaction",
    "RoomCreated",
    "RoomRemoved",
    "Unknown",
    "UserJoined",
    "UserLeft",
    "delete_frame",
    "edit_frame",
    "id_key",
    "join_frame",
    "message_frame",
    "parse_event",
    "react_frame",
]

# ------------------------------------------------------------------ the client
@dataclass
class Outgoing:
    """A sent message or change not acknowledged yet; ``frame`` is what is sent (again).

    ``text`` is the message's or the edit's text, a reaction's emoji, "" for a delete."""

    room: str
    text: str
    client_id: str
    attempts: int = 0
    frame: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.frame:  # made the older way, from room and text alone: a plain message
            self.frame = message_frame(self.room, self.text, self.client_id)


class _Link(Connection):
    __slots__ = ("client", "done", "error")

    def __init__(self, client: ChatClient, url: str) -> None:
        super().__init__(url, client.user)
        self.client = client
        self.done = asyncio.Event()
        self.error: BaseException | None = None

    def on_frame(self, raw: str) -> None:
        self.client._on_event(parse_event(raw), self)

    def on_closed(self, error: BaseException | None) -> None:
        self.error = error
        self.done.set()


@dataclass
class _State:
    rooms: dict[str, str | None] = field(default_factory=dict)  # rooms to be in -> the first join's since
    last_ids: dict[str, str] = field(default_factory=dict)
    # Room -> the newest change kept since its `joined` (from the id the join asked `since`):
    # the changes a rejoin replays may be older than a message of its history, yet new.
    replay: dict[str, str] = field(default_factory=dict)
    unacked: dict[str, Outgoing] = field(default_factory=dict)
    acks: dict[str, asyncio.Future[str]] = field(default_factory=dict)


class ChatClient:
    """A connection to one of ``urls`` that stays up: see the module's docstring.

    ``user`` is the name to join as (None in token mode: the token's); ``token`` is sent as
    ``Authorization: Bearer``. ``ping_interval``: WebSocket pings (None: none), which also
    tell a dead link. At most ``max_events`` events wait to be read; past that the oldest
    are dropped (counted in ``dropped_events``).
    """

    def __init__(self, urls: str | Sequence[str], user: str | None = None, *, token: str | None = None,
                 backoff: Backoff | None = None, open_timeout: float = 10.0, join_timeout: float = 10.0,
                 ping_interval: float | None = 20.0, max_events: int = 10_000) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("no URL")
        self.user = user
        self.name: str | None = user  # as the server confirmed it in `joined`
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.join_timeout = join_timeout
        self.options: dict[str, Any] = {"ping_interval": ping_interval}
        if token:
            self.options["additional_headers"] = {"Authorization": f"Bearer {token}"}
        self.connects = 0
        self.dropped_events = 0
        self._state = _State()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(max_events)
        self._link: _Link | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: BaseException | None = None
        self._ids = (f"{uuid.uuid4().hex[:10]}-{k}" for k in itertools.count(1))

    @property
    def last_ids(self) -> dict[str, str]:
        """Room -> the newest message or change id seen there, compared as (ms, seq): what a
        rejoin asks ``since``."""
        return self._state.last_ids

    @property
    def unacked(self) -> dict[str, Outgoing]:
        """``client_id`` -> each sent message or change still waiting for its ack, oldest first."""
        return self._state.unacked

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    # -------------------------------------------------------------- public
    async def connect(self, timeout: float | None = None) -> None:
        """Start (once) and wait until connected; the client keeps reconnecting by itself."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._wait_up(), timeout)

    async def join(self, room: str, since: str | None = None) -> Joined:
        """Join ``room`` (``since``: a message id, to get everything after it) and stay in it
        across reconnects (connecting first if need be). Raises `ChatError` when refused."""
        from websockets.exceptions import WebSocketException

        st = self._state
        st.rooms.setdefault(room, since)
        while True:
            link = await self._wait_up()
            try:
                return await self._join_on(link, room)
            except ChatError:
                st.rooms.pop(room, None)
                raise
            except (ConnectionError, TimeoutError, WebSocketException):
                await asyncio.sleep(0.05)  # the link dropped meanwhile: on the next one

    async def leave(self, room: str) -> None:
        """Leave ``room``; it is not joined again at a reconnect."""
        self._state.rooms.pop(room, None)
        self._state.replay.pop(room, None)
        link = self._link
        if link is not None and room in link.rooms:
            link.rooms.discard(room)
            await self._try_send(link, {"type": "leave", "room": room})

    async def send(self, room: str, text: str, client_id: str | None = None, reply_to: str | None = None) -> str:
        """Send ``text`` to ``room`` (joined first), answering message ``reply_to`` if given; returns
        its ``client_id`` (made here if not given). Kept, and sent again after a reconnect, until acked."""
        cid = client_id or next(self._ids)
        return await self._submit(Outgoing(room, text, cid, frame=message_frame(room, text, cid, reply_to)))

    async def edit(self, room: str, id: str, text: str, client_id: str | None = None) -> str:
        """Make message ``id`` (one's own) read ``text``; returns the ``client_id``, kept until acked like `send`."""
        cid = client_id or next(self._ids)
        return await self._submit(Outgoing(room, text, cid, frame=edit_frame(room, id, text, cid)))

    async def delete(self, room: str, id: str, client_id: str | None = None) -> str:
        """Delete message ``id`` (one's own); returns the ``client_id``, kept until acked like `send`."""
        cid = client_id or next(self._ids)
        return await self._submit(Outgoing(room, "", cid, frame=delete_frame(room, id, cid)))

    async def react(self, room: str, id: str, emoji: str, on: bool = True, client_id: str | None = None) -> str:
        """Add (``on``) or take back this user's ``emoji`` on message ``id``; returns the ``client_id``,
        kept until acked like `send`."""
        cid = client_id or next(self._ids)
        return await self._submit(Outgoing(room, emoji, cid, frame=react_frame(room, id, emoji, on, cid)))

    async def _submit(self, out: Outgoing) -> str:
        """Keep ``out`` until its ack, with a future for `acked`, and send it if its room is joined."""
        room, cid = out.room, out.client_id
        st = self._state
        st.unacked[cid] = out
        if cid not in st.acks:
            st.acks[cid] = asyncio.get_running_loop().create_future()
            if len(st.acks) > 10_000:  # acks nobody waited for
                st.acks.pop(next(iter(st.acks)))
        link = self._link
        if link is not None and room in link.rooms:
            await self._send_out(link, out)
        return cid

    async def acked(self, client_id: str, timeout: float | None = None) -> str:
        """Wait for ``client_id``'s ack (through any reconnects): the stored message's id, or the
        change's ``change_id``. Raises `ChatError` when the server refused it for good."""
        fut = self._state.acks.get(client_id)
        if fut is None:
            raise KeyError(client_id)
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event (TimeoutError after ``timeout`` s); raises once the client is closed."""
        if self._closed and self._events.empty():
            raise ConnectionError("client closed") from self._fatal
        ev = await asyncio.wait_for(self._events.get(), timeout)
        if ev is None:
            self._events.put_nowait(None)
            raise ConnectionError("client closed") from self._fatal
        return ev

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.next_event()
            except ConnectionError:
                if self._fatal is not None:
                    raise
                return

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._link is not None:
            await self._link.close()
        self._up.clear()
        self._emit(None)

    async def __aenter__(self) -> ChatClient:
        await self.connect(self.open_timeout * 3)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -------------------------------------------------------------- inside
    def _emit(self, ev: Event | None) -> None:
        while True:
            try:
                self._events.put_nowait(ev)
                return
            except asyncio.QueueFull:
                self._events.get_nowait()
                self.dropped_events += 1

    async def _wait_up(self) -> _Link:
        if self._task is None and not self._closed:  # join() or send() before connect()
            self._task = asyncio.create_task(self._run())
        while True:
            if self._fatal is not None or self._closed or (self._task is not None and self._task.done()):
                raise ConnectionError("client closed") from self._fatal
            link = self._link
            if self._up.is_set() and link is not None:
                return link
            waiter = asyncio.ensure_future(self._up.wait())
            try:
                await asyncio.wait([waiter, self._task] if self._task else [waiter],
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    async def _join_on(self, link: _Link, room: str) -> Joined:
        st = self._state
        since = st.last_ids.get(room) or st.rooms.get(room)
        joined: Joined = await link.join(room, since, self.join_timeout)
        for out in [o for o in st.unacked.values() if o.room == room]:
            await self._send_out(link, out)
        return joined

    async def _send_out(self, link: _Link, out: Outgoing) -> None:
        out.attempts += 1
        await self._try_send(link, out.frame)

    @staticmethod
    async def _try_send(link: _Link, frame: dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await link.send(frame)
        except ConnectionClosed:
            pass  # the reconnect sends it again

    def _fresh(self, m: Message) -> bool:
        last = self._state.last_ids.get(m.room)
        return last is None or id_key(m.id) > id_key(last)

    def _fresh_change(self, c: Change) -> bool:
        st = self._state
        last = st.last_ids.get(c.room)
        key = id_key(c.change_id)
        if last is None or key > id_key(last):
            return True
        # Right after a rejoin, its replayed changes come after the history, in stream order:
        # one may be older than a message of that history and still be new to this client.
        mark = st.replay.get(c.room)
        return mark is not None and key > id_key(mark)

    def _keep_change(self, c: Change) -> None:
        st = self._state
        if c.room in st.replay:
            st.replay[c.room] = c.change_id
        last = st.last_ids.get(c.room)
        if last is None or id_key(c.change_id) > id_key(last):
            st.last_ids[c.room] = c.change_id

    def _keep(self, m: Message) -> None:
        st = self._state
        st.last_ids[m.room] = m.id
        if m.client_id is not None and m.user == self.name:
            out = st.unacked.get(m.client_id)
            if out is not None and out.room == m.room:
                self._confirm(m.client_id, m.id)

    def _confirm(self, client_id: str, message_id: str) -> None:
        st = self._state
        st.unacked.pop(client_id, None)
        fut = st.acks.get(client_id)
        if fut is not None and not fut.done():
            fut.set_result(message_id)

    def _on_event(self, ev: Event, link: _Link) -> None:
        """Every frame of the current connection, in order (from its reader task)."""
        if isinstance(ev, Message):
            if self._fresh(ev):
                if self._state.replay:
                    self._state.replay.pop(ev.room, None)  # a live message: the replay is over
                self._keep(ev)
                self._emit(ev)
            return
        if isinstance(ev, (MessageEdited, MessageDeleted, Reaction)):
            if self._fresh_change(ev):
                self._keep_change(ev)
                self._emit(ev)
            return
        if isinstance(ev, Joined):
            self.name = ev.user
            st = self._state
            floor = st.last_ids.get(ev.room) or st.rooms.get(ev.room)  # the `since` this join asked
            if floor is None:
                st.replay.pop(ev.room, None)  # no `since`: the server replays no change
            else:
                st.replay[ev.room] = floor
            fresh = [m for m in ev.history if self._fresh(m)]
            for m in fresh:
                self._keep(m)
            ev = replace(ev, history=fresh)
            self._emit(ev)
            for m in fresh:
                self._emit(m)
            link.joined(ev.room, ev)
            return
        if isinstance(ev, Ack):
            self._confirm(ev.client_id, ev.id)
        elif isinstance(ev, Error):
            if ev.ref == "join":
                link.refused(ChatError(ev.code, ev.message))
            elif ev.ref is not None and ev.ref in self._state.unacked:
                self._refused_send(ev, link)
        self._emit(ev)

    def _refused_send(self, ev: Error, link: _Link) -> None:
        st = self._state
        out = st.unacked[ev.ref or ""]
        if ev.code in RETRYABLE and out.attempts < 20:  # again in a while, on this connection or the next
            loop = asyncio.get_running_loop()
            loop.call_later(min(10.0, 0.5 * out.attempts), lambda: self._resend_later(out))
            return
        st.unacked.pop(out.client_id, None)
        fut = st.acks.get(out.client_id)
        if fut is not None and not fut.done():
            fut.set_exception(ChatError(ev.code, ev.message))
            fut.exception()  # retrieved: nobody may be waiting for it

    def _resend_later(self, out: Outgoing) -> None:
        link = self._link
        if link is not None and out.client_id in self._state.unacked and out.room in link.rooms:
            task = asyncio.ensure_future(self._send_out(link, out))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _run(self) -> None:
        """Connect, join every room (with ``since``), resend; wait for the end; back off; again."""
        from websockets.exceptions import InvalidStatus, WebSocketException

        loop = asyncio.get_running_loop()
        attempt = k = 0
        while not self._closed:
            link = _Link(self, self.urls[k % len(self.urls)])
            opened_at = None
            delay = 0.0
            try:
                await link.open(self.open_timeout, **self.options)
                self._link = link
                for room in list(self._state.rooms):
                    try:
                        await self._join_on(link, room)
                    except ChatError as err:  # refused now (token, limits): that room is left
                        self._state.rooms.pop(room, None)
                        self._emit(Error(err.code, err.message, "join"))
                self.connects += 1
                opened_at = loop.time()
                self._up.set()
                self._emit(Connected(link.url, self.connects))
                await link.done.wait()
            except InvalidStatus as err:
                status = err.response.status_code
                if status in (401, 403):  # retrying does not help
                    self._fatal = err
                    self._closed = True
                    self._emit(None)
                    return
                delay = float(err.response.headers.get("Retry-After", "0") or 0) if status == 503 else 0.0
            except (OSError, TimeoutError, ChatError, WebSocketException):
                pass  # refused, cut or timed out: try again after the delay
            self._up.clear()
            self._link = None
            await link.close()
            if opened_at is not None:
                ws = link.ws
                code, reason = getattr(ws, "close_code", None), getattr(ws, "close_reason", None) or ""
                self._emit(Disconnected(link.url, code, reason))
                if loop.time() - opened_at >= self.backoff.reset_after:
                    attempt = 0
            else:
                k += 1  # could not connect there: the next URL
            await asyncio.sleep(max(delay, self.backoff.delay(attempt)))
            attempt += 1
