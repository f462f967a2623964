"""Calls of one Lua script made in the same event-loop pass, sent to Redis in one pipeline.

A burst of connections (a reconnect storm, a deploy) joins hundreds of rooms at once; each
join is one script call, and redis-py spends more of its own time on a call (a pooled
connection taken and given back, a write, a read) than Redis spends running the script.
`ScriptBatch` sends a call at once while fewer than `IN_FLIGHT` batches are on their way;
past that, calls wait for one of them to come back and then go together, in the order they
were made, as one pipeline of ``EVALSHA``: one connection, one write, one read for all of
them. So a quiet server sends each call alone, with no added wait, and a busy one sends
fewer, larger batches the busier it is.

Each call still gets its own answer, or its own error: a script error in one (or Redis
not knowing the script yet, after a restart) touches no other.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError

# Batches on their way to Redis at once; further calls wait for one to come back.
IN_FLIGHT = 2


class ScriptBatch:
    """Queues calls of ``script`` (a redis-py ``AsyncScript``) and sends each pass's together."""

    def __init__(self, redis: Any, script: Any) -> None:
        self.redis = redis
        self.script = script
        self._queued: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def __call__(self, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """The script's answer for ``keys`` and ``args``, once its batch is back."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((keys, args, future))
        if not self._scheduled and len(self._sending) < IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._send)  # after the other callbacks of this pass: they may call too
        return future

    def _send(self) -> None:
        self._scheduled = False
        if not self._queued:
            return
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._run(batch))
        self._sending.add(task)  # referenced until done: the loop keeps only weak references
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._queued and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    async def _run(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        if len(batch) == 1:
            keys, args, future = batch[0]
            await _settle(future, self.script(keys=keys, args=args))
            return
        pipe = self.redis.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        try:
            answers = await pipe.execute(raise_on_error=False)
        except BaseException as err:  # the connection failed: every call of the batch did
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(err if isinstance(err, Exception) else ConnectionError(str(err)))
            if not isinstance(err, Exception):
                raise
            return
        for (keys, args, future), answer in zip(batch, answers):
            if isinstance(answer, NoScriptError):  # Redis restarted: the script call loads it again
                await _settle(future, self.script(keys=keys, args=args))
            elif future.done():
                continue  # its caller gave up (a timeout)
            elif isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)


async def _settle(future: asyncio.Future[Any], call: Any) -> None:
    """Run one script call and hand its answer (or error) to ``future``."""
    try:
        answer = await call
    except Exception as err:
        if not future.done():
            future.set_exception(err)
        return
    if not future.done():
        future.set_result(answer)
