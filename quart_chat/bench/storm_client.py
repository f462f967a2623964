"""The storm's clients and shared state: each client keeps the seq of every message of its
room it got, in order, and when its connection drops rejoins another instance with ``since``
(the page's backoff, `quart_chat.client.Backoff`)."""

from __future__ import annotations

import array
import asyncio
from typing import TYPE_CHECKING, Any

from ..client import Backoff
from .conn import BenchConn
from .marker import Marker, decode, now_us
from .meters import Recorder
from .procs import log

if TYPE_CHECKING:
    from .core import Bench


class StormConn(BenchConn):
    """A storm client: one room. It has caught up once it holds every message of its room up
    to the last one sent when its ``joined`` came (``target``), none missing: a rejoin that
    skipped some never catches up."""

    __slots__ = ("attempts", "caught_at", "closed_at", "failed_attempts", "index", "join_us", "joined_at",
                 "last_id", "next_seq", "rejoin_history", "rejoin_t0", "rejoining", "room", "seqs", "storm",
                 "target")

    def __init__(self, storm: Storm, index: int, url: str, user: str, room: str) -> None:
        super().__init__(storm.bench, url, user)
        self.storm = storm
        self.index = index
        self.room = room
        self.seqs = array.array("q")
        self.next_seq = 0  # every seq below it received: the room's messages have seqs 0, 1, 2, ...
        self.last_id: str | None = None
        self.closed_at = 0
        self.rejoin_t0 = 0
        self.joined_at = 0
        self.join_us = 0
        self.target: int | None = None
        self.caught_at = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.rejoining = False
        self.rejoin_history = 0

    def on_joined(self, frame: dict[str, Any]) -> None:
        received = now_us()
        history = frame.get("history") or []
        for m in history:
            found = decode(m.get("text", ""))
            if found is not None:
                self.on_marker(m.get("id", ""), found, received, False)
        if self.rejoining:
            self.rejoin_history = len(history)
            self.target = self.storm.room_sent.get(self.room, -1)
            if self.next_seq > self.target:
                self.caught_at = received

    def on_marker(self, mid: str, marker: Marker, received: int, live: bool) -> None:
        """One message of this client's room (``live``, or from ``joined.history``)."""
        sent_us, _step, sender, seq = marker
        storm = self.storm
        if storm.sender_room.get(sender) != self.room:
            storm.foreign += 1
            return
        self.seqs.append(seq)
        self.last_id = mid
        rec = storm.rec
        rec.received += 1
        rec.latencies.append(received - sent_us)
        if live and not self.closed_at:  # a bystander: a client whose instance stays up
            storm.bystanders.received += 1
            storm.bystanders.latencies.append(received - sent_us)
        if seq == self.next_seq:
            self.next_seq += 1
            if self.target is not None and not self.caught_at and seq >= self.target:
                self.caught_at = received

    def on_closed(self, error: BaseException | None) -> None:
        if error is not None:  # a frame this client cannot read: counted, taken as a drop
            self.storm.reader_errors += 1
            log(f"storm client {self.user}: {error!r}")
        self.storm.closed(self)


class Storm:
    """The state of one storm run that its clients report to (see `storm.run`)."""

    def __init__(self, bench: Bench, rooms: list[str]) -> None:
        self.bench = bench
        self.a = bench.a
        self.rooms = rooms
        self.rec = Recorder(next(bench.steps))
        self.bystanders = Recorder(self.rec.step)  # live messages to clients never disconnected
        self.room_sent: dict[str, int] = {}      # room -> seq of the last message sent there
        self.sender_room: dict[int, str] = {}
        self.urls: list[str] = list(bench.opts.urls)
        self.victim_url: str | None = None
        self.killed_at = 0
        self.stopping = False
        self.stop_sending = False
        self.senders_stop = 0
        self.send_failures = 0
        self.unexpected_closes = 0
        self.reader_errors = 0
        self.foreign = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.backoff = Backoff(base=self.a.storm_backoff / 1000.0, cap=10.0)

    def closed(self, c: StormConn) -> None:
        """``c``'s connection dropped (its reader ended): rejoin elsewhere unless already at it."""
        if c.rejoining or self.stopping:
            return
        if not (self.killed_at and c.url == self.victim_url):
            self.unexpected_closes += 1
        c.closed_at = now_us()
        c.rejoining = True
        task = asyncio.create_task(self.rejoin(c))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def rejoin(self, c: StormConn) -> None:
        """The page's reconnect: backoff with jitter (base doubling from --storm-backoff ms to
        10 s, delay in [base/2, base]), to the other instances in turn, ``join`` with ``since``."""
        a = self.a
        others = [u for u in self.urls if u != c.url] or [c.url]
        attempt = 0
        while not self.stopping:
            delay = self.backoff.delay(attempt)
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping:
                return
            c.url = others[(c.index + attempt) % len(others)]
            attempt += 1
            c.attempts += 1
            c.target, c.caught_at = None, 0
            t0 = now_us()
            if not c.rejoin_t0:
                c.rejoin_t0 = t0
            try:
                c.ws = None
                await c.open(a.connect_timeout)
                await c.join(c.room, since=c.last_id or "0-0", timeout=a.connect_timeout)
            except Exception:
                c.failed_attempts += 1
                if c.ws is not None:
                    c.closing = True  # this attempt's reader must not start another rejoin
                    try:
                        await asyncio.wait_for(c.ws.close(), 2)
                    except Exception:
                        pass
                    c.closing = False
                continue
            c.join_us = now_us() - t0
            c.joined_at = now_us()
            c.rejoining = False
            if c.reader is not None and c.reader.done():  # dropped again in between
                c.failed_attempts += 1
                self.closed(c)
            return

    def all_caught_up(self, clients: list[StormConn]) -> bool:
        return all(c.caught_at for c in clients)
