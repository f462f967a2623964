"""G5 when Redis stays up: every way an instance's subscriber link can break, caused for real
with many messages in flight. Every client of the cut instance must get every message once,
in order, without reconnecting.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis

from client import ChatClient, id_key
from cluster import kill_pubsub_links, layout_of, redis_client

pytestmark = [pytest.mark.timeout(120), pytest.mark.portable]

BIG_ENV = {"CHAT_MAX_TEXT": "9000", "CHAT_HISTORY_MAXLEN": "2000"}


class Collector:
    """Reads one connection in the background, keeping its message frames and its close code."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.messages: list[dict] = []
        self.acks: dict[str, str] = {}
        self.ack_at: dict[str, float] = {}  # loop time each ack arrived
        self.errors: list[dict] = []
        self.closed: int | None = None
        self.stopping = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while not self.stopping:
                frame = await self.client.recv(timeout=3600)
                if frame["type"] == "message":
                    self.messages.append(frame)
                elif frame["type"] == "ack":
                    self.acks[frame["client_id"]] = frame["id"]
                    self.ack_at[frame["client_id"]] = asyncio.get_running_loop().time()
                elif frame["type"] == "error":
                    self.errors.append(frame)
        except Exception as err:
            self.closed = getattr(getattr(err, "rcvd", None), "code", -1)

    async def wait_count(self, n: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < n and loop.time() < deadline and self.closed is None:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        # Python 3.11's wait_for (inside recv) can swallow a cancellation that lands as a frame
        # arrives, and the loop would then wait an hour for the next one: the flag ends it too,
        # and closing the socket ends a recv that still waits.
        self.stopping = True
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=2)
        try:
            await asyncio.wait_for(self.client.close(), 3)
        except TimeoutError:  # a teardown: what the test checks was checked before; free the socket
            self.client.ws.transport.abort()
        await asyncio.wait({self.task}, timeout=2)


def assert_exactly(stream_ids: list[str], got: list[dict], who: str) -> None:
    """``got`` is the whole stream: each id once, in order."""
    ids = [m["id"] for m in got]
    assert len(ids) == len(set(ids)), f"{who}: {len(ids) - len(set(ids))} duplicates"
    assert ids == sorted(ids, key=id_key), f"{who}: out of order"
    missing = len(set(stream_ids) - set(ids))
    assert ids == stream_ids, f"{who}: got {len(ids)} of {len(stream_ids)} ({missing} missing)"


async def send_many(sender: Collector, room: str, n: int, size: int, prefix: str) -> None:
    """Send ``n`` messages of ``size`` characters and wait until each is acknowledged."""
    for k in range(n):
        await sender.client.say(room, f"{prefix}{k:05d} " + "x" * (size - 8), client_id=f"{prefix}{k}")
        if k % 50 == 49:
            await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(sender.acks) < n and loop.time() < deadline:
        assert not sender.errors, sender.errors[:3]
        await asyncio.sleep(0.05)
    assert len(sender.acks) == n, f"{len(sender.acks)} of {n} acknowledged; errors {sender.errors[:3]}"


def stream_ids(url: str, room: str) -> list[str]:
    r = redis_client(url, decode_responses=True)
    try:
        return [sid for sid, _ in r.xrange(layout_of(r).history(room))]
    finally:
        r.close()


async def open_pair(cluster, room: str) -> tuple[Collector, Collector, Collector]:
    """A watcher on instance 0 (the one whose link breaks), a watcher and a sender on instance 1."""
    watchers = []
    for k, name in ((0, "Ann"), (1, "Bea"), (1, "Sam")):
        cl = await ChatClient.connect(cluster[k].ws_url)
        await cl.join(room, name)
        watchers.append(Collector(cl))
    return watchers[0], watchers[1], watchers[2]


# 12 MB through Redis: run once (fast path), not again in CI's portable pass, which keeps the
# two tests below for the catch-up on the portable path. CONFIG SET on the one Redis.
@pytest.mark.slow
@pytest.mark.single_redis
async def test_subscriber_dropped_for_output_buffer_catches_up(make_cluster, room):
    """Redis drops a subscriber that fell behind (client-output-buffer-limit pubsub): the stalled
    instance's client still gets all 1,500 messages of 8 KB, once each and in order."""
    cluster = make_cluster(2, env=BIG_ENV)
    r = redis.Redis.from_url(cluster.redis.url)
    r.config_set("client-output-buffer-limit", "pubsub 32kb 0 0")
    r.close()
    ann, bea, sam = await open_pair(cluster, room)
    try:
        cluster[0].signal(signal.SIGSTOP)  # stalled: its subscriber stops reading
        try:
            await send_many(sam, room, 1500, 8000, "big")
        finally:
            cluster[0].signal(signal.SIGCONT)
        ids = stream_ids(cluster.redis.url, room)
        assert len(ids) == 1500
        for who in (ann, bea, sam):
            await who.wait_count(1500, 60)
            assert who.closed is None, f"closed with {who.closed}"
            assert_exactly(ids, who.messages, (who.client is ann.client and "stalled instance's client") or "other")
        log = cluster[0].tail(200)
        assert "subscriber link lost" in log, log
    finally:
        for who in (ann, bea, sam):
            await who.stop()


async def test_client_kill_pubsub_mid_traffic(make_cluster, room):
    """CLIENT KILL TYPE pubsub, three times while 600 messages flow: nobody misses one."""
    cluster = make_cluster(2)
    ann, bea, sam = await open_pair(cluster, room)
    r = redis_client(cluster.redis.url)

    async def killer() -> None:
        for _ in range(3):
            await asyncio.sleep(0.15)
            await asyncio.to_thread(kill_pubsub_links, r)

    try:
        await asyncio.gather(send_many(sam, room, 600, 200, "k"), killer())
        ids = stream_ids(cluster.redis.url, room)
        for who in (ann, bea, sam):
            await who.wait_count(600, 30)
            assert who.closed is None
            assert_exactly(ids, who.messages, "client")
    finally:
        r.close()
        for who in (ann, bea, sam):
            await who.stop()


class CuttingProxy:
    """A TCP proxy on loopback that can cut every connection through it, as a load balancer
    or firewall dropping idle links does (Redis itself stays up)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.discard(writer)
        self.writers.discard(up_writer)

    def cut(self) -> int:
        """Reset every connection through the proxy; returns how many were cut."""
        n = len(self.writers)
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        return n

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.single_redis  # the proxy stands in front of one Redis, and the instance gets a redis:// URL to it
async def test_proxy_cuts_links_mid_traffic(make_cluster, room):
    """A proxy between instance 0 and Redis cuts every link twice while messages flow."""
    from cluster import ChatInstance

    cluster = make_cluster(1)
    proxy = await CuttingProxy(cluster.redis.port).start()
    cut_inst = ChatInstance(cluster.logdir, f"redis://127.0.0.1:{proxy.port}/0", "behind-proxy",
                            env={"CHAT_RATE": "100000/1"})
    await asyncio.to_thread(cut_inst.start)
    try:
        watchers = []
        for inst, name in ((cut_inst, "Ann"), (cluster[0], "Bea"), (cluster[0], "Sam")):
            cl = await ChatClient.connect(inst.ws_url)
            await cl.join(room, name)
            watchers.append(Collector(cl))
        ann, bea, sam = watchers

        async def cutter() -> None:
            for _ in range(2):
                await asyncio.sleep(0.3)
                assert proxy.cut() > 0

        await asyncio.gather(send_many(sam, room, 500, 200, "p"), cutter())
        ids = stream_ids(cluster.redis.url, room)
        for who in watchers:
            await who.wait_count(500, 30)
            assert who.closed is None
            assert_exactly(ids, who.messages, "client")
        for who in watchers:
            await who.stop()
    finally:
        await asyncio.to_thread(cut_inst.stop)
        await proxy.close()


@pytest.mark.parametrize("how", ["since", "no-history", "future-since"])
async def test_catch_up_does_not_replay_to_an_up_to_date_joiner(make_cluster, room, how):
    """A joiner that is told "nothing new" (``since`` = the newest id, or CHAT_HISTORY_ON_JOIN=0)
    on an instance that has dispatched nothing in the room yet must not get the whole stream
    again from the catch-up that follows the next resubscription (seen in the soak test, where
    clients rejoined a restarted instance before its subscriber had caught up). A ``since``
    from the future must not silence the joiner either."""
    env = {"CHAT_HISTORY_ON_JOIN": "0"} if how == "no-history" else {}
    cluster = make_cluster(2, env=env)
    sam = await ChatClient.connect(cluster[0].ws_url)
    ann = await ChatClient.connect(cluster[1].ws_url)
    r = redis_client(cluster.redis.url)
    try:
        await sam.join(room, "Sam")
        for k in range(5):
            await sam.say(room, f"old {k}")
        old = await sam.messages(5)
        since = {"since": old[-1]["id"], "future-since": "99999999999999-0"}.get(how)
        joined = await ann.join(room, "Ann", since=since)
        assert joined["history"] == [] and joined["gap"] is False
        await asyncio.to_thread(kill_pubsub_links, r)
        await asyncio.sleep(0.5)  # both subscribers subscribe again and catch up
        await sam.say(room, "new")
        got = await ann.messages(1)
        assert got[0]["text"] == "new", f"replayed: {got[0]['text']!r}"
        assert not [f for f in await ann.quiet(0.5) if f["type"] == "message"]
    finally:
        r.close()
        await sam.close()
        await ann.close()
