"""Feeds the archive (`archive`) from the rooms' streams, exactly once in effect, however
many instances run and whichever of them die (docs/archive.md).

Every room's stream has one consumer group, ``archive``, shared by the whole deployment.
Each instance's archiver is one consumer of it (named after its node, new at each start):

- every half second it reads what is new in the rooms active since its last pass
  (``XREADGROUP ... >``) and what it read before without writing (its own pending
  entries), writes them to PostgreSQL in one transaction, then acknowledges them
  (``XACK``): an archiver that dies between the write and the acknowledgement leaves
  entries pending, written again later, which changes nothing (the writes are keyed);
- every few seconds it takes over entries another consumer read over `CLAIM_IDLE` ago and
  never acknowledged (``XAUTOCLAIM``): that consumer died;
- once a minute it goes over every room (a room quiet since the archive was down, the
  group of a room created meanwhile), and removes what ``CHAT_ARCHIVE_DAYS`` no longer keeps.

The append scripts cap a stream at CHAT_HISTORY_MAXLEN + CHAT_ARCHIVE_BACKLOG; after each
batch the archiver trims it back to CHAT_HISTORY_MAXLEN, never past an entry it has not
taken (`store.ARCHIVE_TRIM_LUA`). A stream that hit the cap while PostgreSQL was down has
lost entries the archive never got: the archiver finds the hole, logs it, counts it
(``quart_chat_archive_gaps_total``) and records it, so that a join from before it says
``gap: true``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from redis.exceptions import ResponseError

from .archive import Archive, Entry, parse_entry
from .config import Settings
from .protocol import StreamId, parse_stream_id
from .store import ARCHIVE_TRIM_LUA, Layout, now_ms, stop_if_cancelled

log = logging.getLogger("quart_chat.archiver")

GROUP = "archive"
BATCH = 500  # entries per room and pass
ROOMS_PER_CALL = 100  # rooms whose reads go in one pipeline
PASS_EVERY = 0.5
CLAIM_EVERY = 5.0
CLAIM_IDLE_MS = 15_000  # pending this long with its reader silent: that reader died
FULL_EVERY = 60.0
RECENT_MS = 15 * 60_000  # rooms a claim sweep looks at: active this recently
PASS_TIMEOUT = 60.0  # a pass that takes longer has hung on a dead connection: start over


class Archiver:
    """One instance's consumer of the rooms' ``archive`` groups."""

    def __init__(self, settings: Settings, redis: Any, node: str, archive: Archive, keys: Layout) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.node = node
        self.archive = archive
        self._trim = redis.register_script(ARCHIVE_TRIM_LUA)
        self._grouped: set[str] = set()  # rooms whose group is known to exist
        self.ready = False  # the archive's schema is up to date and its pool open
        self.up = False  # the last pass wrote (or had nothing to write) without an error
        self.lag_seconds = 0.0
        self.behind = 0
        self.written = 0
        self.errors = 0
        self.gaps = 0

    async def run(self) -> None:
        """Open the archive (waiting for PostgreSQL), then archive until cancelled."""
        delay = 0.5
        while not self.ready:
            try:
                await self.archive.open()
                self.ready = True
            except Exception as err:  # PostgreSQL down, refused, a bad URL: said, retried
                self.errors += 1
                log.warning("archive: cannot open %s (%s); trying again", _where(self.archive.url), err)
                stop_if_cancelled()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
        log.info("archive: writing to %s", _where(self.archive.url))
        full_at = claim_at = 0.0
        since = 0
        delay = PASS_EVERY
        while True:
            started = now_ms()
            clock = time.monotonic()
            full, claim = clock - full_at >= FULL_EVERY, clock - claim_at >= CLAIM_EVERY
            try:
                if full:
                    rooms = await self.redis.zrange(self.keys.rooms, 0, -1)
                else:
                    rooms = await self.redis.zrangebyscore(self.keys.activity_index, since - 2000 if since else "-inf",
                                                           "+inf")
                    if claim:
                        rooms = list(dict.fromkeys([*rooms, *await self.redis.zrangebyscore(
                            self.keys.activity_index, started - RECENT_MS, "+inf")]))
                async with asyncio.timeout(PASS_TIMEOUT):
                    busy = await self.pass_once(rooms, claim, check_gaps=full)
                if full and self.settings.archive_days:
                    removed = await self.archive.expire(started - self.settings.archive_days * 86_400_000)
                    if removed:
                        log.info("archive: removed %d message(s) older than %d days", removed,
                                 self.settings.archive_days)
                full_at = clock if full else full_at
                claim_at = clock if claim else claim_at
                since = started
                self.up = True
                delay = 0 if busy else PASS_EVERY
            except Exception as err:  # Redis or PostgreSQL away: nothing acknowledged, read again later
                stop_if_cancelled()
                self.up = False
                self.errors += 1
                log.warning("archive: a pass failed (%s: %s); entries stay pending and are written later",
                            type(err).__name__, err)
                delay = min(max(delay * 2, 1.0), 10.0)
            stop_if_cancelled()
            await asyncio.sleep(delay)

    async def pass_once(self, rooms: list[str], claim: bool, check_gaps: bool = False) -> bool:
        """Archive what waits in ``rooms``; True when a room had a whole batch waiting (more
        may follow: the next pass comes at once)."""
        busy = False
        waiting = 0
        oldest: int | None = None
        for k in range(0, len(rooms), ROOMS_PER_CALL):
            chunk = await self._with_groups(rooms[k:k + ROOMS_PER_CALL])
            if not chunk:
                continue
            if check_gaps:
                await self._find_gaps(chunk)
            if claim:
                pipe = self.redis.pipeline(transaction=False)
                for room in chunk:
                    pipe.xautoclaim(self.keys.history(room), GROUP, self.node, CLAIM_IDLE_MS, "0-0", count=BATCH,
                                    justid=True)
                await pipe.execute()
            # This consumer's pending entries (read before, not yet written, or just claimed),
            # then what is new.
            pipe = self.redis.pipeline(transaction=False)
            for room in chunk:
                pipe.xreadgroup(GROUP, self.node, {self.keys.history(room): "0"}, count=BATCH)
                pipe.xreadgroup(GROUP, self.node, {self.keys.history(room): ">"}, count=BATCH)
            replies = await pipe.execute()
            entries: list[Entry] = []
            acks: dict[str, list[str]] = {}
            for i, room in enumerate(chunk):
                read = dict(_entries_of(replies[2 * i]) + _entries_of(replies[2 * i + 1]))
                if not read:
                    continue
                busy = busy or len(read) >= BATCH
                acks[room] = list(read)
                for sid, fields in read.items():
                    # An entry deleted since it was read has no fields: its delete is archived.
                    entry = parse_entry(room, sid, fields.get("data") if fields else None)
                    if entry is not None:
                        entries.append(entry)
                        oldest = entry.id[0] if oldest is None else min(oldest, entry.id[0])
            if not acks:
                continue
            waiting += sum(len(ids) for ids in acks.values())
            self.written += await self.archive.write(entries)
            keys = self.keys
            pipe = self.redis.pipeline(transaction=False)
            for room, ids in acks.items():
                pipe.xack(keys.history(room), GROUP, *ids)
                if not keys.cluster:
                    await self._trim(keys=[keys.history(room), keys.trimmed(room)],
                                     args=[self.settings.history_maxlen, GROUP], client=pipe)
            await pipe.execute()
            if keys.cluster:  # a cluster's pipeline does not load a script a shard lacks: a call each
                await asyncio.gather(*(self._trim(keys=[keys.history(room), keys.trimmed(room)],
                                                  args=[self.settings.history_maxlen, GROUP]) for room in acks))
        # What this pass found waiting, and the age of the oldest of it: the archive's lag.
        self.behind = waiting
        self.lag_seconds = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return busy

    async def _with_groups(self, rooms: list[str]) -> list[str]:
        """``rooms`` whose stream has the archive group, creating it where missing (from the
        stream's start: a room archived for the first time is archived whole)."""
        new = [room for room in rooms if room not in self._grouped]
        if new:
            pipe = self.redis.pipeline(transaction=False)
            for room in new:
                pipe.xgroup_create(self.keys.history(room), GROUP, id="0")
            for room, result in zip(new, await pipe.execute(raise_on_error=False)):
                if result is True or (isinstance(result, ResponseError) and "BUSYGROUP" in str(result)):
                    self._grouped.add(room)
                    if result is True:
                        await self._gap_at_start(room)
                # else: no stream yet (a room without a message); looked at again next time
        return [room for room in rooms if room in self._grouped]

    async def _gap_at_start(self, room: str) -> None:
        """A room first archived after its stream lost entries to the cap: those are not in
        the archive, and a join from before them must say so."""
        if await self.redis.exists(self.keys.trimmed(room)):
            first = await self.redis.xrange(self.keys.history(room), "-", "+", count=1)
            if first and (sid := parse_stream_id(first[0][0])) is not None:
                await self.archive.note_gap(room, _before(sid))

    async def _find_gaps(self, rooms: list[str]) -> None:
        """Streams whose first entry is newer than the next one the group would read: the
        entries between were trimmed (the backlog cap) before the archive took them."""
        pipe = self.redis.pipeline(transaction=False)
        for room in rooms:
            pipe.xinfo_groups(self.keys.history(room))
            pipe.xrange(self.keys.history(room), "-", "+", count=1)
        replies = await pipe.execute(raise_on_error=False)
        for i, room in enumerate(rooms):
            groups, first = replies[2 * i], replies[2 * i + 1]
            if isinstance(groups, Exception) or isinstance(first, Exception) or not first:
                continue
            delivered = next((parse_stream_id(g["last-delivered-id"]) for g in groups if g["name"] == GROUP), None)
            start = parse_stream_id(first[0][0])
            if delivered is None or start is None or not _hole(delivered, start):
                continue
            self.gaps += 1
            log.error("archive: room %s lost entries before %s to CHAT_ARCHIVE_BACKLOG before the archive took "
                      "them (PostgreSQL was down too long); joins from before it get gap: true", room, first[0][0])
            upto = _before(start)
            await self.archive.note_gap(room, upto)
            # Read on from the first entry left, so that the hole is reported once.
            await self.redis.xgroup_setid(self.keys.history(room), GROUP, f"{upto[0]}-{upto[1]}")


def _before(sid: StreamId) -> StreamId:
    """The id just below ``sid`` (the last one a trim may have taken)."""
    return (sid[0], sid[1] - 1) if sid[1] else (sid[0] - 1, 2**63 - 1)  # PostgreSQL bigint


def _hole(delivered: StreamId, first: StreamId) -> bool:
    """Whether entries lie between the last one delivered and the first one still there."""
    if delivered == (0, 0):
        return False  # nothing read yet: `_gap_at_start` has seen to it
    following = (delivered[0], delivered[1] + 1)
    return first > following


def _entries_of(reply: Any) -> list[tuple[str, dict[str, str] | None]]:
    """The (id, fields) pairs of one XREADGROUP reply, as RESP2 or RESP3 gives them."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [pair for streams in reply.values() for pair in (streams[0] if streams else [])]
    return [pair for _, pairs in reply for pair in pairs]


def _where(url: str) -> str:
    """A PostgreSQL URL without its password, for the log."""
    from .logs import redact

    return redact(url)

