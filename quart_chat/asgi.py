"""The ASGI edge: close 1001 on a cancelled WebSocket, the server's shutdown and signals."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from .codes import CloseCode
from .fastpath.hypercorn import shutdown_event

log = logging.getLogger("quart_chat.asgi")

# Seconds a worker given SIGTERM waits for its Hypercorn parent to start the shutdown.
SIGTERM_HANDOVER = 1.0
# Seconds between two looks at a Hypercorn parent's shutdown event (Hypercorn's own worker too).
SHUTDOWN_POLL = 0.1
# Scope key under which the server's own ``send`` is kept, for `fastpath.hypercorn.direct_outbox`.
RAW_SEND = "quart_chat.raw_send"

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class GoingAway:
    """Send close 1001 on a WebSocket whose task is cancelled while still open.

    Hypercorn cancels connection tasks once its graceful timeout has passed; without this
    the client would see the TCP connection drop (1006) instead of "going away".
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        scope[RAW_SEND] = send
        tracking_send = _TrackingSend(send)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if tracking_send.open:
                tracking_send.open = False
                try:
                    await asyncio.wait_for(send({"type": "websocket.close", "code": CloseCode.GOING_AWAY}), 1.0)
                except Exception:  # the transport may already be gone; nothing more to do
                    pass
            raise


class _TrackingSend:
    """The server's ``send``, noting whether the WebSocket is open (a slotted object: a
    closure over a dict cost each connection about 400 bytes more)."""

    __slots__ = ("send", "open")

    def __init__(self, send: Callable[[dict], Awaitable[None]]) -> None:
        self.send = send
        self.open = False

    async def __call__(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self.open = True
        elif kind in ("websocket.close", "websocket.http.response.start"):
            self.open = False
        await self.send(message)


def on_server_shutdown(callback: Callable[[], object]) -> asyncio.Task[None] | None:
    """Call ``callback`` once, in the running loop, as soon as the server begins to stop.

    Hypercorn does not tell the app: it closes its listening sockets and waits for every open
    connection, and from Python 3.12 ``Server.wait_closed()`` waits for WebSockets too, which
    never end on their own (hypercorn issue 308). So the app learns of the shutdown where
    Hypercorn does. In a Hypercorn worker process it polls the parent's shutdown event as the
    worker itself does (a task, returned so it can be cancelled). In a single-process server
    (``-w 0``, an embedding ``serve()``) it chains a handler in front of the Python-level
    handlers of SIGTERM and SIGINT: the event loop still hears of the signal through its
    wakeup fd and runs the server's own handler. Signals left at their default (the process
    dies anyway) or ignored are not touched.
    """
    loop = asyncio.get_running_loop()
    fired = False

    def fire() -> None:
        nonlocal fired
        if not fired:
            fired = True
            callback()

    event = shutdown_event()
    if event is not None:
        async def poll() -> None:
            while not event.is_set():
                await asyncio.sleep(SHUTDOWN_POLL)
            fire()

        return loop.create_task(poll(), name="quart_chat shutdown watch")
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if previous in (signal.SIG_DFL, signal.SIG_IGN, None):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(fire)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
    return None


def pass_sigterm_to_supervisor() -> bool:
    """In a Hypercorn worker process, make SIGTERM mean "shut down gracefully".

    Hypercorn's worker is a multiprocessing child that leaves SIGTERM at its default, so a
    SIGTERM sent to the whole process group (``kill -- -PGID``, systemd's default
    ``KillMode=control-group``) killed it at once: no graceful timeout, no close 1001, its
    members left for the janitor. Its parent stops the workers gracefully on SIGTERM (it sets
    the shutdown event they poll), so the worker only makes sure the parent heard of it:
    after `SIGTERM_HANDOVER` seconds, if that event is still clear (the signal came to the
    worker alone), it passes the signal on. Never at once: a second SIGTERM landing while
    the parent runs its handler for the first deadlocks the parent on that event's lock.
    Returns whether a handler was installed: nothing is done in a single-process server,
    when something else already handles SIGTERM, or when Hypercorn's event is not found.
    """
    parent = multiprocessing.parent_process()
    shutdown = shutdown_event()
    if parent is None or parent.pid is None or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    if shutdown is None:
        log.warning("SIGTERM hand-over off: no shutdown_event in this worker's Process._kwargs "
                    "(Hypercorn changed?); a SIGTERM to the worker alone stops it without close 1001")
        return False
    loop = asyncio.get_running_loop()
    supervisor = parent.pid

    def hand_over() -> None:
        if shutdown.is_set():
            return  # the parent got it too and is stopping us
        if os.getppid() == supervisor:
            os.kill(supervisor, signal.SIGTERM)
        else:  # orphaned: nobody will stop us gracefully, so behave as before
            loop.remove_signal_handler(signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    loop.add_signal_handler(signal.SIGTERM, lambda: loop.call_later(SIGTERM_HANDOVER, hand_over))
    return True


def ignore_shutdown_cancellations() -> None:
    """Keep the log clean when Hypercorn cancels open connections at the graceful timeout.

    asyncio reports each cancelled connection task through the loop's exception handler
    ("Exception in callback StreamReaderProtocol.connection_made...: CancelledError"); a
    cancellation is how the server is meant to stop them, not an error.
    """
    chain_exception_handler(asyncio.get_running_loop(),
                            lambda context: isinstance(context.get("exception"), asyncio.CancelledError))


def chain_exception_handler(loop: asyncio.AbstractEventLoop, take: Callable[[dict[str, Any]], bool]) -> None:
    """Put a handler in front of ``loop``'s exception handler: reports for which ``take``
    returns True stop there; the rest go on to the handler that was there before (or the
    default one), so handlers installed by different parts of the app add up."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if take(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


