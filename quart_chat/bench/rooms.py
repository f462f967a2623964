"""``rooms``: R rooms x M clients, one sender per room at --room-rate for T seconds."""

from __future__ import annotations

from typing import Any

from .conn import BenchConn
from .core import Bench


async def run(bench: Bench) -> dict[str, Any]:
    a = bench.a
    names = [bench.room(f"r{k}") for k in range(a.rooms)]
    n = a.rooms * a.room_clients
    clients, _ = await bench.connect(n, names, "rooms")
    try:
        by_room: dict[str, list[BenchConn]] = {}
        for k, c in enumerate(clients):
            by_room.setdefault(names[k % len(names)], []).append(c)
        senders = [(members[0], room, a.room_rate) for room, members in by_room.items()]
        row = await bench.step(senders, {room: len(m) for room, m in by_room.items()}, a.duration,
                               f"rooms {a.rooms}x{a.room_clients}")
    finally:
        await bench.close(clients)
    return {"scenario": "rooms", "clients": n, "rooms": a.rooms, **row}
