"""Soak: about a minute of steady traffic from hundreds of clients over many rooms on three
instances, with a Redis restart and an instance crash (SIGKILL, then started again) in the
middle. Then the books must balance, and memory must go back down once the clients leave.

Run alone with ``pytest -m soak``; it is part of the default run too.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import psutil
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from client import id_key

pytestmark = [pytest.mark.soak, pytest.mark.timeout(300)]

CLIENTS = 300
ROOMS = 30
ROOMS_PER_CLIENT = 2
RATE = 50  # messages per second, over the whole cluster
TRAFFIC_SECONDS = 36
REDIS_RESTART_AT = 10  # seconds into the traffic
REDIS_DOWN_FOR = 1.5
KILL_AT = 22
VICTIM = 1  # the instance that is killed and started again


def group_rss(inst) -> int:
    """Resident memory of an instance's whole process group (parent, worker, helpers)."""
    parent = psutil.Process(inst.proc.pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def group_fds(inst) -> int:
    """Open file descriptors of an instance's process group: every socket it holds."""
    parent = psutil.Process(inst.proc.pid)
    return sum(p.num_fds() for p in [parent, *parent.children(recursive=True)])


class SoakClient:
    """One WebSocket connection that records every frame, and rejoins with `since` if dropped."""

    def __init__(self, idx: int, inst, rooms: list[str]) -> None:
        self.idx = idx
        self.inst = inst
        self.rooms = rooms
        self.name = f"u{idx}"
        self.ws = None
        self.received: dict[str, list[str]] = {r: [] for r in rooms}
        self.acked: dict[str, str] = {}  # client_id -> id, from the echo
        self.refused: set[str] = set()  # client_ids answered `unavailable`
        self.sent = 0
        self.drops = 0
        self.recovered = 0
        self.errors: list[dict] = []
        self.connected = asyncio.Event()
        self.joins: dict[str, asyncio.Future] = {}
        self.reader: asyncio.Task | None = None
        self.stopping = False
        self.reconnecting: asyncio.Task | None = None
        self.dropped_at: float | None = None

    async def connect(self, since: bool = False) -> None:
        self.ws = await asyncio.wait_for(websockets.connect(self.inst.ws_url, max_size=None), 10)
        self.reader = asyncio.create_task(self._read())
        for room in self.rooms:
            frame = {"type": "join", "room": room, "user": self.name}
            if since:
                frame["since"] = self.received[room][-1] if self.received[room] else "0-0"
            self.joins[room] = asyncio.get_running_loop().create_future()
            await self.ws.send(json.dumps(frame))
            joined = await asyncio.wait_for(self.joins[room], 15)
            assert joined["gap"] is False
            self.received[room].extend(m["id"] for m in joined["history"])
        self.connected.set()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                kind = frame["type"]
                if kind == "message":
                    self.received[frame["room"]].append(frame["id"])
                    cid = frame.get("client_id", "")
                    if cid.startswith(f"{self.idx}-"):
                        self.acked[cid] = frame["id"]
                elif kind == "joined":
                    self.joins[frame["room"]].set_result(frame)
                elif kind == "error":
                    if frame["code"] == "unavailable" and "ref" in frame:
                        self.refused.add(frame["ref"])
                    else:
                        self.errors.append(frame)
        except ConnectionClosed:
            pass
        finally:
            self.connected.clear()
            if not self.stopping:
                self.reconnecting = asyncio.create_task(self._reconnect())  # kept: a task needs a reference

    async def _reconnect(self) -> None:
        self.drops += 1
        self.dropped_at = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stopping:
            try:
                await self.connect(since=True)
                self.recovered += 1
                return
            except (TimeoutError, OSError, websockets.InvalidHandshake, ConnectionClosed):
                await asyncio.sleep(0.2 + random.random() * 0.3)

    async def send(self, room: str) -> None:
        cid = f"{self.idx}-{self.sent}"
        self.sent += 1
        try:
            await self.ws.send(json.dumps({"type": "message", "room": room, "text": f"t{cid}", "client_id": cid}))
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        self.stopping = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except Exception:
                pass
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def connect_all(clients: list[SoakClient]) -> None:
    sem = asyncio.Semaphore(50)

    async def one(c: SoakClient) -> None:
        async with sem:
            await c.connect()

    await asyncio.gather(*(one(c) for c in clients))


def make_clients(cluster, rooms: list[str], start: int = 0) -> list[SoakClient]:
    clients = []
    for k in range(CLIENTS):
        idx = start + k
        mine = [rooms[(k * ROOMS_PER_CLIENT + j) % len(rooms)] for j in range(ROOMS_PER_CLIENT)]
        clients.append(SoakClient(idx, cluster[k % len(cluster)], mine))
    return clients


async def test_soak(make_cluster, room):
    c = make_cluster(3, env={"CHAT_HISTORY_MAXLEN": "100000"})
    r = redis.Redis.from_url(c.redis.url, decode_responses=True)
    loop = asyncio.get_running_loop()
    rooms = [f"{room}_s{n}" for n in range(ROOMS)]
    await asyncio.sleep(1.0)
    rss_idle = [group_rss(inst) for inst in c.instances]
    fds_idle = [group_fds(inst) for inst in c.instances]

    clients = make_clients(c, rooms)
    t_connect = loop.time()
    await connect_all(clients)
    connect_seconds = loop.time() - t_connect
    rss_connected = [group_rss(inst) for inst in c.instances]
    fds_connected = [group_fds(inst) for inst in c.instances]

    # ---- steady traffic, with the faults in the middle
    stop_traffic = asyncio.Event()

    async def traffic() -> None:
        rng = random.Random(4)
        tick = 1.0 / RATE
        next_at = loop.time()
        while not stop_traffic.is_set():
            sender = rng.choice(clients)
            if sender.connected.is_set():
                await sender.send(rng.choice(sender.rooms))
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    wall: dict[str, float] = {}

    async def faults() -> dict:
        times = {}
        await asyncio.sleep(REDIS_RESTART_AT)
        wall["redis_stop"] = time.time()
        await asyncio.to_thread(c.redis.restart, REDIS_DOWN_FOR)
        times["redis_restarted"] = loop.time() - t_traffic
        wall["redis_back"] = time.time()
        await asyncio.sleep(KILL_AT - REDIS_RESTART_AT - REDIS_DOWN_FOR)
        times["killed"] = loop.time() - t_traffic
        wall["kill"] = time.time()
        await asyncio.to_thread(c[VICTIM].kill)
        await asyncio.sleep(1.0)  # its clients find it gone for a while
        await asyncio.to_thread(c[VICTIM].start)
        times["victim_back"] = loop.time() - t_traffic
        return times

    t_traffic = loop.time()
    traffic_task = asyncio.create_task(traffic())
    fault_times = await faults()
    await asyncio.sleep(max(0.0, TRAFFIC_SECONDS - (loop.time() - t_traffic)))
    stop_traffic.set()
    await traffic_task
    traffic_seconds = loop.time() - t_traffic

    # ---- let everything arrive: each client has seen up to the last id of each of its rooms
    streams = {}
    deadline = loop.time() + 30
    while True:
        streams = {rm: [(sid, json.loads(f["data"])) for sid, f in r.xrange(f"chat:history:{rm}")] for rm in rooms}
        last = {rm: (entries[-1][0] if entries else None) for rm, entries in streams.items()}
        behind = [(cl.idx, rm) for cl in clients for rm in cl.rooms
                  if last[rm] is not None and (not cl.connected.is_set()
                                               or not cl.received[rm] or cl.received[rm][-1] != last[rm])]
        if not behind or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert not behind, f"{len(behind)} (client, room) pairs never caught up, e.g. {behind[:5]}"

    # ---- the books
    total = sum(len(entries) for entries in streams.values())
    stored_by_cid = {data["client_id"]: (rm, sid) for rm, entries in streams.items() for sid, data in entries}
    acked = {cid: sid for cl in clients for cid, sid in cl.acked.items()}
    refused = set().union(*(cl.refused for cl in clients))
    sent = sum(cl.sent for cl in clients)
    # Every acknowledged message is stored, under the id its echo carried.
    for cid, sid in acked.items():
        assert cid in stored_by_cid and stored_by_cid[cid][1] == sid, cid
    # Nothing refused as `unavailable` was stored, with one exception Redis itself causes:
    # on SIGTERM it runs the commands it has already read, persists them and exits before
    # writing their replies. Such a message is stored and delivered to everyone, its sender
    # included (so a client can tell by its client_id), though the sender was told
    # `unavailable`. It takes a command landing in Redis's last event-loop pass: rare.
    refused_but_stored = sorted(refused & set(stored_by_cid))
    by_idx = {cl.idx: cl for cl in clients}
    for cid in refused_but_stored:
        rm, sid = stored_by_cid[cid]
        assert sid in by_idx[int(cid.split("-")[0])].received[rm], cid
    assert len(refused_but_stored) <= 3, refused_but_stored
    # Every stored message is a real one of ours, once.
    assert len(stored_by_cid) == total
    for rm, entries in streams.items():
        ids = [sid for sid, _ in entries]
        assert ids == sorted(ids, key=id_key)
        assert all(data["room"] == rm and data["text"] == "t" + data["client_id"] for _, data in entries)
    # Every client received every message of its rooms exactly once and in id order: those
    # that stayed connected live, those that dropped through `since` on rejoining.
    steady = [cl for cl in clients if cl.drops == 0]
    dropped = [cl for cl in clients if cl.drops > 0]
    for cl in clients:
        for rm in cl.rooms:
            want = [sid for sid, _ in streams[rm]]
            if cl.received[rm] != want:
                got = cl.received[rm]
                missing = sorted(set(want) - set(got), key=id_key)
                extra = sorted(set(got) - set(want), key=id_key)
                dups = [x for x in set(got) if got.count(x) > 1]
                pos = next(i for i, (a, b) in enumerate(zip(got + [None] * len(want), want)) if a != b)
                sender = {sid: d["client_id"] for sid, d in streams[rm]}
                raise AssertionError(
                    f"client {cl.idx} on {cl.inst.name} (drops {cl.drops} at {cl.dropped_at}) room {rm}: "
                    f"missing {[(m, sender.get(m)) for m in missing]} extra {extra} dups {dups} first diff at {pos}: "
                    f"got {got[max(0, pos - 2):pos + 3]} want {want[max(0, pos - 2):pos + 3]}; faults {wall}")
        assert cl.errors == [], cl.errors[:3]
    victims = [cl for cl in clients if cl.inst is c[VICTIM]]
    assert all(cl.drops >= 1 and cl.recovered == cl.drops for cl in victims)
    assert len(steady) >= CLIENTS - len(victims)  # the Redis restart dropped nobody
    assert len(acked) > 0.8 * sent and len(refused) > 0  # the outage was felt, briefly

    # ---- everybody leaves; memory goes back down
    await asyncio.gather(*(cl.close() for cl in clients))
    await asyncio.sleep(3.0)
    rss_after = [group_rss(inst) for inst in c.instances]
    fds_after = [group_fds(inst) for inst in c.instances]

    # A second round of the same clients, connected and gone again: a leak would show as
    # growth from one round to the next.
    clients2 = make_clients(c, rooms, start=CLIENTS)
    await connect_all(clients2)
    for cl in clients2[:: CLIENTS // 60]:
        await cl.send(cl.rooms[0])
    await asyncio.sleep(1.0)
    rss_connected2 = [group_rss(inst) for inst in c.instances]
    await asyncio.gather(*(cl.close() for cl in clients2))
    await asyncio.sleep(3.0)
    rss_after2 = [group_rss(inst) for inst in c.instances]
    fds_after2 = [group_fds(inst) for inst in c.instances]

    # Members are all gone from Redis (the killed node's through the sweep).
    deadline = loop.time() + 20
    while any(r.hlen(f"chat:members:{rm}") for rm in rooms) and loop.time() < deadline:
        await asyncio.sleep(0.5)
    assert [rm for rm in rooms if r.hlen(f"chat:members:{rm}")] == []
    for inst in c.instances:
        assert inst.health_status() == 200

    mb = lambda xs: [round(x / 2**20, 1) for x in xs]
    figures = {
        "clients": CLIENTS, "rooms": ROOMS, "memberships": CLIENTS * ROOMS_PER_CLIENT,
        "connect_seconds": round(connect_seconds, 1), "traffic_seconds": round(traffic_seconds, 1),
        "sent": sent, "acked": len(acked), "refused_unavailable": len(refused), "stored": total,
        "refused_but_stored": refused_but_stored,
        "deliveries": sum(len(v) for cl in clients for v in cl.received.values()),
        "dropped_clients": len(dropped), "fault_times": {k: round(v, 1) for k, v in fault_times.items()},
        "rss_mb_idle": mb(rss_idle), "rss_mb_connected": mb(rss_connected), "rss_mb_after": mb(rss_after),
        "rss_mb_connected_round2": mb(rss_connected2), "rss_mb_after_round2": mb(rss_after2),
        "fds_idle": fds_idle, "fds_connected": fds_connected, "fds_after": fds_after, "fds_after_round2": fds_after2,
    }
    print("\nSOAK", json.dumps(figures))
    for k in range(len(c)):
        # Every client socket is closed, and the Redis connections a burst of leaving clients
        # needed are bounded (the pool once grew by one per client leaving at the same time).
        assert fds_after[k] <= fds_idle[k] + 60 and fds_after2[k] <= fds_after[k] + 5, figures
    # CPython rarely hands freed memory back to the system, and each connection's objects
    # (Hypercorn's among them) form reference cycles that only the cyclic GC frees, at its
    # own pace: RSS stays near its peak once the clients leave. So the check is that it does
    # not keep growing: not after they left, and not over a second identical round.
    for k in range(len(c)):  # (instance VICTIM restarted mid-test: its idle figure is older)
        grew = max(rss_connected[k] - rss_idle[k], 0)
        assert rss_after[k] <= rss_connected[k] + 8 * 2**20, figures
        assert rss_after2[k] - rss_after[k] < max(grew, 8 * 2**20), figures
    r.close()
