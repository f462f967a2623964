"""/metrics scraped with prometheus_client's own parser: every counter moves by exactly what
the test did. The JSON log parsed line by line. The alerting rules checked by promtool."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis
import websockets

from client import ChatClient
from cluster import scrape
from test_faults import RawWebSocket
from test_links import Collector, send_many

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent


def moved(before: dict, after: dict, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def test_counters_move_by_exactly_what_happened(make_cluster, room):
    cluster = make_cluster(2)
    a0, a1 = scrape(cluster[0]), scrape(cluster[1])
    ann = await ChatClient.connect(cluster[0].ws_url)
    amy = await ChatClient.connect(cluster[0].ws_url)
    bob = await ChatClient.connect(cluster[1].ws_url)
    try:
        for cl, name in ((ann, "Ann"), (amy, "Amy"), (bob, "Bob")):
            await cl.join(room, name)
        for k in range(5):
            await ann.say(room, f"m{k}", client_id=f"c{k}")
        await ann.say(room, "m0", client_id="c0")  # a resend: G8, not stored again
        await bob.messages(5)
        await amy.messages(5)
        await ann.send({"type": "nope"})
        await ann.send({"type": "message", "room": "elsewhere", "text": "x"})
        await ann.send({"type": "ping"})
        await ann.until(lambda f: f["type"] == "pong")
        b0, b1 = scrape(cluster[0]), scrape(cluster[1])
        assert moved(a0, b0, "quart_chat_messages_sent_total") == 5
        assert moved(a0, b0, "quart_chat_messages_duplicate_total") == 1
        assert moved(a1, b1, "quart_chat_messages_sent_total") == 0
        assert moved(a0, b0, "quart_chat_messages_delivered_total") == 10  # Ann and Amy
        assert moved(a1, b1, "quart_chat_messages_delivered_total") == 5  # Bob
        assert moved(a1, b1, "quart_chat_delivery_lag_seconds_count") == 5
        assert moved(a0, b0, 'quart_chat_errors_total{code="unknown_type"}') == 1
        assert moved(a0, b0, 'quart_chat_errors_total{code="not_joined"}') == 1
        assert moved(a0, b0, "quart_chat_join_seconds_count") == 2
        assert moved(a0, b0, "quart_chat_redis_append_seconds_count") == 6
        assert b0["quart_chat_connections"] == 2 and b1["quart_chat_connections"] == 1
        assert b0["quart_chat_rooms_local"] == 1
        assert b0["quart_chat_redis_up"] == 1 and b0["quart_chat_subscriber_up"] == 1
        assert b0["process_open_fds"] > 0
    finally:
        for cl in (ann, amy, bob):
            await cl.close()


async def test_reconnect_and_catchup_are_counted(make_cluster, room):
    """Redis drops instance 0's subscriber (output buffer): one reconnect, and every message
    reaches its client once, some of them by catch-up."""
    cluster = make_cluster(2, env={"CHAT_MAX_TEXT": "9000", "CHAT_HISTORY_MAXLEN": "2000"})
    r = redis.Redis.from_url(cluster.redis.url)
    r.config_set("client-output-buffer-limit", "pubsub 32kb 0 0")
    r.close()
    before = scrape(cluster[0])
    ann_client = await ChatClient.connect(cluster[0].ws_url)
    sam_client = await ChatClient.connect(cluster[1].ws_url)
    await ann_client.join(room, "Ann")
    await sam_client.join(room, "Sam")
    ann, sam = Collector(ann_client), Collector(sam_client)
    try:
        cluster[0].signal(signal.SIGSTOP)
        try:
            # More than the kernel's socket buffers hold, so Redis's own buffer passes 32 kB.
            await send_many(sam, room, 1200, 8000, "x")
        finally:
            cluster[0].signal(signal.SIGCONT)
        await ann.wait_count(1200, 30)
        assert len(ann.messages) == 1200
        after = scrape(cluster[0])
        assert moved(before, after, "quart_chat_subscriber_reconnects_total") == 1
        assert moved(before, after, "quart_chat_messages_delivered_total") == 1200
        assert 0 < moved(before, after, "quart_chat_catchup_messages_total") <= 1200
    finally:
        await ann.stop()
        await sam.stop()


async def test_slow_consumer_drop_is_counted(make_cluster, room):
    cluster = make_cluster(1, env={"CHAT_SEND_QUEUE": "50"})
    before = scrape(cluster[0])
    slow = await asyncio.to_thread(RawWebSocket, "127.0.0.1", cluster[0].port)
    slow.send_text(json.dumps({"type": "join", "room": room, "user": "Slow"}))
    sender = await ChatClient.connect(cluster[0].ws_url)
    try:
        await sender.join(room, "Fast")
        big = "y" * 1900
        for k in range(3000):
            await sender.say(room, big)
            if k % 100 == 0:
                await asyncio.sleep(0.01)
        for _ in range(100):
            after = scrape(cluster[0])
            if moved(before, after, "quart_chat_slow_consumer_drops_total"):
                break
            await asyncio.sleep(0.1)
        assert moved(before, after, "quart_chat_slow_consumer_drops_total") == 1
        assert moved(before, after, 'quart_chat_closes_total{close_code="1013"}') == 1
        assert "closed a WebSocket from 127.0.0.1 with 1013" in cluster[0].tail(50)
    finally:
        slow.sock.close()
        await sender.close()


async def test_workers_add_up(make_cluster, room):
    """hypercorn -w 2: a scrape reaches one worker, and still counts the whole instance."""
    from cluster import ChatInstance

    cluster = make_cluster(1)
    inst = ChatInstance(cluster.logdir, cluster.redis.url, "two-workers", env={"CHAT_RATE": "100000/1"})
    inst.workers = 2
    await asyncio.to_thread(inst.start)
    clients = []
    try:
        for k in range(12):
            cl = await ChatClient.connect(inst.ws_url)
            await cl.join(room, f"u{k}")
            clients.append(cl)
        await asyncio.sleep(2.5)  # every worker has shared its numbers by now
        seen = set()
        for _ in range(6):
            m = scrape(inst)
            seen.add(m["quart_chat_workers"])
            assert m["quart_chat_connections"] == 12, m["quart_chat_connections"]
            assert m["quart_chat_join_seconds_count"] == 12
        assert seen == {2.0}
    finally:
        for cl in clients:
            await cl.close()
        await asyncio.to_thread(inst.stop)


async def test_json_log_lines(make_cluster, room, tmp_path):
    """CHAT_LOG_FORMAT=json: every line of ours is one JSON object with time, level, logger
    and event; abnormal closes and refusals carry their fields; never a text or password."""
    from cluster import RedisProcess

    redis_proc = RedisProcess(tmp_path, password="pw-never-logged").start()
    try:
        cluster = make_cluster(1, env={"CHAT_LOG_FORMAT": "json"}, redis=redis_proc)
        secret = "text-never-logged-4242"
        cl = await ChatClient.connect(cluster[0].ws_url)
        await cl.join(room, "Ann")
        await cl.say(room, secret)
        await cl.messages(1)
        await cl.send("x" * 20000)  # over CHAT_MAX_FRAME: closed with 1009
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await cl.recv(5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(cluster[0].ws_url, origin="http://evil.example")
        await asyncio.sleep(0.5)
        lines = [ln for ln in cluster[0].log_path.read_text().splitlines() if ln.startswith("{")]
        entries = [json.loads(ln) for ln in lines]  # each line parses on its own
        assert entries and all({"time", "level", "logger", "event"} <= set(e) for e in entries)
        assert any(e["event"].startswith("instance ") for e in entries)
        close = [e for e in entries if e.get("close_code") == 1009]
        assert close and close[0]["client"] == "127.0.0.1" and close[0]["level"] == "warning"
        refused = [e for e in entries if e.get("reason") == "origin"]
        assert refused and refused[0]["status"] == 403
        text = cluster[0].log_path.read_text()
        assert secret not in text and "pw-never-logged" not in text
    finally:
        redis_proc.stop()


def test_alerting_rules_pass_promtool():
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: CI must install Debian's prometheus package")
        pytest.skip("promtool (Debian package prometheus) not installed")
    rules = ROOT / "deploy" / "prometheus-alerts.yml"
    check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "prometheus-alerts.test.yml"], cwd=rules.parent,
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr


def test_share_folders_of_dead_parents_are_swept(tmp_path):
    """A Hypercorn parent killed with SIGKILL leaves its workers' share folder behind: the next
    worker to start removes it, and leaves a live parent's folder alone."""
    from quart_chat.metrics import sweep_stale

    gone = subprocess.Popen(["true"])
    gone.wait()
    prefix = "quart_chat-metrics-0-"
    dead = tmp_path / f"{prefix}{gone.pid}"
    live = tmp_path / f"{prefix}{os.getpid()}"
    other = tmp_path / "someone-else"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "123.json").write_text("{}")
    (dead / ".123.tmp").write_text("{")
    sweep_stale(tmp_path, prefix)
    assert not dead.exists()
    assert (live / "123.json").exists() and (other / "123.json").exists()
