"""Who is here and what they are doing, on the page (PROTOCOL.md section 12; the issue's
words: "two tabs/devices of the same user show the same counts and both clear when one
reads", "Alice is typing…", a "New messages" line, mentions highlighted and counted, a
notification for a mention while the tab is hidden).

The page's hooks for it, beside section 7's: `#typing` (aria-live polite; its text the
line), `.new-messages` in #messages before the first unread message, `mark.mention` inside
a message's `.text` (whose textContent stays the text), `.mentions-me` on a `.message`,
`.mentioned` in a `#rooms [data-room]` entry ("@2"), `#notify` (asks for permission).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from a11y import Audit, require_axe
from client import ChatClient
from pagekit import DARK_AND_PHONE, MESSAGES, WS_SPY, frames, join, joined, send, settle, until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]

# Stands in for the browser's Notification: the permission a click grants, and what was shown.
NOTIFY_SPY = r"""
(() => {
  const shown = window.__notified = [];
  class FakeNotification {
    constructor(title, opts) { shown.push({ title, body: (opts || {}).body || '' }); }
    addEventListener() {}
    close() {}
  }
  FakeNotification.permission = 'default';
  FakeNotification.requestPermission = async () => { FakeNotification.permission = 'granted'; return 'granted'; };
  window.Notification = FakeNotification;
})();
"""


def entry(page, room: str):
    return page.locator(f'#rooms li.room[data-room="{room}"]')


def msg(page, text: str):
    return page.locator(MESSAGES).filter(has=page.locator(".text", has_text=re.compile("^" + re.escape(text) + "$")))


async def test_two_tabs_of_one_user_count_alike_and_clear_together(cluster, room, browser):
    """Al on two instances in two browser contexts (a second device): the unread counts and
    the mention badge come from his read marker, so both show the same and both clear when
    one of them reads."""
    news, other = room + "_news", room + "_other"
    bo = await ChatClient.connect(cluster[2].ws_url)
    try:
        await bo.join(news, "Bo")
        one, _ = await browser.open(cluster[0].http_url + "/", label="al-1", init_script=WS_SPY)
        two, _ = await browser.open(cluster[1].http_url + "/", label="al-2", init_script=WS_SPY)
        for page in (one, two):
            await join(page, news, "Al")
            await join(page, other)
        await bo.say(news, "release at noon")
        await bo.say(news, "@Al can you check the notes?")
        await bo.say(news, "and @Bob too")
        for page in (one, two):
            await expect(entry(page, news).locator(".unread")).to_have_text("3")
            await expect(entry(page, news).locator(".mentioned")).to_have_text("@1")
            await expect(entry(page, news).locator(".mentioned")).to_have_attribute("aria-label", "1 mention")
        await browser.shot(two, "counted")

        # Al reads on one device: the other clears too, without being touched.
        await entry(one, news).click()
        await joined(one, news)
        await expect(one.locator(".new-messages")).to_have_count(1)
        first_unread = one.locator(f"{MESSAGES}").filter(has=one.locator(".text", has_text="release at noon"))
        assert await one.locator(".new-messages + .message .text").text_content() == "release at noon", \
            "the line stands right before the first unread message"
        await expect(first_unread).to_have_count(1)
        await expect(entry(two, news).locator(".unread")).to_be_hidden()
        await expect(entry(two, news).locator(".mentioned")).to_be_hidden()
        reads = await frames(one, "sent", "read")
        assert reads and reads[-1]["room"] == news, reads
        assert reads[-1]["id"] == await one.locator(MESSAGES).last.get_attribute("data-id"), "the newest shown"
        sent_by_two = [f for f in await frames(two, "sent", "read") if f["room"] == news]
        assert sent_by_two == [], "the other device sent nothing for news: it was told"
        got = [f for f in await frames(two, "received", "read") if f["room"] == news]
        assert got and got[-1]["id"] == reads[-1]["id"], got

        # The mention: highlighted as text inside .text, the message marked for Al.
        mention = msg(one, "@Al can you check the notes?")
        await expect(mention).to_have_class(re.compile(r"\bmentions-me\b"))
        await expect(mention.locator(".text mark.mention")).to_have_text(["@Al"])
        await expect(msg(one, "and @Bob too").locator("mark.mention")).to_have_count(0)  # Bob is not a member
        await expect(msg(one, "and @Bob too")).not_to_have_class(re.compile(r"\bmentions-me\b"))

        # More while Al looks at news on one: read at once there, never counted on two.
        await bo.say(news, "thanks!")
        await expect(msg(one, "thanks!")).to_have_count(1)
        await until(one, "() => window.__ws.sent.filter(f => f.type === 'read').length >= 2", what="a second read")
        await settle(0.5)
        await expect(entry(two, news).locator(".unread")).to_be_hidden()

        # Leaving the room's view takes the line away; sending does too.
        await entry(one, other).click()
        await entry(one, news).click()
        await expect(one.locator(".new-messages")).to_have_count(0)

        # A reload starts from the marker the server keeps: nothing unread.
        await two.reload(wait_until="load")
        await joined(two, other)
        await expect(entry(two, news)).to_have_class(re.compile(r"\bjoined\b"))
        await settle(0.5)
        await expect(entry(two, news).locator(".unread")).to_be_hidden()
    finally:
        await bo.close()


async def test_typing_shows_on_the_others_page_and_clears(cluster, room, browser):
    al, _ = await browser.open(cluster[0].http_url + "/", label="al", init_script=WS_SPY)
    bo, _ = await browser.open(cluster[1].http_url + "/", label="bo", init_script=WS_SPY)
    cy = await ChatClient.connect(cluster[2].ws_url)
    try:
        await join(al, room, "Al")
        await join(bo, room, "Bo")
        await cy.join(room, "Cy")
        typing = al.locator("#typing")
        await expect(typing).to_have_attribute("aria-live", "polite")
        await expect(typing).to_have_text("")

        # Bo types: Al sees it; Bo's page says nothing of himself; at most one frame a second.
        await bo.locator("#message").press_sequentially("on my way", delay=40)
        await expect(typing).to_have_text("Bo is typing…")
        await expect(bo.locator("#typing")).to_have_text("")
        sent = await frames(bo, "sent", "typing")
        assert 1 <= len(sent) <= 2, f"9 keystrokes in about 0.4 s, at most one `typing` a second: {sent}"
        assert sent[0] == {"type": "typing", "room": room}, sent

        # Cy types too: both named; his message takes his name off at once.
        await cy.send({"type": "typing", "room": room})
        await expect(typing).to_have_text("Bo and Cy are typing…")
        await browser.shot(al, "two typing")
        await cy.say(room, "here already")
        await expect(msg(al, "here already")).to_have_count(1)
        await expect(typing).to_have_text("Bo is typing…")

        # Frames of Al's own name (his other tabs) are not shown.
        await al.evaluate("(room) => window.__ws.inject({type: 'typing', room, user: 'Al'})", room)
        await settle(0.2)
        await expect(typing).to_have_text("Bo is typing…")

        # Bo sends: gone at once; he types again and stops: gone 5 s after his last frame.
        # (He types slowly: the server passes on one `typing` in 2 s, and his first came
        # less than 2 s ago.)
        await bo.locator("#message").press("Enter")
        await expect(msg(al, "on my way")).to_have_count(1)
        await expect(typing).to_have_text("")
        await bo.locator("#message").press_sequentially("one more", delay=350)
        await expect(typing).to_have_text("Bo is typing…")
        started = asyncio.get_running_loop().time()
        await expect(typing).to_have_text("", timeout=8_000)
        waited = asyncio.get_running_loop().time() - started
        assert 3.0 < waited < 7.0, f"cleared {waited:.1f} s after it showed (5 s after the last frame)"
    finally:
        await cy.close()


async def test_a_mention_while_hidden_notifies_after_the_user_allowed_it(cluster, room, browser):
    al, _ = await browser.open(cluster[0].http_url + "/", label="al", init_script=NOTIFY_SPY)
    bo = await ChatClient.connect(cluster[1].ws_url)
    try:
        await join(al, room, "Al")
        await bo.join(room, "Bo")
        button = al.locator("#notify")
        await expect(button).to_be_visible()
        assert await al.evaluate("() => Notification.permission") == "default", "never asked on load"
        await button.click()
        await expect(button).to_be_hidden()
        # Looking at the room: no notification.
        await bo.say(room, "@Al you there?")
        await expect(msg(al, "@Al you there?")).to_have_count(1)
        # The tab hidden: one for the mention, none for the rest.
        await al.evaluate("""() => {
          Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
          document.dispatchEvent(new Event('visibilitychange'));
        }""")
        await bo.say(room, "nothing for you")
        await bo.say(room, "@Al lunch?")
        await expect(msg(al, "@Al lunch?")).to_have_count(1)
        await settle(0.2)
        assert await al.evaluate("() => window.__notified") == [
            {"title": "Bo mentioned you in #" + room, "body": "@Al lunch?"}]
    finally:
        await bo.close()


@contextlib.asynccontextmanager
async def presence_state(c, browser, audit, label: str, **context):
    """Ana's page with Leo typing, a New messages line and a mention of her, fixed names and
    texts, audited by axe on the way; Maya and Leo stay in the room meanwhile."""
    room, elsewhere = "launch", "random"
    maya = await ChatClient.connect(c[0].ws_url)
    leo = await ChatClient.connect(c[0].ws_url)
    try:
        await maya.join(room, "Maya")
        await leo.join(room, "Leo")
        await maya.say(room, "Release candidate 2.4 is on staging")
        await leo.say(room, "Smoke tests are green")
        await maya.messages(2)
        page, _ = await browser.open(c[0].http_url + "/", label=label, **context)
        await join(page, room, "Ana")
        await expect(page.locator(MESSAGES)).to_have_count(2)
        await send(page, "Changelog is fixed")
        await expect(page.locator(MESSAGES)).to_have_count(3)
        await join(page, elsewhere)
        await maya.say(room, "@Ana can you write the migration note?")
        await leo.say(room, "Then we ship at 10:00")
        await expect(entry(page, room).locator(".mentioned")).to_have_text("@1")
        await expect(entry(page, room).locator(".unread")).to_have_text("2")
        await audit(page, f"{label}: a room with an unread mention")
        await entry(page, room).click()
        await expect(page.locator(".new-messages")).to_be_visible()
        await leo.send({"type": "typing", "room": room})
        await expect(page.locator("#typing")).to_have_text("Leo is typing…")
        mention = msg(page, "@Ana can you write the migration note?")
        await expect(mention).to_have_class(re.compile(r"\bmentions-me\b"))
        assert await mention.locator(".text").text_content() == "@Ana can you write the migration note?"
        await audit(page, f"{label}: typing, a new-messages line and a mention")
        yield page
    finally:
        await maya.close()
        await leo.close()


async def test_axe_and_the_presence_screenshot(make_cluster, browser):
    """docs/presence.png: the typing line, a New messages line and a mention, with fixed
    names and texts; axe over that state. UPDATE_DOCS_SCREENSHOT=1 copies it to docs/."""
    require_axe()
    audit = Audit()
    async with presence_state(make_cluster(1), browser, audit, "ana", viewport={"width": 1100, "height": 700},
                              locale="en-GB") as page:
        await page.locator("#message").focus()
        await settle(0.3)
        path = await browser.shot(page, "presence")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "docs" / "presence.png")
    audit.check()


@pytest.mark.parametrize("variant", list(DARK_AND_PHONE))
async def test_axe_finds_nothing_in_the_presence_states(make_cluster, browser, variant):
    """The same states in the dark colour scheme and on a phone."""
    require_axe()
    audit = Audit()
    async with presence_state(make_cluster(1), browser, audit, variant, **DARK_AND_PHONE[variant]) as page:
        await browser.shot(page, variant)
    # Leo left (his connection closed): his line goes at once, well before its 5 s.
    await expect(page.locator("#typing")).to_have_text("", timeout=2_000)
    audit.check()
