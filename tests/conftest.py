"""Fixtures: real Redis and real Hypercorn instances on loopback, stopped by process group."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Cluster, RedisProcess

_rooms = itertools.count()

# The shared cluster allows bursts so that tests of delivery are not tests of the rate limit.
FAST_ENV = {"CHAT_RATE": "100000/1"}


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server for the whole run."""
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
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start a private cluster (own Redis unless given) with extra settings; stopped after the test."""
    started: list[Cluster] = []

    def make(n: int = 3, env: dict[str, str] | None = None, **kwargs) -> Cluster:
        c = Cluster(n, env={**FAST_ENV, **(env or {})}, logdir=tmp_path, **kwargs)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.close()


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
