"""``idle``: K idle clients per instance joined to R rooms: the growth of the instances' RSS
(VmRSS summed over each process group) per connection, and connects per second."""

from __future__ import annotations

import asyncio
from typing import Any

from .core import Bench


async def run(bench: Bench) -> dict[str, Any]:
    a = bench.a
    n = a.idle_per_instance * len(bench.opts.urls)
    names = [bench.room(f"idle{k}") for k in range(a.idle_rooms)]
    before = bench.rss()
    clients, rate = await bench.connect(n, names, "idle")
    try:
        await asyncio.sleep(a.idle_settle)
        after = bench.rss()
        closes = bench.counters.closes
    finally:
        await bench.close(clients)
    per = round((after - before) / n, 2) if before is not None and after is not None and n else None
    return {"scenario": "idle", "clients": n, "rooms": a.idle_rooms, "rss_before_kb": before,
            "rss_after_kb": after, "kb_per_conn": per, "connects_s": round(rate, 1), "closes": closes}
