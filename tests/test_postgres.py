"""The private PostgreSQL the archive tests, CI and the demo start (quart_chat/postgres.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from quart_chat.postgres import NoPostgres, Postgres, find_postgres, start_postgres
from quart_chat.procs import free_port, listening

from cluster import ROOT, Process


def gone(pid: int) -> bool:
    """True when neither the process ``pid`` nor anything of its process group is left."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
            return False
        except ProcessLookupError:
            pass
    return True


@pytest.mark.timeout(60)
async def test_the_fixture_gives_a_database_that_answers(postgres: Postgres, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        assert (await conn.fetchval("select version()")).startswith("PostgreSQL ")
        assert await conn.fetchval("select current_database()") == pg_url.rsplit("/", 1)[1]
        assert await conn.fetchval("show server_encoding") == "UTF8"
    finally:
        await conn.close()
    assert postgres.url.endswith(f"@127.0.0.1:{postgres.port}/chat")
    conn = await asyncpg.connect(postgres.url, timeout=10)  # the database `chat` is there
    await conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("turn", ["first", "second"])
async def test_each_test_has_a_database_of_its_own(pg_url: str, turn: str) -> None:
    """Whichever runs second finds no table of the first's: each starts empty."""
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        assert await conn.fetchval("select count(*) from pg_tables where schemaname = 'public'") == 0
        await conn.execute("create table rows (turn text)")
        await conn.execute("insert into rows values ($1)", turn)
    finally:
        await conn.close()


@pytest.mark.timeout(90)
async def test_stop_leaves_nothing_and_a_second_start_keeps_the_data(postgres: Postgres, pg_dir: Path) -> None:
    """stop() ends the server's whole process group and frees its port; started again on the
    same data folder (no second initdb), it has the rows written before."""
    server = start_postgres(pg_dir, free_port())
    try:
        conn = await asyncpg.connect(server.url, timeout=10)
        await conn.execute("create table kept (v int); insert into kept values (42)")
        await conn.close()
    finally:
        server.stop()
    assert gone(server.pid) and not listening(server.port)
    assert not server.socket_dir.exists()

    again = start_postgres(pg_dir, free_port())
    try:
        assert again.pid != server.pid
        conn = await asyncpg.connect(again.url, timeout=10)
        assert await conn.fetchval("select v from kept") == 42
        await conn.close()
    finally:
        again.stop()
    assert gone(again.pid) and not listening(again.port)


def test_no_server_is_said_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A CHAT_POSTGRES_BIN with no server in it is named, not searched past."""
    monkeypatch.setenv("CHAT_POSTGRES_BIN", str(tmp_path))
    with pytest.raises(NoPostgres, match="holds no postgres and initdb"):
        find_postgres()


async def connect(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    await conn.close()


def run_demo(tmp_path: Path, env: dict[str, str]) -> Process:
    """`quart-chat demo` on one free port, without nginx, until it says it runs."""
    demo = Process("demo", tmp_path)
    demo.launch([sys.executable, "-m", "quart_chat.cli", "demo", "--ports", str(free_port()), "--proxy-port", "0"],
                env=env, cwd=ROOT)
    deadline = time.monotonic() + 40
    while "Press Ctrl+C" not in demo.tail(200):
        if not demo.running or time.monotonic() > deadline:
            demo.stop(20)
            raise AssertionError(demo.tail())
        time.sleep(0.2)
    return demo


@pytest.mark.timeout(90)
def test_the_demo_starts_a_private_archive_and_stops_it(postgres: Postgres, redis_proc, pg_dir: Path,
                                                         tmp_path: Path) -> None:
    """Without CHAT_ARCHIVE_URL, the demo starts a PostgreSQL with its data beside the Redis
    folder, and stops it with the rest."""
    pg_dir.chmod(0o755)  # the demo's data home: the server's user (as root) passes through it
    env = {**os.environ, "XDG_DATA_HOME": str(pg_dir), "REDIS_URL": redis_proc.url}
    env.pop("CHAT_ARCHIVE_URL", None)
    demo = run_demo(tmp_path, env)
    try:
        folder = pg_dir / "quart_chat" / "postgres"
        assert f"Starting a private PostgreSQL for the archive (data in {folder})" in demo.tail(200), demo.tail()
        pid, port = (int(line) for line in (folder / "data" / "postmaster.pid").read_text().splitlines()[0:4:3])
        asyncio.run(connect(f"postgresql://postgres@127.0.0.1:{port}/chat"))
    finally:
        assert demo.stop(20) == 0, demo.tail()
    assert gone(pid) and not listening(port)


@pytest.mark.timeout(60)
def test_the_demo_without_a_server_says_the_archive_is_off(redis_proc, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "REDIS_URL": redis_proc.url,
           "CHAT_POSTGRES_BIN": str(tmp_path)}
    env.pop("CHAT_ARCHIVE_URL", None)
    demo = run_demo(tmp_path, env)
    assert demo.stop(20) == 0, demo.tail()
    assert "Archive off: CHAT_POSTGRES_BIN=" in demo.tail(200), demo.tail()
