"""``storm`` (``--spawn`` N >= 2 only; always run last): clients in rooms over every instance,
one sender per room on the instances that stay up, then the last instance's process group is
SIGKILLed: its clients rejoin the others with ``since`` (`storm_client`). Reported: the time
until every one of them has rejoined and caught up, the rejoins' latency, and, against each
room's stream read back over REST, messages lost, duplicated or out of order for every
client; how late live messages reached the clients never disconnected meanwhile; this
process's CPU and event-loop lateness during the recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import orjson

from . import stats
from .core import Bench, drain
from .marker import decode, encode, now_us, padding
from .meters import CpuMeter, LoopLag, Sampler
from .procs import log
from .storm_client import Storm, StormConn


async def run(bench: Bench) -> dict[str, Any]:
    """Clients on every instance, messages flowing, the last instance SIGKILLed: its clients
    rejoin the others with ``since``; recovery time, rejoin latency, loss and duplicates."""
    a, opts = bench.a, bench.opts
    urls = list(opts.urls)
    if not a.spawn or len(urls) < 2 or len(opts.pgids) != len(urls):
        raise RuntimeError("storm needs --spawn N (N >= 2): it SIGKILLs one of the instances it started")
    victim = len(urls) - 1
    survivors = urls[:victim]
    rooms = [bench.room(f"storm{k}") for k in range(a.storm_rooms)]
    st = Storm(bench, rooms)
    st.victim_url = urls[victim]
    make = lambda k, url, user: StormConn(st, k, url, user, rooms[k % len(rooms)])
    before = bench.counters.errors
    senders: list[StormConn] = []
    clients: list[StormConn] = []
    send_tasks: list[asyncio.Task[None]] = []
    sampler = Sampler(st.rec, min(a.sample_interval, 0.1))  # a storm lasts a second or two
    by_sampler = Sampler(st.bystanders, min(a.sample_interval, 0.1))
    window = [0, 0]  # the bystanders' latencies from the kill to the recovery
    try:
        # One sender per room, on the instances that stay up; then the clients, on all.
        senders, _ = await bench.connect(len(rooms), rooms, "stormsend", urls=survivors, factory=make)
        for k, c in enumerate(senders):
            st.sender_room[k] = c.room
        clients, connects_s = await bench.connect(a.storm_clients, rooms, "storm", factory=make)
        everyone = clients + senders
        per_room = a.storm_rate / len(rooms)
        send_tasks = [asyncio.create_task(send(st, c, k, per_room, k / a.storm_rate))
                      for k, c in enumerate(senders)]
        sampler.start()
        by_sampler.start()
        await asyncio.sleep(a.storm_before)
        affected = [c for c in clients if c.url == st.victim_url]
        pgid = opts.pgids[victim]
        log(f"storm: SIGKILL of instance {victim} ({st.victim_url}, process group {pgid}), "
            f"{len(affected)} of {len(clients)} clients on it; {a.storm_rate:g} msg/s flowing")
        cpu = CpuMeter(opts.pgids[:victim])  # the survivors and this process, during the recovery
        redis_cpu = CpuMeter([opts.redis_pgid] if opts.redis_pgid else [])
        cpu.start()
        redis_cpu.start()
        lag = LoopLag()
        lag.start()
        st.killed_at = now_us()
        window[0] = len(st.bystanders.latencies)
        os.killpg(pgid, signal.SIGKILL)
        opts.killed.append(pgid)
        opts.urls = survivors  # nothing after this may use it
        opts.pgids = opts.pgids[:victim]
        deadline = time.monotonic() + a.storm_timeout
        while time.monotonic() < deadline and not st.all_caught_up(affected):
            await asyncio.sleep(0.02)
        window[1] = len(st.bystanders.latencies)
        usage = {**cpu.stop(), "cpu_redis_pct": redis_cpu.stop().get("cpu_servers_pct"), **lag.stop()}
        done = [c.caught_at for c in affected if c.caught_at]
        log(f"storm: {len(done)}/{len(affected)} recovered"
            + (f", the last {(max(done) - st.killed_at) / 1e6:.3f} s after the kill" if done else ""))
        await asyncio.sleep(a.storm_after)  # live traffic after the rejoins, checked too
        st.stop_sending = True
        st.senders_stop = now_us()
        await asyncio.gather(*send_tasks, return_exceptions=True)
        await drain(lambda: st.rec.received, lambda: all(
            (c.seqs[-1] if c.seqs else -1) >= st.room_sent.get(c.room, -1) for c in everyone),
            a.drain_idle, a.drain_max)
        sampler.stop()
        by_sampler.stop()
        st.stopping = True
        streams = await asyncio.to_thread(read_streams, st, survivors[0])
    finally:
        st.stop_sending = st.stopping = True
        for t in send_tasks + list(st.tasks):
            t.cancel()
        await bench.close(clients + senders)
    row = summarise(st, clients, senders, affected, streams, connects_s, bench.counters.errors - before, sampler)
    row.update(usage)
    bystanders = stats.latency_summary(st.bystanders.latencies[window[0]:window[1]])
    row.update({f"bystander_{k}": v for k, v in bystanders.items()})
    row["bystander_series"] = by_sampler.series(st.killed_at)
    if (usage.get("cpu_gen_pct") or 0) > 80 or (usage.get("gen_lag_max_ms") or 0) > 100:
        log(f"storm: this generator used {usage['cpu_gen_pct']}% of a core during the recovery and its "
            f"event loop woke up to {usage['gen_lag_max_ms']} ms late: it may have slowed the rejoins itself")
    return row


async def send(st: Storm, c: StormConn, sender_id: int, rate: float, offset: float) -> None:
    """Send to ``c.room`` at ``rate`` until told to stop; a send that fails is counted."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    start = loop.time() + offset
    pad = padding(st.a.text_size)
    seq, k = 0, 0
    while not st.stop_sending:
        delay = start + k * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
            if st.stop_sending:
                break
        k += 1
        try:
            await c.send_text(c.room, encode(now_us(), st.rec.step, sender_id, seq, pad))
        except Exception:
            st.send_failures += 1
            continue
        st.rec.sent += 1
        st.room_sent[c.room] = seq
        seq += 1


def read_streams(st: Storm, ws_url: str) -> dict[str, list[int]]:
    """Each room's stream as the seqs of its sender's messages, oldest first (REST, paged)."""
    parts = urlsplit(ws_url)
    base = f"http://{parts.hostname}:{parts.port}"
    out: dict[str, list[int]] = {}
    for room in st.rooms:
        pages: list[list[int]] = []
        before = None
        for _ in range(100_000):
            query = "limit=500" + (f"&before={before}" if before else "")
            with urllib.request.urlopen(f"{base}/rooms/{room}/history?{query}", timeout=10) as r:
                page = orjson.loads(r.read())
            msgs = page["messages"]
            seqs = []
            for m in msgs:
                found = decode(m.get("text", ""))
                if found is not None and st.sender_room.get(found[2]) == room:
                    seqs.append(found[3])
            pages.append(seqs)
            if not page.get("has_more") or not msgs:
                break
            before = msgs[0]["id"]
        out[room] = [seq for page in reversed(pages) for seq in page]
    return out


def by_instance(affected: list[StormConn], k0: int) -> dict[str, dict[str, Any]]:
    """The rejoins per instance they went to: how many, their latency, the last one's time."""
    out: dict[str, dict[str, Any]] = {}
    for url in sorted({c.url for c in affected if c.joined_at}):
        mine = [c for c in affected if c.joined_at and c.url == url]
        joins = stats.latency_summary([c.join_us for c in mine])
        out[url] = {"rejoined": len(mine), "p50_join_ms": joins["p50_ms"], "p99_join_ms": joins["p99_ms"],
                    "last_joined_s": round(max(c.joined_at for c in mine) / 1e6 - k0 / 1e6, 3)}
    return out


def summarise(st: Storm, clients: list[StormConn], senders: list[StormConn], affected: list[StormConn],
              streams: dict[str, list[int]], connects_s: float, errors: int, sampler: Sampler) -> dict[str, Any]:
    """Compare what each client got with its room's stream, and summarise the storm."""
    lost = dups = ooo = extra = bad = expected = received = 0
    for c in clients + senders:
        want = streams.get(c.room, [])
        got = c.seqs.tolist()
        expected += len(want)
        received += len(got)
        diff = stats.compare_to_stream(got, want)
        bad += any(diff.values())
        lost += diff["lost"]
        dups += diff["duplicates"]
        ooo += diff["ooo"]
        extra += diff["extra"]
    k0 = st.killed_at
    times = sorted((c.caught_at - k0) / 1e6 for c in affected if c.caught_at)
    everyone = len(times) == len(affected)
    joins = sorted(c.join_us for c in affected if c.joined_at)
    detect = [(c.closed_at - k0) / 1000 for c in affected if c.closed_at]
    first_try = [(c.rejoin_t0 - k0) / 1000 for c in affected if c.rejoin_t0]
    pct = lambda q: None if not times else round(stats.percentile(times, q) or 0.0, 3)
    stored = sum(map(len, streams.values()))
    a = st.a
    row = {
        "scenario": "storm", "clients": len(clients), "instances": len(st.urls), "rooms": len(st.rooms),
        "rate_msg_s": a.storm_rate, "backoff_ms": a.storm_backoff, "killed": st.victim_url,
        "connects_s": round(connects_s, 1),
        "affected": len(affected), "recovered": len(times), "unrecovered": len(affected) - len(times),
        "recovery_s": round(times[-1], 3) if times and everyone else None,
        "recover_p50_s": pct(50), "recover_p99_s": pct(99),
        "detect_max_ms": round(max(detect), 1) if detect else None,
        "first_try_max_ms": round(max(first_try), 1) if first_try else None,
        **{k.replace("_ms", "_join_ms"): v for k, v in stats.latency_summary(joins).items()},
        "attempts": sum(c.attempts for c in affected),
        "failed_attempts": sum(c.failed_attempts for c in clients + senders),
        "rejoin_history_max": max((c.rejoin_history for c in affected), default=0),
        "sent": st.rec.sent, "stored": stored, "expected": expected, "received": received,
        "lost": lost, "duplicates": dups, "ooo": ooo, "extra": extra, "foreign": st.foreign,
        "clients_wrong": bad, "errors": errors + st.send_failures + st.reader_errors,
        "closes": st.unexpected_closes,
        **stats.latency_summary(st.rec.latencies),
        "series": sampler.series(k0),
        "senders_stop_s": round((st.senders_stop - k0) / 1e6, 3) if st.senders_stop else None,
        "by_instance": by_instance(affected, k0),
        "recover_times_s": [round(t, 4) for t in times],
        "rejoins": sorted([round((c.joined_at - k0) / 1e6, 4), round(c.join_us / 1000, 2)]
                          for c in affected if c.joined_at),
    }
    log(f"storm: {row['recovered']}/{row['affected']} recovered"
        + (f", all in {row['recovery_s']} s; " if everyone else " (NOT all); ")
        + f"join p50 {row['p50_join_ms']} p99 {row['p99_join_ms']} ms; lost {lost}, duplicates {dups}, "
        f"out of order {ooo}, extra {extra} over {len(clients) + len(senders)} clients "
        f"({stored} messages stored, {st.rec.sent} sent)")
    return row
