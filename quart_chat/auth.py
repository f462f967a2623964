"""Token mode (docs/token-mode.md): who a connection is, and which rooms it may enter.

Pure functions over the settings and a token's text; no sockets, no Redis, no request
objects. The site that embeds the chat signs a JWT (HS256 with a shared secret, or RS256 /
ES256 with its private key); an instance only ever verifies, with the key and algorithms its
own configuration fixes (never the token's ``alg`` header, RFC 8725 section 2.1).

    verifier = make_verifier(settings)        # SettingsError when token mode has no usable key
    identity = verifier.verify(token)         # TokenRefused(reason) -> HTTP 401
    identity.allows("team-red")               # the token's `rooms` patterns, `*` only

Nothing here logs or returns the token itself: a `TokenRefused` carries a short reason
("expired", "bad signature", ...) fit for a log line and for the client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import Settings, SettingsError, check_token_key
from .protocol import ProtocolError, validate_user

# `rooms` claim bounds: a token is not a database (and rides in a URL).
MAX_PATTERNS = 256
MAX_PATTERN_LEN = 128
MAX_SUB = 256
MAX_TOKEN = 8192  # characters; a URL or header longer than this is no token of ours


class TokenRefused(Exception):
    """A token that does not admit its bearer: the reason is short and never holds the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def matches(pattern: str, room: str) -> bool:
    """Whether ``room`` fits ``pattern``, where ``*`` stands for any run of characters
    (none included) and every other character only for itself (``?``, ``[``, ``]``, ``\\``
    are not wildcards, unlike fnmatch's)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return room == pattern
    first, *middle, last = parts
    if len(room) < len(first) + len(last) or not room.startswith(first) or not room.endswith(last):
        return False
    pos, end = len(first), len(room) - len(last)
    for part in middle:  # leftmost match of each piece in turn is enough for '*' alone
        at = room.find(part, pos, end)
        if at < 0:
            return False
        pos = at + len(part)
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token says its bearer is: ``name`` (shown, fixed for the connection), ``sub``
    (the site's user id), ``rooms`` (patterns it may join and read; None: every room) and
    ``exp`` (Unix time the token stops being valid)."""

    name: str
    sub: str
    rooms: tuple[str, ...] | None
    exp: float

    def allows(self, room: str) -> bool:
        """Whether this identity may join ``room`` and read its history."""
        return self.rooms is None or any(matches(p, room) for p in self.rooms)


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """The `Identity` of verified claims; `TokenRefused` when they are not what section 9 says."""
    try:
        name = validate_user(claims.get("name"))
    except ProtocolError as err:
        raise TokenRefused(f"bad claims: name: {err.message}") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB:
        raise TokenRefused(f"bad claims: sub must be a string of 1-{MAX_SUB} characters")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
        raise TokenRefused("bad claims: exp must be a number")
    raw = claims.get("rooms")
    rooms: tuple[str, ...] | None = None
    if raw is not None:
        if not isinstance(raw, list) or len(raw) > MAX_PATTERNS:
            raise TokenRefused(f"bad claims: rooms must be a list of at most {MAX_PATTERNS} names or patterns")
        if not all(isinstance(p, str) and 1 <= len(p) <= MAX_PATTERN_LEN for p in raw):
            raise TokenRefused(f"bad claims: each of rooms must be a string of 1-{MAX_PATTERN_LEN} characters")
        rooms = tuple(dict.fromkeys(raw))  # duplicates dropped, order kept
    return Identity(name, sub, rooms, float(exp))


# PyJWT's exceptions, most specific first, as the reason a refusal gives.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.ImmatureSignatureError, "not valid yet"),
    (jwt.InvalidKeyError, "unusable key"),
)


def refusal_reason(err: jwt.PyJWTError) -> str:
    """A short, token-free description of why PyJWT refused a token."""
    if isinstance(err, jwt.MissingRequiredClaimError):
        return f"missing claim {err.claim}"
    for kind, reason in _REASONS:
        if isinstance(err, kind):
            return reason
    return "malformed"


class Verifier:
    """Checks tokens with one key and the algorithms the configuration fixes."""

    __slots__ = ("key", "algorithms", "audience", "issuer", "_jwt")

    def __init__(self, key: Any, algorithms: tuple[str, ...], audience: tuple[str, ...] = (),
                 issuer: str = "") -> None:
        self.key = key
        self.algorithms = algorithms
        self.audience = audience
        self.issuer = issuer
        # iat is not checked: a token "issued in the future" by a site whose clock runs a
        # second ahead is no threat, and refusing it would be a puzzle. nbf and exp are.
        self._jwt = jwt.PyJWT(options={"require": ["exp", "sub"], "verify_iat": False})

    def verify(self, token: str | None) -> Identity:
        """The identity ``token`` proves; `TokenRefused` for no token, a bad signature, a
        wrong algorithm, audience or issuer, an expired or malformed token, or bad claims."""
        if not token:
            raise TokenRefused("no token")
        if len(token) > MAX_TOKEN or not token.isascii():  # a JWS is base64url and dots
            raise TokenRefused("malformed")
        try:
            claims = self._jwt.decode(
                token, self.key, algorithms=list(self.algorithms),
                audience=list(self.audience) or None, issuer=self.issuer or None,
            )
        except jwt.PyJWTError as err:
            raise TokenRefused(refusal_reason(err)) from None
        if not isinstance(claims, dict):
            raise TokenRefused("malformed")
        return identity_from_claims(claims)

    def describe(self) -> str:
        """For the start-up log line: algorithms, audience, issuer; never the key."""
        extra = "".join([f", audience {'/'.join(self.audience)}" if self.audience else "",
                         f", issuer {self.issuer}" if self.issuer else ""])
        return f"token ({'/'.join(self.algorithms)}{extra})"


def load_key(settings: Settings) -> tuple[Any, tuple[str, ...]]:
    """The verification key and its algorithms, from the settings alone (SettingsError if unusable).

    HS256 with ``jwt_secret``; RS256 with an RSA public key, ES256 with a P-256 one.
    """
    check_token_key(settings)
    if settings.jwt_secret:
        return settings.jwt_secret.encode(), ("HS256",)
    try:
        key = load_pem_public_key(settings.jwt_public_key.encode())
    except (ValueError, TypeError) as err:
        raise SettingsError(f"CHAT_JWT_PUBLIC_KEY is not a PEM public key ({err})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise SettingsError(f"CHAT_JWT_PUBLIC_KEY: an RSA key of {key.key_size} bits is too short (2048 at least)")
        return key, ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ("ES256",)
    raise SettingsError("CHAT_JWT_PUBLIC_KEY must be an RSA key (RS256) or an EC P-256 key (ES256)")


def make_verifier(settings: Settings) -> Verifier | None:
    """The verifier of token mode, None in open mode; SettingsError when token mode cannot work."""
    if settings.auth != "token":
        return None
    key, algorithms = load_key(settings)
    return Verifier(key, algorithms, settings.jwt_audience, settings.jwt_issuer)


def query_token(query_string: bytes) -> str | None:
    """The ``token`` parameter of a raw query string (``/ws?token=...``), or None. Read from
    the ASGI scope: Quart's ``websocket.args`` would keep a parsed copy for the connection's life."""
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == "token":
            return value
    return None


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


# ---------------------------------------------------------------- issuing (the site's side)
# The chat never needs these: `quart-chat token` and `quart-chat demo --auth` use them, and
# they show what a site does (docs/token-mode.md).
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(raw: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h`` or ``2d`` as whole seconds (ValueError otherwise)."""
    text = raw.strip().lower()
    unit = TTL_UNITS.get(text[-1:], None)
    number = text[:-1] if unit is not None else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"a time to live looks like 90s, 15m, 1h or 2d, not {raw!r}") from None
    seconds = value * (unit or 1)
    if not math.isfinite(seconds) or seconds < 1:
        raise ValueError(f"a time to live must be at least one second, not {raw!r}")
    return int(seconds)


def signing_key(private_pem: bytes) -> tuple[Any, str]:
    """A private key (PEM) and its algorithm: RS256 for RSA, ES256 for EC P-256."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError("the private key must be RSA (RS256) or EC P-256 (ES256)")


def issue(key: Any, algorithm: str, name: str, sub: str, rooms: list[str] | None = None, ttl: int = 3600,
          audience: str = "", issuer: str = "", now: float | None = None) -> str:
    """A token for ``name`` (the claims of docs/token-mode.md), valid ``ttl`` seconds."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "name": name, "iat": issued, "exp": issued + ttl}
    if rooms is not None:
        claims["rooms"] = list(rooms)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm)
