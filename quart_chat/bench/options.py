"""The command line of ``quart-chat bench``: the options, their defaults and their bounds."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from ..forwarded import is_loopback

SCENARIOS = ("fanout", "capacity", "rooms", "idle", "joinstorm", "storm")
MAX_CLIENTS = 20000
MAX_DURATION = 600.0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default after its help (none
    shown where there is none to show: unset, off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default in (None, []) or action.default is False
                or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from . import __doc__ as description  # the package's docstring is the help's text

    p = argparse.ArgumentParser(prog="quart-chat bench", description=description, formatter_class=HelpFormatter)
    t = p.add_argument_group("targets")
    t.add_argument("--url", action="append", default=[], help="a running instance's ws URL (repeatable)")
    t.add_argument("--pid", action="append", type=int, default=[],
                   help="process id of a running instance (repeatable): its process group's RSS/CPU is read")
    t.add_argument("--spawn", type=int, default=0, metavar="N", help="start a Redis and N instances here")
    t.add_argument("--hypercorn-arg", action="append", default=[],
                   help="extra argument for spawned hypercorn (repeatable), e.g. --hypercorn-arg=-kuvloop")
    t.add_argument("--allow-remote", action="store_true", help="allow --url hosts that are not loopback")
    t.add_argument("--keep-logs", action="store_true",
                   help="keep the spawned processes' log folder (in the temporary directory) after a run "
                        "that succeeded; after a failed one it is always kept, and its path printed")
    p.add_argument("--scenario", default="fanout", help=f"comma-separated: {','.join(SCENARIOS)} or all")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-' = stdout)")
    p.add_argument("--max-time", type=float, default=900, help="hard limit on the whole run, seconds")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw latency percentiles and deliveries/s over time, one line per step, as a PNG "
                        "(needs matplotlib: pip install 'quart_chat[plot]')")
    p.add_argument("--sample-interval", type=float, default=0.5,
                   help="seconds between the samples of a step's time series")
    g = p.add_argument_group("fanout / capacity")
    g.add_argument("--clients", type=int, default=300, help="clients, all in one room")
    g.add_argument("--senders", type=int, default=0, help="how many of them send; 0: one per instance")
    g.add_argument("--rate", type=float, default=30, help="fanout: total messages per second")
    g.add_argument("--duration", type=float, default=10, help="fanout, rooms: seconds of sending")
    g.add_argument("--start-rate", type=float, default=10, help="capacity: total messages per second of the first step")
    g.add_argument("--factor", type=float, default=1.5, help="capacity: each step's rate over the previous one's")
    g.add_argument("--step-duration", type=float, default=6, help="capacity: seconds of sending per step")
    g.add_argument("--max-steps", type=int, default=20, help="capacity: at most this many steps")
    g.add_argument("--max-rate", type=float, default=5000, help="capacity: no step above this rate, msg/s")
    g.add_argument("--p99-limit", type=float, default=100, help="capacity: a step holds while its p99 is within, ms")
    g.add_argument("--capacity-time", type=float, default=300, help="seconds for all capacity steps")
    g.add_argument("--refine", type=int, default=1, help="1: one step between last held and first failed")
    r = p.add_argument_group("rooms")
    r.add_argument("--rooms", type=int, default=100, help="rooms, one sender in each")
    r.add_argument("--room-clients", type=int, default=10, help="clients per room")
    r.add_argument("--room-rate", type=float, default=1, help="messages per second per room")
    i = p.add_argument_group("idle")
    i.add_argument("--idle-per-instance", type=int, default=1000, help="idle clients per instance")
    i.add_argument("--idle-rooms", type=int, default=100, help="rooms they join")
    i.add_argument("--idle-settle", type=float, default=3, help="seconds to wait before reading RSS")
    j = p.add_argument_group("joinstorm")
    j.add_argument("--join-clients", type=int, default=500, help="clients joining the room")
    j.add_argument("--join-concurrency", type=int, default=500, help="of them joining at once")
    j.add_argument("--history", type=int, default=50, help="messages stored in the room before the storm")
    s = p.add_argument_group("storm (needs --spawn N >= 2; runs last: it kills the last instance)")
    s.add_argument("--storm-clients", type=int, default=3000, help="clients over all instances")
    s.add_argument("--storm-rooms", type=int, default=30, help="rooms they are spread over")
    s.add_argument("--storm-rate", type=float, default=60,
                   help="total messages per second flowing, one sender per room")
    s.add_argument("--storm-before", type=float, default=2, help="seconds of traffic before the kill")
    s.add_argument("--storm-after", type=float, default=1, help="seconds of traffic after all recovered")
    s.add_argument("--storm-timeout", type=float, default=30, help="seconds allowed for the recovery")
    s.add_argument("--storm-backoff", type=float, default=500,
                   help="ms: first reconnect delay base, as the page's (delay in [base/2, base], doubling "
                        "to 10 s); 0 reconnects at once")
    m = p.add_argument_group("misc")
    m.add_argument("--text-size", type=int, default=64,
                   help="length of each message's text (at least the ~40 of its header)")
    m.add_argument("--stagger", type=int, default=1, help="1: spread senders over the period")
    m.add_argument("--connect-concurrency", type=int, default=50, help="connections opened at once")
    m.add_argument("--connect-timeout", type=float, default=30, help="seconds allowed for each connect and each join")
    m.add_argument("--drain-idle", type=float, default=3,
                   help="after sending, stop waiting for deliveries once none came for this many seconds")
    m.add_argument("--drain-max", type=float, default=20, help="after sending, wait at most this many seconds")
    return p


def check_args(a: argparse.Namespace) -> list[str]:
    """Validate bounds and targets; returns the scenarios to run. Raises SystemExit on misuse."""
    scenarios = list(SCENARIOS) if a.scenario == "all" else [s.strip() for s in a.scenario.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenario(s): {', '.join(bad)}")
    if not a.url and not a.spawn:
        raise SystemExit("give --url (repeatable) or --spawn N")
    if a.url and a.spawn:
        raise SystemExit("--url and --spawn exclude each other")
    if not 0 <= a.spawn <= 16:
        raise SystemExit("--spawn takes 1 to 16 instances")
    for url in a.url:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise SystemExit(f"--url must be ws://HOST:PORT/ws, got {url!r}")
        if not a.allow_remote and not loopback_host(parts.hostname):
            raise SystemExit(f"{url}: not a loopback address (pass --allow-remote to load another host)")
    total = max(a.clients, a.rooms * a.room_clients, a.idle_per_instance * max(len(a.url), a.spawn), a.join_clients,
                a.storm_clients + a.storm_rooms)
    if total > MAX_CLIENTS:
        raise SystemExit(f"at most {MAX_CLIENTS} clients")
    if "storm" in scenarios:
        if a.spawn < 2:
            raise SystemExit("the storm scenario SIGKILLs one of the instances it started: give --spawn N (N >= 2)")
        if a.storm_clients < 1 or a.storm_rooms < 1 or a.storm_rate <= 0 or a.storm_backoff < 0:
            raise SystemExit("--storm-clients, --storm-rooms and --storm-rate must be > 0")
        if not (0 < a.storm_before <= 120 and 0 <= a.storm_after <= 120 and 0 < a.storm_timeout <= 300):
            raise SystemExit("--storm-before/--storm-after/--storm-timeout out of bounds")
        scenarios = [s for s in scenarios if s != "storm"] + ["storm"]  # it leaves an instance dead
    if not 0.05 <= a.sample_interval <= 10:
        raise SystemExit("--sample-interval takes 0.05 to 10 s")
    if a.plot:
        from .plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as err:
            raise SystemExit(str(err)) from None
    for name in ("duration", "step_duration", "capacity_time", "max_time"):
        if not 0 < getattr(a, name) <= max(MAX_DURATION, 3600 if name == "max_time" else 0):
            raise SystemExit(f"--{name.replace('_', '-')} out of bounds")
    if a.rate <= 0 or a.start_rate <= 0 or a.factor <= 1 or a.room_rate <= 0:
        raise SystemExit("rates must be > 0 and --factor > 1")
    return scenarios


def loopback_host(host: str) -> bool:
    """``localhost``, or an address of 127.0.0.0/8 or ::1."""
    return host == "localhost" or is_loopback(host)
