"""The `ack` frame and idempotent send (G8), and what frames to clients never carry.

Real Redis, real instances: a resend from a new connection on another instance, two resends
racing on two instances, an instance SIGKILLed between storing and acking, the window.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
import redis

from client import ChatClient

pytestmark = pytest.mark.timeout(90)


def stream(cluster_or_url, room: str) -> list[dict]:
    url = cluster_or_url if isinstance(cluster_or_url, str) else cluster_or_url.redis.url
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [{"id": sid, **json.loads(f["data"])} for sid, f in r.xrange(f"chat:history:{room}")]
    finally:
        r.close()


async def test_ack_carries_the_stored_id(cluster, room):
    a = await ChatClient.connect(cluster[0].ws_url)
    b = await ChatClient.connect(cluster[1].ws_url)
    try:
        await a.join(room, "Ann")
        await b.join(room, "Bob")
        await a.say(room, "hi", client_id="m1")
        ack = await a.until(lambda f: f["type"] == "ack")
        assert set(ack) == {"type", "client_id", "id"} and ack["client_id"] == "m1"
        [msg] = await b.messages(1)
        assert msg["id"] == ack["id"]
        await b.say(room, "no id")  # no client_id, no ack
        await b.messages(1)
        await b.send({"type": "ping"})
        assert (await b.until(lambda f: f["type"] in ("ack", "pong")))["type"] == "pong"
    finally:
        await a.close()
        await b.close()


async def test_resend_from_another_instance_is_stored_once(cluster, room):
    """The same client_id, resent by the same user from a new connection on another instance:
    one stored, one delivered, both sends acked with the same id."""
    a = await ChatClient.connect(cluster[0].ws_url)
    watcher = await ChatClient.connect(cluster[2].ws_url)
    try:
        await watcher.join(room, "Wat")
        await a.join(room, "Ann")
        await a.say(room, "only once", client_id="once-1")
        first = await a.until(lambda f: f["type"] == "ack")
        await a.close()
        again = await ChatClient.connect(cluster[1].ws_url)
        await again.join(room, "Ann")
        await again.say(room, "only once", client_id="once-1")
        second = await again.until(lambda f: f["type"] == "ack")
        assert second["id"] == first["id"]
        got = await watcher.messages(1)
        await asyncio.sleep(1.0)  # long enough for a late duplicate to show
        late = [f for f in await watcher.quiet(0.5) if f["type"] == "message"]
        assert [m["id"] for m in got + late] == [first["id"]]
        assert len(stream(cluster, room)) == 1
        # Another user's identical client_id is another message.
        other = await ChatClient.connect(cluster[1].ws_url)
        await other.join(room, "Otto")
        await other.say(room, "only once", client_id="once-1")
        third = await other.until(lambda f: f["type"] == "ack")
        assert third["id"] != first["id"] and len(stream(cluster, room)) == 2
        await other.close()
        await again.close()
    finally:
        await watcher.close()


async def test_two_resends_racing_on_two_instances(cluster, room):
    """Thirty client_ids, each sent at once through two instances: thirty stored, in order."""
    a = await ChatClient.connect(cluster[0].ws_url)
    b = await ChatClient.connect(cluster[1].ws_url)
    try:
        await a.join(room, "Ann")
        await b.join(room, "Ann")
        for k in range(30):
            cid = f"race-{k}"
            await asyncio.gather(a.say(room, f"m{k}", client_id=cid), b.say(room, f"m{k}", client_id=cid))

        async def acks(cl: ChatClient) -> dict[str, str]:
            got: dict[str, str] = {}
            while len(got) < 30:
                f = await cl.until(lambda f: f["type"] == "ack", timeout=10)
                got[f["client_id"]] = f["id"]
            return got

        acks_a, acks_b = await asyncio.gather(acks(a), acks(b))
        assert acks_a == acks_b
        stored = stream(cluster, room)
        assert sorted(m["client_id"] for m in stored) == sorted(f"race-{k}" for k in range(30))
        assert {m["id"] for m in stored} == set(acks_a.values())
    finally:
        await a.close()
        await b.close()


async def test_dedupe_window_is_honoured(make_cluster, room):
    """CHAT_DEDUPE_SECONDS=2: within the window a resend is a duplicate, after it a new message."""
    cluster = make_cluster(1, env={"CHAT_DEDUPE_SECONDS": "2"})
    a = await ChatClient.connect(cluster[0].ws_url)
    try:
        await a.join(room, "Ann")
        await a.say(room, "x", client_id="w")
        first = (await a.until(lambda f: f["type"] == "ack"))["id"]
        await a.say(room, "x", client_id="w")
        assert (await a.until(lambda f: f["type"] == "ack"))["id"] == first
        r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
        ttl = r.ttl(f"chat:sent:{room}:3:Annw")
        r.close()
        assert 0 < ttl <= 2
        await asyncio.sleep(2.5)
        await a.say(room, "x", client_id="w")
        assert (await a.until(lambda f: f["type"] == "ack"))["id"] != first
        assert len(stream(cluster, room)) == 2
    finally:
        await a.close()


async def test_sigkill_between_store_and_ack_then_resend_elsewhere(make_cluster, room):
    """The instance dies right after Redis stored the message (its ack never leaves): the
    client resends through another instance and gets the first id; everyone sees it once."""
    cluster = make_cluster(2)
    watcher = await ChatClient.connect(cluster[1].ws_url)
    a = await ChatClient.connect(cluster[0].ws_url)
    try:
        await watcher.join(room, "Wat")
        await a.join(room, "Ann")
        await a.say(room, "warm-up", client_id="k0")  # the script is loaded in Redis from now on
        await a.until(lambda f: f["type"] == "ack")
        await watcher.messages(1)
        watcher.frames.clear()
        # Redis frozen: the instance sends the script and waits. Freeze the instance, let Redis
        # run the script (stored and published), then kill the instance: the ack never leaves.
        cluster.redis.signal(signal.SIGSTOP)
        try:
            await a.say(room, "lost ack", client_id="k1")
            await asyncio.sleep(0.4)
            cluster[0].signal(signal.SIGSTOP)
        finally:
            cluster.redis.signal(signal.SIGCONT)
        r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
        deadline = time.monotonic() + 5
        while r.xlen(f"chat:history:{room}") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cluster[0].kill()
        stored = stream(cluster, room)[1:]
        assert len(stored) == 1, "the message was not stored before the kill: this test checked nothing"
        assert [f["client_id"] for f in a.frames if f["type"] == "ack"] == ["k0"]
        b = await ChatClient.connect(cluster[1].ws_url)
        await b.join(room, "Ann")
        await b.say(room, "lost ack", client_id="k1")
        ack = await b.until(lambda f: f["type"] == "ack")
        assert ack["id"] == stored[0]["id"]
        after = stream(cluster, room)[1:]
        assert len(after) == 1 and after[0]["id"] == ack["id"]
        msgs = [f for f in watcher.frames if f["type"] == "message"]
        msgs += [f for f in await watcher.quiet(1.0) if f["type"] == "message"]
        assert [m["id"] for m in msgs] == [ack["id"]]
        r.close()
        await b.close()
    finally:
        await watcher.close()


async def test_frames_carry_no_instance_or_connection_ids(cluster, room):
    """No origin, host name, pid or connection key in anything a client receives."""
    a = await ChatClient.connect(cluster[0].ws_url)
    b = await ChatClient.connect(cluster[1].ws_url)
    try:
        await b.join("lobby_" + room, "Bob")
        await a.join(room, "Ann")
        await b.join(room, "Bob")
        await a.say(room, "hi", client_id="x")
        await b.messages(1)
        await a.until(lambda f: f["type"] == "message")
        await b.send({"type": "leave", "room": room})
        await a.until(lambda f: f["type"] == "user_left")
        await a.send({"type": "ping"})
        await a.expect("pong")
        names = [inst.name for inst in cluster.instances]  # what the instances call themselves
        for frame in a.frames + b.frames:
            assert "origin" not in frame and "session" not in frame, frame
            text = json.dumps(frame)
            assert not any(n in text for n in names) and "|" not in text, frame
        kinds = {f["type"] for f in a.frames + b.frames}
        assert {"joined", "message", "user_joined", "user_left", "room_created", "ack"} <= kinds
    finally:
        await a.close()
        await b.close()


def test_embedded_redis_password_not_on_command_line(tmp_path):
    """The demo's embedded Redis reads its password from stdin, not from argv (any local
    user can read /proc/<pid>/cmdline)."""
    from quart_chat.embedded import start_redis
    from quart_chat.procs import free_port, stop_group

    port = free_port()
    proc = start_redis(f"redis://:t0p-s3cret@127.0.0.1:{port}/0", log_path=tmp_path / "r.log", data=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert redis.Redis(port=port, password="t0p-s3cret", socket_timeout=1).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"t0p-s3cret" not in f.read()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
    finally:
        stop_group(proc)
