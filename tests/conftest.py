"""Fixtures: real Redis and real Hypercorn instances on loopback, stopped by process group."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quart_chat.postgres import Postgres
from quart_chat.procs import free_port

from cluster import Cluster, RedisProcess
from redis_cluster import NoRedis7, RedisClusterSet, redis7_cli_binary, redis7_server_binary

_rooms = itertools.count()
_databases = itertools.count()

# The shared cluster allows bursts so that tests of delivery are not tests of the rate limit.
FAST_ENV = {"CHAT_RATE": "100000/1"}


# CHAT_TEST_REDIS=cluster (scripts/test's cluster pass): the session's Redis is a Redis Cluster,
# and every instance the tests start without a Redis of their own runs on it, through its
# redis+cluster:// URL. Tests about one Redis (marker `single_redis`) do not run then.
TEST_REDIS = os.environ.get("CHAT_TEST_REDIS", "") or "single"
ON_CLUSTER = TEST_REDIS == "cluster"


def pytest_configure(config: pytest.Config) -> None:
    if TEST_REDIS not in ("single", "cluster"):
        raise pytest.UsageError(f"CHAT_TEST_REDIS={TEST_REDIS!r}: say single (the default) or cluster")


def pytest_report_header(config: pytest.Config) -> str:
    return f"redis: {'a Redis Cluster (CHAT_TEST_REDIS=cluster)' if ON_CLUSTER else 'one redis-server'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a cluster, a `single_redis` test chosen anyway (the cluster pass deselects them) is
    skipped, saying why, rather than run against what it cannot check (or stop the shared
    cluster)."""
    if not ON_CLUSTER:
        return
    skip = pytest.mark.skip(reason="single_redis: about one Redis; CHAT_TEST_REDIS=cluster runs on a Redis Cluster")
    for item in items:
        if item.get_closest_marker("single_redis"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess | RedisClusterSet]:
    """One real redis-server for the whole run; with CHAT_TEST_REDIS=cluster a Redis Cluster
    instead (3 primaries, no replicas: nothing here fails one over), with `url` as well."""
    if ON_CLUSTER:
        try:
            redis7_server_binary()
            redis7_cli_binary()
        except NoRedis7 as err:  # a cluster pass without a cluster would check nothing
            pytest.fail(f"{err} (CHAT_TEST_REDIS=cluster needs it)", pytrace=False)
        proc: RedisProcess | RedisClusterSet = RedisClusterSet(tmp_path_factory.mktemp("redis-cluster"),
                                                               primaries=3, replicas=0).start()
    else:
        proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def cluster(redis_proc: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three instances on one Redis, shared by the tests that do not break things."""
    c = Cluster(3, env=FAST_ENV, logdir=tmp_path_factory.mktemp("cluster"), redis=redis_proc).start()
    yield c
    c.close()


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start private instances with extra settings (on a Redis of their own unless given one;
    with CHAT_TEST_REDIS=cluster, on the session's Redis Cluster); stopped after the test."""
    started: list[Cluster] = []
    shared = request.getfixturevalue("redis_proc") if ON_CLUSTER else None

    def make(n: int = 3, env: dict[str, str] | None = None, **kwargs) -> Cluster:
        if kwargs.get("redis") is None:
            kwargs["redis"] = shared
        c = Cluster(n, env={**FAST_ENV, **(env or {})}, logdir=tmp_path, **kwargs)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.close()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    """A real Redis Cluster (Debian's redis-server 7: 3 primaries, 3 replicas, password), for
    this test alone. Skips without a Redis 7 redis-server and redis-cli; fails so under CI=true."""
    try:
        redis7_server_binary()
        redis7_cli_binary()
    except NoRedis7 as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{err} (CI=true: the Redis Cluster tests must run)", pytrace=False)
        pytest.skip(str(err))
    with RedisClusterSet(tmp_path) as c:
        yield c


@pytest.fixture
def room() -> str:
    """A room name no other test uses."""
    return f"r{os.getpid()}_{next(_rooms)}"


@pytest.fixture
async def app_on_redis(tmp_path):
    """A quart_chat app (fast path on) served by Quart's test client, on a real redis-server."""
    from quart_chat.app import create_app
    from quart_chat.config import Settings

    proc = RedisProcess(tmp_path).start()
    app = create_app(Settings(redis_url=proc.url, instance="in-process", fast_path=True))
    try:
        async with app.test_app() as test_app:
            yield test_app
    finally:
        proc.stop()


@contextlib.contextmanager
def server_dir(tmp: Path) -> Iterator[Path]:
    """A folder for a PostgreSQL's data: ``tmp``, or as root (the server then runs as another
    user, who cannot enter pytest's private temp folder) a new one in the system's, removed after."""
    if os.geteuid() != 0:
        yield tmp
        return
    path = Path(tempfile.mkdtemp(prefix="quart-chat-pg-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def no_postgres(reason: str) -> None:
    """Skip the test, saying why; under CI=true fail it: the archive tests must run there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One private PostgreSQL (initdb'd for this run, on a free loopback port) for the whole run."""
    from quart_chat.postgres import NoPostgres, start_postgres

    logs = tmp_path_factory.mktemp("postgres")
    with server_dir(logs / "data") as data:
        try:
            server = start_postgres(data, free_port(), log_path=logs / "postgres.log")
        except NoPostgres as err:
            no_postgres(str(err))
        yield server
        server.stop()


@pytest.fixture
def pg_dir(tmp_path: Path) -> Iterator[Path]:
    """A data folder for a test's own PostgreSQL (see ``server_dir``)."""
    with server_dir(tmp_path / "pgdata") as data:
        yield data


@pytest.fixture
async def pg_url(postgres: Postgres) -> AsyncIterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL, for this test alone
    (dropped after it, with any connection it left open)."""
    import asyncpg

    name = f"test_{os.getpid()}_{next(_databases)}"
    admin = await asyncpg.connect(postgres.database_url("postgres"), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield postgres.database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
