"""``fanout``: 1 room, C clients, S senders at a fixed total rate R for T seconds."""

from __future__ import annotations

from typing import Any

from .core import Bench


async def run(bench: Bench) -> dict[str, Any]:
    a = bench.a
    room = bench.room("fanout")
    clients, _ = await bench.connect(a.clients, [room], "fanout")
    try:
        await bench.warm_up(clients, room)
        senders = bench.spread_senders(clients, a.senders)
        row = await bench.step([(c, room, a.rate / len(senders)) for c in senders], {room: len(clients)},
                               a.duration, f"fanout {a.rate:g} msg/s")
    finally:
        await bench.close(clients)
    return {"scenario": "fanout", "clients": len(clients), "senders": len(senders), **row}
