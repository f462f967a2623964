"""What ``hypercorn quart_chat:app`` loads: the app, built from the environment on first use.

Importing quart_chat (or any of its modules) builds nothing and reads no setting: the app is
built when the server first calls it, which is its lifespan start-up, before it listens for
anyone. A setting that cannot be used stops the process there, with one line on stderr that
names it and a status that process managers read as "configuration error, do not restart":
`EX_CONFIG` (78, from BSD's sysexits.h). A bug of ours still ends in its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from quart import Quart

from .config import SettingsError

EX_CONFIG = 78


def configuration_error(err: SettingsError) -> str:
    """The one line printed for a setting that cannot be used (never its secret value)."""
    return f"quart_chat: configuration error: {err}"


class EnvApp:
    """An ASGI app that is `create_app()` from ``os.environ``, built on its first call.

    Attributes other than the call (``test_client``, ``extensions``...) are the built app's.
    """

    __slots__ = ("_app", "_asgi")

    def __init__(self) -> None:
        self._app: Quart | None = None
        self._asgi: Any = None

    def build(self) -> Quart:
        """The app, built now if it was not yet; a configuration error ends the process (78)."""
        if self._app is None:
            from .app import create_app

            try:
                app = create_app()
            except SettingsError as err:
                # Inside the server's event loop an exception or SystemExit would end in
                # asyncio's and Hypercorn's tracebacks: one line, then out, before any socket
                # was served or any connection to Redis made.
                sys.stderr.write(configuration_error(err) + "\n")
                sys.stderr.flush()
                os._exit(EX_CONFIG)
            self._app, self._asgi = app, app.asgi_app
        return self._app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # Straight to the app's ASGI stack, as Quart's own __call__ would: no frame more per
        # connection than a plain Quart app costs.
        if self._asgi is None:
            try:
                self.build()
            except Exception:
                if scope["type"] != "lifespan":
                    raise
                # A bug, not a setting: the server is told the start-up failed, and stops with
                # the traceback (a lifespan app that raised would only be served without one).
                await receive()
                await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
                return
        await self._asgi(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # Private and dunder probes (inspect's coroutine marker, on 3.12+) build nothing:
        # the app is built on the server's first call, not when it inspects what it loaded.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.build(), name)
