"""Everything this instance says to Redis (PROTOCOL.md section 2), and the subscriber loop.

Keys and channels:

- ``chat:messages`` / ``chat:room-notifications``: pub/sub, one subscriber per instance;
- ``chat:history:<room>``: the room's capped stream, appended by `APPEND_LUA` together
  with the publish, so stream order is delivery order on every instance;
- ``chat:rooms``: sorted set of rooms by creation time;
- ``chat:history-trimmed:<room>``: set once the stream has lost entries to the cap
  (Redis 6.2 cannot tell which IDs a trim removed; see `history.has_gap`);
- ``chat:members:<room>``: hash ``<node>|<session>`` -> user name;
- ``chat:instances``: sorted set of live nodes by last heartbeat (ms), and
  ``chat:instance-rooms:<node>``: the rooms a node has members in, so that any instance
  can clear the members of a node that died without saying goodbye.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import Settings
from .history import has_gap
from .protocol import StreamId, dumps, format_stream_id, message_frame, message_json, parse_stream_id
from .rooms import Hub

log = logging.getLogger("quart_chat.broker")

MESSAGES = "chat:messages"
NOTIFICATIONS = "chat:room-notifications"
ROOMS = "chat:rooms"
INSTANCES = "chat:instances"
CATCHUP_BATCH = 500
PING_EVERY = 2.0
SILENT_AFTER = 6.0

# Append and publish in one atomic step; remember when the cap first trims the stream.
# A script that only runs after its deadline (Redis was frozen, the sender already told
# `unavailable`) does nothing, so `unavailable` always means "neither stored nor sent".
APPEND_LUA = """
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[4]) then return false end
local before = redis.call('XLEN', KEYS[1])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[2])
if redis.call('XLEN', KEYS[1]) <= before then redis.call('SET', KEYS[2], '1') end
redis.call('PUBLISH', KEYS[3], '{"id":"' .. id .. '","origin":' .. ARGV[3] .. ',' .. string.sub(ARGV[2], 2))
return id
"""

# Remove one member; announce `user_left` only when that name has no other connection in
# the room, and only once (HDEL's count tells which caller removed it).
LEAVE_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, name in ipairs(redis.call('HVALS', KEYS[1])) do
  if name == ARGV[2] then return 1 end
end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 2
"""

# How long a send may wait for Redis; the script refuses to run later than APPEND_BUDGET.
APPEND_BUDGET = 2.0
APPEND_TIMEOUT = 3.0

# The command client's connections to Redis, and how long a command may wait for one.
POOL_SIZE = 50
POOL_WAIT = 2.0

# Errors that mean "Redis cannot be reached", as opposed to a bug or a bad command.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


def history_key(room: str) -> str:
    """The stream that holds a room's messages."""
    return f"chat:history:{room}"


def trimmed_key(room: str) -> str:
    """The flag set once a room's stream has been trimmed."""
    return f"chat:history-trimmed:{room}"


def members_key(room: str) -> str:
    """The hash of who is in a room, on every instance."""
    return f"chat:members:{room}"


def node_rooms_key(node: str) -> str:
    """The set of rooms in which ``node`` has members."""
    return f"chat:instance-rooms:{node}"


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class Unavailable(Exception):
    """Redis cannot be reached: nothing was stored or delivered."""


@dataclass(slots=True)
class JoinResult:
    """What a join read from Redis in one round trip."""

    history: list[str]
    last: StreamId | None
    members: list[str]
    gap: bool


def _entries_json(entries: list[tuple[str, dict[str, str]]]) -> list[str]:
    return [message_json(sid, fields["data"]) for sid, fields in entries]


class Broker:
    """This instance's link to Redis: commands, the subscriber, presence and its heartbeat."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        # A node is one run of one instance: a restarted instance with the same name must
        # not revive the members its previous run left behind.
        self.node = f"{settings.instance}#{secrets.token_hex(4)}"
        self._origin = dumps(settings.instance)
        self.redis = self._client(socket_timeout=5.0, pool_size=POOL_SIZE)
        self._append = self.redis.register_script(APPEND_LUA)
        self._leave = self.redis.register_script(LEAVE_LUA)
        # Redis clock minus ours, in ms, measured by the heartbeat (deadlines are Redis time).
        self.clock_offset = 0
        self._tasks: list[asyncio.Task] = []
        self._cleanups: set[asyncio.Task] = set()
        self.subscribed = False
        self.last_seen = 0.0
        self.stopping = False

    def _client(self, socket_timeout: float | None, pool_size: int | None = None) -> Redis:
        # One quick retry heals a pooled connection broken by a Redis restart; more would
        # only make `unavailable` slow while Redis is down (see PITFALLS.md).
        options: dict[str, Any] = dict(
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
        )
        if pool_size is None:
            return Redis.from_url(self.settings.redis_url, **options)
        # A bounded pool: bursts (hundreds of clients leaving at once) wait for a connection
        # instead of opening one each, which then stayed open for ever.
        return Redis.from_pool(BlockingConnectionPool.from_url(
            self.settings.redis_url, max_connections=pool_size, timeout=POOL_WAIT, **options))

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the subscriber and the heartbeat; neither needs Redis to be up yet."""
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="chat-subscriber"),
            asyncio.create_task(self._heartbeat_forever(), name="chat-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop background work and remove this node's members, as far as Redis allows."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=2.0)
        try:
            await asyncio.wait_for(self._clear_node(self.node), 2.0)
        except (*UNREACHABLE, RedisError):
            log.warning("could not remove this instance's members from Redis; others will after %ss",
                        self.settings.dead_after_seconds)
        await self.redis.aclose()

    def spawn_cleanup(self, coro: Any) -> None:
        """Run ``coro`` in the background (e.g. leave-on-disconnect) and keep it referenced."""
        if self.stopping:  # `stop` clears every member of this node in one sweep instead
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    # ------------------------------------------------------------ messages
    async def append(self, room: str, user: str, text: str, client_id: str | None) -> None:
        """Store a message in its room's stream and publish it, atomically."""
        data: dict[str, Any] = {"room": room, "user": user, "text": text, "ts": now_ms()}
        if client_id is not None:
            data["client_id"] = client_id
        deadline = data["ts"] + self.clock_offset + int(APPEND_BUDGET * 1000)
        try:
            sid = await asyncio.wait_for(self._append(
                keys=[history_key(room), trimmed_key(room), MESSAGES],
                args=[self.settings.history_maxlen, dumps(data), self._origin, deadline],
            ), APPEND_TIMEOUT)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        if sid is None:
            raise Unavailable("Redis answered after the send deadline; the message was not stored")

    # ------------------------------------------------------------ rooms and members
    async def join(self, room: str, user: str, key: str, since: StreamId | None) -> JoinResult:
        """Record the room and the member, read history and members, announce what is new."""
        now = now_ms()
        hkey = history_key(room)
        # MULTI/EXEC: reading the members and adding this one must not interleave with a
        # leave of the same name, or `user_joined` could be lost.
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(ROOMS, {room: now}, nx=True)
        pipe.hgetall(members_key(room))
        pipe.hset(members_key(room), key, user)
        pipe.sadd(node_rooms_key(self.node), room)
        if since is None:
            pipe.xrevrange(hkey, "+", "-", count=self.settings.history_on_join or 1)
        else:
            pipe.xrange(hkey, "(" + format_stream_id(since), "+")
            pipe.xrange(hkey, "-", "+", count=1)
            pipe.exists(trimmed_key(room))
        pipe.zrangebyscore(INSTANCES, now - int(self.settings.dead_after_seconds * 1000), "+inf")
        try:
            results = await pipe.execute()
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        created, before, alive = results[0] == 1, results[1], results[-1]
        if since is None:
            entries = results[4][::-1] if self.settings.history_on_join else []
            gap = False
        else:
            entries, oldest, trimmed = results[4], results[5], results[6]
            oldest_id = parse_stream_id(oldest[0][0]) if oldest else None
            gap = has_gap(since, oldest_id, bool(trimmed))
        events = [self._event("room_created", room, now)] if created else []
        if user not in before.values():  # a second tab of the same name is no news
            events.append(self._event("user_joined", room, now, user=user, session=key))
        await self._publish_quietly(*events)
        last = parse_stream_id(entries[-1][0]) if entries else None
        members = self._live_members({**before, key: user}, alive)
        return JoinResult(_entries_json(entries), last, members, gap)

    def _live_members(self, members_raw: dict[str, str], alive: list[str]) -> list[str]:
        nodes = set(alive)
        nodes.add(self.node)
        return sorted({user for field, user in members_raw.items() if field.partition("|")[0] in nodes})

    async def leave(self, room: str, user: str, key: str) -> None:
        """Remove a member from a room and tell the others."""
        try:
            await self._remove_member(room, key, user)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err

    async def leave_all(self, rooms: list[str], user: str, key: str) -> None:
        """Leave every room of a closed connection; a Redis outage leaves it to the janitor."""
        for room in rooms:
            try:
                await self.leave(room, user, key)
            except (Unavailable, RedisError):
                log.info("could not record that %s left %s; the janitor will", user, room)
                return

    def _event(self, kind: str, room: str, ts: int, **extra: str) -> str:
        return dumps({"type": kind, "room": room, **extra, "ts": ts, "origin": self.settings.instance})

    async def _remove_member(self, room: str, field: str, user: str) -> None:
        payload = self._event("user_left", room, now_ms(), user=user, session=field)
        await self._leave(keys=[members_key(room), NOTIFICATIONS], args=[field, user, payload])

    async def _publish_quietly(self, *payloads: str) -> None:
        if not payloads:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for payload in payloads:
                pipe.publish(NOTIFICATIONS, payload)
            await pipe.execute()
        except UNREACHABLE:
            log.warning("could not publish a room notification: Redis unreachable")

    # ------------------------------------------------------------ REST reads
    async def rooms(self) -> list[dict[str, Any]]:
        """Every room ever created, oldest first."""
        try:
            pairs = await self.redis.zrange(ROOMS, 0, -1, withscores=True)
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        return [{"name": name, "created": int(score)} for name, score in pairs]

    async def history_page(self, room: str, limit: int, before: StreamId | None) -> tuple[list[str], bool] | None:
        """The newest ``limit`` messages older than ``before``, oldest first, and whether more exist.

        None when the room was never created.
        """
        top = "+" if before is None else "(" + format_stream_id(before)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(ROOMS, room)
        pipe.xrevrange(history_key(room), top, "-", count=limit + 1)
        try:
            score, entries = await pipe.execute()
        except UNREACHABLE as err:
            raise Unavailable(str(err)) from err
        if score is None:
            return None
        has_more = len(entries) > limit
        return _entries_json(entries[:limit][::-1]), has_more

    async def health(self) -> bool:
        """True when Redis answers commands and the subscriber heard from it recently."""
        try:
            await asyncio.wait_for(self.redis.ping(), 2.0)
        except (*UNREACHABLE, RedisError):
            return False
        return self.subscribed and time.monotonic() - self.last_seen < SILENT_AFTER

    # ------------------------------------------------------------ subscriber
    async def _subscribe_forever(self) -> None:
        delay = 0.1
        while True:
            client = self._client(socket_timeout=None)
            pubsub = client.pubsub()
            try:
                await self._subscribe(pubsub)
                log.info("subscribed to %s and %s", MESSAGES, NOTIFICATIONS)
                delay = 0.1
                await self._catch_up()
                await self._read(pubsub)
            except (*UNREACHABLE, RedisError) as err:
                if self.subscribed or delay == 0.1:
                    log.warning("Redis subscriber lost (%s); reconnecting", err or type(err).__name__)
            finally:
                self.subscribed = False
                await asyncio.gather(pubsub.aclose(), client.aclose(), return_exceptions=True)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(MESSAGES, NOTIFICATIONS)
        confirmed = 0
        deadline = time.monotonic() + 5.0
        while confirmed < 2:
            msg = await pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise RedisTimeoutError("no subscribe confirmation from Redis")
            if msg["type"] == "subscribe":
                confirmed += 1
        self.subscribed = True
        self.last_seen = time.monotonic()

    async def _catch_up(self) -> None:
        """Deliver what was stored while this instance was not subscribed (PROTOCOL.md G5)."""
        for room in list(self.hub.rooms):
            start = self.hub.catchup_from(room)
            while start is not None:
                entries = await self.redis.xrange(
                    history_key(room), "(" + format_stream_id(start), "+", count=CATCHUP_BATCH
                )
                for sid, fields in entries:
                    parsed = parse_stream_id(sid)
                    self.hub.dispatch(room, parsed, message_frame(message_json(sid, fields["data"])))
                start = parse_stream_id(entries[-1][0]) if len(entries) == CATCHUP_BATCH else None

    async def _read(self, pubsub: Any) -> None:
        next_ping = time.monotonic() + PING_EVERY
        hub = self.hub
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if msg is not None:
                self.last_seen = now
                if msg["type"] == "message":
                    if msg["channel"] == MESSAGES:
                        self._on_message(hub, msg["data"])
                    else:
                        self._on_notification(hub, msg["data"])
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + PING_EVERY
            if now - self.last_seen > SILENT_AFTER:
                raise RedisTimeoutError("subscriber heard nothing from Redis, not even PONG")

    @staticmethod
    def _on_message(hub: Hub, payload: str) -> None:
        try:
            head = orjson.loads(payload)
            room, sid = head["room"], parse_stream_id(head["id"])
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a malformed payload on %s: %.200s", MESSAGES, payload)
            return
        if sid is not None:
            hub.dispatch(room, sid, message_frame(payload))

    @staticmethod
    def _on_notification(hub: Hub, payload: str) -> None:
        try:
            event = orjson.loads(payload)
            kind, room = event["type"], event["room"]
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a malformed payload on %s: %.200s", NOTIFICATIONS, payload)
            return
        if kind == "room_created":
            hub.notify_all(payload)
        elif kind in ("user_joined", "user_left"):
            hub.notify_room(room, payload, skip=event.get("session"))

    # ------------------------------------------------------------ presence
    async def _heartbeat_forever(self) -> None:
        while True:
            try:
                before = now_ms()
                seconds, micros = await self.redis.time()
                after = now_ms()
                self.clock_offset = seconds * 1000 + micros // 1000 - (before + after) // 2
                await self.redis.zadd(INSTANCES, {self.node: after})
                await self._sweep_dead_nodes()
            except (*UNREACHABLE, RedisError) as err:
                log.debug("heartbeat failed: %s", err)
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def _sweep_dead_nodes(self) -> None:
        cutoff = now_ms() - int(self.settings.dead_after_seconds * 1000)
        for node in await self.redis.zrangebyscore(INSTANCES, "-inf", cutoff):
            log.info("instance %s stopped heartbeating; removing its members", node)
            await self._clear_node(node)

    async def _clear_node(self, node: str) -> None:
        """Remove every member ``node`` recorded, announcing each as ``user_left``."""
        prefix = node + "|"
        for room in await self.redis.smembers(node_rooms_key(node)):
            members = await self.redis.hgetall(members_key(room))
            for field, user in members.items():
                if field.startswith(prefix):
                    await self._remove_member(room, field, user)
        await self.redis.delete(node_rooms_key(node))
        await self.redis.zrem(INSTANCES, node)
