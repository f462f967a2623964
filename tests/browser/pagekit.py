"""What the browser tests share: driving the page through its hooks, and a WebSocket spy.

The page is driven only through the hooks of PROTOCOL.md section 7 (plus #errors .toast,
#pending, .message.mine). ``WS_SPY`` is an init script (``browser.open(..., init_script=WS_SPY)``)
that wraps the page's WebSocket from outside the page's code: it records the frames each way
and lets a test hold, drop or rewrite frames the server sends, or cut the socket right
before or right after the page sends a message. Nothing in app.js knows about it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

try:
    from playwright.async_api import Page, expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    Page = expect = None

from client import id_key

MESSAGES = "#messages .message[data-id]"

# The other looks a state is audited in (the light desktop is the tests' default).
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
DARK_AND_PHONE = {
    "desktop-dark": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "dark"},
    "phone": PHONE,
    "phone-dark": {**PHONE, "color_scheme": "dark"},
}

WS_SPY = r"""
(() => {
  const T = window.__ws = {
    sent: [],        // frames the page sent (parsed), in order; a frame cut away has .__dropped
    received: [],    // frames the server sent (parsed), in order, before any hold/drop/map
    hold: null,      // f => bool: keep this frame from the page until release()
    held: [],
    drop: null,      // f => bool: the page never sees this frame
    map: null,       // f => f2: the page sees f2 instead
    cut: null,       // 'before' | 'after': at the next `message` frame, close the socket
                     // without sending it ('before') or right after sending it ('after')
    sockets: 0,
    listeners: [],   // [socket, the page's message listener] of the newest socket
  };
  const P = WebSocket.prototype;
  const send = P.send;
  const add = P.addEventListener;
  const parse = (d) => { try { return JSON.parse(d); } catch (e) { return null; } };
  P.send = function (data) {
    const f = parse(data);
    if (f && f.type === 'message' && T.cut) {
      const mode = T.cut;
      T.cut = null;
      if (mode === 'after') { send.call(this, data); T.sent.push(f); }
      else { f.__dropped = true; T.sent.push(f); }
      this.close();   // a closing socket delivers nothing more to the page
      return;
    }
    if (f) T.sent.push(f);
    return send.call(this, data);
  };
  P.addEventListener = function (type, fn, opts) {
    if (type === 'open') T.sockets += 1;
    if (type !== 'message') return add.call(this, type, fn, opts);
    const ws = this;
    T.listeners = T.listeners.filter(([s]) => s === ws).concat([[ws, fn]]);
    return add.call(this, type, function (ev) {
      let f = parse(ev.data);
      if (f) T.received.push(f);
      if (f && T.drop && T.drop(f)) return;
      if (f && T.map) {
        const g = T.map(f);
        if (g !== f) { f = g; ev = new MessageEvent('message', { data: JSON.stringify(g) }); }
      }
      if (f && T.hold && T.hold(f)) { T.held.push(() => fn.call(ws, ev)); return; }
      return fn.call(ws, ev);
    }, opts);
  };
  // A frame handed to the page as if the server had sent it on the newest socket.
  T.inject = (f) => {
    for (const [s, fn] of T.listeners) fn.call(s, new MessageEvent('message', { data: JSON.stringify(f) }));
  };
  T.release = () => { const h = T.held; T.held = []; T.hold = null; for (const g of h) g(); };
})();
"""


async def wait_open(page: Page, timeout: int = 5_000) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=timeout)


async def join(page: Page, room: str, user: str | None = None) -> None:
    """Join ``room`` through the form (as ``user`` on the first join) and wait for `joined`."""
    await wait_open(page)
    if user is not None:
        await page.fill("#username", user)
    await page.fill("#room", room)
    await page.click("#join")
    await joined(page, room)


async def joined(page: Page, room: str, timeout: int = 5_000) -> None:
    """Wait until ``room`` is joined and active (its `joined` arrived)."""
    entry = page.locator(f'#rooms li.room[data-room="{room}"]')
    await expect(entry).to_have_class(re.compile(r"\bjoined\b.*\bactive\b|\bactive\b.*\bjoined\b"), timeout=timeout)
    # `joined` has arrived once the page lists its own user among the members.
    await expect(page.locator("#members li.member.me")).to_have_count(1, timeout=timeout)
    await expect(page.locator("#room-title")).to_have_text(f"#{room}", timeout=timeout)
    await expect(page.locator("#send")).to_be_enabled(timeout=timeout)


async def send(page: Page, text: str) -> None:
    """Type ``text`` and press Enter; wait until the box is empty again."""
    await page.fill("#message", text)
    await page.press("#message", "Enter")
    await expect(page.locator("#message")).to_have_value("")


async def shown(page: Page) -> list[tuple[str, str, str]]:
    """(id, user, text) of every message in #messages, in page order."""
    return await page.eval_on_selector_all(
        MESSAGES,
        "els => els.map(e => [e.dataset.id, e.querySelector('.user').textContent,"
        " e.querySelector('.text').textContent])",
    )


async def pending_texts(page: Page) -> list[str]:
    return await page.eval_on_selector_all("#pending .pending-text", "els => els.map(e => e.textContent)")


def assert_in_id_order(rows: list) -> None:
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"a message shown twice: {ids}"
    assert ids == sorted(ids, key=id_key), f"not in id order: {ids}"


async def until(page: Page, predicate: str, arg=None, what: str = "", timeout: float = 5.0) -> None:
    """Wait (bounded) until the JS ``predicate(arg)`` is true in the page."""
    try:
        await page.wait_for_function(predicate, arg=arg, timeout=timeout * 1000, polling=50)
    except Exception as err:  # playwright's TimeoutError
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}") from err


async def settle(seconds: float = 0.3) -> None:
    """Give late (duplicate) deliveries a chance to show before counting again."""
    await asyncio.sleep(seconds)


async def frames(page: Page, direction: str, kind: str | None = None) -> list[dict]:
    """Frames the spy recorded (``direction`` 'sent' or 'received'), of type ``kind`` if given."""
    return await page.evaluate(
        "([d, k]) => window.__ws[d].filter(f => !k || f.type === k)", [direction, kind])


def boxes_overlap(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def utc_at(days_back: int, hour: int, minute: int) -> dt.datetime:
    """That time of the day ``days_back`` days ago (UTC)."""
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_back)
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


async def seed_messages(redis_url: str, room: str, items: list[tuple]) -> list[str]:
    """Messages of earlier days, (time, user, text) or (time, user, text, more fields, such as
    {"reply_to": id}), stored in the room's stream as the server stores them; returns their
    ids. The room must exist and have no message yet: stream ids only grow."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_url)
    ids = []
    try:
        for when, user, text, *more in items:
            ms = int(when.timestamp() * 1000)
            msg = {"id": f"{ms}-0", "room": room, "user": user, "text": text, "ts": ms, **(more[0] if more else {})}
            await r.xadd(f"chat:history:{room}", {"data": json.dumps(msg)}, id=f"{ms}-0")
            ids.append(f"{ms}-0")
    finally:
        await r.aclose()
    return ids
