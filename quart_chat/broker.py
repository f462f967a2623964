"""This instance's link to Redis, as the sessions and routes see it.

The pieces live in their own modules: `store` (key names, scripts, the client),
`subscriber` (pub/sub and its catch-up) and `presence` (heartbeat and janitor). The
`Broker` holds one of each and offers what a connection needs: send, join, leave, read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from .archive import Archive, ArchiveDown
from .archiver import Archiver
from .batch import ScriptBatch
from .codes import ErrorCode
from .config import Settings
from .history import change_target, has_gap, latest
from .metrics import now
from .presence import Presence
from .protocol import (
    Change,
    Delete,
    Edit,
    ProtocolError,
    StreamId,
    dumps,
    entry_frame,
    format_stream_id,
    is_change,
    parse_stream_id,
    word_map,
)
from .rooms import Hub
from .shards import ShardSubscriber
from .store import (
    APPEND_LUA,
    CHANGE_LUA,
    CREATE_ROOM_LUA,
    DUPLICATE,
    FORBIDDEN,
    HISTORY_LUA,
    JOIN_LUA,
    JOIN_SHARDED_LUA,
    NOT_FOUND,
    POOL_SIZE,
    READ_LUA,
    TOO_MANY_EMOJI,
    UNREACHABLE,
    Layout,
    Unavailable,
    is_cluster_url,
    make_client,
    now_ms,
    sharded,
    stop_if_cancelled,
)
from .subscriber import Subscriber

__all__ = ["Broker", "JoinResult", "LimitExceeded", "Sent", "Unavailable"]

log = logging.getLogger("quart_chat.broker")

# How long a send may wait for Redis; the script refuses to run later than APPEND_BUDGET.
APPEND_BUDGET = 2.0
APPEND_TIMEOUT = 3.0
JOIN_TIMEOUT = 3.0


class LimitExceeded(Exception):
    """A cap of the whole deployment (CHAT_MAX_ROOMS) refused the request; nothing was created."""


# Most distinct emoji on one message (docs/protocol.md, "A message's life").
MAX_EMOJI_PER_MESSAGE = 20
# How often a cluster's instance files the rooms it wrote to in the activity index (seconds).
STAMP_EVERY = 0.5
# Most messages a join takes from the archive; from further back, `gap` says so (and REST pages on).
ARCHIVE_JOIN_MOST = 5000


@dataclass(slots=True)
class JoinResult:
    """What a join read from Redis in one round trip."""

    history: list[str]
    last: StreamId | None  # the newest id the joiner has, sent or not; None: the stream was empty
    members: list[str]
    gap: bool
    # A `since` join: frames of the changes made since then to messages it already had.
    changes: list[str] = field(default_factory=list)
    read: str | None = None  # the user's read marker in the room


@dataclass(slots=True)
class Sent:
    """A stored message: its id, whether it was stored before (G8), and `WAIT`'s verdict."""

    id: str
    duplicate: bool
    durable: bool | None = None


def _latest(entries: list[Any], states: list[str | None]) -> list[str]:
    """Message entries as script replies give them (``data`` first), in their latest state."""
    if not states:
        states = [None] * len(entries)
    return [latest(sid, fields[1], state) for (sid, fields), state in zip(entries, states)]


_REFUSED = {
    NOT_FOUND: (ErrorCode.NOT_FOUND, "no such message in this room (it may have been deleted or trimmed away)"),
    FORBIDDEN: (ErrorCode.FORBIDDEN, "only its author may edit or delete a message"),
    TOO_MANY_EMOJI: (ErrorCode.LIMIT_EXCEEDED, f"a message has at most {MAX_EMOJI_PER_MESSAGE} different reactions"),
}


def _refused(status: int) -> ProtocolError:
    code, message = _REFUSED[status]
    return ProtocolError(code, message)


class Broker:
    """Commands, the subscriber and presence of one instance, over one pooled client."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        # A node is one run of one instance: a restarted instance with the same name must
        # not revive the members its previous run left behind.
        self.node = f"{settings.instance}#{secrets.token_hex(4)}"
        self._origin = dumps(settings.instance)
        self.redis = make_client(settings.redis_url, socket_timeout=5.0, pool_size=POOL_SIZE)
        # One Redis, or a cluster: the same scripts, publishing per room there (store.Layout).
        self.keys = keys = Layout(is_cluster_url(settings.redis_url))
        room_script = sharded if keys.cluster else (lambda source: source)
        self._append = self.redis.register_script(room_script(APPEND_LUA))
        self._change = self.redis.register_script(room_script(CHANGE_LUA))
        self._history = self.redis.register_script(HISTORY_LUA)
        self._join = ScriptBatch(self.redis, self.redis.register_script(JOIN_SHARDED_LUA if keys.cluster else JOIN_LUA))
        self._read = self.redis.register_script(room_script(READ_LUA))
        self._create = self.redis.register_script(CREATE_ROOM_LUA)
        self._recorded: set[str] = set()  # on a cluster: rooms this node's record names
        self._touched: set[str] = set()  # on a cluster: rooms written to since the last stamp
        self.subscriber: Subscriber | ShardSubscriber
        if keys.cluster:
            self.subscriber = ShardSubscriber(settings.redis_url, hub, self.redis, keys)
        else:
            self.subscriber = Subscriber(settings.redis_url, hub, self.redis)
        # The archive (docs/archive.md): with it, a stream may hold a backlog the archiver
        # has not taken yet, and trims it back itself.
        self.archive = Archive(settings.archive_url, settings.archive_language) if settings.archive_url else None
        self.archiver = None if self.archive is None else Archiver(settings, self.redis, self.node, self.archive, keys)
        self._cap = settings.history_maxlen + (settings.archive_backlog if self.archive else 0)
        self.presence = Presence(settings, self.redis, self.node, keys)
        self._tasks: list[asyncio.Task] = []
        self._cleanups: set[asyncio.Task] = set()
        self.stopping = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the subscriber, heartbeat and janitor; none needs Redis to be up yet."""
        self._tasks = [
            asyncio.create_task(self.subscriber.run(), name="chat-subscriber"),
            asyncio.create_task(self.presence.heartbeat_forever(), name="chat-heartbeat"),
            asyncio.create_task(self.presence.janitor_forever(), name="chat-janitor"),
        ]
        if self.archiver is not None:
            self._tasks.append(asyncio.create_task(self.archiver.run(), name="chat-archiver"))
        if self.keys.cluster:
            self._tasks.append(asyncio.create_task(self._stamp_forever(), name="chat-activity"))

    async def _stamp_forever(self) -> None:
        """On a cluster, file the rooms written to in the deployment's activity index, twice a
        second: the room scripts cannot (another slot), and the archiver reads it to find the
        rooms with something new (the janitor checks each room's own stamp before an expiry)."""
        while True:
            await asyncio.sleep(STAMP_EVERY)
            if not self._touched:
                continue
            rooms, self._touched = self._touched, set()
            at = now_ms() + self.presence.clock_offset
            try:
                await self.redis.zadd(self.keys.activity_index, dict.fromkeys(rooms, at), gt=True)
            except (*UNREACHABLE, RedisError):
                self._touched |= rooms  # Redis away: next time
            stop_if_cancelled()

    async def stop(self) -> None:
        """Stop background work and remove this node's members, as far as Redis allows."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=2.0)
        try:
            await asyncio.wait_for(self.presence.clear_node(self.node), 2.0)
        except (*UNREACHABLE, RedisError):
            log.warning("could not remove this instance's members from Redis; others will after %ss",
                        self.settings.dead_after_seconds)
        if self.archive is not None:
            await self.archive.close()
        await self.redis.aclose()

    def spawn_cleanup(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background (e.g. leave-on-disconnect) and keep it referenced."""
        if self.stopping:  # `stop` clears every member of this node in one sweep instead
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    # ------------------------------------------------------------ messages
    async def append(self, room: str, user: str, text: str, client_id: str | None,
                     reply_to: str | None = None, author: str | None = None) -> Sent:
        """Store a message in its room's stream and publish it, atomically, once per client_id (G8).

        ``reply_to`` must name a message the room's stream holds (else ``not_found``);
        ``author`` (token mode: the token's ``sub``) is kept for the edit and delete checks.
        """
        data: dict[str, Any] = {"room": room, "user": user, "text": text, "ts": now_ms()}
        if client_id is not None:
            data["client_id"] = client_id
        if reply_to is not None:
            data["reply_to"] = reply_to
        deadline = data["ts"] + self.presence.clock_offset + int(APPEND_BUDGET * 1000)
        k = self.keys
        stream = k.history(room)
        sent = stream if client_id is None else k.sent(room, user, client_id)
        keys = [stream, k.trimmed(room), k.channel(room), sent, k.activity(room), k.members(room)]
        args = [self._cap, dumps(data), self._origin, deadline, self.settings.dedupe_seconds, room,
                reply_to or "", author or "", *((text, word_map(text)) if "@" in text else ("", ""))]
        if self.keys.cluster:
            self._touched.add(room)
        return await self._store(self._append, keys, args)

    async def change(self, user: str, author: str | None, cmd: Change) -> Sent:
        """Store and publish one change of message ``cmd.id`` (edit, delete, react) as its own
        stream entry, once per client_id (G8); `ProtocolError` when the message is not there
        (``not_found``), not the user's (``forbidden``) or has too many reactions."""
        ts = now_ms()
        room, target = cmd.room, cmd.id
        data: dict[str, Any]
        if isinstance(cmd, Edit):
            data = {"type": "message_edited", "room": room, "id": target, "text": cmd.text, "edited_ts": ts}
            kind, value, extra = "edit", cmd.text, ts
        elif isinstance(cmd, Delete):
            data = {"type": "message_deleted", "room": room, "id": target}
            kind, value, extra = "delete", "", 0
        else:
            data = {"type": "reaction", "room": room, "id": target, "emoji": cmd.emoji, "user": user, "on": cmd.on}
            kind, value, extra = "react", cmd.emoji, int(cmd.on)
        cid = cmd.client_id
        k = self.keys
        stream = k.history(room)
        keys = [stream, k.trimmed(room), k.channel(room), stream if cid is None else k.sent(room, user, cid),
                k.activity(room), k.state(room), k.state_index(room)]
        deadline = ts + self.presence.clock_offset + int(APPEND_BUDGET * 1000)
        args = [self._cap, dumps(data), self._origin, deadline, self.settings.dedupe_seconds, room,
                kind, target, author or "", user, value, extra, MAX_EMOJI_PER_MESSAGE]
        if self.keys.cluster:
            self._touched.add(room)
        return await self._store(self._change, keys, args)

    async def _store(self, script: Any, keys: list[str], args: list[Any]) -> Sent:
        """Run an append or change script (with `WAIT` behind it when asked) and read its answer."""
        wait = self.settings.redis_wait_replicas
        started = now()
        try:
            if wait:
                try:
                    reply, acked = await self._store_durably(script, keys, args, wait)
                except NoScriptError:  # a shard that never ran it (new, or restarted): loaded, then again
                    await self.redis.script_load(script.script)
                    reply, acked = await self._store_durably(script, keys, args, wait)
            else:
                # asyncio.timeout, not wait_for: no extra task per message (Python 3.11).
                async with asyncio.timeout(APPEND_TIMEOUT):
                    reply = await script(keys=keys, args=args)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        self.hub.stats.append_seconds.observe(now() - started)
        if reply is None:
            raise Unavailable("Redis answered after the send deadline; the message was not stored")
        status = int(reply[1])
        if status > DUPLICATE:
            raise _refused(status)
        return Sent(reply[0], status == DUPLICATE, (acked >= wait) if wait else None)

    async def _store_durably(self, script: Any, keys: list[str], args: list[Any], wait: int) -> tuple[Any, int]:
        """The script's answer, and how many replicas confirmed it within CHAT_REDIS_WAIT_MS.

        WAIT cannot run inside a script: a pipeline sends it right behind, on the same
        connection, so it covers this write (docs/deploying.md, "Redis with Sentinel"). On a
        cluster both go to the shard that owns the room; if the slot moved on meanwhile, the
        WAIT counted for another node, and the message is not called durable.
        """
        pipe = self.redis.pipeline(transaction=False)
        cluster: Any = self.redis  # a RedisCluster when self.keys.cluster
        node = None
        if self.keys.cluster:
            node = cluster.get_node_from_key(keys[0])
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", wait, self.settings.redis_wait_ms, target_nodes=node)
        else:
            await script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", wait, self.settings.redis_wait_ms)
        async with asyncio.timeout(APPEND_TIMEOUT + self.settings.redis_wait_ms / 1000):
            reply, acked = await pipe.execute()
        if node is not None and cluster.get_node_from_key(keys[0]) is not node:
            acked = 0
        return reply, acked

    # ------------------------------------------------------------ rooms and members
    async def join(self, room: str, user: str, key: str, since: StreamId | None) -> JoinResult:
        """Record the room (within CHAT_MAX_ROOMS) and the member, read history and members."""
        s = self.settings
        arg: int | str
        if since is None:
            mode, arg = "last", s.history_on_join
        else:
            mode, arg = "since", format_stream_id(since)
        cutoff = now_ms() - int(s.dead_after_seconds * 1000)
        k = self.keys
        members = k.members(room)
        keys = [k.record(room), members, members if k.cluster else k.node_rooms(self.node), k.history(room),
                k.trimmed(room), members if k.cluster else k.instances, k.activity(room), k.events(room),
                k.state(room), k.read(room)]
        args = [room, key, user, 0 if k.cluster else s.max_rooms, mode, arg, cutoff, dumps(user), dumps(key),
                self._origin, self.presence.dead_nodes]
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                if k.cluster:
                    await self._on_shard(room)
                # A burst of joins goes to Redis as one pipeline (batch.py).
                reply = await self._join(keys, args)
                if reply is None and k.cluster and await self._create_room(room):
                    args[3] = 1  # listed now: the room's shard records it too
                    reply = await self._join(keys, args)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        self.presence.orphans.pop((room, key), None)  # an earlier failed join of it is healed
        if reply is None:
            raise LimitExceeded(f"this server holds at most {s.max_rooms} rooms")
        _created, members, entries, oldest, trimmed, newest, states, read = reply
        # `last` is where the joiner stands, not merely the last entry sent: a joiner told
        # "nothing new" already has everything stored (up to the newest entry, not to a
        # `since` from the future), and a catch-up must not hand it those again. The
        # history shows every change up to `last` (the state was read in the same step).
        last = parse_stream_id(newest) if newest else None
        members.sort()
        if since is None:
            return JoinResult(_latest(entries[::-1], states[::-1]), last, members, False, read=read)
        oldest_id = parse_stream_id(oldest[0][0]) if oldest else None
        history, changes = [], []
        for (sid, fields), state in zip(entries, states or [None] * len(entries)):
            data = fields[1]
            if not is_change(data):
                history.append(latest(sid, data, state))
            elif (target := change_target(data)) is not None and target <= since:
                changes.append(entry_frame(sid, data))  # to a message the joiner has: replayed
        gap = has_gap(since, oldest_id, bool(trimmed))
        if gap and self.archive is not None and self.archiver is not None and self.archiver.ready:
            # What the stream lost since `since` is in the archive: served from there, first.
            try:
                older, replays, cut = await self.archive.between(room, since, oldest_id, ARCHIVE_JOIN_MOST)
                gap = cut or not await self.archive.covers(room, since)
            except ArchiveDown as err:  # the archive away: the join goes on as without one
                log.warning("archive: a join from %s could not read it (%s)", format_stream_id(since), err)
            else:
                history, changes = older + history, replays + changes
        return JoinResult(history, last, members, gap, changes, read)

    async def _on_shard(self, room: str) -> None:
        """On a cluster, before a join: subscribe the room's channel (G2) and name the room in
        this node's record first, so that the janitor finds the member if this node dies."""
        if room not in self._recorded:
            await self.redis.hset(self.keys.node_rooms(self.node), room, 1)
            self._recorded.add(room)
        await self.subscriber.ensure(room)  # type: ignore[union-attr]

    async def _create_room(self, room: str) -> bool:
        """On a cluster: list the room for the whole deployment, within CHAT_MAX_ROOMS, and
        announce it; False when it would be one too many."""
        k = self.keys
        created = await self._create(keys=[k.rooms, k.activity_index],
                                     args=[room, self.settings.max_rooms, self._origin, k.notifications])
        return created is not None

    async def read(self, room: str, user: str, key: str, upto: str) -> str | None:
        """Move ``user``'s read marker in ``room`` forward to ``upto`` and tell their other
        connections (not ``key``, the one that read); returns the marker kept (None: the
        room has no message)."""
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                k = self.keys
                return await self._read(keys=[k.read(room), k.history(room), k.events(room)],
                                        args=[user, upto, room, dumps(user), self._origin, dumps(key)])
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err

    async def typing(self, room: str, user: str) -> None:
        """Tell the room's other members, on every instance, that ``user`` is typing (never stored)."""
        event = {"type": "typing", "room": room, "user": user}
        payload = f"{dumps(event)[:-1]},\"origin\":{self._origin}}}"
        try:
            if self.keys.cluster:
                await self.redis.execute_command("SPUBLISH", self.keys.events(room), payload)
            else:
                await self.redis.publish(self.keys.events(room), payload)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err

    async def leave(self, room: str, user: str, key: str) -> None:
        """Remove a member from a room and tell the others."""
        try:
            await self.presence.remove(room, key, user)
        except UNREACHABLE as err:
            self.presence.forget_later(room, key, user)
            raise Unavailable(str(err)) from err

    async def leave_all(self, rooms: list[str], user: str, key: str) -> None:
        """Leave every room of a closed connection; what Redis refuses now, the janitor retries."""
        for room in rooms:
            try:
                await self.presence.remove(room, key, user)
            except (*UNREACHABLE, RedisError):
                self.presence.forget_later(room, key, user)

    # ------------------------------------------------------------ REST reads
    async def rooms(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None] | None:
        """A page of rooms in creation order after room ``after``, and the next page's ``after``.

        None when ``after`` names no room.
        """
        try:
            start = 0
            if after is not None:
                rank: Any = await self.redis.zrank(self.keys.rooms, after)
                if rank is None:
                    return None
                start = rank + 1
            pairs: Any = await self.redis.zrange(self.keys.rooms, start, start + limit, withscores=True)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        page: list[dict[str, Any]] = [{"name": name, "created": int(score)} for name, score in pairs[:limit]]
        return page, (pairs[limit - 1][0] if len(pairs) > limit else None)

    async def history_page(self, room: str, limit: int, before: StreamId | None) -> tuple[list[str], bool] | None:
        """The newest ``limit`` messages older than ``before``, oldest first, and whether more exist.

        None when the room was never created.
        """
        top = "+" if before is None else "(" + format_stream_id(before)
        try:
            k = self.keys
            reply = await self._history(keys=[k.record(room), k.history(room), k.state(room)],
                                        args=[room, top, limit + 1])
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        if reply is None:
            return None
        entries, states, oldest = reply
        messages, more = _latest(entries[:limit][::-1], states[:limit][::-1]), len(entries) > limit
        if more or self.archiver is None or not self.archiver.ready:
            return messages, more
        # The stream has no more: the archive pages on from below its oldest entry (no
        # duplicate at the seam: everything from there on was served from the stream).
        below = parse_stream_id(oldest) if oldest else before
        if before is not None and below is not None:
            below = min(below, before)
        if below is None:
            return messages, more
        assert self.archive is not None
        try:
            older, more = await self.archive.before(room, below, limit - len(messages))
        except ArchiveDown as err:
            raise Unavailable(str(err)) from err
        return older + messages, more

    async def search(self, room: str, query: str, limit: int,
                     before: StreamId | None) -> tuple[list[str], str | None] | None:
        """Archive search in ``room`` (None: the room was never created)."""
        assert self.archive is not None
        try:
            if await self.redis.zscore(self.keys.rooms, room) is None:
                return None
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        try:
            return await self.archive.search(room, query, limit, before)
        except ArchiveDown as err:
            raise Unavailable(str(err)) from err

    async def health(self) -> bool:
        """True when Redis answers commands and the subscriber heard from it recently."""
        try:
            await asyncio.wait_for(self.redis.ping(), 2.0)
        except (*UNREACHABLE, RedisError):
            return False
        return self.subscriber.live
