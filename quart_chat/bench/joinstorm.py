"""``joinstorm``: a room with --history messages, then --join-clients connections joining it
at once (--join-concurrency at a time): joins per second and the latency from opening the
connection to the ``joined`` reply."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import stats
from .conn import BenchConn
from .core import Bench
from .marker import now_us
from .procs import log


async def run(bench: Bench) -> dict[str, Any]:
    a = bench.a
    room = bench.room("joinstorm")
    seeders, _ = await bench.connect(1, [room], "seed")
    try:
        for k in range(a.history):
            await seeders[0].send_text(room, f"history {k}")
        await asyncio.sleep(0.5)
        urls = bench.opts.urls
        clients = [BenchConn(bench, urls[k % len(urls)], f"storm{k}") for k in range(a.join_clients)]
        bench.clients.extend(clients)
        sem = asyncio.Semaphore(a.join_concurrency)
        latencies: list[int] = []
        history_sizes: list[int] = []

        async def one(c: BenchConn) -> None:
            async with sem:
                t0 = now_us()
                await c.open(a.connect_timeout)
                reply = await c.join(room, timeout=a.connect_timeout)
                latencies.append(now_us() - t0)
                history_sizes.append(len(reply.get("history", [])))

        t0 = time.monotonic()
        results = await asyncio.gather(*(one(c) for c in clients), return_exceptions=True)
        dt = time.monotonic() - t0
        failed = sum(1 for r in results if isinstance(r, BaseException))
        await bench.close(clients)
    finally:
        await bench.close(seeders)
    ok = len(latencies)
    row = {"scenario": "joinstorm", "clients": a.join_clients, "history": a.history,
           "joined": ok, "failed": failed, "joins_s": round(ok / dt, 1) if dt else None,
           **{k.replace("_ms", "_join_ms"): v for k, v in stats.latency_summary(latencies).items()},
           "history_min": min(history_sizes) if history_sizes else None, "errors": bench.counters.errors}
    log(f"joinstorm: {ok} joined ({failed} failed) in {dt:.1f} s = {row['joins_s']} joins/s, "
        f"p99 {row['p99_join_ms']} ms")
    return row
