"""The application factory: settings, the hub, the broker and the blueprints, wired once."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from quart import Quart, Response, current_app

from . import fdlimit
from .asgi import (GoingAway, check_fast_paths, connection_class, ignore_shutdown_cancellations,
                   pass_sigterm_to_supervisor)
from .broker import Broker
from .config import Settings
from .rooms import Hub

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
    refused: Counter[str] = field(default_factory=Counter)


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


def _configure_logging() -> None:
    # Hypercorn configures only its own loggers; give ours a handler unless the host app did.
    logger = logging.getLogger("quart_chat")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def create_app(settings: Settings | None = None) -> Quart:
    """Build a quart_chat application; ``settings`` default to the environment's."""
    from .blueprints import api, pages, ws

    settings = settings or Settings.from_env()
    app = Quart(__name__)
    hub = Hub()
    broker = Broker(settings, hub)
    app.extensions[EXTENSION] = Chat(settings, hub, broker)
    fd_guard = app.extensions[fdlimit.EXTENSION] = fdlimit.FdGuard()
    # The lean connection class (asgi.py) unless CHAT_FAST_PATH=0 or Quart's internals differ.
    app.asgi_websocket_class = connection_class(settings.fast_path)
    for blueprint in (pages.bp, ws.bp, api.bp):
        app.register_blueprint(blueprint)

    @app.before_serving
    async def start_broker() -> None:
        """Start the subscriber and heartbeat before the first connection."""
        _configure_logging()
        fd_guard.start(lambda: len(hub.receivers))  # raise the open-file limit before saying what it is
        logging.getLogger("quart_chat").info(
            "instance %s using Redis at %s (event loop: %s; open files: %s)", settings.instance,
            redact(settings.redis_url), type(asyncio.get_running_loop()).__module__.split(".")[0],
            fd_guard.describe(),
        )
        pass_sigterm_to_supervisor()
        check_fast_paths(settings.fast_path)  # warns when an internal the fast paths use is missing
        ignore_shutdown_cancellations()
        await broker.start()
        # Everything made so far lives as long as the process: keep the collector off it,
        # so that collections under load scan only what chat traffic allocates.
        gc.freeze()

    @app.after_serving
    async def stop_broker() -> None:
        """Stop background work and remove this instance's members."""
        fd_guard.stop()
        await broker.stop()

    @app.after_request
    async def security_headers(response: Response) -> Response:
        """Add CSP, nosniff, Referrer-Policy and frame denial to every answer."""
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.asgi_app = GoingAway(app.asgi_app)  # type: ignore[method-assign]
    return app
