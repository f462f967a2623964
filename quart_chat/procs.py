"""Child processes, as the demo, the load tool and the tests start them: each in a process
group of its own with its output in a log file, and stopped through that group (SIGTERM,
then SIGKILL), never by name. A Hypercorn worker orphaned by its parent would otherwise keep
the port; a process group goes whole.
"""

from __future__ import annotations

import os
import pwd
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on ``host``:``port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_group(proc: subprocess.Popen[Any], timeout: float = 8.0) -> int | None:
    """SIGTERM a child's process group and wait; SIGKILL the group if it will not go.
    Returns the child's exit status (None if it could not be reaped)."""
    code: int | None = None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            code = proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (an orphaned worker)
    except ProcessLookupError:
        pass
    return proc.poll() if code is None else code


def as_user(name: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as user ``name`` with its own group only (None: as we are)."""
    if name is None:
        return {}
    return {"user": name, "group": pwd.getpwnam(name).pw_gid, "extra_groups": []}


class Group:
    """A child process in its own process group, its output in ``log_path``."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
               nofile: tuple[int, int] | None = None, user: str | None = None) -> None:
        """Start ``argv``; ``nofile`` = (soft, hard) RLIMIT_NOFILE for it and what it spawns;
        ``user``: as that user (a server that refuses root, started by root)."""
        # Set between fork and exec, so that this process keeps its own limits.
        preexec = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True, preexec_fn=preexec,
                                         **as_user(user))

    @property
    def pgid(self) -> int:
        """The process group (the child's own pid)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Started, and not exited yet."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group and wait; SIGKILL it if it will not go. Returns the exit status."""
        if self.proc is None:
            return None
        code = stop_group(self.proc, timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
            self.proc = None

    def tail(self, lines: int = 40) -> str:
        """The end of this process's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(ready: Callable[[], bool], timeout: float, child: Group, what: str | None = None) -> None:
    """Poll ``ready`` until it is true; raise RuntimeError (with the log's end) if ``child``
    exits first or ``timeout`` passes. An OSError from ``ready`` counts as not yet."""
    what = what or child.name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.running:
            raise RuntimeError(f"{what} exited:\n{child.tail()}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:g} s:\n{child.tail()}")
