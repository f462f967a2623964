"""Unit tests of the pure parts: frames, validation, ids, paging, gaps, rate limit, settings."""

from __future__ import annotations

import json

import pytest

from quart_chat.blueprints.ws import _frame_too_big
from quart_chat.config import Settings, SettingsError, parse_networks, parse_rate
from quart_chat.forwarded import client_address, origin_allowed, request_origin
from quart_chat.history import has_gap, parse_page_args
from quart_chat.logs import redact
from quart_chat.protocol import (
    Join,
    Leave,
    Message,
    Ping,
    ProtocolError,
    encode_joined,
    message_frame,
    message_json,
    parse_frame,
    parse_stream_id,
)
from quart_chat.ratelimit import SlidingWindow


def parse(obj) -> object:
    return parse_frame(obj if isinstance(obj, (str, bytes)) else json.dumps(obj), max_text=20)


def refused(obj) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(obj)
    return info.value


def test_valid_frames():
    assert parse({"type": "join", "room": "general", "user": "  Alice "}) == Join("general", "Alice", None)
    assert parse({"type": "join", "room": "a-B_9", "since": "5-1"}) == Join("a-B_9", None, (5, 1))
    assert parse({"type": "leave", "room": "dev"}) == Leave("dev")
    assert parse({"type": "message", "room": "dev", "text": " hi\n\tthere ", "client_id": "c"}) == \
        Message("dev", "hi\n\tthere", "c")
    assert parse({"type": "ping", "extra": [1, 2]}) == Ping()


@pytest.mark.parametrize("raw, code, ref", [
    ("nope", "bad_json", None),
    ("{", "bad_json", None),
    ("[" * 5000 + "]" * 5000, "bad_json", None),
    ("[1, 2]", "bad_request", None),
    ('"join"', "bad_request", None),
    ({"room": "x"}, "bad_request", None),
    ({"type": 3}, "bad_request", None),
    ({"type": "shout"}, "unknown_type", "shout"),
    ({"type": "join", "user": "A"}, "bad_request", "join"),
    ({"type": "join", "room": 5, "user": "A"}, "bad_request", "join"),
    ({"type": "join", "room": "bad room", "user": "A"}, "invalid_room", "join"),
    ({"type": "join", "room": "x" * 65, "user": "A"}, "invalid_room", "join"),
    ({"type": "join", "room": "", "user": "A"}, "invalid_room", "join"),
    ({"type": "join", "room": "café", "user": "A"}, "invalid_room", "join"),
    ({"type": "join", "room": "r", "user": "   "}, "invalid_user", "join"),
    ({"type": "join", "room": "r", "user": "x" * 33}, "invalid_user", "join"),
    ({"type": "join", "room": "r", "user": "a\x00b"}, "invalid_user", "join"),
    ({"type": "join", "room": "r", "user": 7}, "bad_request", "join"),
    ({"type": "join", "room": "r", "user": "A", "since": "yesterday"}, "bad_request", "join"),
    ({"type": "join", "room": "r", "user": "A", "since": 12}, "bad_request", "join"),
    ({"type": "message", "room": "r", "text": "   ", "client_id": "c1"}, "invalid_text", "c1"),
    ({"type": "message", "room": "r", "text": "x" * 21}, "invalid_text", "message"),
    ({"type": "message", "room": "r", "text": "bell\x07"}, "invalid_text", "message"),
    ({"type": "message", "room": "r", "text": "c\rr"}, "invalid_text", "message"),
    ({"type": "message", "room": "r", "text": 5}, "bad_request", "message"),
    ({"type": "message", "room": "r"}, "bad_request", "message"),
    ({"type": "message", "room": "r", "text": "hi", "client_id": "x" * 65}, "bad_request", "message"),
    ({"type": "message", "room": "r", "text": "hi", "client_id": 4}, "bad_request", "message"),
    ({"type": "leave"}, "bad_request", "leave"),
])
def test_refused_frames(raw, code, ref):
    err = refused(raw)
    assert (err.code, err.ref) == (code, ref)
    frame = json.loads(err.frame())
    assert frame["type"] == "error" and frame["code"] == code and frame["message"]
    assert frame.get("ref") == ref


def test_binary_frames_are_refused():
    assert refused(b'{"type": "ping"}').code == "bad_request"


def test_limits_count_code_points_after_trim():
    assert parse({"type": "message", "room": "r", "text": "  " + "é" * 20 + "  "}).text == "é" * 20
    assert parse({"type": "join", "room": "r", "user": "😀" * 32}).user == "😀" * 32


@pytest.mark.parametrize("raw, expected", [
    ("0-0", (0, 0)), ("1764085000000-3", (1764085000000, 3)), ("18446744073709551615-0", (2**64 - 1, 0)),
    ("1-", None), ("-1", None), ("1-2-3", None), (" 1-2", None), ("18446744073709551616-0", None),
    ("18446744073709551615-18446744073709551615", None), ("١-٢", None),
])
def test_stream_ids(raw, expected):
    assert parse_stream_id(raw) == expected


def test_ids_compare_as_pairs_not_strings():
    assert parse_stream_id("9-0") < parse_stream_id("10-0")
    assert parse_stream_id("10-2") < parse_stream_id("10-10")


def test_message_encoding_splices_once():
    data = '{"room":"r","user":"A","text":"<b>hi</b>","ts":1}'
    obj = json.loads(message_json("5-0", data))
    assert obj == {"id": "5-0", "room": "r", "user": "A", "text": "<b>hi</b>", "ts": 1}
    frame = json.loads(message_frame(message_json("5-0", data)))
    assert frame["type"] == "message" and frame["id"] == "5-0"
    joined = json.loads(encode_joined("r", "A", [message_json("5-0", data)], ["A"], False))
    assert joined == {"type": "joined", "room": "r", "user": "A", "members": ["A"], "gap": False,
                      "read": None, "history": [obj]}
    assert json.loads(encode_joined("r", "A", [], [], True))["history"] == []


def test_gap_rule():
    assert has_gap((0, 0), (5, 0), trimmed=False) is False
    assert has_gap((0, 0), (5, 0), trimmed=True) is True
    assert has_gap((6, 0), (5, 0), trimmed=True) is False
    assert has_gap((5, 0), (5, 0), trimmed=True) is False


@pytest.mark.parametrize("args, expected", [
    ({}, (50, None)), ({"limit": "1"}, (1, None)), ({"limit": "500", "before": "7-1"}, (500, (7, 1))),
])
def test_page_args(args, expected):
    assert parse_page_args(args) == expected


@pytest.mark.parametrize("args", [{"limit": "0"}, {"limit": "501"}, {"limit": "-1"}, {"limit": "2.5"},
                                  {"limit": "٣"}, {"before": "x"}, {"before": ""}])
def test_page_args_refused(args):
    with pytest.raises(ProtocolError) as info:
        parse_page_args(args)
    assert info.value.code == "bad_request"


def test_sliding_window_is_exact():
    now = [0.0]
    w = SlidingWindow(3, 10, clock=lambda: now[0])
    accepted = []
    for t in (0, 1, 2, 3, 9.9):
        now[0] = t
        accepted.append(w.allow())
    assert accepted == [True, True, True, False, False]  # refused attempts are not counted...
    now[0] = 10.0
    assert w.allow() is True  # ...and the window slides from the oldest accepted event (t=0)
    assert w.allow() is False  # t=1 and t=2 are still inside


def test_sliding_window_keeps_only_the_events_in_the_window():
    """A huge limit (the benchmark's CHAT_RATE=1000000/1) must not mean a huge memory."""
    now = [0.0]
    w = SlidingWindow(1_000_000, 1, clock=lambda: now[0])
    for k in range(5000):
        now[0] = k / 100  # 100 events a second for 50 s
        assert w.allow()
    assert len(w._times) <= 101


def test_settings_defaults_and_env():
    s = Settings.from_env({})
    assert (s.redis_url, s.history_maxlen, s.history_on_join, s.max_text, s.max_frame) == \
        ("redis://localhost:6379/0", 1000, 50, 2000, 16384)
    assert (s.rate_count, s.rate_seconds, s.send_queue, s.allowed_origins) == (20, 10.0, 1000, frozenset())
    assert ":" in s.instance
    s = Settings.from_env({"CHAT_RATE": "5/2", "CHAT_INSTANCE": "x", "CHAT_ALLOWED_ORIGINS": "https://a.example/, *"})
    assert (s.rate_count, s.rate_seconds, s.instance) == (5, 2.0, "x")
    assert s.allowed_origins == frozenset({"https://a.example", "*"})
    for bad in ("5", "x/2", "0/1", "1/0"):
        with pytest.raises(SettingsError):
            parse_rate(bad)
    with pytest.raises(SettingsError):
        Settings.from_env({"CHAT_MAX_TEXT": "lots"})


@pytest.mark.parametrize("origin, scheme, host, allowed, ok", [
    (None, "http", "h:3000", frozenset(), True),
    ("http://h:3000", "http", "h:3000", frozenset(), True),
    ("http://H:3000/", "http", "h:3000", frozenset(), True),
    ("http://h:3001", "http", "h:3000", frozenset(), False),
    ("http://evil.example", "http", "h:3000", frozenset(), False),
    ("https://h", "https", "h:443", frozenset(), True),
    ("https://h", "https", "h", frozenset(), True),
    ("http://h", "http", "h", frozenset(), True),
    ("http://h:80", "http", "h", frozenset(), True),
    # A Host without a port means the scheme's default port, not "any port".
    ("http://chat.example.com:8081", "http", "chat.example.com", frozenset(), False),
    ("https://h", "http", "h", frozenset(), False),
    ("http://h:443", "https", "h", frozenset(), False),
    ("null", "http", "h:3000", frozenset(), False),
    ("http://evil.example", "http", "h:3000", frozenset({"http://evil.example"}), True),
    ("http://evil.example", "http", "h:3000", frozenset({"*"}), True),
    ("http://h:99999", "http", "h:3000", frozenset(), False),
])
def test_origin_rule(origin, scheme, host, allowed, ok):
    assert origin_allowed(origin, scheme, host, allowed) is ok


PROXY = parse_networks("10.0.0.5, 192.168.0.0/24")


@pytest.mark.parametrize("peer, xff, expected", [
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),          # not a proxy: its headers are ignored
    ("10.0.0.5", "1.2.3.4", "1.2.3.4"),
    ("10.0.0.5", "6.6.6.6, 1.2.3.4", "1.2.3.4"),        # the left part is the client's to forge
    ("10.0.0.5", "1.2.3.4, 192.168.0.7", "1.2.3.4"),    # trusted hops are skipped
    ("10.0.0.5", "", "10.0.0.5"),
    ("10.0.0.5", "garbage", "10.0.0.5"),
])
def test_client_address_behind_trusted_proxies(peer, xff, expected):
    assert client_address(peer, {"X-Forwarded-For": xff} if xff else {}, PROXY) == expected


def test_forwarded_origin_only_from_trusted_proxies():
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com"}
    assert request_origin("ws", "10.0.0.5:3000", "10.0.0.5", headers, PROXY) == ("https", "chat.example.com")
    assert request_origin("ws", "h:3000", "203.0.113.9", headers, PROXY) == ("http", "h:3000")
    assert request_origin("wss", "h", "203.0.113.9", {}, PROXY) == ("https", "h")


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://:se/cr@et@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:pw@h/0?password=other&db=1", "redis://user:***@h/0?password=***&db=1"),
    ("redis://h/0?Password=a@b/c", "redis://h/0?password=***"),
    ("redis+sentinel://:pw@h1:26379,h2:26379/0/mymaster", "redis+sentinel://:***@h1:26379,h2:26379/0/mymaster"),
    ("no scheme at all: s3cret", "***"),
])
def test_redact_hides_every_password(url, shown):
    """The whole redacted URL, character for character: no part of a password survives, and
    everything a reader needs (scheme, user, hosts, database, other parameters) does."""
    assert redact(url) == shown


def test_frame_size_is_utf8_bytes():
    assert not _frame_too_big("a" * 100, 100)
    assert _frame_too_big("a" * 101, 100)
    assert _frame_too_big("é" * 51, 100)  # 102 bytes
    assert not _frame_too_big("é" * 50, 100)


def test_sentinel_url():
    from quart_chat.store import parse_sentinel_url

    conf = parse_sentinel_url("redis+sentinel://:p%40ss@h1:26379,[::1]:26380/2/chat")
    assert conf.sentinels == (("h1", 26379), ("::1", 26380))
    assert (conf.service, conf.db, conf.password, conf.username) == ("chat", 2, "p@ss", None)
    assert parse_sentinel_url("redis+sentinel://h:1").service == "mymaster"
    for bad in ("redis://h:1", "redis+sentinel://h", "redis+sentinel://h:1/x/y", "redis+sentinel://h:1/0/a/b"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


# ---------------------------------------------------------------- setting parsers, one kind each
@pytest.mark.parametrize("env, message", [
    ({"CHAT_MAX_TEXT": "abc"}, "CHAT_MAX_TEXT must be a whole number, got 'abc'"),
    ({"CHAT_MAX_TEXT": "0"}, "CHAT_MAX_TEXT must be at least 1, got 0"),
    ({"CHAT_ROOM_TTL": "-5"}, "CHAT_ROOM_TTL must be at least 0, got -5"),
    ({"CHAT_JANITOR_SECONDS": "0"}, "CHAT_JANITOR_SECONDS must be at least 1, got 0"),
    ({"CHAT_FAST_PATH": "maybe"}, "CHAT_FAST_PATH must be 1 or 0, got 'maybe'"),
    ({"CHAT_UVLOOP": "2"}, "CHAT_UVLOOP must be 1 or 0, got '2'"),
    ({"CHAT_LOG_FORMAT": "xml"}, "CHAT_LOG_FORMAT must be one of text, json, got 'xml'"),
    ({"CHAT_AUTH": "jwt"}, "CHAT_AUTH must be one of open, token, got 'jwt'"),
    ({"CHAT_TRUSTED_PROXIES": "10.0.0.0/8, nope"}, "CHAT_TRUSTED_PROXIES: 'nope' is not an address or CIDR"),
    ({"CHAT_RATE": "20 per 10"}, "CHAT_RATE must look like N/S (e.g. 20/10), got '20 per 10'"),
    ({"REDIS_URL": "http://h:6379"}, "REDIS_URL has scheme 'http'; it must start with redis://"),
    ({"REDIS_URL": "redis://h:port/0"}, "REDIS_URL is not a usable redis:// URL: its port must be a number"),
    ({"REDIS_URL": "redis://h/zero"}, "REDIS_URL is not a usable redis:// URL: the path must be /DB"),
    ({"CHAT_AUTH": "token", "CHAT_JWT_SECRET": "short"}, "CHAT_JWT_SECRET must be at least 32 bytes"),
])
def test_each_bad_setting_names_itself_and_what_is_accepted(env, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(message)


def test_setting_parsers_accept_what_they_promise():
    s = Settings.from_env({"CHAT_FAST_PATH": " OFF ", "CHAT_UVLOOP": "no", "CHAT_LOG_FORMAT": "JSON",
                           "CHAT_TRUSTED_PROXIES": "10.0.0.0/8, ::1 ,", "CHAT_ROOM_TTL": "0",
                           "CHAT_JWT_AUDIENCE": "a, b ,a", "REDIS_URL": " unix:///run/redis.sock "})
    assert (s.fast_path, s.uvloop, s.log_format, s.room_ttl) == (False, False, "json", 0)
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert s.jwt_audience == ("a", "b") and s.redis_url == "unix:///run/redis.sock"
