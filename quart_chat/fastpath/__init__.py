"""The fast paths, and the only package that names other libraries' internals.

Two paths make a connection cheaper than Quart and Hypercorn alone would (docs/performance.md
says by how much):

- lean connections (`quart.LeanWebsocketConnection`): the view runs in the server's task and
  reads frames straight from it, without Quart's reader task and unbounded inbound queue;
- the direct outbound path (`hypercorn.direct_outbox`, `wire.DirectOutbox`): each frame
  encoded once and written straight to the connection's transport.

`decide` checks once, at start-up, the internals each path relies on, and its `Verdict`
decides which paths connections take: never one whose internals are not what it expects.
A path refused is a warning in the log and shows in ``/healthz`` (``outbound``). A connection
that cannot take the direct path anyway (HTTP/2, another server) falls back on its own, and
is counted (`STATUS`). ``CHAT_FAST_PATH=0`` takes neither path.

Quart's ``websocket_received`` and ``websocket_sent`` signals do not fire on the fast paths:
Quart sends the first from the reader task the lean connections do without, the second from
``websocket.send``, which the direct outbound path does not go through. Both fire under
``CHAT_FAST_PATH=0`` (docs/development.md says so too); quart_chat listens to neither.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import hypercorn, quart
from .status import STATUS, OutboundStatus
from .versions import versions

__all__ = ["STATUS", "OutboundStatus", "Verdict", "connection_class", "decide"]

log = logging.getLogger("quart_chat.fastpath")


@dataclass(frozen=True)
class Verdict:
    """Which fast paths this process's connections take, and why not, if they do not."""

    enabled: bool  # CHAT_FAST_PATH
    lean_problems: tuple[str, ...] = ()
    direct_problems: tuple[str, ...] = ()

    @property
    def lean(self) -> bool:
        """Quart's WebSocket handling without its reader task (`quart.LeanWebsocketConnection`)."""
        return self.enabled and not self.lean_problems

    @property
    def direct(self) -> bool:
        """The direct outbound path (`hypercorn.direct_outbox`)."""
        return self.enabled and not self.direct_problems

    def report(self) -> None:
        """Say in the log which paths connections take (at start-up, once logging is set up)."""
        if not self.enabled:
            log.info("fast paths off (CHAT_FAST_PATH=0): Quart's own WebSocket handling and the "
                     "portable outbound path (%s)", versions())
            return
        for problem in self.lean_problems:
            log.warning("lean WebSocket connection class off, using Quart's own: %s (%s)", problem, versions())
        if self.direct_problems:
            STATUS.refused_at_start("; ".join(self.direct_problems))
        if self.lean and self.direct:
            log.info("fast paths on: lean WebSocket connections, direct outbound path (%s)", versions())


def decide(fast_path: bool) -> Verdict:
    """Check the internals both paths rely on, once: what connections will take."""
    if not fast_path:
        return Verdict(enabled=False)
    return Verdict(enabled=True, lean_problems=tuple(quart.problems()), direct_problems=tuple(hypercorn.problems()))


def connection_class(verdict: Verdict) -> type:
    """The Quart WebSocket connection class the verdict allows."""
    return quart.connection_class(verdict.lean)
