"""Hypercorn's and wsproto's internals (named nowhere else): the direct outbound path's way
to a connection's transport, declining permessage-deflate, and the shutdown event a
Hypercorn parent hands its worker.

`direct_outbox` finds, behind Hypercorn's ASGI ``send`` of an HTTP/1.1 WebSocket, the
asyncio transport and the wsproto connection that `wire.DirectOutbox` writes through.
`problems` checks once, at start-up, that the classes and attributes it looks for exist and
that wsproto frames text exactly as `wire.ws_frame` does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from ..wire import DirectOutbox, ws_frame
from .status import STATUS


def shutdown_event() -> Any:
    """The multiprocessing Event a Hypercorn parent sets to stop this worker, or None.

    Hypercorn hands it to its worker as a keyword argument of the Process (``-w N``, and the
    default of one worker); a server running in this very process has none.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    return event if callable(getattr(event, "is_set", None)) else None


def direct_outbox(raw_send: Any, limit: int) -> DirectOutbox | None:
    """A `DirectOutbox` for the accepted WebSocket behind Hypercorn's ASGI ``send``, or None.

    ``raw_send`` must be the server's own callable (``WSStream.app_send``), not a wrapper.
    None means the portable path must be used; the reason is recorded in `STATUS` (and
    logged the first time).
    """
    try:
        found = _direct_outbox(raw_send, limit)
    except Exception as err:  # an internal changed shape in a way not foreseen below
        found = f"unexpected {type(err).__name__}: {err}"
    if isinstance(found, str):
        STATUS.fell_back(found)
        return None
    return found


def decline_compression(raw_send: Any) -> bool:
    """Make the coming handshake answer without permessage-deflate; False if it cannot.

    Hypercorn always accepts the extension when offered; forgetting the client's offer on its
    pending `Handshake` is the one way to decline it. Call before ``websocket.accept()``.
    """
    return _decline(getattr(getattr(raw_send, "__self__", None), "handshake", None))


def _decline(handshake: Any) -> bool:
    if type(handshake).__name__ != "Handshake" or getattr(handshake, "accepted", True):
        return False
    handshake.extensions = None
    return True


def _direct_outbox(raw_send: Any, limit: int) -> DirectOutbox | str:
    """The outbox, or why there is none."""
    try:
        from wsproto.connection import ConnectionState
    except ImportError:
        return "wsproto.connection.ConnectionState not found"
    if raw_send is None:
        return "the server's send is not in the scope (app not wrapped by asgi.GoingAway)"
    stream = getattr(raw_send, "__self__", None)
    if type(stream).__name__ != "WSStream":
        return f"the server's send is {_name(raw_send)}, not Hypercorn's WSStream.app_send"
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    if type(protocol).__name__ != "H11Protocol":  # HTTP/2 wraps frames in DATA frames
        if type(protocol).__name__ == "H2Protocol":
            return "WebSocket over HTTP/2 (RFC 8441)"
        return f"Hypercorn's WSStream sends through {_name(getattr(stream, 'send', None))}, not H11Protocol"
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    writer = getattr(server, "writer", None)
    if not isinstance(writer, asyncio.StreamWriter):
        return f"Hypercorn's {type(server).__name__} has no asyncio StreamWriter (not the asyncio worker?)"
    conn = getattr(stream, "connection", None)
    if not isinstance(getattr(conn, "state", None), ConnectionState):
        return "Hypercorn's WSStream.connection is not a wsproto Connection"
    # A connection no longer OPEN still gets its DirectOutbox: it writes nothing (see flush).
    extensions = getattr(getattr(conn, "_proto", None), "extensions", None)
    if extensions is None:
        return "wsproto's Connection._proto.extensions not found"
    for ext in extensions:
        if ext.enabled() and ext.name != "permessage-deflate":
            return f"WebSocket extension {ext.name!r} negotiated"
    return DirectOutbox(writer, conn, ConnectionState.OPEN, limit)


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def problems() -> list[str]:
    """What the direct path needs from the installed Hypercorn and wsproto, and is missing.

    Run once at start-up: an empty list means the classes and attributes `_direct_outbox`
    looks for exist, and wsproto frames text exactly as `ws_frame` does. (What only a live
    connection has is checked per connection, by `direct_outbox`.)
    """
    problems: list[str] = []
    try:
        from hypercorn.asyncio.tcp_server import TCPServer
        from hypercorn.protocol.h11 import H11Protocol
        from hypercorn.protocol.ws_stream import WSStream
    except ImportError as err:
        problems.append(f"Hypercorn's classes not found ({err})")
    else:
        for cls, attr in ((WSStream, "app_send"), (H11Protocol, "stream_send"), (TCPServer, "protocol_send")):
            if not callable(getattr(cls, attr, None)):
                problems.append(f"hypercorn {cls.__name__}.{attr} not found")
        problems.extend(_handshake_problems())
    try:
        from wsproto.connection import Connection, ConnectionState, ConnectionType
        from wsproto.events import TextMessage
    except ImportError as err:
        problems.append(f"wsproto's classes not found ({err})")
    else:
        conn = Connection(ConnectionType.SERVER)
        if conn.state is not ConnectionState.OPEN:
            problems.append("wsproto's Connection.state is not ConnectionState.OPEN when new")
        if getattr(getattr(conn, "_proto", None), "extensions", None) != []:
            problems.append("wsproto's Connection._proto.extensions not found")
        for n in (5, 200, 70000):
            text = "\u20ac" * n
            if conn.send(TextMessage(data=text)) != ws_frame(text):
                problems.append(f"wsproto frames a text of {n} characters differently")
                break
    return problems


def _handshake_problems() -> list[str]:
    """Whether `decline_compression` still works: a declined offer gets no extension back."""
    try:
        from hypercorn.protocol.ws_stream import Handshake
        handshake = Handshake([(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                               (b"sec-websocket-extensions", b"permessage-deflate")], "1.1")
        declined = _decline(handshake)
        _status, headers, _conn = handshake.accept(None, [])
    except Exception as err:  # any change of shape means: cannot decline
        return [f"hypercorn's WebSocket Handshake changed ({type(err).__name__}: {err})"]
    if not declined or any(name == b"sec-websocket-extensions" for name, _ in headers):
        return ["hypercorn's WebSocket Handshake can no longer decline permessage-deflate"]
    return []
