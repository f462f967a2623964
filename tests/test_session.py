"""Unit tests of a connection's logic (`Session`) with no socket and no Redis: an in-memory
broker stands in for `Broker` (our own interface, not Redis's), so that what a session does
with each frame is tested on its own. The same behaviours against real Redis and real
instances are in test_chat.py, test_abuse.py and test_ack.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from quart_chat.broker import JoinResult, LimitExceeded, Sent, Unavailable
from quart_chat.codes import CloseCode, ErrorCode
from quart_chat.config import Settings
from quart_chat.rooms import Hub
from quart_chat.session import ROOMS_PER_CONNECTION, Session


@dataclass
class MemoryPresence:
    forgotten: list[tuple[str, str, str]] = field(default_factory=list)

    def forget_later(self, room: str, key: str, user: str) -> None:
        self.forgotten.append((room, key, user))


@dataclass
class MemoryBroker:
    """What a `Session` asks of `Broker`, kept in lists; ``fail`` makes the next call raise it."""

    node: str = "node#1"
    stored: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    members: dict[str, set[str]] = field(default_factory=dict)
    presence: MemoryPresence = field(default_factory=MemoryPresence)
    cleanups: list[object] = field(default_factory=list)
    fail: Exception | None = None
    ids: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err

    async def append(self, room: str, user: str, text: str, client_id: str | None, reply_to: str | None = None,
                     author: str | None = None) -> Sent:
        self._maybe_fail()
        if client_id is not None and (room, user, client_id) in self.ids:
            return Sent(self.ids[(room, user, client_id)], duplicate=True)
        self.stored.append((room, user, text, client_id))
        sid = f"{len(self.stored)}-0"
        if client_id is not None:
            self.ids[(room, user, client_id)] = sid
        return Sent(sid, duplicate=False)

    async def join(self, room: str, user: str, key: str, since: object) -> JoinResult:
        self._maybe_fail()
        self.members.setdefault(room, set()).add(user)
        history = [json.dumps({"id": f"{n + 1}-0", "room": r, "user": u, "text": t})
                   for n, (r, u, t, _c) in enumerate(self.stored) if r == room]
        return JoinResult(history, None, sorted(self.members[room]), False)

    async def leave(self, room: str, user: str, key: str) -> None:
        self.members.get(room, set()).discard(user)

    async def leave_all(self, rooms: list[str], user: str, key: str) -> None:
        for room in rooms:
            await self.leave(room, user, key)

    def spawn_cleanup(self, coro: object) -> None:
        self.cleanups.append(coro)
        coro.close()  # type: ignore[attr-defined]  # recorded, not run: no event loop work to wait for


class ListOutbox:
    """An outbox that keeps what it is given, up to ``limit`` frames."""

    def __init__(self, limit: int = 100) -> None:
        self.frames: list[str] = []
        self.limit = limit

    def put(self, frame: str) -> bool:
        self.frames.append(frame)
        return len(self.frames) <= self.limit

    put_lazy = put

    def close(self) -> None:
        pass

    def backlog(self) -> int:
        return len(self.frames)

    def sent(self) -> list[dict]:
        return [json.loads(f) for f in self.frames]


def make(limit: int = 100, **settings: object) -> tuple[Session, MemoryBroker, ListOutbox, list[int]]:
    broker, outbox, aborted = MemoryBroker(), ListOutbox(limit), []
    session = Session(Settings(instance="t", **settings), Hub(), broker, outbox,  # type: ignore[arg-type]
                      on_abort=lambda: aborted.append(1))
    return session, broker, outbox, aborted


def frame(**fields: object) -> str:
    return json.dumps(fields)


async def test_join_then_message_is_stored_and_acked():
    s, broker, out, _ = make()
    await s.handle(frame(type="join", room="general", user="Alice"))
    joined = out.sent()[-1]
    assert (joined["type"], joined["room"], joined["user"]) == ("joined", "general", "Alice")
    assert joined["members"] == ["Alice"]
    await s.handle(frame(type="message", room="general", text=" hi ", client_id="c1"))
    assert broker.stored == [("general", "Alice", "hi", "c1")]
    assert out.sent()[-1] == {"type": "ack", "client_id": "c1", "id": "1-0"}


async def test_a_resend_with_the_same_client_id_is_acked_not_stored_again():
    s, broker, out, _ = make()
    await s.handle(frame(type="join", room="general", user="Alice"))
    for _ in range(2):
        await s.handle(frame(type="message", room="general", text="once", client_id="c1"))
    assert len(broker.stored) == 1
    assert [f["id"] for f in out.sent() if f["type"] == "ack"] == ["1-0", "1-0"]
    assert s._hub.stats.duplicates == 1 and s._hub.stats.sent == 1


@pytest.mark.parametrize("raw, code, ref", [
    (frame(type="message", room="general", text="x"), ErrorCode.NOT_JOINED, "message"),
    (frame(type="message", room="general", text="x", client_id="c9"), ErrorCode.NOT_JOINED, "c9"),
    (frame(type="leave", room="general"), ErrorCode.NOT_JOINED, "leave"),
    (frame(type="join", room="general"), ErrorCode.BAD_REQUEST, "join"),
    ("{not json", ErrorCode.BAD_JSON, None),
])
async def test_refusals_are_error_frames_and_change_nothing(raw, code, ref):
    s, broker, out, aborted = make()
    await s.handle(raw)
    [error] = out.sent()
    assert error["type"] == "error" and error["code"] == code and error.get("ref") == ref
    assert broker.stored == [] and broker.members == {} and s.rooms == set() and not aborted
    assert s._hub.stats.errors[code] == 1


async def test_a_connection_keeps_its_first_name():
    s, _, out, _ = make()
    await s.handle(frame(type="join", room="a", user="Alice"))
    await s.handle(frame(type="join", room="b", user="Mallory"))
    assert out.sent()[-1]["code"] == ErrorCode.INVALID_USER and s.rooms == {"a"}


async def test_redis_away_is_unavailable_and_a_first_join_leaves_no_member_behind():
    s, broker, out, _ = make()
    broker.fail = Unavailable("down")
    await s.handle(frame(type="join", room="general", user="Alice"))
    assert out.sent()[-1]["code"] == ErrorCode.UNAVAILABLE
    assert s.rooms == set() and not s._hub.is_member(s, "general")
    assert broker.presence.forgotten == [("general", s.key, "Alice")]  # removed later if it was recorded
    await s.handle(frame(type="join", room="general", user="Alice"))
    broker.fail = Unavailable("down")
    await s.handle(frame(type="message", room="general", text="lost", client_id="c1"))
    assert out.sent()[-1] == {"type": "error", "code": "unavailable", "ref": "c1",
                              "message": "the message store is unreachable; nothing was sent"}


async def test_a_cap_of_the_deployment_is_limit_exceeded():
    s, broker, out, _ = make()
    broker.fail = LimitExceeded("CHAT_MAX_ROOMS")
    await s.handle(frame(type="join", room="one-too-many", user="Alice"))
    assert out.sent()[-1]["code"] == ErrorCode.LIMIT_EXCEEDED and s.rooms == set()


async def test_rate_limit_counts_messages_per_connection():
    s, broker, out, _ = make(rate_count=2, rate_seconds=60)
    await s.handle(frame(type="join", room="general", user="Alice"))
    for n in range(3):
        await s.handle(frame(type="message", room="general", text=str(n)))
    assert [t for _r, _u, t, _c in broker.stored] == ["0", "1"]
    assert out.sent()[-1]["code"] == ErrorCode.RATE_LIMITED


async def test_rooms_per_connection_are_bounded():
    s, _, out, _ = make()
    for n in range(ROOMS_PER_CONNECTION):
        await s.handle(frame(type="join", room=f"r{n}", user="Alice"))
    assert len(s.rooms) == ROOMS_PER_CONNECTION
    await s.handle(frame(type="join", room="one-more"))
    assert out.sent()[-1]["code"] == ErrorCode.RATE_LIMITED and "one-more" not in s.rooms


async def test_a_full_outbox_aborts_with_1013_once():
    s, _, _, aborted = make(limit=1)
    s.deliver("a")
    assert s.close_code is None
    s.deliver("b")
    s.deliver("c")
    assert s.close_code == CloseCode.TRY_AGAIN_LATER and aborted == [1]


async def test_leave_and_close_leave_the_rooms():
    s, broker, out, _ = make()
    for room in ("a", "b"):
        await s.handle(frame(type="join", room=room, user="Alice"))
    await s.handle(frame(type="leave", room="a"))
    assert out.sent()[-1] == {"type": "left", "room": "a"} and broker.members["a"] == set()
    s.close()
    assert s.rooms == set() and not s._hub.is_member(s, "b") and len(broker.cleanups) == 1
