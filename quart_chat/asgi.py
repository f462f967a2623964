"""The ASGI edge: WebSocket connection handling for Quart, close 1001 at shutdown, signals."""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from quart.asgi import ASGIWebsocketConnection

from . import wire
from .codes import CloseCode

log = logging.getLogger("quart_chat.asgi")

# Seconds a worker given SIGTERM waits for its Hypercorn parent to start the shutdown.
SIGTERM_HANDOVER = 1.0
# Seconds between two looks at a Hypercorn parent's shutdown event (Hypercorn's own worker too).
SHUTDOWN_POLL = 0.1
# Scope key under which the server's own ``send`` is kept, for `wire.direct_outbox`.
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


def _hypercorn_shutdown_event() -> Any:
    """The multiprocessing Event a Hypercorn parent sets to stop this worker, or None.

    Hypercorn hands it to its worker as a keyword argument of the Process (``-w N``, and the
    default of one worker); a server running in this very process has none.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    return event if callable(getattr(event, "is_set", None)) else None


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

    event = _hypercorn_shutdown_event()
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
    shutdown = _hypercorn_shutdown_event()
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


class _ClientGone(asyncio.CancelledError):
    """The client closed the WebSocket: the view is unwound as Quart does, by cancellation."""


class _Pull:
    """Stands in for Quart's inbound queue: each ``get`` reads the next ASGI event itself."""

    __slots__ = ("_receive",)

    def __init__(self, receive: Callable[[], Awaitable[dict]]) -> None:
        self._receive = receive

    async def get(self) -> str | bytes | None:
        """The next inbound message; a disconnect unwinds the view as a cancellation."""
        while True:
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                return text if text is not None else event.get("bytes")
            if kind == "websocket.disconnect":
                raise _ClientGone()


def _params(func: Any) -> list[str] | None:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def quart_problems() -> list[str]:
    """What `DirectWebsocketConnection` needs from the installed Quart, and is missing."""
    problems = []
    for name, params in (("_create_websocket_from_scope", ["self", "send"]),
                         ("handle_websocket", ["self", "websocket", "send"])):
        got = _params(getattr(ASGIWebsocketConnection, name, None))
        if got != params:
            problems.append(f"Quart's ASGIWebsocketConnection.{name}({', '.join(got or ['?'])}) "
                            f"is not ({', '.join(params)})")
    return problems


def connection_class(fast_path: bool) -> type[ASGIWebsocketConnection]:
    """The Quart WebSocket connection class to use: the lean one when allowed and possible."""
    if fast_path and not quart_problems():
        return DirectWebsocketConnection
    return ASGIWebsocketConnection


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def check_fast_paths(fast_path: bool) -> list[str]:
    """Check once, at start-up, the internals both fast paths rely on; log what is found.

    Returns the problems (empty when the fast paths are on and everything is as expected).
    A problem is a warning in the log and, for the outbound path, shows in ``/healthz``.
    """
    versions = ", ".join(f"{d} {_version(d)}" for d in ("quart", "hypercorn", "wsproto"))
    if not fast_path:
        log.info("fast paths off (CHAT_FAST_PATH=0): Quart's own WebSocket handling and the "
                 "portable outbound path (%s)", versions)
        return []
    problems = quart_problems()
    for problem in problems:
        log.warning("lean WebSocket connection class off, using Quart's own: %s (%s)", problem, versions)
    outbound = wire.check_internals()
    for problem in outbound:
        wire.STATUS.fell_back(problem, connection=False)
    if not problems and not outbound:
        log.info("fast paths on: lean WebSocket connections, direct outbound path (%s)", versions)
    return problems + outbound


_probe_failed = False


class DirectWebsocketConnection(ASGIWebsocketConnection):
    """Quart's WebSocket handling without the reader task and inbound queue it adds per connection.

    Quart runs each WebSocket as two tasks (one moves ASGI events into an unbounded queue,
    one runs the view) plus the server's own task. A chat server holds thousands of mostly
    idle connections, so here the view runs in the server's task and ``websocket.receive()``
    reads the next event straight from the server: less memory per connection, one hop less
    per frame, and inbound frames are never buffered without bound (PITFALLS.md). Routing,
    blueprints, contexts, ``before_websocket`` hooks and error handling stay Quart's own.
    """

    async def __call__(self, receive: Any, send: Any) -> None:
        # Kept as lean as before the probe: this frame lives as long as the connection.
        websocket = self._lean_websocket(receive, send)
        if websocket is None:
            return await self._quarts_own(receive, send)
        try:
            await self.handle_websocket(websocket, send)
        except _ClientGone:
            pass  # a normal end: the client left

    async def _quarts_own(self, receive: Any, send: Any) -> None:
        await ASGIWebsocketConnection.__call__(self, receive, send)

    def _lean_websocket(self, receive: Any, send: Any) -> Any:
        """Quart's Websocket object reading through `_Pull`; None (warned once) if Quart would not."""
        global _probe_failed
        pull = self.queue = _Pull(receive)  # type: ignore[assignment]
        websocket = self._create_websocket_from_scope(send)
        if getattr(websocket, "_receive", None) == pull.get:
            return websocket
        # Quart no longer reads through self.queue.get: run its own code, loudly.
        if not _probe_failed:
            _probe_failed = True
            log.warning("lean WebSocket connection class off, using Quart's own: Quart %s does not "
                        "read frames through ASGIWebsocketConnection.queue.get", _version("quart"))
        self.queue = asyncio.Queue()
        return None
