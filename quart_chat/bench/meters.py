"""What a timed step records while it runs: `Recorder` (counts and latencies), `Counters`
(what every client saw), `Sampler` (where a recorder stood every interval), `CpuMeter`
(the instances' and this process's CPU) and `LoopLag` (this process's own stalls)."""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from . import stats
from .marker import now_us
from .procs import group_cpu


class Recorder:
    """Counts of one timed step: what was sent, expected, received, and every latency."""

    __slots__ = ("expected", "first_send", "last_recv", "last_send", "latencies", "received", "sent", "step")

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = 0
        self.expected = 0
        self.received = 0
        self.latencies: list[int] = []
        self.first_send = 0
        self.last_send = 0
        self.last_recv = 0


@dataclass
class Counters:
    """What the clients saw over the whole run, whatever step it belonged to."""

    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    closes: int = 0
    ooo: int = 0
    foreign: int = 0
    late: int = 0

    def error(self, code: str) -> None:
        self.errors += 1
        self.error_codes[code] = self.error_codes.get(code, 0) + 1

    def copy(self) -> Counters:
        return Counters(**{**self.__dict__, "error_codes": dict(self.error_codes)})


class CpuMeter:
    """CPU used by the instances' process groups and by this process over a window."""

    def __init__(self, pgids: list[int]) -> None:
        self.pgids = pgids
        self._start: tuple[float, float, float] | None = None

    def _read(self) -> tuple[float, float, float]:
        servers = sum(group_cpu(g) for g in self.pgids)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.monotonic(), servers, usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float | None]:
        """Percent of one core (100 = one core busy), since `start`."""
        if self._start is None:
            return {}
        t1, s1, g1 = self._read()
        t0, s0, g0 = self._start
        dt = max(t1 - t0, 1e-6)
        return {"cpu_servers_pct": round(100 * (s1 - s0) / dt, 1) if self.pgids else None,
                "cpu_gen_pct": round(100 * (g1 - g0) / dt, 1)}


class LoopLag:
    """How late this process's event loop wakes a 10 ms timer: the load generator's own stalls
    (a late wake-up delays every client of this process, whatever the servers do)."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lags_us: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = now_us()
            await asyncio.sleep(self.period)
            self.lags_us.append(now_us() - t0 - int(self.period * 1e6))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> dict[str, float | None]:
        if self._task is not None:
            self._task.cancel()
        return stats.lag_summary(self.lags_us)


class Sampler:
    """Where a Recorder stood every ``interval`` s: (time, latencies so far, received so far).

    Taking a sample costs three reads, so the hot path is untouched; the percentiles of each
    interval are worked out in `series`, after the step, from the slice of ``rec.latencies``
    between two samples (latencies are appended in the order they are received).
    """

    def __init__(self, rec: Recorder, interval: float) -> None:
        self.rec = rec
        self.interval = interval
        self.samples: list[tuple[int, int, int]] = []
        self._task: asyncio.Task[None] | None = None

    def _take(self) -> None:
        self.samples.append((now_us(), len(self.rec.latencies), self.rec.received))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._take()

    def start(self) -> None:
        self._take()
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._take()

    def series(self, t0_us: int) -> list[dict[str, Any]]:
        """See `stats.series`."""
        return stats.series(self.samples, self.rec.latencies, t0_us)
