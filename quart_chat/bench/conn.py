"""The load tool's connection: a `quart_chat.client.Connection` (the client's lower-level
piece: open, send, join, one reader task) whose frame handler reads the send-time marker
straight out of message frames (`marker.scan`, no JSON) and counts what each client saw.

Why not the full `ChatClient`: it decodes every frame as JSON into an event object and queues
it, about 4x the handler's cost per delivery (measured: see docs/client.md, "The load tool"),
and the generator, one Python process, is the bottleneck of the capacity figures first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..client import Connection, message_frame
from .marker import Marker, decode, now_us, scan

if TYPE_CHECKING:
    from .core import Bench

# Member events: plenty when thousands join, nothing the load tool checks.
QUIET = ('{"type":"user_', '{"type":"room_created"', '{"type":"room_removed"')


class BenchConn(Connection):
    """One load-tool client (the fanout, capacity, rooms, idle and joinstorm scenarios)."""

    __slots__ = ("bench", "last_seq")

    def __init__(self, bench: Bench, url: str, user: str) -> None:
        super().__init__(url, user)
        self.bench = bench
        self.last_seq: dict[int, int] = {}

    async def open(self, timeout: float = 10.0, **options: Any) -> None:
        """Open the WebSocket without keep-alive pings and start reading."""
        await super().open(timeout, ping_interval=None, **options)

    async def send_text(self, room: str, text: str) -> None:
        await self.send(message_frame(room, text))

    def on_frame(self, raw: str) -> None:
        found = scan(raw)
        if found is not None:
            self.on_marker(found[0], found[1], now_us(), True)
        elif not raw.startswith(QUIET):
            self.on_control(orjson.loads(raw))

    def on_control(self, frame: dict[str, Any]) -> None:
        """Any frame but a marked message in quart_chat's own field order."""
        kind = frame.get("type")
        if kind == "message":  # a server that orders fields differently
            found = decode(frame.get("text", ""))
            if found is not None:
                self.on_marker(frame.get("id", ""), found, now_us(), True)
        elif kind == "joined":
            self.on_joined(frame)
            self.joined(frame.get("room", ""), frame)
        elif kind == "error":
            code = str(frame.get("code"))
            self.bench.counters.error(code)
            if frame.get("ref") == "join":
                self.refused(RuntimeError(f"join refused: {code}"))

    def on_joined(self, frame: dict[str, Any]) -> None:
        """A ``joined`` came (before `join` returns it)."""

    def on_marker(self, mid: str, marker: Marker, received: int, live: bool) -> None:
        """A marked message: counted in its step's recorder, its latency kept."""
        sent_us, step, sender, seq = marker
        bench = self.bench
        counters = bench.counters
        if bench.sender_rooms.get(sender) not in self.rooms:
            counters.foreign += 1
        if seq <= self.last_seq.get(sender, -1):
            counters.ooo += 1
        self.last_seq[sender] = seq
        rec = bench.recorders.get(step)
        if rec is None:
            counters.late += 1
            return
        rec.received += 1
        rec.last_recv = received
        rec.latencies.append(received - sent_us)

    def on_closed(self, error: BaseException | None) -> None:
        counters = self.bench.counters
        counters.closes += 1
        if error is not None:
            counters.error("reader")
