"""The open-file limit: raised at start-up, and never a silent ceiling on connections.

Every WebSocket connection costs this process one file descriptor (its socket). Once the
process has as many open as its soft ``RLIMIT_NOFILE``, ``accept()`` fails with EMFILE, and
neither event loop says so usefully: uvloop's libuv accepts the waiting connections and
closes them at once (its "EMFILE trick"; Python never hears of it), while the standard loop
stops accepting for a second and logs a traceback each time. Clients see resets or timeouts,
and the instance looks healthy. So this module:

- lifts the soft limit to the hard one at start-up (`raise_nofile_limit`), as Go's runtime
  and nginx's ``worker_rlimit_nofile`` do. Systems keep the soft limit at 1,024 for programs
  that use ``select()`` (it cannot watch descriptors above 1,023); nothing here does.
- keeps a reserve of descriptors (`reserve_for`): near the limit, `FdGuard.check` has the
  ``/ws`` view answer new handshakes with HTTP 503 before accepting them, so the client
  learns why, and the reserve keeps ``/healthz``, Redis reconnects and those very 503
  answers working.
- counts and reports the ``accept()`` failures an event loop does report
  (`FdGuard.watch_accept_errors`), and looks at the count every few seconds, since sockets
  that never become WebSockets (idle TCP, HTTP) can use up the descriptors too, and uvloop
  would then turn every new connection away without a word.

Refusals are counted by reason in `Refusals` (for ``/healthz`` now, ``/metrics`` later) and
logged at most once a minute, with the number of those left out.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quart import Response, current_app

from .asgi import chain_exception_handler

log = logging.getLogger("quart_chat.fdlimit")

# Key of this process's `FdGuard` in ``app.extensions``.
EXTENSION = "quart_chat.fdlimit"
INFINITY = resource.RLIM_INFINITY
# Below this many descriptors the start-up log warns: a deployment would hold only a few
# thousand connections per instance and then refuse the rest.
LOW = 4096
# The reserve: descriptors never handed to new WebSocket connections. At least enough for a
# full listen backlog (Hypercorn's default is 100) of handshakes being refused at once, and
# a few percent of larger limits; capped, since a million-descriptor limit needs no 30,000.
RESERVE_MIN = 128
RESERVE_SHARE = 32  # 1/32 of the limit, about 3 %
RESERVE_MAX = 4096
# macOS refuses soft limits above OPEN_MAX whatever the hard limit says.
OPEN_MAX_DARWIN = 10240
# One warning per this many seconds and kind; the next one says how many were left out.
LOG_EVERY = 60.0
# How stale the measured count of open descriptors may be: near the reserve, and anywhere;
# but never measured more often than to spend 1/SAMPLE_COST_SHARE of the time on it (before
# Linux 6.2 a count lists /proc/self/fd: about 1 us per descriptor, 70 ms at 60,000).
SAMPLE_NEAR = 0.1
SAMPLE_FAR = 2.0
SAMPLE_COST_SHARE = 100
WATCH_EVERY = 5.0  # seconds between looks when no handshake asks
RETRY_AFTER = 10  # seconds, in the 503's Retry-After header

# Refusal reasons, the keys of `Refusals`.
REASON_HANDSHAKE = "fd_limit"  # answered 503 before accept: the client was told
REASON_ACCEPT = "fd_accept"  # accept() itself failed and the event loop reported it
HINT = ("raise the hard limit: LimitNOFILE= in a systemd unit, --ulimit nofile= for a container "
        "(docs/deploying.md: open files)")


@dataclass(frozen=True)
class NofileLimit:
    """The open-file limit in effect (`INFINITY` = none) and the soft limit found at start-up."""

    soft: int
    hard: int
    was: int


def _nr_open() -> int | None:
    # Linux's ceiling on any process's descriptors; setrlimit refuses more than this.
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def raise_nofile_limit(getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
                       setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
                       nr_open: int | None = None) -> NofileLimit:
    """Raise this process's soft ``RLIMIT_NOFILE`` as far as the hard limit allows.

    Tries the hard limit itself, then (for a hard limit the kernel will not grant as a soft
    one, such as infinity) Linux's ``fs.nr_open`` and macOS's ``OPEN_MAX``. Never lowers
    anything and never raises: when nothing can be granted the limit is left as it was.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft == INFINITY:
        return NofileLimit(soft, hard, soft)
    if nr_open is None:
        nr_open = _nr_open()
    candidates = [c for c in (hard, nr_open, OPEN_MAX_DARWIN) if c is not None and c != INFINITY]
    for target in sorted(set(candidates), reverse=True):
        if target <= soft:
            break
        if hard != INFINITY and target > hard:
            continue
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return NofileLimit(target, hard, soft)
    return NofileLimit(soft, hard, soft)


def reserve_for(limit: int) -> int:
    """Descriptors kept back from new WebSocket connections under a soft limit of ``limit``."""
    return min(max(RESERVE_MIN, limit // RESERVE_SHARE), RESERVE_MAX)


def count_open_fds() -> int | None:
    """How many descriptors this process has open; None where that cannot be read.

    Linux 6.2 and newer give the count as the size of ``/proc/self/fd`` (no scan, no
    descriptor needed); otherwise the directory is listed, which costs about a microsecond
    per descriptor and one descriptor itself, so it raises ``OSError`` (EMFILE) at the limit.
    """
    try:
        size = os.stat("/proc/self/fd").st_size
        if size > 0:
            return size
    except OSError:
        pass
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            with os.scandir(path) as entries:
                return sum(1 for _ in entries) - 1  # not counting the scan's own descriptor
        except OSError as err:
            if err.errno in (errno.EMFILE, errno.ENFILE):
                raise
    return None


class Throttle:
    """Let one event through per ``every`` seconds, counting the ones held back."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.held = 0
        self._next = float("-inf")

    def allow(self) -> int | None:
        """None when this event is held back; else how many were held back before it."""
        now = self.clock()
        if now < self._next:
            self.held += 1
            return None
        self._next = now + self.every
        held, self.held = self.held, 0
        return held


class Refusals(Counter):
    """Connections refused, by reason (``fd_limit``, ``fd_accept``): what /healthz and /metrics show."""


def _limit_text(value: int) -> str:
    return "unlimited" if value == INFINITY else str(value)


class FdGuard:
    """This process's descriptors against its open-file limit; one per application.

    `start` raises the limit and takes a baseline; `check` decides each handshake cheaply:
    the descriptors that are not WebSocket connections (the baseline, corrected by each
    measurement) plus the connections the hub holds. Only near the reserve, or when the
    last measurement is older than `SAMPLE_FAR`, does it count the open descriptors again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 count: Callable[[], int | None] = count_open_fds,
                 raise_limit: Callable[[], NofileLimit] = raise_nofile_limit) -> None:
        self.limit: NofileLimit | None = None
        self.reserve = 0
        self.refusals = Refusals({REASON_HANDSHAKE: 0, REASON_ACCEPT: 0})
        self._clock = clock
        self._count = count
        self._raise_limit = raise_limit
        self._overhead = 0  # descriptors open besides WebSocket connections, last measured
        self._sampled_at = float("-inf")
        self._sample_cost = 0.0  # seconds the last count took
        self.open: int | None = None  # descriptors open when last counted
        self._handshake_log = Throttle(LOG_EVERY, clock)
        self._accept_log = Throttle(LOG_EVERY, clock)
        self._exhausted_log = Throttle(LOG_EVERY, clock)
        self._connections: Callable[[], int] = lambda: 0
        self._watch: asyncio.TimerHandle | None = None
        self._watched_loop: asyncio.AbstractEventLoop | None = None

    def start(self, connections: Callable[[], int] | None = None,
              loop: asyncio.AbstractEventLoop | None = None) -> NofileLimit:
        """Raise the soft limit (once per process), take the baseline and watch ``loop``.

        ``connections`` tells how many WebSocket connections are open, for the look every
        `WATCH_EVERY` seconds (`check` is told by its caller). Warns when the limit is low.
        """
        loop = loop or asyncio.get_running_loop()
        if connections is not None:
            self._connections = connections
        first = self.limit is None
        if first:
            self.limit = self._raise_limit()
            self.reserve = reserve_for(self.limit.soft) if self.limit.soft != INFINITY else 0
        limit = self.limit
        assert limit is not None  # set just above
        self._measure(self._connections())
        if self._watched_loop is not loop:
            self._watched_loop = loop
            self.watch_accept_errors(loop)
        if limit.soft != INFINITY:
            self.stop()
            self._schedule(loop)
        if first and limit.soft != INFINITY and limit.soft < LOW:
            log.warning("open-file limit is only %d (hard limit %s): room for about %d WebSocket "
                        "connections, each one descriptor; %s", limit.soft, _limit_text(limit.hard),
                        self.capacity(), HINT)
        return limit

    def capacity(self) -> int | None:
        """About how many WebSocket connections this process can hold in all; None: no limit."""
        if self.limit is None or self.limit.soft == INFINITY:
            return None
        return max(0, self.limit.soft - self.reserve - self._overhead)

    def describe(self) -> str:
        """The limit in effect, for the start-up log line."""
        limit = self.limit
        if limit is None:
            return "not checked"
        if limit.soft == INFINITY:
            return "unlimited"
        raised = f", raised from {limit.was}" if limit.was != limit.soft else ""
        return (f"{limit.soft} (hard {_limit_text(limit.hard)}{raised}), "
                f"room for about {self.capacity()} connections")

    def stop(self) -> None:
        """Stop the periodic look (the limits and counts stay)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = max(WATCH_EVERY, SAMPLE_COST_SHARE * self._sample_cost)
        self._watch = loop.call_later(delay, self._look, loop)

    def _look(self, loop: asyncio.AbstractEventLoop) -> None:
        # Every descriptor in use: no accept() can succeed, and under uvloop nobody would
        # hear of it (libuv closes what it cannot accept). 1 spare: libuv's own reserve.
        try:
            connections = self._connections()
            count = self._measure(connections)
            assert self.limit is not None
            if count is not None and count >= self.limit.soft - 1:
                held = self._exhausted_log.allow()
                if held is not None:
                    log.warning("all %d descriptors are in use (%d by WebSocket connections, the rest "
                                "by other sockets and files): new connections are closed or kept "
                                "waiting unanswered%s; %s", self.limit.soft, connections,
                                f" (seen {held} more times since the last warning)" if held else "", HINT)
        finally:
            self._schedule(loop)

    def _measure(self, connections: int) -> int | None:
        self._sampled_at = self._clock()
        started = time.perf_counter()
        try:
            count = self._count()
        except OSError:  # no descriptor left even to look: as full as it gets
            assert self.limit is not None
            count = self.limit.soft
        self._sample_cost = time.perf_counter() - started
        if count is not None:
            self.open = count
            self._overhead = max(0, count - connections)
        return count

    def check(self, connections: int) -> bool:
        """Whether a WebSocket handshake must be refused now; counts and logs each refusal.

        ``connections`` is how many WebSocket connections the hub holds. The handshake being
        checked is already accepted (its descriptor is open): refusing it frees it again.
        """
        limit = self.limit
        if limit is None or limit.soft == INFINITY:
            return False
        ceiling = limit.soft - self.reserve
        estimate = self._overhead + connections
        every = SAMPLE_NEAR if estimate >= ceiling - self.reserve else SAMPLE_FAR
        if self._clock() - self._sampled_at >= max(every, SAMPLE_COST_SHARE * self._sample_cost):
            measured = self._measure(connections)
            if measured is not None:
                estimate = measured
        if estimate < ceiling:
            return False
        self.refusals[REASON_HANDSHAKE] += 1
        held = self._handshake_log.allow()
        if held is not None:
            log.warning("at the open-file limit: new WebSocket connections are refused with 503 "
                        "(%d of %d descriptors open, %d kept in reserve, %d connections held%s); %s",
                        estimate, limit.soft, self.reserve, connections,
                        f"; {held} more refused since the last warning" if held else "", HINT)
        return True

    def note_accept_error(self, context: dict[str, Any]) -> bool:
        """Count and report an ``accept()`` an event loop saw fail for lack of descriptors.

        ``context`` is what the loop passes its exception handler. Returns False for anything
        else, which the caller hands on to the previous handler.
        """
        exc = context.get("exception")
        if not isinstance(exc, OSError) or exc.errno not in (errno.EMFILE, errno.ENFILE):
            return False
        message = str(context.get("message", ""))
        if message.startswith("Fatal error on server"):
            # uvloop: libuv's EMFILE trick failed (its spare descriptor was taken, e.g. by a
            # thread) and uvloop closed the listening socket. Nothing reopens it: say it loud.
            self.refusals[REASON_ACCEPT] += 1
            log.error("accept() failed (%s) and the event loop closed the listening socket: this "
                      "instance takes no new connections until it is restarted; %s", exc, HINT)
            return True
        if "accept" not in message:
            return False
        # The standard loop: it stops accepting for a second, then tries again; the clients
        # wait in the listen backlog meanwhile.
        self.refusals[REASON_ACCEPT] += 1
        held = self._accept_log.allow()
        if held is not None:
            log.warning("accept() failed: %s; new connections wait until descriptors are free%s; %s",
                        exc, f" ({held} more failures since the last warning)" if held else "", HINT)
        return True

    def watch_accept_errors(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain an exception handler to ``loop`` that takes accept() EMFILE/ENFILE reports.

        What it does not take goes on to the handler that was there before (or the default).
        """
        chain_exception_handler(loop, self.note_accept_error)

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` fields: refusals by reason, the limit in effect (null: none) and
        the descriptors open when last counted (at most `WATCH_EVERY` seconds ago, or so)."""
        limit = self.limit
        nofile: dict[str, int | None] = {"soft": None, "hard": None, "reserve": self.reserve,
                                         "open": self.open}
        if limit is not None:
            nofile["soft"] = None if limit.soft == INFINITY else limit.soft
            nofile["hard"] = None if limit.hard == INFINITY else limit.hard
        return {"refused": dict(self.refusals), "nofile": nofile}


def guard() -> FdGuard | None:
    """The `FdGuard` of the application handling the current request, if it has one."""
    return current_app.extensions.get(EXTENSION)


def refuse_handshake(connections: int) -> Response | None:
    """For the ``/ws`` view, before accept: HTTP 503 when the process nears its open-file limit.

    A refusal the client can read beats a connection reset or a timeout, and a browser's
    reconnect backoff then spreads the retries.
    """
    fd_guard = guard()
    if fd_guard is None or not fd_guard.check(connections):
        return None
    return Response("server at its open-file limit: try again later\n", status=503,
                    content_type="text/plain", headers={"Retry-After": str(RETRY_AFTER)})


def health_fields() -> dict[str, Any]:
    """``refused`` and ``nofile`` for ``/healthz`` (empty for an app without a guard)."""
    fd_guard = guard()
    return fd_guard.health() if fd_guard is not None else {}
