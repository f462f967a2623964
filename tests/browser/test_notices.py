"""Error toasts (the issue's "first five minutes", item 5): they cover no message, they go
when their cause is gone (a join that succeeds clears "Pick a name first"), they can be
closed, and they do not stay long.
"""

from __future__ import annotations

import time

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from client import ChatClient
from pagekit import MESSAGES, boxes_overlap, joined, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

TOASTS = "#errors .toast:not(.leaving)"


async def assert_covers_no_message(page) -> None:
    """The toasts lie outside the message list, and the newest message is in full view."""
    scroller = await page.locator("#scroller").bounding_box()
    for k in range(await page.locator(TOASTS).count()):
        box = await page.locator(TOASTS).nth(k).bounding_box()
        assert box and not boxes_overlap(box, scroller), (box, scroller)
    for sel in (MESSAGES, "#pending .pending-item"):
        if not await page.locator(sel).count():
            continue
        last = page.locator(sel).last
        await expect(last).to_be_in_viewport(ratio=1)
        # Nothing is painted over it: its centre belongs to it.
        hit = await last.evaluate("""e => { const r = e.querySelector('.bubble').getBoundingClientRect();
            const t = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return !!t && e.contains(t); }""")
        assert hit, f"something covers the last {sel}"


async def fill_room(url: str, room: str, n: int, long: bool = False) -> None:
    writer = await ChatClient.connect(url)
    try:
        await writer.join(room, "Writer")
        for k in range(n):
            text = f"line {k:02d}" + (": long enough to take two lines on a phone, or more" if long else "")
            await writer.say(room, text)
        await writer.messages(n)
    finally:
        await writer.close()


async def test_toasts_cover_nothing_and_go_with_their_cause(make_cluster, room, browser):
    c = make_cluster(1)
    await fill_room(c[0].ws_url, room, 40)
    page, _ = await browser.open(c[0].http_url + "/", label="nina")
    await wait_open(page)

    # 1. No name yet: "Pick a name first", said next to the field; gone once the join succeeds.
    await page.fill("#room", room)
    await page.click("#join")
    hint = page.locator("#join-hint")
    await expect(hint).to_have_text("Pick a name first")
    await expect(hint).to_be_in_viewport()
    await expect(page.locator("#username")).to_be_focused()
    await browser.shot(page, "pick-a-name")
    await page.fill("#username", "Nina")
    await page.click("#join")
    await joined(page, room)
    await expect(hint).to_be_hidden()
    await expect(page.locator(TOASTS)).to_have_count(0)
    await expect(page.locator(MESSAGES)).to_have_count(40)

    # 2. A refusal from the server while the view is full: the toast covers no message.
    # A text the page cannot judge (it checks the length itself): a control character.
    too_long = "this text rings a bell \x07 the server refuses"
    await page.fill("#message", too_long)
    await page.press("#message", "Enter")
    toast = page.locator('#errors .toast[data-code="invalid_text"]:not(.leaving)')
    await expect(toast).to_be_visible()
    await expect(page.locator("#pending .pending-item.failed .pending-text")).to_have_text([too_long])
    await assert_covers_no_message(page)
    await browser.shot(page, "toast")
    # ... and goes with its cause: the refused text is dealt with (here: discarded).
    await page.locator("#pending .pending-item.failed button.discard").click()
    await expect(page.locator(TOASTS)).to_have_count(0)
    await expect(page.locator("#pending .pending-item")).to_have_count(0)

    # 3. Closable.
    await page.fill("#message", too_long)
    await page.press("#message", "Enter")
    await expect(toast).to_be_visible()
    await toast.locator(".toast-close").click()
    await expect(page.locator("#errors .toast")).to_have_count(0)

    # 4. Short-lived on its own (the refused text stays in the pending list, with Retry),
    #    once the pointer is not on it (a toast under the pointer or the focus waits).
    await page.mouse.move(5, 5)
    await page.fill("#message", too_long + "!")
    await page.press("#message", "Enter")
    await expect(toast).to_be_visible()
    shown_at = time.monotonic()
    await expect(page.locator("#errors .toast")).to_have_count(0, timeout=8_000)
    assert time.monotonic() - shown_at < 7.0
    await expect(page.locator("#pending .pending-item.failed")).to_have_count(2)

    # 5. An accepted message clears a refusal's toast once nothing refused is left.
    await page.locator("#pending button.discard-all").click()
    await page.fill("#message", too_long)
    await page.press("#message", "Enter")
    await expect(toast).to_be_visible()
    await page.locator("#pending .pending-item.failed button.edit").click()
    await page.locator("#pending textarea.pending-edit").fill("short enough")
    await page.locator("#pending textarea.pending-edit").press("Enter")
    await expect(page.locator(f"{MESSAGES} .text").last).to_have_text("short enough")
    await expect(page.locator(TOASTS)).to_have_count(0)
    await assert_covers_no_message(page)


async def test_toasts_on_a_phone(make_cluster, room, browser):
    c = make_cluster(1)
    await fill_room(c[0].ws_url, room, 12, long=True)
    page, _ = await browser.open(c[0].http_url + "/", label="phone",
                                 viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                 is_mobile=True, has_touch=True)
    await wait_open(page)
    await page.fill("#room", "bad name!")
    await page.click("#join")
    await expect(page.locator("#join-hint")).to_be_in_viewport()
    await browser.shot(page, "hint")
    await page.fill("#username", "Pia")
    await page.fill("#room", room)
    await page.click("#join")
    await joined(page, room)
    await expect(page.locator("#join-hint")).to_be_hidden()
    await expect(page.locator(MESSAGES)).to_have_count(12)
    await page.fill("#message", "a text with a control character \x07 that the server refuses, two lines on a phone")
    await page.press("#message", "Enter")
    await expect(page.locator('#errors .toast[data-code="invalid_text"]')).to_be_visible()
    await assert_covers_no_message(page)
    for sel in ("#message", "#send", "#status"):
        await expect(page.locator(sel)).to_be_in_viewport()
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width}px wide)"
    await browser.shot(page)
