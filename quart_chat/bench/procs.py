"""The load tool's process harness: a private redis-server and N Hypercorn instances on free
loopback ports, each in its own process group and stopped through it; and what the tool reads
of processes (RSS, CPU) from /proc (psutil elsewhere)."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..embedded import redis_server_binary, stop_group

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(*parts: object) -> None:
    """Progress line on stderr."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


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


def _wait_until(pred: Callable[[], bool], timeout: float, what: str, child: Child) -> None:
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
        pkg_parent = str(Path(__file__).resolve().parent.parent.parent)
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
            _wait_until(functools.partial(_healthy, port), timeout, child.name, child)
            out.urls.append(f"ws://{HOST}:{port}/ws")
        log(f"spawned redis on {rport} and {n} instance(s) on {','.join(map(str, ports))} (logs in {logdir})")
        return out
    except BaseException:
        out.stop()
        raise
