"""``capacity``: fanout with the rate stepped up by --factor until p99 > --p99-limit or
anything is lost, errs or closes; then one step between the last rate held and the first
failed (--refine). Reports the highest rate held."""

from __future__ import annotations

import time
from typing import Any

from .conn import BenchConn
from .core import Bench
from .procs import log
from .report import fmt


async def run(bench: Bench) -> dict[str, Any]:
    a = bench.a
    room = bench.room("capacity")
    clients, _ = await bench.connect(a.clients, [room], "capacity")
    steps: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    try:
        await bench.warm_up(clients, room)
        senders = bench.spread_senders(clients, a.senders)
        deadline = time.monotonic() + a.capacity_time
        rate = a.start_rate
        for _ in range(a.max_steps):
            if time.monotonic() + a.step_duration > deadline or rate > a.max_rate:
                break
            row = await step(bench, senders, room, len(clients), rate)
            steps.append(row)
            if row["held"]:
                held = row
                rate *= a.factor
            else:
                failed = row
                break
        if held and failed and a.refine and time.monotonic() + a.step_duration <= deadline:
            mid = (held["offered_rate"] * failed["offered_rate"]) ** 0.5
            row = await step(bench, senders, room, len(clients), mid)
            steps.append(row)
            if row["held"]:
                held = row
            else:
                failed = row
    finally:
        await bench.close(clients)
    best = held or {}
    return {"scenario": "capacity", "clients": len(clients), "senders": len(senders),
            "capacity_msg_s": best.get("offered_msg_s"), "capacity_deliveries_s": best.get("deliveries_s"),
            "p50_ms": best.get("p50_ms"), "p90_ms": best.get("p90_ms"), "p99_ms": best.get("p99_ms"),
            "max_ms": best.get("max_ms"), "lost": best.get("lost"), "errors": best.get("errors"),
            "cpu_servers_pct": best.get("cpu_servers_pct"), "cpu_gen_pct": best.get("cpu_gen_pct"),
            "failed_at_msg_s": failed.get("offered_msg_s") if failed else None,
            "fail_reason": failed.get("fail_reason") if failed else None,
            "p99_limit_ms": a.p99_limit, "steps": steps}


async def step(bench: Bench, senders: list[BenchConn], room: str, members: int, rate: float) -> dict[str, Any]:
    """One step at ``rate`` msg/s in all; ``held`` says whether it kept within the limits."""
    a = bench.a
    row = await bench.step([(c, room, rate / len(senders)) for c in senders], {room: members},
                           a.step_duration, f"capacity step {rate:.1f} msg/s")
    row["offered_rate"] = rate
    reasons = []
    if row["p99_ms"] is None or row["p99_ms"] > a.p99_limit:
        reasons.append(f"p99 {fmt(row['p99_ms'])} ms > {a.p99_limit:g} ms")
    reasons += [f"{k} {row[k]}" for k in ("lost", "errors", "closes") if row[k]]
    row["held"] = not reasons
    row["fail_reason"] = ", ".join(reasons) or None
    log(f"  -> {'held' if row['held'] else 'failed: ' + row['fail_reason']}")
    return row
