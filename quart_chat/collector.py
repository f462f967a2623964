"""The garbage collector's pace, raised while connections arrive in a burst.

A new connection allocates a few hundred objects that live as long as it does. With Python's
default young threshold (700 allocations) a burst of connects (a deploy, a reconnect storm)
runs a young collection every couple of joins and an older one every few dozen, each walking
objects that will never be garbage: one instance took about 20 % more connects and joins a
second with the threshold at 5,000 (docs/performance.md, "Connects and joins"). Under steady
chat traffic the default pace cost less CPU, so the threshold is raised only while
connections keep coming, and put back once a second passes with few.
"""

from __future__ import annotations

import asyncio
import gc
import time

BURST_THRESHOLD = 5000  # the young threshold during a burst (Python's default: 700)
BURST_CONNECTS = 20  # connections within one second that make a burst


class BurstPacer:
    """Counts new connections; raises the collector's young threshold during a burst."""

    def __init__(self) -> None:
        self._normal = gc.get_threshold()
        self._count = 0
        self._since = time.monotonic()
        self._raised = False

    def connected(self) -> None:
        """A connection was accepted (called on the event loop)."""
        self._count += 1
        if self._raised or self._count < BURST_CONNECTS:
            if time.monotonic() - self._since >= 1.0:
                self._count, self._since = 1, time.monotonic()
            return
        self._raised = True
        gc.set_threshold(BURST_THRESHOLD, *self._normal[1:])
        asyncio.get_running_loop().call_later(1.0, self._check)

    def _check(self) -> None:
        """Once a second during a burst: go on, or put the default pace back."""
        busy = self._count >= BURST_CONNECTS
        self._count, self._since = 0, time.monotonic()
        if busy:
            asyncio.get_running_loop().call_later(1.0, self._check)
            return
        self._raised = False
        gc.set_threshold(*self._normal)
