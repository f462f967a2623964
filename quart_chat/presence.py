"""Who is where, kept true without goodbyes: the heartbeat and the janitor.

- The heartbeat proves every few seconds that this node lives (``chat:instances``) and
  measures the Redis clock, which send deadlines are written in.
- The janitor, a separate task so that its work never delays a heartbeat, removes in
  batches the members of nodes that stopped heartbeating (G6), retries the leaves that
  failed while Redis was away (their members would stay for ever otherwise: this node is
  alive, so nobody else sweeps them), and removes rooms idle for ``CHAT_ROOM_TTL``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from redis.exceptions import RedisError

from .config import Settings
from .protocol import dumps
from .store import (
    ACTIVITY,
    INSTANCES,
    NOTIFICATIONS,
    ROOMS,
    UNREACHABLE,
    history_key,
    members_key,
    node_rooms_key,
    now_ms,
    read_key,
    state_index_key,
    state_key,
    stop_if_cancelled,
    trimmed_key,
)

log = logging.getLogger("quart_chat.presence")

BATCH = 100
JANITOR_EVERY = 10.0


class Presence:
    """Members in Redis: this node's joins and leaves, and the clean-up of everyone's."""

    def __init__(self, settings: Settings, redis: Any, node: str, leave_script: Any, expire_script: Any) -> None:
        self.settings = settings
        self.redis = redis
        self.node = node
        self._leave = leave_script
        self._expire = expire_script
        self._origin = dumps(settings.instance)
        # Redis clock minus ours, in ms, measured by the heartbeat (deadlines are Redis time).
        self.clock_offset = 0
        # Members whose removal failed (Redis away): (room, field) -> user, retried by the janitor.
        self.orphans: dict[tuple[str, str], str] = {}
        self.last_ok = 0.0  # monotonic time of the last heartbeat Redis took
        self.janitor_passes = 0  # whole passes done (/metrics: is the janitor running?)

    # ------------------------------------------------------------ members
    def leave_event(self, room: str, user: str, field: str) -> str:
        """The ``user_left`` payload published when ``field`` was ``user``'s last connection."""
        return dumps({"type": "user_left", "room": room, "user": user, "ts": now_ms(), "session": field,
                      "origin": self.settings.instance})

    async def remove(self, room: str, field: str, user: str, client: Any = None) -> None:
        """Remove one member (of any node) and announce ``user_left`` if it was the name's last."""
        node = field.partition("|")[0]
        await self._leave(keys=[members_key(room), NOTIFICATIONS, node_rooms_key(node), ACTIVITY],
                          args=[field, user, self.leave_event(room, user, field), room], client=client)

    def forget_later(self, room: str, field: str, user: str) -> None:
        """Remember a member whose removal could not be made now; the janitor retries it."""
        self.orphans[(room, field)] = user

    # ------------------------------------------------------------ heartbeat
    async def heartbeat_forever(self) -> None:
        """Prove this node alive every ``heartbeat_seconds``; runs until cancelled."""
        while True:
            try:
                before = now_ms()
                seconds, micros = await self.redis.time()
                after = now_ms()
                self.clock_offset = seconds * 1000 + micros // 1000 - (before + after) // 2
                await self.redis.zadd(INSTANCES, {self.node: after})
                self.last_ok = time.monotonic()
            except (*UNREACHABLE, RedisError) as err:
                log.debug("heartbeat failed: %s", err)
            stop_if_cancelled()
            await asyncio.sleep(self.settings.heartbeat_seconds)

    # ------------------------------------------------------------ janitor
    async def janitor_forever(self) -> None:
        """Sweep dead nodes, retry failed leaves, expire idle rooms; runs until cancelled."""
        while True:
            await asyncio.sleep(JANITOR_EVERY * (0.75 + random.random() / 2))
            try:
                await self.sweep_once()
            except (*UNREACHABLE, RedisError) as err:
                log.debug("janitor could not finish: %s", err)
            else:
                self.janitor_passes += 1
            stop_if_cancelled()

    async def sweep_once(self) -> None:
        """One pass of every clean-up the janitor does."""
        await self.retry_orphans()
        cutoff = now_ms() - int(self.settings.dead_after_seconds * 1000)
        for node in await self.redis.zrangebyscore(INSTANCES, "-inf", cutoff, start=0, num=BATCH):
            if node != self.node:
                log.info("instance %s stopped heartbeating; removing its members", node)
                await self.clear_node(node)
        if self.settings.room_ttl:
            await self.expire_rooms()

    async def retry_orphans(self) -> None:
        """Remove the members whose leave failed earlier (a Redis outage, a lost reply)."""
        while self.orphans:
            batch = list(self.orphans.items())[:BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for (room, field), user in batch:
                await self.remove(room, field, user, client=pipe)
            await pipe.execute()
            for key, _user in batch:
                self.orphans.pop(key, None)

    async def clear_node(self, node: str) -> None:
        """Remove every member ``node`` recorded, announcing each as ``user_left``, in batches."""
        prefix = node + "|"
        rooms_key = node_rooms_key(node)
        cursor = 0
        while True:
            cursor, counts = await self.redis.hscan(rooms_key, cursor, count=BATCH)
            rooms = list(counts)
            if rooms:
                pipe = self.redis.pipeline(transaction=False)
                for room in rooms:
                    pipe.hgetall(members_key(room))
                tables = await pipe.execute()
                pipe = self.redis.pipeline(transaction=False)
                for room, members in zip(rooms, tables):
                    for field, user in members.items():
                        if field.startswith(prefix):
                            await self.remove(room, field, user, client=pipe)
                await pipe.execute()
            if cursor == 0:
                break
            await asyncio.sleep(0)  # a huge node must not hold up this instance's other work
        await self.redis.delete(rooms_key)
        await self.redis.zrem(INSTANCES, node)

    async def expire_rooms(self) -> None:
        """Remove rooms with no member and no message for ``room_ttl`` seconds, everywhere."""
        # Rooms created before activity was tracked start from their creation time.
        await self.redis.zunionstore(ACTIVITY, [ACTIVITY, ROOMS], aggregate="MAX")
        cutoff = now_ms() + self.clock_offset - self.settings.room_ttl * 1000
        while True:
            idle = await self.redis.zrangebyscore(ACTIVITY, "-inf", cutoff, start=0, num=BATCH)
            if not idle:
                return
            pipe = self.redis.pipeline(transaction=False)
            for room in idle:
                await self._expire(keys=[ROOMS, ACTIVITY, members_key(room), history_key(room), trimmed_key(room),
                                         NOTIFICATIONS, state_key(room), state_index_key(room), read_key(room)],
                                   args=[cutoff, room, self._origin], client=pipe)
            removed = sum(await pipe.execute())
            if removed:
                log.info("removed %d idle room(s) (CHAT_ROOM_TTL=%ss)", removed, self.settings.room_ttl)
            if len(idle) < BATCH:
                return
