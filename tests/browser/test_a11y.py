"""Accessibility (WCAG 2.1 AA), the issue "Accessibility: WCAG 2.1 AA, checked by axe-core in
every browser test run":

- axe-core (pinned in tests/browser/package.json) audits the page in every state a person
  meets, at desktop size, at phone size and in the dark colour scheme: zero violations of
  the WCAG 2.0/2.1 A and AA rules; a violation is printed with its rule, element and help;
- a keyboard-only session (no mouse, no fill, no click): name, join, send with Enter, switch
  rooms, close a toast, retry a refused message, with a visible focus ring all the way;
- what a screen reader hears: each new message once (not the log again after a room switch
  or a reconnect), and each change of the connection's state.
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from a11y import SPEECH_SPY, Audit, require_axe, said_count, speech
from client import ChatClient
from pagekit import MESSAGES, WS_SPY, joined, seed_messages, send, utc_at, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
VARIANTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": PHONE,
    "desktop-dark": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "dark"},
    "phone-dark": {**PHONE, "color_scheme": "dark"},
}


class Hold:
    """A port that accepts connections and never answers: a WebSocket opened to it stays
    CONNECTING (the page shows "Reconnecting…")."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_axe_finds_nothing_in_any_state(make_cluster, room, browser, variant):
    require_axe()
    c = make_cluster(1, env={"CHAT_RATE": "4/60", "CHAT_MAX_TEXT": "120"})
    audit = Audit()
    other = room + "_dev"
    sam = await ChatClient.connect(c[0].ws_url)
    try:
        await sam.join(room, "Sam")
        await seed_messages(c.redis.url, room, [
            (utc_at(3, 9, 15), "Sam", "three days ago"),
            (utc_at(1, 18, 40), "Sam", "yesterday evening"),
        ])
        await sam.say(room, "good morning, everyone — this one is long enough to wrap on a phone screen")
        await sam.messages(1)
        await sam.join(other)

        page, _ = await browser.open(c[0].http_url + "/", label=variant, **VARIANTS[variant])
        await wait_open(page)
        await audit(page, "before joining")
        await browser.shot(page, "1-before-join")

        await page.fill("#room", room)
        await page.click("#join")
        await expect(page.locator("#join-hint")).to_be_visible()
        await audit(page, "join hint")

        await page.fill("#username", "Ann")
        await page.fill("#room", other)
        await page.click("#join")
        await joined(page, other)
        await page.fill("#room", room)
        await page.click("#join")
        await joined(page, room)
        await send(page, "hello Sam")
        await sam.say(room, "hi Ann")
        await sam.say(other, "over here too")
        await expect(page.locator(MESSAGES)).to_have_count(5)
        await expect(page.locator(f'#rooms li.room[data-room="{other}"] .unread')).to_have_text("1")
        # Near the limit: the counter shows.
        await page.fill("#message", "x" * 110)
        await expect(page.locator("#counter")).to_be_visible()
        await audit(page, "in a room with messages")
        await browser.shot(page, "2-room")
        await page.fill("#message", "x" * 130)
        await expect(page.locator("#counter")).to_have_class(re.compile(r"\bover\b"))
        await audit(page, "message over the limit")
        await page.fill("#message", "")

        # The rate limit (4 a minute) refuses the fourth of these: a toast and a pending item.
        for k in range(4):
            await page.fill("#message", f"quick {k}")
            await page.press("#message", "Enter")
        toast = page.locator('#errors .toast[data-code="rate_limited"]')
        await expect(toast).to_be_visible()
        await expect(page.locator("#pending .pending-item.failed")).to_have_count(1)
        await audit(page, "error toast and a refused message")
        await browser.shot(page, "3-toast")
        await toast.locator(".toast-close").click()
        await expect(page.locator("#errors .toast")).to_have_count(0)
        await audit(page, "a refused message")
        await page.locator("#pending .pending-item.failed button.edit").click()
        await expect(page.locator("#pending textarea.pending-edit")).to_be_visible()
        await audit(page, "editing a refused message")
        await browser.shot(page, "4-editing")
        await page.locator("#pending textarea.pending-edit").press("Escape")

        c[0].kill()
        await expect(page.locator("#status")).to_have_attribute("data-state", "closed")
        await expect(page.locator("#reconnect")).to_be_visible()
        await audit(page, "disconnected")
        await browser.shot(page, "5-disconnected")

        hold = Hold(c[0].port)
        try:
            # "Retry now", unless the page's own retry (backoff) got there first.
            try:
                await page.locator("#reconnect").click(timeout=1_000)
            except Exception:  # already hidden: a retry is under way
                pass
            await expect(page.locator("#status")).to_have_attribute("data-state", "connecting", timeout=15_000)
            await expect(page.locator("#status-text")).to_have_text("Reconnecting…")
            await audit(page, "reconnecting")
            await browser.shot(page, "6-reconnecting")
        finally:
            hold.close()
        c[0].start()
        await wait_open(page, timeout=20_000)
        # The refused message stays refused (it waits for Retry), the rest is as it was.
        await expect(page.locator("#pending .pending-item.failed")).to_have_count(1)
        await expect(page.locator(MESSAGES)).to_have_count(8)
        await audit(page, "connected again")
        await browser.shot(page, "7-connected-again")
    finally:
        await sam.close()
    audit.check()


# ------------------------------------------------------------------ keyboard only

FOCUS = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return { id: null };
  const s = getComputedStyle(e);
  const ring = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) ? 'outline ' + s.outlineColor
    : (s.boxShadow && s.boxShadow !== 'none') ? 'shadow ' + s.boxShadow : '';
  return { id: e.id || null, cls: e.className || '', tag: e.tagName, text: (e.textContent || '').trim().slice(0, 40),
           room: e.closest('[data-room]') ? e.closest('[data-room]').dataset.room : null,
           visible: e.matches(':focus-visible'), ring };
}"""


async def focused(page) -> dict:
    f = await page.evaluate(FOCUS)
    if f["id"] is not None or f.get("tag"):
        assert f["visible"] and f["ring"], f"focus on {f} is not visible"
    return f


async def tab_to(page, pred, what: str, back: bool = False, limit: int = 40) -> dict:
    """Press Tab (Shift+Tab when ``back``) until the focused element satisfies ``pred``;
    every stop on the way must show a focus ring."""
    seen = []
    for _ in range(limit):
        await page.keyboard.press("Shift+Tab" if back else "Tab")
        f = await focused(page)
        seen.append(f.get("id") or f.get("cls") or f.get("tag"))
        if pred(f):
            return f
    raise AssertionError(f"never reached {what} with {'Shift+' if back else ''}Tab; went through {seen}")


@pytest.mark.parametrize("variant", ["desktop", "phone"])
async def test_keyboard_only(make_cluster, room, browser, variant):
    """Never the mouse: every action is a key press, every stop shows its focus ring."""
    c = make_cluster(1, env={"CHAT_RATE": "3/3"})
    other = room + "_b"
    page, _ = await browser.open(c[0].http_url + "/", label="keys", **VARIANTS[variant])
    await wait_open(page)
    box = page.locator("#message")

    # Name, room, Enter: joined, and the focus is in the message box.
    await tab_to(page, lambda f: f["id"] == "username", "the name field")
    await page.keyboard.type("Kim")
    await page.keyboard.press("Tab")
    assert (await focused(page))["id"] == "room"
    await page.keyboard.type(room)
    await browser.shot(page, "focus-room-field")
    await page.keyboard.press("Enter")
    await joined(page, room)
    await expect(box).to_be_focused()
    assert (await focused(page))["ring"]
    await page.keyboard.type("typed with keys")
    await page.keyboard.press("Enter")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["typed with keys"])
    await expect(box).to_be_focused()
    await browser.shot(page, "focus-message-box")

    # A second room, from the message box: back to the room field, type, Enter.
    await tab_to(page, lambda f: f["id"] == "room", "the room field", back=True)
    await page.keyboard.type(other)
    await page.keyboard.press("Enter")
    await joined(page, other)
    await expect(box).to_be_focused()

    # Switch rooms from the list: Shift+Tab to the first room's entry, Enter.
    await tab_to(page, lambda f: f["room"] == room, f"#{room} in the list", back=True)
    await browser.shot(page, "focus-room-entry")
    await page.keyboard.press("Enter")
    await expect(page.locator("#room-title")).to_have_text(f"#{room}")
    await expect(box).to_be_focused()

    # Three messages in a few seconds pass, the fourth is refused: a toast and a pending item.
    await asyncio.sleep(3.1)   # a window with nothing sent in it
    for k in range(4):
        await page.keyboard.type(f"burst {k}")
        await page.keyboard.press("Enter")
    toast = page.locator('#errors .toast[data-code="rate_limited"]')
    await expect(toast).to_be_visible()
    await expect(page.locator("#pending .pending-item.failed")).to_have_count(1)
    # The toast's close button is the stop right before the message box.
    await tab_to(page, lambda f: "toast-close" in f["cls"], "the toast's close button", back=True, limit=3)
    await browser.shot(page, "focus-toast-close")
    # A toast holding the focus waits (it would otherwise go after 5 s).
    await asyncio.sleep(5.5)
    await expect(toast).to_be_visible()
    await page.keyboard.press("Enter")
    await expect(page.locator("#errors .toast")).to_have_count(0)
    await expect(box).to_be_focused()

    # Retry the refused message (the rate limit's window has passed meanwhile).
    await tab_to(page, lambda f: "retry" in f["cls"] and f["text"] == "Retry", "Retry", back=True, limit=6)
    await browser.shot(page, "focus-retry")
    await page.keyboard.press("Enter")
    await expect(page.locator("#pending .pending-item")).to_have_count(0)
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["typed with keys", *[f"burst {k}" for k in range(4)]])
    await expect(box).to_be_focused()


# ------------------------------------------------------------------ what a screen reader hears

async def test_screen_reader_hears_each_message_once_and_the_connection(make_cluster, room, browser):
    c = make_cluster(1)
    other = room + "_b"
    sam = await ChatClient.connect(c[0].ws_url)
    try:
        await sam.join(room, "Sam")
        await sam.say(room, "from before")
        page, _ = await browser.open(c[0].http_url + "/", label="reader", init_script=WS_SPY + SPEECH_SPY)
        await wait_open(page)
        await page.fill("#username", "Ray")
        await page.fill("#room", room)
        await page.click("#join")
        await joined(page, room)
        await expect(page.locator(MESSAGES)).to_have_count(1)
        start = await said_count(page)

        # A new message from someone else: heard once, with its sender.
        await sam.say(room, "first live")
        await expect(page.locator(MESSAGES)).to_have_count(2)
        await send(page, "my own")
        await expect(page.locator(MESSAGES)).to_have_count(3)
        await asyncio.sleep(0.5)
        heard = [s["text"] for s in await speech(page, start)]
        assert sum("first live" in t for t in heard) == 1, heard
        assert not any("from before" in t for t in heard), heard

        # Switching rooms and back: nothing of the log is read again.
        await page.fill("#room", other)
        await page.click("#join")
        await joined(page, other)
        mark = await said_count(page)
        await page.click(f'#rooms li.room[data-room="{room}"]')
        await expect(page.locator("#room-title")).to_have_text(f"#{room}")
        await expect(page.locator(MESSAGES)).to_have_count(3)
        await asyncio.sleep(0.3)
        heard = [s["text"] for s in await speech(page, mark)]
        assert not any(t for t in heard if "first live" in t or "from before" in t or "my own" in t), heard

        # An error is said once, by the toasts' live region (#errors); going over the length
        # limit once, by the status announcer.
        mark = await said_count(page)
        await page.fill("#message", "x" * 2001)
        await page.press("#message", "Enter")
        await expect(page.locator('#errors .toast[data-code="too_long"]')).to_be_visible()
        await asyncio.sleep(0.3)
        said = await speech(page, mark)
        assert [s["region"] for s in said if "too long" in s["text"]] == ["#errors"], said
        assert [s["text"] for s in said if s["region"] == "#sr-status"] == [
            "Over the limit of 2,000 characters: 1 too many."], said
        await page.fill("#message", "")

        # The connection drops and comes back: the state change is heard (once each way,
        # not every second of the countdown), and what came meanwhile is heard once.
        mark = await said_count(page)
        await page.evaluate("() => { __ws.cut = 'before'; }")
        await page.fill("#message", "while cut")
        await page.press("#message", "Enter")
        await expect(page.locator("#status")).not_to_have_attribute("data-state", "open")
        await sam.say(room, "said while you were away")
        await wait_open(page, timeout=10_000)
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(
            ["from before", "first live", "my own", "said while you were away", "while cut"])
        await asyncio.sleep(2.5)
        said = await speech(page, mark)
        heard = [s["text"] for s in said]
        status = [s["text"] for s in said if s["region"] == "#sr-status"]
        assert any(re.search(r"lost|disconnected", t, re.I) for t in status), said
        assert status[-1].startswith("Connected"), said
        assert len(status) <= 3, f"the connection's state was said too often: {status}"
        assert sum("said while you were away" in t for t in heard) == 1, heard
        for old in ("from before", "first live"):
            assert not any(old in t for t in heard), heard
        # Nothing was said by #messages itself: it is a log read on demand.
        everything = await speech(page, 0)
        print("\n".join(f"{s['region']} ({s['live']}): {s['text']}" for s in everything))
        assert all(s["region"] != "#messages" for s in everything), everything
    finally:
        await sam.close()
