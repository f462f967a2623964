"""Which outbound path this process's connections take, for the log, ``/healthz`` and ``/metrics``.

Process-wide and independent of the number of connections (nothing per connection). What
``/healthz`` says is current: a start-up verdict against the direct path holds for the
process's life, but a connection that fell back (HTTP/2, a server that is not Hypercorn)
shows only while such connections are open; the count of fallbacks since start-up stays.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("quart_chat.fastpath")


class OutboundStatus:
    """Why connections take the portable path, if they do, and how many did."""

    def __init__(self) -> None:
        self.verdict: str | None = None  # the start-up check's reason against the direct path
        self.reason: str | None = None  # why the last connection fell back
        self.fallbacks = 0  # connections that fell back since start-up
        self._warned: set[str] = set()  # a handful of fixed strings at most

    def refused_at_start(self, reason: str) -> None:
        """The start-up check found the direct path unusable: no connection will take it."""
        self.verdict = reason
        self._warn(reason)

    def fell_back(self, reason: str) -> None:
        """A connection could not take the direct path; warn the first time each ``reason`` is seen."""
        self.reason = reason
        self.fallbacks += 1
        self._warn(reason)

    def _warn(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("direct outbound path not available (%s): connections use the portable "
                        "path instead (QueueOutbox, slower); /healthz counts them as fallbacks", reason)

    def describe(self, fast_path: bool, portable_now: int = 0) -> dict[str, Any]:
        """``{"outbound": ..., "fallbacks": n}`` for ``/healthz``; ``portable_now`` is how many
        open connections use the portable path."""
        if not fast_path:
            outbound = "portable (CHAT_FAST_PATH=0)"
        elif self.verdict is not None:
            outbound = f"fallback: {self.verdict}"
        elif portable_now and self.reason is not None:
            outbound = f"fallback: {self.reason}"
        else:
            outbound = "direct"
        return {"outbound": outbound, "fallbacks": self.fallbacks}

    def reset(self) -> None:
        """Forget every fallback (for tests)."""
        self.__init__()  # type: ignore[misc]


STATUS = OutboundStatus()
