"""Sharded pub/sub on a Redis Cluster: each room's channel on the shard that owns it, and a
catch-up after every resubscription (docs/protocol.md sections 14 and "Guarantees", G5).

With one Redis, `subscriber` holds one link and two channels. On a cluster each room has its
own channel, ``chat:room:{room}``, in the room's hash slot, served by the slot's primary. So
this module keeps one link per primary that owns a room of ours, subscribes a room there
(``SSUBSCRIBE``) before its first local join reads history (G2), and unsubscribes it once the
room has had no local member for `IDLE_UNSUBSCRIBE` seconds. Events for every instance
(``room_created``, ``room_removed``) come over ``chat:room-notifications``, which a cluster
delivers from any node, on one more link.

A room's subscription can end without a word of ours in three ways, and each counts as a
break: its link fails (the primary died), Redis sends ``sunsubscribe`` (the slot moved to
another shard, or the primary became a replica), or the client library subscribes again by
itself. The room is then subscribed again on whichever node owns its slot now (the slot map
read afresh) and caught up from its stream by that link's reader as soon as the subscription
is confirmed, before the reader takes anything newer from that link, so the room's order holds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from redis.exceptions import RedisError

from .rooms import Hub
from .store import (
    UNREACHABLE,
    Layout,
    Unavailable,
    node_client,
    parse_cluster_url,
    room_of_channel,
    stop_if_cancelled,
)
from .subscriber import PING_EVERY, SILENT_AFTER, Resubscribed, catch_up_room, on_message, on_notification

log = logging.getLogger("quart_chat.shards")

SUBSCRIBE_TIMEOUT = 3.0  # a join waits this long for its room's subscription
IDLE_UNSUBSCRIBE = 30.0  # a room without local members keeps its subscription this long
TICK = 0.2  # how often broken subscriptions are retried and idle ones dropped


class _Link:
    """One pub/sub connection to one cluster node and the rooms subscribed on it."""

    __slots__ = ("node", "client", "pubsub", "rooms", "task", "lock")

    def __init__(self, node: str, client: Any) -> None:
        self.node = node
        self.client = client
        self.pubsub = client.pubsub()
        self.rooms: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        # One (un)subscribe at a time: a PubSub connects on its first command, and callers
        # racing there would each open a connection of their own, which nothing reads.
        self.lock = asyncio.Lock()


class ShardSubscriber:
    """Subscribes the rooms with local members on their shards and keeps them caught up."""

    def __init__(self, url: str, hub: Hub, command_client: Any, layout: Layout) -> None:
        self.conf = parse_cluster_url(url)
        self.hub = hub
        self.cluster = command_client  # the slot map, and the catch-up reads
        self.layout = layout
        self.links: dict[str, _Link] = {}
        self.on_link: dict[str, _Link] = {}  # room -> the link its SSUBSCRIBE went to
        self.confirmed: set[str] = set()
        self.waiting: dict[str, asyncio.Future[None]] = {}  # room -> its confirmation
        self.broken: set[str] = set()  # subscriptions that ended: subscribe again, then catch up
        self._recover: set[str] = set()  # caught up when their subscription is confirmed
        self._leaving: set[str] = set()  # our own SUNSUBSCRIBE is on its way
        self._empty_since: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Future[None]] = set()
        self.subscribed = False  # the link for everyone's events
        self.last_seen = 0.0
        self.reconnects = 0

    @property
    def live(self) -> bool:
        """True while the events link is up, heard from lately, and no room's subscription is broken."""
        return self.subscribed and time.monotonic() - self.last_seen < SILENT_AFTER and not self.broken

    # ------------------------------------------------------------ rooms
    async def ensure(self, room: str) -> None:
        """Return once ``room``'s channel is subscribed (`Unavailable` if that cannot be done now)."""
        if room in self.confirmed:
            self._empty_since.pop(room, None)
            return
        future = self.waiting.get(room)
        if future is None:
            future = self.waiting[room] = asyncio.get_running_loop().create_future()
            try:
                await self._subscribe(room)
            except (*UNREACHABLE, RedisError) as err:
                # The maintenance loop tries again; this join is told `unavailable` now.
                self.broken.add(room)
                self._wake.set()
                raise Unavailable(str(err)) from err
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(future)
        except TimeoutError:
            # No confirmation on a link that answers its pings: something is off with that
            # link; all its rooms are subscribed again on a new one (and caught up).
            link = self.on_link.get(room)
            if link is not None and room in self.waiting:
                log.warning("room %s: no subscription confirmed by %s in %ss; starting the link over",
                            room, link.node, SUBSCRIBE_TIMEOUT)
                if link.task is not None:
                    link.task.cancel()
                else:
                    self._drop(link)
            raise Unavailable(f"no subscription to room {room!r} on its shard") from None

    async def _subscribe(self, room: str) -> None:
        channel = self.layout.channel(room)
        if self.cluster._initialize:  # the slot map, read once before the first lookup
            await self.cluster.initialize()
        node = self.cluster.get_node_from_key(channel)
        link = self.links.get(node.name)
        if link is None:
            link = self.links[node.name] = _Link(node.name, node_client(self.conf, node.host, node.port))
        link.rooms.add(room)
        self.on_link[room] = link
        self._leaving.discard(room)
        try:
            async with link.lock:
                await link.pubsub.ssubscribe(channel)
        except BaseException:
            self._drop(link)
            raise
        if link.task is None:
            link.task = asyncio.create_task(self._read(link), name=f"chat-shard-{node.name}")

    def _lost(self, room: str) -> None:
        """``room``'s subscription ended behind our back: subscribe again and catch up."""
        link = self.on_link.pop(room, None)
        if link is not None:
            link.rooms.discard(room)
        if room in self.confirmed:  # members had it live: they must be caught up
            self._recover.add(room)
        self.confirmed.discard(room)
        self.broken.add(room)
        self._wake.set()

    def _drop(self, link: _Link) -> None:
        """Forget a broken link; every room on it is subscribed again elsewhere."""
        if self.links.get(link.node) is link:
            del self.links[link.node]
        for room in list(link.rooms):
            if self.on_link.get(room) is link:
                self._lost(room)
        link.rooms.clear()
        closing = asyncio.ensure_future(_close(link))
        self._closing.add(closing)  # referenced until done: the loop keeps only weak references
        closing.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------ reading
    async def _read(self, link: _Link) -> None:
        hub = self.hub
        next_ping = time.monotonic() + PING_EVERY
        heard = time.monotonic()
        try:
            while True:
                msg = await link.pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if msg is not None:
                    heard = now
                    kind = msg["type"]
                    if kind == "smessage":
                        payload = msg["data"]
                        if payload.startswith('{"type":'):
                            on_notification(hub, payload)
                        else:
                            on_message(hub, payload)
                    elif kind == "ssubscribe":
                        await self._confirmed(link, msg["channel"])
                    elif kind == "sunsubscribe":
                        room = room_of_channel(msg["channel"])
                        if room is not None and room in self._leaving:
                            self._leaving.discard(room)
                        elif room is not None and self.on_link.get(room) is link and room not in self.waiting:
                            log.info("room %s: its slot moved or its primary stepped down; subscribing again", room)
                            self._lost(room)
                if now >= next_ping:
                    await link.pubsub.ping()
                    next_ping = now + PING_EVERY
                if now - heard > SILENT_AFTER:
                    raise TimeoutError(f"heard nothing from {link.node}, not even PONG")
        except asyncio.CancelledError:
            raise
        except (*UNREACHABLE, RedisError) as err:
            log.warning("shard link to %s lost (%s); subscribing its rooms again and catching up",
                        link.node, err or type(err).__name__)
        except Exception:  # a bug must not end delivery: say so loudly, subscribe again, catch up
            log.exception("the shard link to %s failed; subscribing its rooms again and catching up", link.node)
        finally:
            link.task = None
            self._drop(link)

    async def _confirmed(self, link: _Link, channel: str) -> None:
        room = room_of_channel(channel)
        future = self.waiting.get(room) if room is not None else None
        if room is None or future is None or self.on_link.get(room) is not link:
            raise Resubscribed(f"{link.node} confirmed a subscription to {channel} that was not asked for")
        self.confirmed.add(room)
        self.broken.discard(room)
        if room in self._recover:
            self._recover.discard(room)
            self.reconnects += 1
            # In the reader, before anything newer from this link: the room's order holds.
            await catch_up_room(self.hub, self.cluster, self.layout.history(room), room)
        del self.waiting[room]
        if not future.done():
            future.set_result(None)

    # ------------------------------------------------------------ upkeep
    async def run(self) -> None:
        """Keep everyone's events subscribed, resubscribe broken rooms, drop idle ones; until cancelled."""
        events = asyncio.create_task(self._events_forever(), name="chat-events")
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), TICK)
                except TimeoutError:
                    pass
                self._wake.clear()
                await self._repair()
                await self._unsubscribe_idle()
                stop_if_cancelled()
        finally:
            events.cancel()
            links = list(self.links.values())
            for link in links:
                if link.task is not None:
                    link.task.cancel()
            await asyncio.gather(events, *(link.task for link in links if link.task), return_exceptions=True)
            await asyncio.gather(*(_close(link) for link in links), return_exceptions=True)

    async def _repair(self) -> None:
        """Subscribe the broken rooms again where their slots are now (their catch-up follows)."""
        if not self.broken:
            return
        try:
            await self.cluster.nodes_manager.initialize()  # where the slots are now
        except (*UNREACHABLE, RedisError) as err:
            log.debug("cluster slot map not readable yet: %s", err)
            await asyncio.sleep(0.2 + random.random() * 0.3)
            return
        for room in list(self.broken):
            if room in self.on_link:
                continue  # its SSUBSCRIBE is on its way
            if room not in self.hub.rooms:
                self.broken.discard(room)  # nobody here wants it any more
                self._recover.discard(room)
                future = self.waiting.pop(room, None)
                if future is not None and not future.done():
                    future.set_exception(Unavailable(f"room {room!r} has no local member"))
                    future.exception()  # its join may have given up already: nothing to log
                continue
            if room not in self.waiting:
                self.waiting[room] = asyncio.get_running_loop().create_future()
            try:
                await self._subscribe(room)
            except (*UNREACHABLE, RedisError) as err:
                log.debug("room %s: subscribing again failed (%s); retrying", room, err)
                self.broken.add(room)
                return

    async def _unsubscribe_idle(self) -> None:
        """Unsubscribe rooms that have had no local member for `IDLE_UNSUBSCRIBE` seconds."""
        now = time.monotonic()
        for room in list(self.confirmed):
            if room in self.hub.rooms:
                self._empty_since.pop(room, None)
                continue
            since = self._empty_since.setdefault(room, now)
            if now - since < IDLE_UNSUBSCRIBE:
                continue
            del self._empty_since[room]
            self.confirmed.discard(room)
            link = self.on_link.pop(room, None)
            if link is None:
                continue
            link.rooms.discard(room)
            self._leaving.add(room)
            try:
                async with link.lock:
                    await link.pubsub.sunsubscribe(self.layout.channel(room))
            except (*UNREACHABLE, RedisError):
                self._leaving.discard(room)  # the link is failing: its reader drops it

    async def _events_forever(self) -> None:
        """Read ``chat:room-notifications`` from one node after another, as they answer."""
        turn = 0
        while True:
            nodes = [(n.host, n.port) for n in self.cluster.get_nodes()] or list(self.conf.nodes)
            host, port = nodes[turn % len(nodes)]
            turn += 1
            client = node_client(self.conf, host, port)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.layout.notifications)
                next_ping = time.monotonic() + PING_EVERY
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    now = time.monotonic()
                    if msg is not None:
                        self.last_seen = now
                        if msg["type"] == "message":
                            on_notification(self.hub, msg["data"])
                        elif msg["type"] == "subscribe":
                            if self.subscribed:
                                raise Resubscribed("the events link was re-established by the client library")
                            self.subscribed = True
                    if now >= next_ping:
                        await pubsub.ping()
                        next_ping = now + PING_EVERY
                    if now - self.last_seen > SILENT_AFTER:
                        raise TimeoutError(f"heard nothing from {host}:{port}, not even PONG")
            except (*UNREACHABLE, RedisError) as err:
                if self.subscribed:
                    self.reconnects += 1
                    log.warning("cluster events link to %s:%s lost (%s); trying the next node", host, port, err)
            finally:
                self.subscribed = False
                await asyncio.gather(pubsub.aclose(), client.aclose(), return_exceptions=True)
            stop_if_cancelled()
            await asyncio.sleep(0.1 + random.random() * 0.2)


async def _close(link: _Link) -> None:
    await asyncio.gather(link.pubsub.aclose(), link.client.aclose(), return_exceptions=True)
