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
    EXPIRE_LUA,
    EXPIRE_SHARD_LUA,
    LEAVE_LUA,
    REMOVE_ROOM_LUA,
    UNREACHABLE,
    Layout,
    now_ms,
    sharded,
    stop_if_cancelled,
)

log = logging.getLogger("quart_chat.presence")

BATCH = 100


class Presence:
    """Members in Redis: this node's joins and leaves, and the clean-up of everyone's."""

    def __init__(self, settings: Settings, redis: Any, node: str, keys: Layout) -> None:
        self.settings = settings
        self.redis = redis
        self.node = node
        self.keys = keys
        self._leave = redis.register_script(sharded(LEAVE_LUA) if keys.cluster else LEAVE_LUA)
        self._expire = redis.register_script(EXPIRE_SHARD_LUA if keys.cluster else EXPIRE_LUA)
        self._remove_room = redis.register_script(REMOVE_ROOM_LUA)
        # On a cluster the join script cannot read the heartbeats: the nodes found dead come
        # from here ('|' between), as of the last heartbeat.
        self.dead_nodes = ""
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
        k = self.keys
        members = k.members(room)
        node_rooms = members if k.cluster else k.node_rooms(node)  # a cluster's node record is kept apart
        await self._leave(keys=[members, k.events(room), node_rooms, k.activity(room)],
                          args=[field, user, self.leave_event(room, user, field), room], client=client)

    async def _in_one_go(self, calls: list[tuple[str, str, str]]) -> None:
        """Remove members (room, field, user): one pipeline with one Redis; on a cluster, where
        a pipeline does not load scripts a restarted shard has lost, side by side."""
        if self.keys.cluster:
            await asyncio.gather(*(self.remove(room, field, user) for room, field, user in calls))
            return
        pipe = self.redis.pipeline(transaction=False)
        for room, field, user in calls:
            await self.remove(room, field, user, client=pipe)
        await pipe.execute()

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
                await self.redis.zadd(self.keys.instances, {self.node: after})
                if self.keys.cluster:
                    cutoff = after - int(self.settings.dead_after_seconds * 1000)
                    self.dead_nodes = "|".join(await self.redis.zrangebyscore(self.keys.instances, "-inf", cutoff))
                self.last_ok = time.monotonic()
            except (*UNREACHABLE, RedisError) as err:
                log.debug("heartbeat failed: %s", err)
            stop_if_cancelled()
            await asyncio.sleep(self.settings.heartbeat_seconds)

    # ------------------------------------------------------------ janitor
    async def janitor_forever(self) -> None:
        """Sweep dead nodes, retry failed leaves, expire idle rooms; runs until cancelled."""
        while True:
            await asyncio.sleep(self.settings.janitor_seconds * (0.75 + random.random() / 2))
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
        for node in await self.redis.zrangebyscore(self.keys.instances, "-inf", cutoff, start=0, num=BATCH):
            if node != self.node:
                log.info("instance %s stopped heartbeating; removing its members", node)
                await self.clear_node(node)
        if self.settings.room_ttl:
            await self.expire_rooms()

    async def retry_orphans(self) -> None:
        """Remove the members whose leave failed earlier (a Redis outage, a lost reply)."""
        while self.orphans:
            batch = list(self.orphans.items())[:BATCH]
            await self._in_one_go([(room, field, user) for (room, field), user in batch])
            for key, _user in batch:
                self.orphans.pop(key, None)

    async def clear_node(self, node: str) -> None:
        """Remove every member ``node`` recorded, announcing each as ``user_left``, in batches."""
        prefix = node + "|"
        rooms_key = self.keys.node_rooms(node)
        cursor = 0
        while True:
            cursor, counts = await self.redis.hscan(rooms_key, cursor, count=BATCH)
            rooms = list(counts)
            if rooms:
                pipe = self.redis.pipeline(transaction=False)
                for room in rooms:
                    pipe.hgetall(self.keys.members(room))
                tables = await pipe.execute()
                await self._in_one_go([(room, field, user) for room, members in zip(rooms, tables)
                                       for field, user in members.items() if field.startswith(prefix)])
            if cursor == 0:
                break
            await asyncio.sleep(0)  # a huge node must not hold up this instance's other work
        await self.redis.delete(rooms_key)
        await self.redis.zrem(self.keys.instances, node)

    async def expire_rooms(self) -> None:
        """Remove rooms with no member and no message for ``room_ttl`` seconds, everywhere."""
        k = self.keys
        # Rooms created before activity was tracked start from their creation time.
        await self.redis.zunionstore(k.activity_index, [k.activity_index, k.rooms], aggregate="MAX")
        cutoff = now_ms() + self.clock_offset - self.settings.room_ttl * 1000
        while True:
            idle = await self.redis.zrangebyscore(k.activity_index, "-inf", cutoff, start=0, num=BATCH)
            if not idle:
                return
            if k.cluster:
                removed = sum(await asyncio.gather(*(self._expire_on_shard(room, cutoff) for room in idle)))
            else:
                pipe = self.redis.pipeline(transaction=False)
                for room in idle:
                    await self._expire(keys=[k.rooms, k.activity_index, k.members(room), k.history(room),
                                             k.trimmed(room), k.notifications, k.state(room), k.state_index(room),
                                             k.read(room)],
                                       args=[cutoff, room, self._origin], client=pipe)
                removed = sum(await pipe.execute())
            if removed:
                log.info("removed %d idle room(s) (CHAT_ROOM_TTL=%ss)", removed, self.settings.room_ttl)
            if len(idle) < BATCH:
                return

    async def _expire_on_shard(self, room: str, cutoff: int) -> int:
        """A cluster's expiry of one room: its keys on its shard, then its listing (store.REMOVE_ROOM_LUA)."""
        k = self.keys
        last = await self._expire(keys=[k.record(room), k.activity(room), k.members(room), k.history(room),
                                        k.trimmed(room), k.state(room), k.state_index(room), k.read(room)],
                                  args=[cutoff, room])
        if last:  # still in use: filed under its last activity, looked at again a TTL later
            await self.redis.zadd(k.activity_index, {room: last})
            return 0
        return int(await self._remove_room(keys=[k.rooms, k.activity_index],
                                           args=[cutoff, room, self._origin, k.notifications]))
