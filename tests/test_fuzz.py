"""Property test: random frames thrown at a real `Session` wired to a real `Broker` on a real
redis-server (nothing stands in for Redis).

For every frame: `handle()` never raises; the frame gets exactly one reply (`joined`, `left`,
`pong`) or one `error` with a known code and the `ref` PROTOCOL.md prescribes, except an
accepted `message`, whose answer is its own echo through Redis pub/sub. An independent model
written from PROTOCOL.md sections 4 and 6 says which outcomes are allowed (a frame with
several faults may be refused for any of them). At the end every stored stream entry, room
and member is checked to be valid.
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata

import orjson
import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from quart_chat.broker import Broker
from quart_chat.config import Settings
from quart_chat.rooms import Hub
from quart_chat.session import Session

from cluster import RedisProcess

MAX_TEXT = 200
KNOWN_CODES = {"bad_json", "bad_request", "unknown_type", "invalid_room", "invalid_user",
               "invalid_text", "not_joined", "rate_limited", "unavailable"}
REPLIES = {"joined", "left", "pong", "error", "ack"}
# (room, user, client_id) -> the id it was first stored under, over every example (G8).
SENT: dict[tuple[str, str, str], str] = {}
ACKED: set[tuple[str, str]] = set()
ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
STREAM_ID_RE = re.compile(r"[0-9]+-[0-9]+")
# Unicode's White_Space property (PropList.txt), which PROTOCOL.md section 6 trims.
WHITE_SPACE = ("\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680\u2000\u2001\u2002\u2003"
               "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
U64 = 2**64 - 1


# ---------------------------------------------------------------- the model, from PROTOCOL.md
def has_cc(s: str, allowed: str = "") -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in s)


def spec_user(value) -> str | None:
    """The stored form of a valid user name, or None when invalid."""
    name = value.strip(WHITE_SPACE)
    return name if 1 <= len(name) <= 32 and not has_cc(name) else None


def spec_text(value) -> str | None:
    text = value.strip(WHITE_SPACE)
    return text if 1 <= len(text) <= MAX_TEXT and not has_cc(text, "\n\t") else None


def spec_since(value) -> bool:
    if not STREAM_ID_RE.fullmatch(value) or not value.isascii():
        return False
    ms, seq = (int(p) for p in value.split("-"))
    return ms <= U64 and seq <= U64 and (ms, seq) != (U64, U64)


class Model:
    """What one connection may answer, given what it has done so far."""

    def __init__(self) -> None:
        self.user: str | None = None
        self.rooms: set[str] = set()

    def expect(self, raw) -> tuple[set[str], object, dict]:
        """(allowed error codes, or {"ok"}; the expected ref; details of an accepted frame)."""
        if isinstance(raw, bytes):
            return {"bad_request"}, None, {}
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"bad_json"}, None, {}
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return {"bad_request"}, None, {}
        kind = obj["type"]
        ref = kind
        faults: set[str] = set()

        def room_field():
            if "room" not in obj or not isinstance(obj["room"], str):
                faults.add("bad_request")
            elif not ROOM_RE.fullmatch(obj["room"]):
                faults.add("invalid_room")
            else:
                return obj["room"]
            return None

        if kind == "ping":
            return {"ok"}, None, {"reply": "pong"}
        if kind == "join":
            room = room_field()
            user = obj.get("user")
            if user is not None:
                if not isinstance(user, str):
                    faults.add("bad_request")
                elif spec_user(user) is None:
                    faults.add("invalid_user")
                else:
                    user = spec_user(user)
            since = obj.get("since")
            if since is not None and not (isinstance(since, str) and spec_since(since)):
                faults.add("bad_request")
            if faults:
                return faults, ref, {}
            if self.user is None and user is None:
                return {"bad_request"}, ref, {}
            if self.user is not None and user is not None and user != self.user:
                return {"invalid_user"}, ref, {}
            return {"ok"}, None, {"reply": "joined", "room": room, "user": self.user or user}
        if kind == "leave":
            room = room_field()
            if faults:
                return faults, ref, {}
            if room not in self.rooms:
                return {"not_joined"}, ref, {}
            return {"ok"}, None, {"reply": "left", "room": room}
        if kind == "message":
            cid = obj.get("client_id")
            if cid is not None and not (isinstance(cid, str) and len(cid) <= 64):
                faults.add("bad_request")
            elif isinstance(cid, str):
                ref = cid
            room = room_field()
            text = obj.get("text")
            if "text" not in obj or not isinstance(text, str):
                faults.add("bad_request")
            elif spec_text(text) is None:
                faults.add("invalid_text")
            if faults:
                return faults, ref, {}
            if room not in self.rooms:
                return {"not_joined"}, ref, {}
            return {"ok"}, None, {"reply": "message", "room": room, "text": spec_text(text), "client_id": cid}
        return {"unknown_type"}, ref, {}

    def apply(self, details: dict) -> None:
        if details.get("reply") == "joined":
            self.user = details["user"]
            self.rooms.add(details["room"])
        elif details.get("reply") == "left":
            self.rooms.discard(details["room"])


# ---------------------------------------------------------------- frames
ROOMS = ["fz_a", "fz_b", "fz-C_9"]
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
nasty_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=MAX_TEXT + 20)
edgy = st.sampled_from(["", " ", "\t\n", "\x1fBob\x1c", "\x85Eve\x85", "\u3000Zed\u3000", "a\x00b",
                        "\u200b", "line\nline", "x" * 33, "y" * 32, " " + "z" * MAX_TEXT + " ",
                        "z" * (MAX_TEXT + 1), "<script>alert(1)</script>", "\U0001F600" * 3])

room_values = (st.sampled_from(ROOMS) | st.sampled_from(["", "bad room", "x" * 65, "caf\u00e9"]) | nasty_text
               | json_values)
user_values = st.sampled_from(["Alice", " Alice ", "Bob"]) | edgy | nasty_text | json_values
text_values = st.sampled_from(["hello", "  hi  "]) | edgy | nasty_text | json_values
since_values = (st.sampled_from(["0-0", "1-1", "abc", "1-2-3", f"{U64}-{U64}", f"{U64}-0", "\u0661-0"])
                | st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 2**65), st.integers(0, 2**65))
                | nasty_text | json_values)
cid_values = st.text(max_size=70) | json_values
types = st.sampled_from(["join", "leave", "message", "ping"]) | st.sampled_from(["", "JOIN", "pong"]) | json_values


@st.composite
def structured(draw) -> dict:
    frame: dict = {}
    if draw(st.integers(0, 9)):
        frame["type"] = draw(types)
    for name, values in (("room", room_values), ("user", user_values), ("text", text_values),
                         ("since", since_values), ("client_id", cid_values)):
        if draw(st.booleans()):
            frame[name] = draw(values)
    frame.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return frame


@st.composite
def raw_frames(draw) -> str | bytes:
    choice = draw(st.integers(0, 9))
    if choice <= 5:
        text = json.dumps(draw(structured()), ensure_ascii=draw(st.booleans()))
        if choice == 5 and len(text) > 2:  # damaged JSON
            cut = draw(st.integers(1, len(text) - 1))
            text = text[:cut] + text[cut + 1:]
        return text
    if choice <= 7:
        return draw(st.text(max_size=60))
    return draw(st.binary(max_size=60))


# A sequence that joins first, so messages and leaves mostly land in joined rooms.
@st.composite
def sessions(draw) -> list:
    frames = []
    home = draw(st.sampled_from(ROOMS))
    if draw(st.integers(0, 3)):
        frames.append(json.dumps({"type": "join", "room": home,
                                  "user": draw(st.sampled_from(["Alice", " Alice ", "Bob"])
                                               | edgy | nasty_text)}))
    plain_text = (st.sampled_from(["hello", "  hi  "]) | st.text(max_size=50) | edgy
                  | st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=50))
    message = st.builds(
        lambda room, text, cid: json.dumps({"type": "message", "room": room, "text": text, "client_id": cid},
                                           ensure_ascii=False),
        st.just(home) | st.sampled_from(ROOMS), plain_text, st.none() | st.text(max_size=70))
    frames += draw(st.lists(raw_frames() | message | message | st.builds(
        lambda room: json.dumps({"type": "leave", "room": room}), st.sampled_from(ROOMS)) | st.builds(
        lambda room, since: json.dumps({"type": "join", "room": room, "since": since}),
        st.sampled_from(ROOMS), since_values), min_size=1, max_size=6))
    return frames


# ---------------------------------------------------------------- the real thing
class ListOutbox:
    """The session's sink: a list (the socket is not what is under test here)."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def put(self, frame: str) -> bool:
        self.frames.append(json.loads(frame))  # every server frame must be JSON
        return True

    put_lazy = put

    def close(self) -> None:
        pass

    def backlog(self) -> int:
        return 0

    def abort(self, delay: float) -> None:
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    proc = RedisProcess(tmp_path_factory.mktemp("fuzz-redis")).start()
    runner = asyncio.Runner()
    conf = Settings(redis_url=proc.url, instance="fuzz", max_text=MAX_TEXT, rate_count=10**9,
                    rate_seconds=1.0, history_on_join=5)
    hub = Hub()
    broker = Broker(conf, hub)

    async def start() -> None:
        await broker.start()
        for _ in range(100):
            if broker.subscriber.subscribed:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the broker never subscribed")

    runner.run(start())
    yield runner, conf, hub, broker, proc
    runner.run(broker.stop())
    runner.close()
    proc.stop()


async def _wait_echo(outbox: ListOutbox, start: int, details: dict, user: str) -> dict:
    for _ in range(200):
        for frame in outbox.frames[start:]:
            if (frame["type"] == "message" and frame["room"] == details["room"]
                    and frame["text"] == details["text"] and frame.get("client_id") == details["client_id"]):
                return frame
        await asyncio.sleep(0.01)
    raise AssertionError(f"no echo for an accepted message {details}")


async def run_session(conf, hub, broker, frames: list, record: bool = True) -> None:
    outbox = ListOutbox()
    session = Session(conf, hub, broker, outbox)
    hub.attach(session)
    model = Model()
    # Stream ids are unique within a room only: two rooms' messages stored in the same
    # millisecond both get "<ms>-0".
    seen_echoes: set[tuple[str, str]] = set()
    try:
        for raw in frames:
            allowed, ref, details = model.expect(raw)
            start = len(outbox.frames)
            await session.handle(raw)  # must never raise
            replies = [f for f in outbox.frames[start:] if f["type"] in REPLIES]
            if record:
                event(f"outcome: {details.get('reply') or sorted(allowed)[0]}")
            if details.get("reply") == "message":
                cid = details["client_id"]
                if cid is None:
                    assert replies == [], (raw, replies)
                else:  # the ack comes first: it is sent once the append returns
                    assert [f["type"] for f in replies] == ["ack"] and replies[0]["client_id"] == cid, (raw, replies)
                    first = SENT.setdefault((details["room"], model.user, cid), replies[0]["id"])
                    assert replies[0]["id"] == first, f"a resent client_id got a new id: {raw} {replies}"
                    if (details["room"], first) in ACKED:
                        continue  # G8: stored before, so not delivered again
                    ACKED.add((details["room"], first))
                echo = await _wait_echo(outbox, start, details, model.user)
                assert cid is None or echo["id"] == replies[0]["id"]
                assert echo["user"] == model.user and (echo["room"], echo["id"]) not in seen_echoes
                seen_echoes.add((echo["room"], echo["id"]))
                continue
            assert len(replies) == 1, (raw, replies)
            [reply] = replies
            if "ok" in allowed:
                assert reply["type"] == details["reply"], (raw, reply)
                if reply["type"] == "joined":
                    assert (reply["room"], reply["user"]) == (details["room"], details["user"])
                    assert details["user"] in reply["members"] and isinstance(reply["gap"], bool)
                elif reply["type"] == "left":
                    assert reply["room"] == details["room"]
                model.apply(details)
            else:
                assert reply["type"] == "error", (raw, reply)
                assert reply["code"] in KNOWN_CODES and reply["code"] in allowed, (raw, reply, allowed)
                if ref is None:
                    assert "ref" not in reply, (raw, reply)
                else:
                    assert reply.get("ref") == ref, (raw, reply)
            assert session.rooms == model.rooms and session.user == model.user
    finally:
        session.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(frames=sessions())
@example(frames=[json.dumps({"type": "join", "room": "fz_a", "user": "\x1fBob\x1c"})])
@example(frames=[json.dumps({"type": "join", "room": "fz_a", "user": "Al"}),
                 json.dumps({"type": "message", "room": "fz_a", "text": "\x1chi\x1f"})])
@example(frames=['{"type":"join","room":"fz_a","user":"A","since":"18446744073709551615-18446744073709551615"}'])
@example(frames=["[" * 2000 + "]" * 2000, b"\xff", "", '{"type":"ping","n":123456789012345678901234567890}'])
def test_random_frames(world, frames):
    runner, conf, hub, broker, _proc = world
    runner.run(run_session(conf, hub, broker, frames))


def test_nothing_invalid_was_stored(world):
    """Runs after the property test (file order): everything in Redis is valid."""
    runner, conf, hub, broker, proc = world
    runner.run(run_session(conf, hub, broker, [
        json.dumps({"type": "join", "room": "fz_a", "user": "Final"}),
        json.dumps({"type": "message", "room": "fz_a", "text": "last", "client_id": "z"})], record=False))
    r = redis.Redis.from_url(proc.url, decode_responses=True)
    entries = 0
    for key in r.scan_iter("chat:history:*"):
        room = key.removeprefix("chat:history:")
        assert ROOM_RE.fullmatch(room), key
        for sid, fields in r.xrange(key):
            entries += 1
            assert set(fields) == {"data"}
            data = json.loads(fields["data"])
            assert set(data) <= {"id", "room", "user", "text", "ts", "client_id"}, data
            assert data["room"] == room
            assert isinstance(data["user"], str) and spec_user(data["user"]) == data["user"], data
            assert isinstance(data["text"], str) and spec_text(data["text"]) == data["text"], data
            assert isinstance(data["ts"], int) and data["ts"] > 0
            assert "client_id" not in data or (isinstance(data["client_id"], str) and len(data["client_id"]) <= 64)
            assert data.get("id", sid) == sid
    assert entries > 0
    for room in r.zrange("chat:rooms", 0, -1):
        assert ROOM_RE.fullmatch(room), room
    for key in r.scan_iter("chat:members:*"):
        for user in r.hvals(key):
            assert spec_user(user) == user, user
    r.close()
