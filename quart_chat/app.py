"""The application factory: settings, the hub, the broker and the blueprints, wired once."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from quart import Quart, Response, current_app
from quart.sessions import NullSession, SecureCookieSessionInterface

from . import auth, fdlimit, logs, metrics
from .asgi import (
    CLOSE_GOING_AWAY,
    GoingAway,
    check_fast_paths,
    connection_class,
    ignore_shutdown_cancellations,
    on_server_shutdown,
    pass_sigterm_to_supervisor,
)
from .broker import Broker
from .config import Settings
from .rooms import Hub
from .wire import STATUS as OUTBOUND

EXTENSION = "quart_chat"

# No inline script or style anywhere: user text can never become code.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


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
    # Set when the server begins to stop: open WebSockets are closed, new ones refused (503).
    stopping: bool = False

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
            session.abort(CLOSE_GOING_AWAY)

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
            "reconnects": sub.reconnects, "errors": dict(stats.errors),
            "closes": {str(code): n for code, n in stats.closes.items()}, "refused": refused,
            "redis_up": 1 if redis_ok else 0, "subscriber_up": 1 if sub.live else 0,
            "delivery_lag": stats.delivery_lag.snapshot(),
            "join_seconds": stats.join_seconds.snapshot(), "append_seconds": stats.append_seconds.snapshot(),
            "outbox_frames": sum(backlogs), "outbox_max": max(backlogs, default=0),
            "fallbacks": OUTBOUND.fallbacks, "workers": 1,
        }


def get_chat() -> Chat:
    """The `Chat` of the application handling the current request."""
    return current_app.extensions[EXTENSION]


def redact(url: str) -> str:
    """A Redis URL with its password hidden, fit for logs: in the userinfo (which may hold
    any character, '/' and '@' included) and in a ``password=`` query parameter."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    # The query starts at the first "?name=" (a password may hold '?', '@' and '/').
    m = re.search(r"\?[A-Za-z_]+=", rest)
    rest, query = (rest[:m.start()], rest[m.start() + 1:]) if m else (rest, None)
    at = rest.rfind("@")
    if at != -1:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}{':***' if colon else ''}@{rest[at + 1:]}"
    if query is not None:
        rest += "?" + "&".join("password=***" if p.lower().startswith("password=") else p for p in query.split("&"))
    return f"{scheme}://{rest}"


class SharedNullSession(SecureCookieSessionInterface):
    """Quart's cookie sessions, but without a secret key one shared, read-only null session
    rather than a new one per request and per WebSocket, which each idle connection kept."""

    _null = NullSession()

    async def make_null_session(self, app: Quart) -> NullSession:
        """The one null session (it refuses writes, so sharing it is safe)."""
        return self._null


def create_app(settings: Settings | None = None) -> Quart:
    """Build a quart_chat application; ``settings`` default to the environment's."""
    from .blueprints import api, pages, ws

    settings = settings or Settings.from_env()
    verifier = auth.make_verifier(settings)  # token mode without a usable key stops here (SettingsError)
    app = Quart(__name__)
    app.session_interface = SharedNullSession()
    hub = Hub()
    broker = Broker(settings, hub)
    fd_guard = app.extensions[fdlimit.EXTENSION] = fdlimit.FdGuard()
    chat = app.extensions[EXTENSION] = Chat(settings, hub, broker, fd_guard=fd_guard, verifier=verifier)
    collector = chat.collector = metrics.ChatCollector(chat.snapshot, None)
    chat.registry.register(collector)
    ProcessCollector(registry=chat.registry)
    # The lean connection class (asgi.py) unless CHAT_FAST_PATH=0 or Quart's internals differ.
    app.asgi_websocket_class = connection_class(settings.fast_path)
    for blueprint in (pages.bp, ws.bp, api.bp):
        app.register_blueprint(blueprint)

    background: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start_broker() -> None:
        """Start the subscriber and heartbeat before the first connection."""
        logs.configure(settings.log_format)
        fd_guard.start(lambda: len(hub.receivers))  # raise the open-file limit before saying what it is
        logging.getLogger("quart_chat").info(
            "instance %s using Redis at %s (event loop: %s; open files: %s)", settings.instance,
            redact(settings.redis_url), type(asyncio.get_running_loop()).__module__.split(".")[0],
            fd_guard.describe(),
        )
        logging.getLogger("quart_chat").info("auth: %s", "open (any name)" if verifier is None else verifier.describe())
        pass_sigterm_to_supervisor()
        check_fast_paths(settings.fast_path)  # warns when an internal the fast paths use is missing
        ignore_shutdown_cancellations()
        watch = on_server_shutdown(chat.going_away)
        if watch is not None:
            background.append(watch)
        await broker.start()
        # Under `hypercorn -w N` the workers share their numbers so /metrics is the instance's.
        collector.share_dir = metrics.share_dir()
        if collector.share_dir is not None:
            background.append(asyncio.create_task(metrics.share_forever(collector.share_dir, chat.snapshot)))
        # Everything made so far lives as long as the process: keep the collector off it,
        # so that collections under load scan only what chat traffic allocates.
        gc.freeze()

    @app.after_serving
    async def stop_broker() -> None:
        """Stop background work and remove this instance's members."""
        fd_guard.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await broker.stop()

    @app.after_request
    async def security_headers(response: Response) -> Response:
        """Add CSP, nosniff, Referrer-Policy and frame denial to every answer."""
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.asgi_app = GoingAway(app.asgi_app)  # type: ignore[method-assign,assignment,arg-type]
    return app
