"""The chat extension: what the blueprints share, kept on ``app.extensions`` as Flask
extensions keep theirs, and found through `get_chat` (so no blueprint imports the app module)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from quart import current_app

from . import auth, fdlimit, metrics
from .broker import Broker
from .codes import CloseCode
from .collector import BurstPacer
from .config import Settings
from .fastpath import STATUS as OUTBOUND
from .fastpath import Verdict
from .rooms import Hub

EXTENSION = "quart_chat"


@dataclass
class Chat:
    """What the blueprints share: the settings, this instance's hub and its broker."""

    settings: Settings
    hub: Hub
    broker: Broker
    # Open WebSockets by client address (CHAT_MAX_CONNECTIONS_PER_IP); addresses with none are dropped.
    per_ip: dict[str, int] = field(default_factory=dict)
    # Handshakes refused before the upgrade, by reason.
    refused: Counter[str] = field(default_factory=lambda: Counter({"origin": 0, "per_ip": 0, "token": 0}))
    fd_guard: fdlimit.FdGuard | None = None
    # What /metrics serves: one collector reading `snapshot` (and sibling workers') at scrape time.
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    collector: metrics.ChatCollector | None = None
    # Token mode (CHAT_AUTH=token): checks every WebSocket's and REST call's token; None: open.
    verifier: auth.Verifier | None = None
    # Which fast paths connections take, decided once at start-up (fastpath).
    verdict: Verdict = field(default_factory=lambda: Verdict(enabled=False))
    # Set when the server begins to stop: open WebSockets are closed, new ones refused (503).
    stopping: bool = False
    # The collector's pace during bursts of connects (collector.py).
    pacer: BurstPacer = field(default_factory=BurstPacer)

    def going_away(self) -> None:
        """The server is stopping: close every WebSocket with 1001 now, refuse new ones.

        A chat connection never ends by itself, so waiting out Hypercorn's graceful timeout
        would only delay each client's reconnection to another instance (and on Python 3.12+
        Hypercorn would wait for ever). Each view closes its own socket and leaves its rooms.
        """
        if self.stopping:
            return
        self.stopping = True
        sessions = list(self.hub.receivers)
        logging.getLogger("quart_chat").info("shutting down: closing %d WebSocket(s) with 1001", len(sessions))
        for session in sessions:
            session.abort(CloseCode.GOING_AWAY)

    def snapshot(self) -> dict[str, Any]:
        """This process's numbers for /metrics (see `metrics`), as plain JSON-able values."""
        hub, stats = self.hub, self.hub.stats
        backlogs = [r.backlog() for r in hub.receivers]
        refused = dict(self.refused)
        if self.fd_guard is not None:
            refused.update(self.fd_guard.refusals)
        sub = self.broker.subscriber
        redis_ok = sub.live and time.monotonic() - self.broker.presence.last_ok < 3 * self.settings.heartbeat_seconds
        return {
            "connections": len(hub.receivers), "rooms_local": len(hub.rooms), "sent": stats.sent,
            "duplicates": stats.duplicates, "delivered": stats.delivered, "catchup": stats.catchup,
            "reconnects": sub.reconnects, "janitor_passes": self.broker.presence.janitor_passes,
            "errors": dict(stats.errors), "changes": dict(stats.changes),
            "changes_refused": dict(stats.changes_refused),
            "closes": {str(code): n for code, n in stats.closes.items()}, "refused": refused,
            "redis_up": 1 if redis_ok else 0, "subscriber_up": 1 if sub.live else 0,
            "delivery_lag": stats.delivery_lag.snapshot(),
            "join_seconds": stats.join_seconds.snapshot(), "append_seconds": stats.append_seconds.snapshot(),
            "outbox_frames": sum(backlogs), "outbox_max": max(backlogs, default=0),
            "fallbacks": OUTBOUND.fallbacks, "workers": 1,
            **self._archive_numbers(),
        }

    def _archive_numbers(self) -> dict[str, Any]:
        """The archiver's numbers (docs/archive.md), only where there is an archive."""
        archiver = self.broker.archiver
        if archiver is None:
            return {}
        return {"archive_up": 1 if archiver.ready and archiver.up else 0, "archive_lag": archiver.lag_seconds,
                "archive_behind": archiver.behind, "archive_written": archiver.written,
                "archive_errors": archiver.errors, "archive_gaps": archiver.gaps}


def get_chat() -> Chat:
    """The `Chat` of the application handling the current request."""
    return current_app.extensions[EXTENSION]
