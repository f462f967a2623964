"""`batch.ScriptBatch` on a real Redis: calls of one pass go as one pipeline, each gets its
own answer or error, and a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from quart_chat.batch import IN_FLIGHT, ScriptBatch

from cluster import RedisProcess

pytestmark = pytest.mark.timeout(30)

ECHO = "if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end return {KEYS[1], ARGV[1]}"


@pytest.fixture
async def client(tmp_path):
    proc = RedisProcess(tmp_path).start()
    r = aioredis.Redis.from_url(proc.url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()
        proc.stop()


class Counted(ScriptBatch):
    """A ScriptBatch that notes the size of each batch it sends."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.sizes: list[int] = []

    async def _run(self, batch) -> None:
        self.sizes.append(len(batch))
        await super()._run(batch)


async def test_a_burst_goes_in_few_pipelines_each_with_its_answer(client):
    batch = Counted(client, client.register_script(ECHO))
    assert await batch(["k"], ["warm"]) == ["k", "warm"]  # alone: sent at once, and loads the script
    assert batch.sizes == [1]
    await client.config_resetstat()
    answers = await asyncio.gather(*(batch([f"k{n}"], [str(n)]) for n in range(200)))
    assert answers == [[f"k{n}", str(n)] for n in range(200)]  # each its own, in order
    assert (await client.info("commandstats"))["cmdstat_evalsha"]["calls"] == 200
    # All 200 were made in one pass: one batch, or a few once IN_FLIGHT are on their way.
    assert sum(batch.sizes[1:]) == 200 and len(batch.sizes) - 1 <= IN_FLIGHT


async def test_one_failure_fails_only_its_call(client):
    batch = ScriptBatch(client, client.register_script(ECHO))
    await batch(["k"], ["warm"])
    results = await asyncio.gather(batch(["a"], ["1"]), batch(["b"], ["fail"]), batch(["c"], ["3"]),
                                   return_exceptions=True)
    assert results[0] == ["a", "1"] and results[2] == ["c", "3"]
    assert isinstance(results[1], ResponseError) and "asked to fail" in str(results[1])


async def test_a_forgotten_script_is_loaded_again(client):
    batch = ScriptBatch(client, client.register_script(ECHO))
    await batch(["k"], ["warm"])
    await client.script_flush()
    assert await asyncio.gather(*(batch([f"k{n}"], [str(n)]) for n in range(IN_FLIGHT + 5))) == [
        [f"k{n}", str(n)] for n in range(IN_FLIGHT + 5)]
