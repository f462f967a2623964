"""The application factory: settings, the hub, the broker and the blueprints, wired once."""

from __future__ import annotations

import asyncio
import gc
import logging

from prometheus_client import ProcessCollector
from quart import Quart, Response
from quart.sessions import NullSession, SecureCookieSessionInterface

from . import auth, fastpath, fdlimit, logs, metrics
from .asgi import GoingAway, ignore_shutdown_cancellations, on_server_shutdown, pass_sigterm_to_supervisor
from .broker import Broker
from .chat import EXTENSION, Chat
from .config import Settings
from .logs import redact
from .rooms import Hub

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
    verdict = fastpath.decide(settings.fast_path)  # which fast paths connections take (never half)
    chat = app.extensions[EXTENSION] = Chat(settings, hub, broker, fd_guard=fd_guard, verifier=verifier,
                                            verdict=verdict)
    collector = chat.collector = metrics.ChatCollector(chat.snapshot, None)
    chat.registry.register(collector)
    ProcessCollector(registry=chat.registry)
    # The lean connection class unless CHAT_FAST_PATH=0 or Quart's internals differ.
    app.asgi_websocket_class = fastpath.connection_class(verdict)
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
        verdict.report()  # warns when an internal the fast paths use is missing
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
        gc.freeze()  # (and during bursts of connects the collector runs less often: collector.py)

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
