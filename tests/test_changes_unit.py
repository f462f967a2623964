"""Unit tests of a message's life without a socket or Redis: parsing the change frames
(and the presence ones), the frames stream entries become, and a message's latest state."""

from __future__ import annotations

import json

import pytest

from quart_chat.history import change_target, latest
from quart_chat.protocol import (
    Delete,
    Edit,
    Message,
    ProtocolError,
    React,
    entry_frame,
    is_change,
    message_frame,
    parse_frame,
)


def parse(obj: dict) -> object:
    return parse_frame(json.dumps(obj), max_text=20)


def refusal(obj: dict) -> tuple[str, str | None]:
    with pytest.raises(ProtocolError) as err:
        parse(obj)
    return err.value.code, err.value.ref


def test_change_frames_parse():
    assert parse({"type": "edit", "room": "r", "id": "5-1", "text": " new ", "client_id": "c"}) == Edit(
        "r", "5-1", "new", "c")
    assert parse({"type": "delete", "room": "r", "id": "007-0"}) == Delete("r", "7-0", None)  # one spelling
    assert parse({"type": "react", "room": "r", "id": "5-1", "emoji": "👍🏽", "on": False}) == React(
        "r", "5-1", "👍🏽", False, None)
    assert parse({"type": "message", "room": "r", "text": "re", "reply_to": "5-1"}) == Message("r", "re", None, "5-1")
    assert parse({"type": "message", "room": "r", "text": "plain"}).reply_to is None


@pytest.mark.parametrize("frame, code", [
    ({"type": "edit", "room": "r", "id": "5-1"}, "bad_request"),
    ({"type": "edit", "room": "r", "id": "5-1", "text": ""}, "invalid_text"),
    ({"type": "edit", "room": "r", "id": "5-1", "text": "x" * 21}, "invalid_text"),
    ({"type": "edit", "room": "r", "id": 5, "text": "x"}, "bad_request"),
    ({"type": "edit", "room": "bad room", "id": "5-1", "text": "x"}, "invalid_room"),
    ({"type": "delete", "room": "r"}, "bad_request"),
    ({"type": "delete", "room": "r", "id": "5"}, "bad_request"),
    ({"type": "react", "room": "r", "id": "5-1", "emoji": "👍"}, "bad_request"),
    ({"type": "react", "room": "r", "id": "5-1", "emoji": "👍", "on": 1}, "bad_request"),
    ({"type": "react", "room": "r", "id": "5-1", "emoji": "", "on": True}, "bad_request"),
    ({"type": "react", "room": "r", "id": "5-1", "emoji": "x" * 17, "on": True}, "bad_request"),
    ({"type": "react", "room": "r", "id": "5-1", "emoji": "a\u00a0b", "on": True}, "bad_request"),
    ({"type": "react", "room": "r", "id": "5-1", "emoji": "\x07", "on": True}, "bad_request"),
    ({"type": "message", "room": "r", "text": "x", "reply_to": "soon"}, "bad_request"),
])
def test_bad_change_frames(frame, code):
    assert refusal(frame) == (code, frame["type"])


def test_a_refused_change_names_its_client_id():
    assert refusal({"type": "delete", "room": "r", "id": "x", "client_id": "c-9"}) == ("bad_request", "c-9")
    assert refusal({"type": "react", "room": "r", "id": "5-1", "client_id": "c-8"})[1] == "c-8"


def test_entries_become_frames():
    message = '{"room":"r","user":"A","text":"hi","ts":5}'
    change = '{"type":"reaction","room":"r","id":"5-0","emoji":"👍","user":"B","on":true}'
    assert not is_change(message) and is_change(change)
    assert json.loads(entry_frame("5-0", message)) == {
        "type": "message", "id": "5-0", "room": "r", "user": "A", "text": "hi", "ts": 5}
    assert json.loads(entry_frame("6-0", change)) == {"change_id": "6-0", **json.loads(change)}
    assert change_target(change) == (5, 0)


def test_published_changes_lose_their_origin_only():
    payload = '{"change_id":"6-0","type":"message_deleted","room":"r","id":"5-0","origin":"host:1"}'
    assert json.loads(message_frame(payload)) == {
        "change_id": "6-0", "type": "message_deleted", "room": "r", "id": "5-0"}
    assert message_frame(payload.encode()) == message_frame(payload)


def test_latest_state():
    data = '{"room":"r","user":"A","text":"helo","ts":5,"reply_to":"1-0"}'
    assert latest("5-0", data, None) == '{"id":"5-0","room":"r","user":"A","text":"helo","ts":5,"reply_to":"1-0"}'
    state = json.dumps({"text": "hello", "edited_ts": 9, "edits": ["6-0"], "reactions": {"👍": ["B", "A"]}})
    assert json.loads(latest("5-0", data, state)) == {
        "id": "5-0", "room": "r", "user": "A", "text": "hello", "ts": 5, "reply_to": "1-0", "edited_ts": 9,
        "reactions": {"👍": ["B", "A"]}}
    # Reactions alone; an emptied reaction table (Lua's cjson writes {} for it) shows nothing.
    assert json.loads(latest("5-0", data, '{"reactions":{"🎉":["C"]}}'))["text"] == "helo"
    assert "reactions" not in json.loads(latest("5-0", data, '{"reactions":{}}'))


def test_typing_and_read_frames_parse():
    from quart_chat.protocol import Read, Typing

    assert parse({"type": "typing", "room": "r"}) == Typing("r")
    assert parse({"type": "read", "room": "r", "id": "05-1"}) == Read("r", "5-1")
    assert refusal({"type": "typing"}) == ("bad_request", "typing")
    assert refusal({"type": "read", "room": "r", "id": 7}) == ("bad_request", "read")
    assert refusal({"type": "read", "room": "r r", "id": "1-0"}) == ("invalid_room", "read")


def test_word_map_marks_where_name_characters_start():
    from quart_chat.protocol import word_map

    assert word_map("@Al, hi") == ".ww..ww"
    assert word_map("é—_") == "w." + "..." + "w"  # é is 2 bytes, the dash 3
    assert len(word_map("@Bob—then 🎉")) == len("@Bob—then 🎉".encode())
