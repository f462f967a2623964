"""Unit tests of token mode's pure parts (quart_chat/auth.py, the settings, `quart-chat token`):
real keys and real tokens, signed with PyJWT or by hand; no server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from quart_chat import auth, cli
from quart_chat.app import create_app
from quart_chat.config import Settings, SettingsError

SECRET = "s" * 24 + "-test-secret-32b"  # 40 bytes
ENV = {"CHAT_AUTH": "token", "CHAT_JWT_SECRET": SECRET}


def rsa_pair(bits: int = 2048) -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem.decode()


def ec_pair(curve: ec.EllipticCurve) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(curve)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem.decode()


def private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def claims(**over) -> dict:
    base = {"sub": "u-1", "name": "Alice", "exp": int(time.time()) + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, payload: dict, key: bytes, digest=hashlib.sha256) -> str:
    """A JWS built by hand: HMAC over whatever header it claims (for the attacks PyJWT won't sign)."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), digest).digest())


def verifier(env: dict | None = None) -> auth.Verifier:
    v = auth.make_verifier(Settings.from_env(env or ENV))
    assert v is not None
    return v


def refused(v: auth.Verifier, token: str | None) -> str:
    with pytest.raises(auth.TokenRefused) as err:
        v.verify(token)
    if token:
        assert token not in err.value.reason and token not in str(err.value)
    return err.value.reason


# ---------------------------------------------------------------- patterns
@pytest.mark.parametrize("pattern, room, ok", [
    ("general", "general", True),
    ("general", "General", False),
    ("general", "general2", False),
    ("*", "anything", True),
    ("team-*", "team-red", True),
    ("team-*", "team-", True),
    ("team-*", "team", False),
    ("team-*", "xteam-red", False),
    ("*-ops", "eu-ops", True),
    ("*-ops", "eu-ops-2", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "a-x-b-y-c", True),
    ("a*b*c", "acb", False),
    ("a*a", "a", False),
    ("a*a", "aa", True),
    ("**", "x", True),
    # Only '*' is special: fnmatch's '?' and '[...]' are plain characters here.
    ("team-?", "team-a", False),
    ("team-[ab]", "team-a", False),
    ("team-[ab]", "team-[ab]", True),
    ("[!x]*", "y", False),
    ("a\\*", "a\\b", True),
])
def test_room_patterns(pattern, room, ok):
    assert auth.matches(pattern, room) is ok


def test_identity_allows():
    every = auth.Identity("A", "1", None, 0.0)
    none = auth.Identity("A", "1", (), 0.0)
    some = auth.Identity("A", "1", ("general", "team-*"), 0.0)
    assert every.allows("x") and not none.allows("general")
    assert some.allows("general") and some.allows("team-x") and not some.allows("dev")


# ---------------------------------------------------------------- settings
def algorithms(settings: Settings) -> tuple[str, ...]:
    """What the key of ``settings`` allows, as the app loads it (once, in make_verifier)."""
    return auth.load_key(settings)[1]


def test_open_mode_is_the_default_and_needs_no_key():
    s = Settings.from_env({})
    assert s.auth == "open"
    assert auth.make_verifier(s) is None
    create_app(s)


def test_token_mode_without_a_key_does_not_start():
    with pytest.raises(SettingsError, match=r"CHAT_JWT_SECRET.*CHAT_JWT_PUBLIC_KEY"):
        Settings.from_env({"CHAT_AUTH": "token"})
    with pytest.raises(SettingsError, match="CHAT_JWT_SECRET"):
        create_app(Settings(auth="token"))
    with pytest.raises(SettingsError, match="CHAT_AUTH"):
        Settings.from_env({"CHAT_AUTH": "jwt"})


def test_secret_rules():
    assert algorithms(Settings.from_env(ENV)) == ("HS256",)
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_SECRET": "short"})
    _, pem = rsa_pair()
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({**ENV, "CHAT_JWT_PUBLIC_KEY": pem})
    assert SECRET not in repr(Settings.from_env(ENV))


def test_public_keys_fix_the_algorithm(tmp_path):
    _, rsa_pem = rsa_pair()
    _, ec_pem = ec_pair(ec.SECP256R1())
    assert algorithms(Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": rsa_pem})) == ("RS256",)
    assert algorithms(Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": ec_pem})) == ("ES256",)
    # A file, by absolute or relative path, and PEM written on one line with \n.
    path = tmp_path / "chat.pub"
    path.write_text(rsa_pem)
    s = Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": str(path)})
    assert s.jwt_public_key == rsa_pem.strip() and algorithms(s) == ("RS256",)
    one_line = rsa_pem.strip().replace("\n", "\\n")
    assert algorithms(Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": one_line})) == ("RS256",)
    with pytest.raises(SettingsError, match="neither PEM text nor a readable file"):
        Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")})
    with pytest.raises(SettingsError, match="not a PEM public key"):
        bad_pem = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"
        algorithms(Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": bad_pem}))
    with pytest.raises(SettingsError, match="P-256"):
        algorithms(Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": ec_pair(ec.SECP384R1())[1]}))
    with pytest.raises(SettingsError, match="too short"):
        algorithms(Settings.from_env({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": rsa_pair(1024)[1]}))


def test_audience_and_issuer_settings():
    s = Settings.from_env({**ENV, "CHAT_JWT_AUDIENCE": "chat, chat-staging ,", "CHAT_JWT_ISSUER": " https://site "})
    assert s.jwt_audience == ("chat", "chat-staging") and s.jwt_issuer == "https://site"
    assert "audience chat/chat-staging" in verifier({**ENV, "CHAT_JWT_AUDIENCE": "chat, chat-staging"}).describe()


# ---------------------------------------------------------------- verification
def test_a_good_token_gives_its_identity():
    exp = int(time.time()) + 60
    token = jwt.encode(claims(name="  Tōken Holder ", rooms=["general", "team-*", "general"], exp=exp), SECRET, "HS256")
    who = verifier().verify(token)
    assert who == auth.Identity("Tōken Holder", "u-1", ("general", "team-*"), float(exp))
    assert verifier().verify(jwt.encode(claims(), SECRET, "HS256")).rooms is None  # no claim: every room


def test_refusals():
    v = verifier()
    now = int(time.time())
    assert refused(v, None) == "no token"
    assert refused(v, "") == "no token"
    assert refused(v, "not-a-jwt") == "malformed"
    assert refused(v, "é.\ud800.x") == "malformed"  # a JWS is ASCII: nothing else reaches PyJWT
    assert refused(v, jwt.encode(claims(pad="x" * 9000), SECRET, "HS256")) == "malformed"  # over 8 KB
    assert refused(v, jwt.encode(claims(), "x" * 40, "HS256")) == "bad signature"
    assert refused(v, jwt.encode(claims(exp=now - 1), SECRET, "HS256")) == "expired"
    assert refused(v, jwt.encode(claims(exp=None), SECRET, "HS256")) == "missing claim exp"
    assert refused(v, jwt.encode(claims(sub=None), SECRET, "HS256")) == "missing claim sub"
    assert refused(v, jwt.encode(claims(nbf=now + 300), SECRET, "HS256")) == "not valid yet"
    # iat is not checked: a site whose clock runs ahead is no threat.
    assert v.verify(jwt.encode(claims(iat=now + 300), SECRET, "HS256")).name == "Alice"
    # An audience the chat was not told to accept is refused (RFC 7519 4.1.3).
    assert refused(v, jwt.encode(claims(aud="elsewhere"), SECRET, "HS256")) == "wrong audience"
    assert refused(v, jwt.encode(claims(name=None), SECRET, "HS256")).startswith("bad claims: name")
    assert refused(v, jwt.encode(claims(name="x" * 33), SECRET, "HS256")).startswith("bad claims: name")
    assert refused(v, jwt.encode(claims(name="a\x07b"), SECRET, "HS256")).startswith("bad claims: name")
    assert refused(v, jwt.encode(claims(sub=""), SECRET, "HS256")).startswith("bad claims: sub")
    assert refused(v, jwt.encode(claims(rooms="general"), SECRET, "HS256")).startswith("bad claims: rooms")
    assert refused(v, jwt.encode(claims(rooms=["ok", 3]), SECRET, "HS256")).startswith("bad claims: each")
    assert refused(v, jwt.encode(claims(rooms=["x"] * 300), SECRET, "HS256")).startswith("bad claims: rooms")


def test_the_algorithm_comes_from_the_configuration_never_from_the_token():
    v = verifier()
    # alg "none", unsigned.
    unsigned = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode()) + "."
    assert refused(v, unsigned) == "algorithm not allowed"
    # The right secret, another HMAC: still refused (only HS256 is configured).
    assert refused(v, hand_signed({"alg": "HS512", "typ": "JWT"}, claims(), SECRET.encode(), hashlib.sha512)) \
        == "algorithm not allowed"
    # RS256 configured: a token "signed" with HS256 using the public key as the HMAC secret
    # (the classic key-confusion attack) is refused, as is a real RS256 token from another key.
    private, pem = rsa_pair()
    rv = verifier({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": pem})
    assert rv.verify(jwt.encode(claims(), private, "RS256")).name == "Alice"
    assert refused(rv, hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())) == "algorithm not allowed"
    assert refused(rv, jwt.encode(claims(), rsa_pair()[0], "RS256")) == "bad signature"
    assert refused(rv, jwt.encode(claims(), private, "PS256")) == "algorithm not allowed"
    # ES256 likewise.
    ec_private, ec_pem = ec_pair(ec.SECP256R1())
    ev = verifier({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": ec_pem})
    assert ev.verify(jwt.encode(claims(), ec_private, "ES256")).sub == "u-1"
    assert refused(ev, jwt.encode(claims(), private, "RS256")) == "algorithm not allowed"


def test_audience_and_issuer_are_checked_when_configured():
    v = verifier({**ENV, "CHAT_JWT_AUDIENCE": "chat", "CHAT_JWT_ISSUER": "https://site.example"})
    good = claims(aud="chat", iss="https://site.example")
    assert v.verify(jwt.encode(good, SECRET, "HS256")).name == "Alice"
    assert v.verify(jwt.encode({**good, "aud": ["other", "chat"]}, SECRET, "HS256")).name == "Alice"
    assert refused(v, jwt.encode({**good, "aud": "other"}, SECRET, "HS256")) == "wrong audience"
    assert refused(v, jwt.encode(claims(iss="https://site.example"), SECRET, "HS256")) == "missing claim aud"
    assert refused(v, jwt.encode({**good, "iss": "https://evil.example"}, SECRET, "HS256")) == "wrong issuer"
    assert refused(v, jwt.encode(claims(aud="chat"), SECRET, "HS256")) == "missing claim iss"


@pytest.mark.parametrize("header, token", [
    (None, None), ("", None), ("Bearer", None), ("Bearer  ", None), ("Basic abc", None),
    ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc ", "abc"),
])
def test_bearer_header(header, token):
    assert auth.bearer(header) == token


@pytest.mark.parametrize("raw, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800),
                                          ("1.5h", 5400), (" 1H ", 3600)])
def test_parse_ttl(raw, seconds):
    assert auth.parse_ttl(raw) == seconds


@pytest.mark.parametrize("raw", ["", "h", "0", "0.5s", "-1h", "1w", "nan", "inf"])
def test_parse_ttl_refuses(raw):
    with pytest.raises(ValueError):
        auth.parse_ttl(raw)


# ---------------------------------------------------------------- quart-chat token
def test_cli_token_hs256(monkeypatch, capsys):
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    monkeypatch.setenv("CHAT_JWT_AUDIENCE", "chat")
    monkeypatch.delenv("CHAT_JWT_ISSUER", raising=False)
    before = time.time()
    assert cli.main(["token", "--name", "Alice", "--rooms", "general,team-*", "--ttl", "1h",
                     "--url", "http://chat.example:8080/"]) == 0
    token, url = capsys.readouterr().out.splitlines()
    assert url == "http://chat.example:8080/#token=" + token
    who = verifier({**ENV, "CHAT_JWT_AUDIENCE": "chat"}).verify(token)
    assert (who.name, who.sub, who.rooms) == ("Alice", "Alice", ("general", "team-*"))
    assert before + 3600 - 2 <= who.exp <= time.time() + 3600
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_cli_token_rs256_and_refusals(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("CHAT_JWT_SECRET", raising=False)
    monkeypatch.delenv("CHAT_JWT_AUDIENCE", raising=False)
    monkeypatch.delenv("CHAT_JWT_ISSUER", raising=False)
    private, pem = rsa_pair()
    key_file = tmp_path / "site.key"
    key_file.write_bytes(private_pem(private))
    assert cli.main(["token", "--name", "Bob", "--sub", "42", "--private-key", str(key_file),
                     "--issuer", "https://site.example"]) == 0
    token, url = capsys.readouterr().out.splitlines()
    assert url == "http://localhost:3000/#token=" + token
    who = verifier({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": pem, "CHAT_JWT_ISSUER": "https://site.example"}).verify(token)
    assert (who.name, who.sub, who.rooms) == ("Bob", "42", None)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert cli.main(["token", "--name", "Bob"]) == 1  # no key at all
    assert "CHAT_JWT_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    assert cli.main(["token", "--name", "x" * 40]) == 2
    assert cli.main(["token", "--name", "Bob", "--ttl", "soon"]) == 2
    capsys.readouterr()
