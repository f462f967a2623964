"""Who is asking, and from where: the client address and the Origin rule, behind trusted proxies.

Pure functions of the request's peer, headers and settings, so they are tested without a
socket. ``X-Forwarded-*`` headers are believed only when the peer itself is a trusted proxy
(`CHAT_TRUSTED_PROXIES`): a client that talks to an instance directly cannot forge them.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol
from urllib.parse import urlsplit

from .config import IPNetwork

DEFAULT_PORTS = {"http": 80, "https": 443}


class Headers(Protocol):
    """What is read of request headers: a dict or werkzeug's ``Headers``."""

    def get(self, key: str, default: str) -> str:
        """The header's value, or ``default``."""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def is_trusted(address: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    """True when ``address`` lies in one of the trusted proxy networks."""
    ip = _ip(address) if address else None
    return ip is not None and any(ip in net for net in trusted)


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (the machine itself)."""
    ip = _ip(address) if address else None
    return ip is not None and ip.is_loopback


def client_address(peer: str | None, headers: Headers, trusted: tuple[IPNetwork, ...]) -> str | None:
    """The address of the client: the peer's, or behind trusted proxies the nearest untrusted
    hop of ``X-Forwarded-For`` (read right to left: each proxy appends what it saw)."""
    if not is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if _ip(hop) is None:
            return peer  # a garbled header: fall back to what we know
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def request_origin(scheme: str, host: str | None, peer: str | None, headers: Headers,
                   trusted: tuple[IPNetwork, ...]) -> tuple[str, str | None]:
    """The ``(scheme, host)`` the browser used: ws/wss mapped to http/https, and behind a
    trusted proxy its ``X-Forwarded-Proto`` and ``X-Forwarded-Host``."""
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if is_trusted(peer, trusted):
        proto = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        fhost = headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if proto in DEFAULT_PORTS:
            scheme = proto
        if fhost:
            host = fhost
    return scheme, host


def origin_allowed(origin: str | None, scheme: str, host: str | None, allowed: frozenset[str]) -> bool:
    """Allow non-browser clients (no Origin), a listed origin, or the page's own
    scheme://host:port, a missing port being the scheme's default on both sides."""
    if origin is None or "*" in allowed:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or not host or parts.scheme != scheme:
        return False
    own = urlsplit("//" + host.strip().lower())
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        own_port = own.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return False
    return parts.hostname == own.hostname and port == own_port
