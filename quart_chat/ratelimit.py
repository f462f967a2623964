"""A per-connection sliding-window rate limit: at most N events in any S seconds."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """Exact sliding window: remembers the times of the last N accepted events."""

    __slots__ = ("count", "seconds", "clock", "_times")

    def __init__(self, count: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.seconds = seconds
        self.clock = clock
        self._times: deque[float] | None = None  # made on first use: most connections never send

    def allow(self) -> bool:
        """Record an event and return True if it fits in the window, else False (not recorded)."""
        now = self.clock()
        times = self._times
        if times is None:
            times = self._times = deque()
        if len(times) >= self.count:
            if now - times[0] < self.seconds:
                return False
            times.popleft()
        times.append(now)
        return True
