"""A per-connection sliding-window rate limit: at most N events in any S seconds."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable


class SlidingWindow:
    """Exact sliding window: remembers the times of the accepted events still in the window."""

    __slots__ = ("count", "seconds", "clock", "_times")

    def __init__(self, count: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.seconds = seconds
        self.clock = clock
        # A list, made on first use: an idle connection's one join costs about 100 bytes
        # here, where a deque would cost 760. The list never holds more than the events of
        # the last S seconds, so trimming it is one short memmove.
        self._times: list[float] | None = None

    def allow(self) -> bool:
        """Record an event and return True if it fits in the window, else False (not recorded)."""
        now = self.clock()
        times = self._times
        if times is None:
            times = self._times = []
        elif times and times[0] <= now - self.seconds:
            del times[:bisect_right(times, now - self.seconds)]
        if len(times) >= self.count:
            return False
        times.append(now)
        return True
