"""Settings: read once from the environment into one typed, immutable object."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 7518 section 3.2: an HS256 key of at least the hash's size. Shorter secrets can be
# guessed offline from any one token.
MIN_SECRET_BYTES = 32
PEM_MARK = "-----BEGIN"


class SettingsError(ValueError):
    """A setting in the environment has a value we cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_rate(raw: str) -> tuple[int, float]:
    """Parse ``N/S`` (at most N messages in any S seconds) into ``(N, S)``."""
    try:
        count, _, seconds = raw.partition("/")
        n, s = int(count), float(seconds)
    except ValueError:
        raise SettingsError(f"CHAT_RATE must look like N/S (e.g. 20/10), got {raw!r}") from None
    if n < 1 or s <= 0:
        raise SettingsError(f"CHAT_RATE needs N >= 1 and S > 0, got {raw!r}")
    return n, s


def parse_origins(raw: str) -> frozenset[str]:
    """Parse the comma-separated ``CHAT_ALLOWED_ORIGINS`` list (``*`` allows all)."""
    return frozenset(o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip())


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """Parse ``CHAT_TRUSTED_PROXIES``: comma-separated addresses or CIDRs."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"CHAT_TRUSTED_PROXIES: {item!r} is not an address or CIDR") from None
    return tuple(networks)


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")


def check_redis_url(raw: str) -> str:
    """``REDIS_URL`` as given, once its form is one an instance can use (SettingsError if not).

    The error never repeats the URL: it may hold the Redis password.
    """
    from urllib.parse import urlsplit

    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in REDIS_SCHEMES:
        shown = f"scheme {scheme.lower()!r}" if sep and scheme.isascii() and len(scheme) <= 20 else "no scheme"
        raise SettingsError(f"REDIS_URL has {shown}; it must start with "
                            + ", ".join(f"{s}://" for s in REDIS_SCHEMES) + " (e.g. redis://localhost:6379/0)")
    try:
        parts = urlsplit(raw)
        if scheme.lower() in ("redis", "rediss"):
            parts.port  # noqa: B018 -- raises on a port that is not a number
            if not parts.hostname:
                raise ValueError("no host")
            db = parts.path.strip("/")
            if db and not db.isdigit():
                raise ValueError("the path must be /DB, a database number")
        elif scheme.lower() == "unix" and not parts.path:
            raise ValueError("no socket path")
        elif scheme.lower() == "redis+cluster":
            from .store import parse_cluster_url

            parse_cluster_url(raw)
    except ValueError as err:
        # urlsplit's own messages may quote the URL; say what is wrong in our words only.
        known = ("no host", "no socket path", "the path must be /DB, a database number",
                 "a cluster has no database number: no path after the nodes")
        detail = str(err) if str(err) in known else "its port must be a number"
        raise SettingsError(f"REDIS_URL is not a usable {scheme.lower()}:// URL: {detail}") from None
    return raw


def parse_list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting (e.g. ``CHAT_JWT_AUDIENCE``) as a tuple of its non-empty items."""
    return tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0, got {raw!r}")


def uvloop_wanted(env: Mapping[str, str]) -> bool:
    """``CHAT_UVLOOP`` (default on); read on its own too, before the app exists (eventloop.py)."""
    return _flag(env, "CHAT_UVLOOP", True)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Every knob of one instance; see docs/configuration.md for the meaning of each."""

    redis_url: str = "redis://localhost:6379/0"
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    history_maxlen: int = 1000
    history_on_join: int = 50
    max_text: int = 2000
    max_frame: int = 16384
    rate_count: int = 20
    rate_seconds: float = 10.0
    send_queue: int = 1000
    allowed_origins: frozenset[str] = frozenset()
    max_rooms: int = 10000
    room_ttl: int = 30 * 24 * 3600  # seconds; 0 keeps rooms for ever
    max_connections_per_ip: int = 50  # 0: no cap
    trusted_proxies: tuple[IPNetwork, ...] = ()
    redis_wait_replicas: int = 0
    redis_wait_ms: int = 500
    log_format: str = "text"
    # Token mode (docs/token-mode.md, quart_chat/auth.py): "open" or "token". The secret
    # (HS256) or the PEM public key (RS256, ES256; CHAT_JWT_PUBLIC_KEY may name a file) that
    # tokens are checked with, and the audiences/issuer they must carry when set.
    auth: str = "open"
    jwt_secret: str = field(default="", repr=False)
    jwt_public_key: str = ""
    jwt_audience: tuple[str, ...] = ()
    jwt_issuer: str = ""
    # G8: how long a (room, user, client_id) is remembered; docs/protocol.md says 10 minutes.
    dedupe_seconds: int = 600
    # The direct outbound path of `wire` (CHAT_FAST_PATH=0: the portable ASGI path only).
    fast_path: bool = True
    # uvloop under Hypercorn's plain asyncio worker (eventloop.py; CHAT_UVLOOP=0: asyncio's loop).
    uvloop: bool = True
    # How often this instance proves it is alive, and when others may call it dead.
    heartbeat_seconds: float = 5.0
    janitor_seconds: int = 10  # how often the janitor sweeps (give or take a quarter)
    dead_after_seconds: float = 15.0
    # The archive (docs/archive.md): off without a URL.
    archive_url: str = field(default="", repr=False)
    archive_days: int = 0  # 0: for ever
    archive_language: str = "simple"  # a PostgreSQL text search configuration
    # Entries a room's stream may hold beyond CHAT_HISTORY_MAXLEN while the archive has not
    # taken them (PostgreSQL down); past it the oldest go, and the archive reports a gap.
    archive_backlog: int = 100_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default ``os.environ``); every variable is optional."""
        env = os.environ if env is None else env
        rate_count, rate_seconds = parse_rate(env.get("CHAT_RATE", "").strip() or "20/10")
        defaults = cls()
        settings = cls(
            redis_url=check_redis_url(env.get("REDIS_URL", "").strip() or defaults.redis_url),
            instance=env.get("CHAT_INSTANCE", "").strip() or defaults.instance,
            history_maxlen=_int(env, "CHAT_HISTORY_MAXLEN", 1000),
            history_on_join=_int(env, "CHAT_HISTORY_ON_JOIN", 50, minimum=0),
            max_text=_int(env, "CHAT_MAX_TEXT", 2000),
            max_frame=_int(env, "CHAT_MAX_FRAME", 16384),
            rate_count=rate_count,
            rate_seconds=rate_seconds,
            send_queue=_int(env, "CHAT_SEND_QUEUE", 1000),
            allowed_origins=parse_origins(env.get("CHAT_ALLOWED_ORIGINS", "")),
            max_rooms=_int(env, "CHAT_MAX_ROOMS", 10000),
            room_ttl=_int(env, "CHAT_ROOM_TTL", defaults.room_ttl, minimum=0),
            janitor_seconds=_int(env, "CHAT_JANITOR_SECONDS", defaults.janitor_seconds),
            max_connections_per_ip=_int(env, "CHAT_MAX_CONNECTIONS_PER_IP", 50, minimum=0),
            trusted_proxies=parse_networks(env.get("CHAT_TRUSTED_PROXIES", "")),
            redis_wait_replicas=_int(env, "CHAT_REDIS_WAIT_REPLICAS", 0, minimum=0),
            redis_wait_ms=_int(env, "CHAT_REDIS_WAIT_MS", 500),
            log_format=_choice(env, "CHAT_LOG_FORMAT", "text", ("text", "json")),
            dedupe_seconds=_int(env, "CHAT_DEDUPE_SECONDS", 600),
            fast_path=_flag(env, "CHAT_FAST_PATH", True),
            uvloop=uvloop_wanted(env),
            auth=_choice(env, "CHAT_AUTH", "open", ("open", "token")),
            jwt_secret=env.get("CHAT_JWT_SECRET", "").strip(),
            jwt_public_key=_public_key(env),
            jwt_audience=parse_list(env.get("CHAT_JWT_AUDIENCE", "")),
            jwt_issuer=env.get("CHAT_JWT_ISSUER", "").strip(),
            archive_url=check_archive_url(env.get("CHAT_ARCHIVE_URL", "").strip()),
            archive_days=_int(env, "CHAT_ARCHIVE_DAYS", 0, minimum=0),
            archive_language=check_language(env.get("CHAT_ARCHIVE_LANGUAGE", "").strip() or "simple"),
            archive_backlog=_int(env, "CHAT_ARCHIVE_BACKLOG", 100_000),
        )
        if settings.auth == "token":
            check_token_key(settings)
        return settings




def check_archive_url(url: str) -> str:
    """``CHAT_ARCHIVE_URL``: empty (no archive) or a ``postgresql://`` (or ``postgres://``) URL."""
    if url and urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise SettingsError(f"CHAT_ARCHIVE_URL must be a postgresql:// URL, got scheme {urlsplit(url).scheme!r}")
    return url


def check_language(name: str) -> str:
    """``CHAT_ARCHIVE_LANGUAGE``: a text search configuration's name (``simple``, ``english``...);
    PostgreSQL says at start-up whether it has it."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SettingsError(f"CHAT_ARCHIVE_LANGUAGE must be a text search configuration such as simple or english, "
                            f"got {name!r}")
    return name


def _public_key(env: Mapping[str, str]) -> str:
    """``CHAT_JWT_PUBLIC_KEY`` as PEM text (read from the file it names, if it is a path)."""
    value = env.get("CHAT_JWT_PUBLIC_KEY", "").strip()
    if not value or (env.get("CHAT_AUTH", "").strip().lower() or "open") != "token":
        return value
    if PEM_MARK not in value:
        try:
            value = Path(value).expanduser().read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise SettingsError(f"CHAT_JWT_PUBLIC_KEY is neither PEM text nor a readable file: {err}") from None
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\n", "\n")  # PEM written on one line, as one-line env files need
    return value


def check_token_key(settings: Settings) -> None:
    """Token mode has exactly one key, and a secret is long enough (SettingsError if not).
    Parsing a public key is `auth.load_key`'s, done once when the app is built."""
    secret, pem = settings.jwt_secret, settings.jwt_public_key
    if secret and pem:
        raise SettingsError("set one of CHAT_JWT_SECRET (HS256) and CHAT_JWT_PUBLIC_KEY (RS256, ES256), not both")
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(f"CHAT_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256 "
                            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if not secret and not pem:
        raise SettingsError("CHAT_AUTH=token needs CHAT_JWT_SECRET (HS256) or CHAT_JWT_PUBLIC_KEY "
                            "(an RS256 or ES256 public key, PEM text or a file)")
