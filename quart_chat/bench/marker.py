"""The send-time marker the load tool puts in every message text it sends, and reads back.

    B|<sent µs>|<step>|<sender>|<seq>|<padding>

``sent µs`` is the sender's monotonic clock (`now_us`) when it sent; ``step`` the timed step
it belongs to; ``sender`` the sender's number in the run; ``seq`` a number that grows by one
per message of that sender (or of the run). Latency = receive time - ``sent µs``, both read
in this one process. The padding brings the text to ``--text-size``.

Pure string work, no JSON decoding on the hot path: `scan` reads the marker straight out of
a server's ``message`` frame, as quart_chat writes it (``{"type":"message","id":"...``).
"""

from __future__ import annotations

import time

PREFIX = "B|"
IN_FRAME = '"text":"B|'  # where a marker starts inside a message frame
MSG_HEAD = '{"type":"message","id":"'
HEADER_SIZE = 40  # what a marker takes before its padding, about
_SPAN = 96  # the four numbers fit in this many characters after the prefix

Marker = tuple[int, int, int, int]  # (sent_us, step, sender, seq)


def now_us() -> int:
    """This process's monotonic clock in microseconds (the latency clock)."""
    return time.monotonic_ns() // 1000


def padding(text_size: int) -> str:
    """The padding that makes a text about ``text_size`` characters long."""
    return "x" * max(0, text_size - HEADER_SIZE)


def encode(sent_us: int, step: int, sender: int, seq: int, pad: str = "") -> str:
    return f"{PREFIX}{sent_us}|{step}|{sender}|{seq}|{pad}"


def decode_at(s: str, start: int) -> Marker:
    """The marker whose numbers start at ``s[start]`` (just after ``B|``); ValueError if broken."""
    sent_us, step, sender, seq, _ = s[start:start + _SPAN].split("|", 4)
    return int(sent_us), int(step), int(sender), int(seq)


def decode(text: str) -> Marker | None:
    """The marker of a message text; None for a text that carries none."""
    if not text.startswith(PREFIX):
        return None
    return decode_at(text, len(PREFIX))


def scan(raw: str) -> tuple[str, Marker] | None:
    """(message id, marker) of a server ``message`` frame with a marker, read without JSON;
    None for any other frame (decode that one as JSON)."""
    if not raw.startswith(MSG_HEAD):
        return None
    end = raw.find('"', len(MSG_HEAD))
    i = raw.find(IN_FRAME, end) if end > 0 else -1
    if i < 0:
        return None
    return raw[len(MSG_HEAD):end], decode_at(raw, i + len(IN_FRAME))
