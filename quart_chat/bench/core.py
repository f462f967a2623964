"""`Bench`: what every scenario uses: clients opened and joined in bulk, timed steps (send on
a fixed schedule, drain, summarise), and the one drain loop."""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import stats
from .conn import BenchConn
from .marker import encode, now_us, padding
from .meters import Counters, CpuMeter, Recorder, Sampler
from .procs import group_rss_kb, log


@dataclass
class Options:
    """The parsed command line (see `options.build_parser`) and the targets."""

    urls: list[str]
    pgids: list[int]
    args: argparse.Namespace
    killed: list[int] = field(default_factory=list)  # pgids the storm SIGKILLed on purpose
    redis_pgid: int | None = None  # the spawned redis-server's, for its CPU in the storm


async def drain(progress: Callable[[], int], done: Callable[[], bool], idle: float, most: float) -> None:
    """Wait until ``done()``, or until ``progress()`` (a count of deliveries) stood still for
    ``idle`` s, or ``most`` s in all."""
    t0 = time.monotonic()
    last_count, last_change = progress(), t0
    while not done():
        await asyncio.sleep(0.05)
        now = time.monotonic()
        count = progress()
        if count != last_count:
            last_count, last_change = count, now
        if now - last_change > idle or now - t0 > most:
            break


class Bench:
    """Clients, senders and steps against one set of instances."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.a = opts.args
        self.counters = Counters()
        self.recorders: dict[int, Recorder] = {}
        self.sender_rooms: dict[int, str] = {}
        self.seq = itertools.count()
        self.steps = itertools.count(1)
        self.run_id = f"{os.getpid()}x{int(time.time()) % 100000}"
        self.clients: list[BenchConn] = []

    def room(self, name: str) -> str:
        """A room name unique to this run."""
        return f"b{self.run_id}-{name}"[:64]

    def rss(self) -> int | None:
        """The instances' RSS in KiB, summed over their process groups (None without pids)."""
        if not self.opts.pgids:
            return None
        return sum(group_rss_kb(g) for g in self.opts.pgids)

    async def connect(self, n: int, rooms: list[str], label: str, first_url: int = 0,
                      urls: list[str] | None = None, factory: Any = None) -> tuple[list[Any], float]:
        """Open ``n`` clients round-robin over ``urls`` (the instances), client k joining ``rooms[k % len]``.

        ``factory(k, url, user)`` makes client k (a `BenchConn` by default). Returns the clients
        and the connects per second; at most --connect-concurrency at once.
        """
        urls = urls or self.opts.urls
        factory = factory or (lambda k, url, user: BenchConn(self, url, user))
        clients = [factory(k, urls[(first_url + k) % len(urls)], f"{label}{k}") for k in range(n)]
        self.clients.extend(clients)
        sem = asyncio.Semaphore(self.a.connect_concurrency)
        timeout = self.a.connect_timeout
        done = itertools.count(1)
        t0 = time.monotonic()

        async def one(k: int, client: BenchConn) -> None:
            async with sem:
                await client.open(timeout)
                await client.join(rooms[k % len(rooms)], timeout=timeout)
                c = next(done)
                if c % 500 == 0:
                    log(f"  {label}: {c}/{n} connected")

        await asyncio.gather(*(one(k, c) for k, c in enumerate(clients)))
        dt = time.monotonic() - t0
        # Thousands of client objects make each full collection of this process's heap take
        # 100-200 ms, a stall of every client at once that no server caused: keep what is
        # here now out of the collector's passes (measured in storm: 200 ms pauses gone).
        gc.collect()
        gc.freeze()
        log(f"{label}: {n} clients connected and joined in {dt:.1f} s")
        return clients, n / dt if dt > 0 else 0.0

    async def close(self, clients: Iterable[BenchConn]) -> None:
        clients = list(clients)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        gone = set(map(id, clients))
        self.clients = [c for c in self.clients if id(c) not in gone]

    def spread_senders(self, clients: list[BenchConn], count: int) -> list[BenchConn]:
        """Pick ``count`` senders, one per instance in turn (clients are round-robin already)."""
        return clients[:max(1, min(count, len(clients)))]

    async def warm_up(self, clients: list[BenchConn], room: str) -> None:
        """A few messages before timing, so first-use costs stay out of the figures."""
        senders = self.spread_senders(clients, self.a.senders)
        await self.step([(c, room, 5.0) for c in senders], {room: len(clients)}, 1.0, "warm-up")

    async def step(self, senders: list[tuple[BenchConn, str, float]], members: dict[str, int],
                   duration: float, label: str) -> dict[str, Any]:
        """Send from each (client, room, rate) for ``duration`` s, drain, and summarise."""
        rec = Recorder(next(self.steps))
        self.recorders[rec.step] = rec
        before = self.counters.copy()
        cpu = CpuMeter(self.opts.pgids)
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        total_rate = sum(r for _, _, r in senders)
        tasks = []
        for k, (client, room, rate) in enumerate(senders):
            sender_id = len(self.sender_rooms)
            self.sender_rooms[sender_id] = room
            offset = (k / total_rate) if (total_rate > 0 and self.a.stagger) else 0.0
            tasks.append(self._send(client, room, sender_id, rate, duration, start + offset, rec, members[room]))
        sampler = Sampler(rec, self.a.sample_interval)
        cpu.start()
        sampler.start()
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            send_errors = [r for r in results if isinstance(r, BaseException)]
            await drain(lambda: rec.received, lambda: rec.received >= rec.expected, self.a.drain_idle,
                        self.a.drain_max)
        finally:
            sampler.stop()
        usage = cpu.stop()
        self.recorders.pop(rec.step, None)
        window_s = max(duration, (rec.last_recv - rec.first_send) / 1e6 if rec.last_recv else 0.0)
        c = self.counters
        row: dict[str, Any] = {
            "offered_msg_s": round(rec.sent / duration, 1), "duration_s": duration,
            "sent": rec.sent, "expected": rec.expected, "received": rec.received,
            "deliveries_s": stats.rate(rec.received, window_s),
            **stats.latency_summary(rec.latencies),
            "lost": max(0, rec.expected - rec.received),
            "errors": c.errors - before.errors + len(send_errors),
            "closes": c.closes - before.closes, "ooo": c.ooo - before.ooo, "foreign": c.foreign - before.foreign,
            **usage,
            "series": sampler.series(rec.first_send or sampler.samples[0][0]),
        }
        log(f"{label}: offered {row['offered_msg_s']} msg/s, {row['deliveries_s']} deliveries/s, "
            f"p50 {row['p50_ms']} p99 {row['p99_ms']} max {row['max_ms']} ms, lost {row['lost']}, "
            f"errors {row['errors']}, closes {row['closes']}")
        return row

    async def _send(self, client: BenchConn, room: str, sender_id: int, rate: float, duration: float,
                    start: float, rec: Recorder, members: int) -> None:
        """Send ``rate * duration`` messages on a fixed schedule (late ones go at once)."""
        loop = asyncio.get_running_loop()
        count = max(1, int(round(rate * duration)))
        interval = 1.0 / rate
        pad = padding(self.a.text_size)
        for k in range(count):
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = now_us()
            if not rec.first_send:
                rec.first_send = sent
            text = encode(sent, rec.step, sender_id, next(self.seq), pad)
            rec.sent += 1
            rec.expected += members
            rec.last_send = sent
            await client.send_text(room, text)
