"""The load tool's process harness: a private redis-server and N Hypercorn instances on free
loopback ports, each in its own process group and stopped through it; and what the tool reads
of processes (RSS, CPU) from /proc (psutil elsewhere)."""

from __future__ import annotations

import functools
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..embedded import redis_server_binary
from ..procs import HOST, Group, free_port, wait_until

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(*parts: object) -> None:
    """Progress line on stderr."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


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


def _child(name: str, argv: list[str], env: dict[str, str], logdir: Path) -> Group:
    child = Group(name, logdir / f"{name}.log")
    child.launch(argv, env)
    return child


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

    redis: Group | None = None
    instances: list[Group] = field(default_factory=list)
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
        out.redis = _child("redis", [redis_server_binary(), "--port", str(rport), "--bind", HOST, "--save", "",
                                    "--appendonly", "no"], dict(os.environ), logdir)
        wait_until(lambda: _redis_pong(rport), timeout, out.redis, "redis-server")
        # Import quart_chat from wherever this module comes from, whatever the cwd.
        pkg_parent = str(Path(__file__).resolve().parent.parent.parent)
        pythonpath = os.pathsep.join(filter(None, [pkg_parent, os.environ.get("PYTHONPATH")]))
        ports = [free_port() for _ in range(n)]
        for k, port in enumerate(ports):
            # TMPDIR inside the log folder: what an instance leaves in its temporary directory
            # (the metrics folder its Hypercorn workers share) goes with the folder.
            env = {**os.environ, "REDIS_URL": f"redis://{HOST}:{rport}/0", "CHAT_INSTANCE": f"bench-{port}",
                   "CHAT_RATE": "1000000/1", "PYTHONPATH": pythonpath, "TMPDIR": str(logdir / "tmp")}
            argv = [sys.executable, "-m", "hypercorn", *hypercorn_args, "quart_chat:app", "-b", f"{HOST}:{port}"]
            out.instances.append(_child(f"instance-{k}", argv, env, logdir))
        for child, port in zip(out.instances, ports):
            wait_until(functools.partial(_healthy, port), timeout, child)
            out.urls.append(f"ws://{HOST}:{port}/ws")
        log(f"spawned redis on {rport} and {n} instance(s) on {','.join(map(str, ports))} (logs in {logdir})")
        return out
    except BaseException:
        out.stop()
        raise
