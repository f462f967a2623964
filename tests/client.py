"""A small protocol client for the tests, over the real `websockets` library."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import websockets

# Frames `expect` passes over unless asked for: events and acks arrive between replies.
PASSED_OVER = ("room_created", "room_removed", "user_joined", "user_left", "ack")
# Frames that are entries of a room's stream, in its order (docs/protocol.md, "A message's life").
STREAM_FRAMES = ("message", "message_edited", "message_deleted", "reaction")


class ChatClient:
    """One WebSocket connection that speaks PROTOCOL.md and keeps what it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> ChatClient:
        ws = await asyncio.wait_for(websockets.connect(url, max_size=None, **kwargs), 10)
        return cls(ws)

    async def send(self, frame: dict | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict:
        """The next frame, decoded; raises TimeoutError when none comes."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, timeout: float = 5.0, skip: tuple[str, ...] = PASSED_OVER) -> dict:
        """The next frame of type ``kind``, passing over the event types in ``skip``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame["type"] == kind:
                return frame
            if frame["type"] not in skip:
                raise AssertionError(f"expected {kind!r}, got {frame}")

    async def until(self, pred: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """Read frames until one satisfies ``pred``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if pred(frame):
                return frame

    async def join(self, room: str, user: str | None = None, since: str | None = None, **extra: Any) -> dict:
        frame: dict[str, Any] = {"type": "join", "room": room, **extra}
        if user is not None:
            frame["user"] = user
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        return await self.expect("joined")

    async def say(self, room: str, text: str, client_id: str | None = None) -> None:
        frame = {"type": "message", "room": room, "text": text}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send(frame)

    async def change(self, kind: str, room: str, target: str, client_id: str | None = None, **fields: Any) -> None:
        """Send an ``edit``, ``delete`` or ``react`` of message ``target``."""
        frame = {"type": kind, "room": room, "id": target, **fields}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send(frame)

    async def stream(self, count: int, timeout: float = 10.0, room: str | None = None,
                     kinds: tuple[str, ...] = STREAM_FRAMES) -> list[dict]:
        """The next ``count`` stream frames (messages and changes, or ``kinds``) of ``room`` if
        given, other frames passed over; an error frame fails."""
        got: list[dict] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame["type"] == "error":
                raise AssertionError(f"unexpected error frame {frame}")
            if frame["type"] in kinds and (room is None or frame["room"] == room):
                got.append(frame)
        return got

    def seen(self, room: str | None = None) -> list[dict]:
        """Every stream frame received so far (of ``room`` if given), whoever read it."""
        return [f for f in self.frames if f["type"] in STREAM_FRAMES and (room is None or f["room"] == room)]

    async def seen_at_least(self, count: int, timeout: float = 10.0, room: str | None = None) -> list[dict]:
        """`seen`, once it holds ``count`` frames."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.seen(room)) < count:
            await self.recv(max(0.01, deadline - loop.time()))
        return self.seen(room)

    async def messages(self, count: int, timeout: float = 10.0, room: str | None = None) -> list[dict]:
        """The next ``count`` message frames (of ``room`` if given), other frames passed over."""
        return await self.stream(count, timeout, room, kinds=("message",))

    async def quiet(self, seconds: float = 0.3) -> list[dict]:
        """Every frame that arrives within ``seconds`` (expected: none of interest)."""
        got = []
        try:
            while True:
                got.append(await self.recv(seconds))
        except TimeoutError:
            return got

    async def close(self) -> None:
        await self.ws.close()


def get_json(url: str) -> tuple[int, dict]:
    """GET ``url``: its status and decoded JSON body, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def stream_id(frame: dict) -> str:
    """Where a stream frame stands in its room's order: a change's own id, a message's id."""
    return frame.get("change_id") or frame["id"]


def id_key(sid: str) -> tuple[int, int]:
    """A message id as a comparable (ms, seq) pair."""
    ms, seq = sid.split("-")
    return int(ms), int(seq)
