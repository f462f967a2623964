"""Pick uvloop for Hypercorn's worker even when it is started without ``-k uvloop``.

``python -m hypercorn quart_chat:app -b ...`` runs the plain asyncio worker, and Hypercorn's
worker imports the application *before* it creates its event loop. So importing quart_chat
can still choose the loop: when Hypercorn is the one importing us, nothing set a policy of
its own, no loop runs yet and uvloop is installed (it comes with ``hypercorn[uvloop]``), the
default policy becomes uvloop's. ``CHAT_UVLOOP=0`` keeps the standard loop. Tests and
scripts that merely import the package (no Hypercorn) are left alone.

asyncio's event-loop policy API is deprecated from Python 3.14, so there nothing is done:
``hypercorn -k uvloop`` (``worker_class = "uvloop"`` in hypercorn.toml) is the way that keeps
working, since Hypercorn then hands uvloop to ``asyncio.Runner`` as its loop factory.
"""

from __future__ import annotations

import asyncio
import os
import sys

from .config import SettingsError, uvloop_wanted


def _run_by_hypercorn() -> bool:
    # Quart imports hypercorn itself, so sys.modules says nothing; the command line does
    # (multiprocessing hands the parent's argv to Hypercorn's spawned worker).
    argv0 = sys.argv[0] if sys.argv else ""
    return os.path.basename(argv0) == "hypercorn" or argv0.endswith(os.path.join("hypercorn", "__main__.py"))


def prefer_uvloop(environ: dict[str, str] | None = None) -> bool:
    """Make new event loops uvloop's, under Hypercorn only; returns whether it did."""
    try:
        wanted = uvloop_wanted(os.environ if environ is None else environ)
    except SettingsError:
        return False  # the app's start-up names the bad value (status 78)
    if not wanted or not _run_by_hypercorn():
        return False
    if sys.version_info >= (3, 14):
        return False  # the policy API is deprecated: -k uvloop chooses it (see above)
    try:
        asyncio.get_running_loop()
        return False  # too late: a loop already runs (an embedding server made it)
    except RuntimeError:
        pass
    if type(asyncio.get_event_loop_policy()) is not asyncio.DefaultEventLoopPolicy:
        return False  # somebody chose already
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
