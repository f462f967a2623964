"""Redis behind Sentinel, for real: a primary, two replicas and three sentinels on loopback.

The primary is SIGKILLed while messages flow. Instances follow the new primary with no
client reconnecting; sends during the failover get `unavailable`, never hang; every client
ends with the whole stream once and in order (G1, G5); every message acked `durable: true`
survived (G7).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from client import ChatClient, id_key
from cluster import ChatInstance
from sentinel_cluster import SentinelSet
from test_links import Collector

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture
def sentinels(tmp_path):
    s = SentinelSet(tmp_path).start()
    yield s
    s.close()


@pytest.mark.parametrize("wait", [1, 0],
                         ids=["durable-acks", "plain-acks"])
async def test_failover_loses_nothing_acked_durable(sentinels, tmp_path, room, wait):
    """Without CHAT_REDIS_WAIT_REPLICAS an acked message can be lost with the primary (async
    replication): the test reports how many; with it, none acked durable may be."""
    env = {"CHAT_RATE": "100000/1", "CHAT_REDIS_WAIT_REPLICAS": str(wait), "CHAT_REDIS_WAIT_MS": "500"}
    instances = [ChatInstance(tmp_path, sentinels.url, f"s{k}", env=env) for k in range(2)]
    for inst in instances:
        await asyncio.to_thread(inst.start)
    watchers: list[Collector] = []
    try:
        for k, name in ((0, "Ann"), (1, "Bea"), (1, "Sam")):
            cl = await ChatClient.connect(instances[k].ws_url)
            await cl.join(room, name)
            watchers.append(Collector(cl))
        ann, bea, sam = watchers
        acks: dict[str, dict] = {}
        sent = 0

        async def send_for(seconds: float, until_acked_from: int | None = None, at_most: float = 20.0) -> None:
            """Send every 20 ms for ``seconds``; with ``until_acked_from``, go on (up to
            ``at_most`` s) until a send from that index on has been acked."""
            nonlocal sent
            loop = asyncio.get_running_loop()
            start = loop.time()

            def done() -> bool:
                if loop.time() - start < seconds:
                    return False
                if until_acked_from is None or loop.time() - start > at_most:
                    return True
                return any(int(cid[1:]) >= until_acked_from for cid in sam.ack_at)

            while not done():
                await sam.client.say(room, f"m{sent}", client_id=f"c{sent}")
                sent += 1
                await asyncio.sleep(0.02)

        # Collect acks with their `durable` flag (the Collector keeps only ids).
        await send_for(1.5)
        old = sentinels.primary.port
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        sentinels.primary.kill()
        sent_at_kill = sent
        await send_for(6.0)
        new = await asyncio.to_thread(sentinels.wait_failover, old)
        # On a loaded machine the sentinels may fail over once more (the new primary too slow
        # to answer within down-after), and without WAIT that failover may lose acked messages
        # too. So the last check sends on a primary that stayed put while it ran (and, the
        # instances being slower to find it than the test, until they have).
        final = new
        for _ in range(3):
            settled_from = sent
            await send_for(2.0, until_acked_from=settled_from)
            await asyncio.sleep(1.0)
            now = await asyncio.to_thread(sentinels.wait_failover, old)
            if now == final:
                break
            print(f"\nthe sentinels failed over again: {final} -> {now}")
            final = now
        for f in sam.client.frames:
            if f["type"] == "ack":
                acks[f["client_id"]] = f
        errors = [f for f in sam.client.frames if f["type"] == "error"]
        assert {e["code"] for e in errors} <= {"unavailable"}, errors[:3]
        assert acks, "nothing was acknowledged"
        r = sentinels.client_for(final)
        stream = [sid for sid, _ in r.xrange(f"chat:history:{room}")]
        stored_cids = [json.loads(f["data"]).get("client_id") for _, f in r.xrange(f"chat:history:{room}")]
        r.close()
        durable = [a["id"] for a in acks.values() if a.get("durable") is True]
        lost_acked = [a["id"] for a in acks.values() if a["id"] not in set(stream)]
        if wait:
            assert durable and set(durable) <= set(stream), "a message acked durable was lost in the failover"
        else:
            assert all("durable" not in a for a in acks.values())
        assert len(stored_cids) == len(set(stored_cids)), "a client_id was stored twice"
        # Sends after the failover are stored and delivered again.
        settled = [acks[f"c{k}"]["id"] for k in range(settled_from, sent) if f"c{k}" in acks]
        assert settled and set(settled) <= set(stream), "a send acked by the settled primary was not stored"
        for who in watchers:
            assert who.closed is None, "a client was disconnected by the failover"
            ids = [m["id"] for m in who.messages]
            assert len(ids) == len(set(ids)) and ids == sorted(ids, key=id_key)
            missing = set(stream) - set(ids)
            assert not missing, f"{len(missing)} stored messages never reached a client"
            extra = set(ids) - set(stream)
            # Only a message the old primary took and lost can have reached clients but not
            # the new primary; none of those was acked durable.
            assert not extra & set(durable)
        back = [t for cid, t in sam.ack_at.items() if int(cid[1:]) >= sent_at_kill]
        print(f"\nsentinel failover (WAIT {wait}): {sent} sent, {len(acks)} acked ({len(durable)} durable), "
              f"{len(errors)} unavailable, {len(stream)} in the new primary's stream, {len(lost_acked)} acked "
              f"but lost; first ack after the kill {min(back) - killed_at:.2f} s after it")
        # The instances report healthy on the new primary.
        for inst in instances:
            assert inst.health_status() == 200
    finally:
        try:
            for who in watchers:
                await who.stop()
        finally:  # the instances stop whatever a watcher's stop did
            for inst in instances:
                await asyncio.to_thread(inst.stop)


def test_check_finds_the_primary_through_the_sentinels(sentinels):
    """`quart-chat check` with a redis+sentinel:// URL asks the sentinels for the primary and
    reaches it (what ExecStartPre= runs before an instance starts)."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "quart_chat.cli", "check"], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "REDIS_URL": sentinels.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "primary found through the sentinels (master)" in result.stdout, result.stdout
