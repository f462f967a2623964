"""The instance's one pub/sub link to Redis, and the catch-up that follows every (re)subscription.

G5 holds only if no subscription happens without a catch-up after it. redis-py can
reconnect and resubscribe a `PubSub` on its own: a ``Retry`` on its connection does it in
``PubSub._execute`` (``on_connect`` replays the SUBSCRIBE), and ``parse_response``
reconnects a connection it finds closed. Either way the reader just sees new ``subscribe``
confirmations and keeps going, and whatever Redis dropped while the link was broken (a
subscriber over its ``client-output-buffer-limit pubsub``, ``CLIENT KILL``, a proxy
cutting the link, a failover) is lost without a word. So this module:

- gives the pub/sub client no retry, so a broken link raises;
- treats any ``subscribe`` confirmation after the first ones as a break all the same;
- after every break, builds a fresh client, subscribes, and catches every local room up
  from its stream before reading live messages again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from .protocol import dumps, entry_frame, format_stream_id, message_frame, parse_stream_id
from .rooms import Hub
from .store import MESSAGES, NOTIFICATIONS, UNREACHABLE, history_key, make_client, stop_if_cancelled

log = logging.getLogger("quart_chat.subscriber")

CATCHUP_BATCH = 500
PING_EVERY = 2.0
SILENT_AFTER = 6.0


class Resubscribed(RedisError):
    """The client library subscribed again by itself: the link broke and messages may be lost."""


class Subscriber:
    """Reads both channels into the hub, and closes every gap a broken link leaves."""

    def __init__(self, url: str, hub: Hub, command_client: Any) -> None:
        self.url = url
        self.hub = hub
        self.redis = command_client  # catch-up reads go through the pooled command client
        self.subscribed = False
        self.last_seen = 0.0
        self.reconnects = 0
        self._links = 0

    @property
    def live(self) -> bool:
        """True while subscribed and Redis was heard from within `SILENT_AFTER` seconds."""
        return self.subscribed and time.monotonic() - self.last_seen < SILENT_AFTER

    async def run(self) -> None:
        """Subscribe, catch up, read; on any break start again. Runs until cancelled."""
        delay = 0.1
        while True:
            client = make_client(self.url, socket_timeout=None, retries=0)
            pubsub = client.pubsub()
            try:
                await self._subscribe(pubsub)
                self._links += 1
                if self._links > 1:
                    self.reconnects += 1
                log.info("subscribed to %s and %s", MESSAGES, NOTIFICATIONS)
                delay = 0.1
                await self.catch_up()
                await self._read(pubsub)
            except (*UNREACHABLE, RedisError) as err:
                if self.subscribed or delay == 0.1:
                    log.warning("Redis subscriber link lost (%s); subscribing again and catching up",
                                err or type(err).__name__)
            except Exception:  # a bug must not end the subscriber: say so loudly, start over, catch up
                log.exception("the Redis subscriber failed; subscribing again and catching up")
            finally:
                self.subscribed = False
                await asyncio.gather(pubsub.aclose(), client.aclose(), return_exceptions=True)
            stop_if_cancelled()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(MESSAGES, NOTIFICATIONS)
        confirmed = 0
        deadline = time.monotonic() + 5.0
        while confirmed < 2:
            msg = await pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise TimeoutError("no subscribe confirmation from Redis")
            if msg["type"] == "subscribe":
                confirmed += 1
        self.subscribed = True
        self.last_seen = time.monotonic()

    async def catch_up(self) -> None:
        """Deliver what was stored while this instance was not subscribed (docs/protocol.md "Guarantees", G5)."""
        for room in list(self.hub.rooms):
            await catch_up_room(self.hub, self.redis, history_key(room), room)

    async def _read(self, pubsub: Any) -> None:
        next_ping = time.monotonic() + PING_EVERY
        hub = self.hub
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if msg is not None:
                self.last_seen = now
                kind = msg["type"]
                if kind == "message":
                    if msg["channel"] == MESSAGES:
                        on_message(hub, msg["data"])
                    else:
                        on_notification(hub, msg["data"])
                elif kind == "subscribe":
                    raise Resubscribed("the pub/sub link was re-established by the client library")
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + PING_EVERY
            if now - self.last_seen > SILENT_AFTER:
                raise TimeoutError("subscriber heard nothing from Redis, not even PONG")


async def catch_up_room(hub: Hub, redis: Any, stream: str, room: str) -> None:
    """Deliver the entries of ``room``'s stream (key ``stream``) its local members have not had."""
    start = hub.catchup_from(room)
    while start is not None:
        entries = await redis.xrange(stream, "(" + format_stream_id(start), "+", count=CATCHUP_BATCH)
        for sid, fields in entries:
            parsed = parse_stream_id(sid)
            frame = entry_frame(sid, fields["data"])
            if parsed is not None and hub.dispatch(room, parsed, frame):
                hub.stats.catchup += 1
        start = parse_stream_id(entries[-1][0]) if len(entries) == CATCHUP_BATCH else None
        if start is not None:
            await hub.drained()  # let clients read a batch before the next one


def on_message(hub: Hub, payload: str) -> None:
    """Dispatch one ``chat:messages`` payload (a message, or a change of one) to the local
    members of its room, in stream order: a change's place is its ``change_id``."""
    try:
        head = orjson.loads(payload)
        room, sid = head["room"], parse_stream_id(head.get("change_id") or head["id"])
    except (ValueError, KeyError, TypeError):
        log.error("ignoring a malformed payload on %s: %.200s", MESSAGES, payload)
        return
    if sid is not None and hub.dispatch(room, sid, message_frame(payload)):
        ts = head.get("ts")
        if isinstance(ts, int):
            hub.stats.delivery_lag.observe(max(0.0, time.time() - ts / 1000))


# What a client may see of a room event: never the origin instance or connection key.
_EVENT_FIELDS = ("type", "room", "user", "ts")


def on_notification(hub: Hub, payload: str) -> None:
    """Pass one ``chat:room-notifications`` event to the clients it concerns."""
    try:
        event = orjson.loads(payload)
        kind, room = event["type"], event["room"]
    except (ValueError, KeyError, TypeError):
        log.error("ignoring a malformed payload on %s: %.200s", NOTIFICATIONS, payload)
        return
    if kind == "typing":
        user = event.get("user")
        hub.notify_others(room, user, dumps({"type": kind, "room": room, "user": user}))  # not to the typer's tabs
        return
    if kind == "read":
        hub.notify_user(room, event.get("user"), dumps({"type": kind, "room": room, "id": event.get("id")}),
                        skip=event.get("session"))
        return
    frame = dumps({k: event[k] for k in _EVENT_FIELDS if k in event})
    if kind in ("room_created", "room_removed"):
        hub.notify_all(frame)
    elif kind in ("user_joined", "user_left"):
        hub.notify_room(room, frame, skip=event.get("session"))
