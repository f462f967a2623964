"""Two page points of the issue "first five minutes":

6. Message times say the day: a separator ("Today", "Yesterday", "Sun 29 Nov 2026") before
   each day's first entry, and the full date in each time element's datetime and title.
8. The message box shows its length near the limit (CHAT_MAX_TEXT, which the server renders
   into the page): "1,850 / 2,000" from 80% on; over it, it says by how much, and the page
   does not send it (the server would refuse it) but says why and keeps the text.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from a11y import SPEECH_SPY, speech
from client import ChatClient
from pagekit import MESSAGES, WS_SPY, frames, join, seed_messages, settle, utc_at

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

def en_gb(d: dt.datetime) -> str:
    """What Chromium's en-GB locale writes for {weekday, day, month: short, year}."""
    return f"{d:%a}, {d.day} {d:%b %Y}"


# The counter's text as seen (its " characters" is for screen readers alone).
VISIBLE = """e => [...e.childNodes].filter(n => !(n.classList && n.classList.contains('sr-only')))
  .map(n => n.textContent).join('')"""

LAYOUT = """() => [...document.querySelectorAll('#messages > *')].map(e =>
  e.classList.contains('day-sep') ? 'day ' + e.textContent
  : e.classList.contains('message') ? 'msg ' + e.querySelector('.text').textContent
  : 'note ' + e.querySelector('.notice-text').textContent)"""


async def test_days_are_shown(cluster, room, browser):
    sam = await ChatClient.connect(cluster[0].ws_url)
    old = utc_at(3, 9, 15)
    try:
        await sam.join(room, "Sam")
        # 55 messages three days ago, one just before yesterday's midnight, one just after
        # (when that is already past), then one now: a plain join brings the last 50.
        items = [(old + dt.timedelta(minutes=k), "Sam", f"old {k:02d}") for k in range(55)]
        items.append((utc_at(1, 23, 58), "Sam", "just before midnight"))
        if dt.datetime.now(dt.UTC) > utc_at(0, 0, 2):
            items.append((utc_at(0, 0, 1), "Sam", "just after midnight"))
        await seed_messages(cluster.redis.url, room, items)
        await sam.say(room, "now")
        await sam.messages(1)

        page, _ = await browser.open(cluster[1].http_url + "/", label="dee", locale="en-GB", timezone_id="UTC")
        await join(page, room, "Dee")
        after_midnight = ["msg just after midnight"] if len(items) == 57 else []
        first_shown = 55 - (50 - 2 - len(after_midnight))
        want = ["day " + en_gb(old), *[f"msg old {k:02d}" for k in range(first_shown, 55)],
                "day Yesterday", "msg just before midnight",
                "day Today", *after_midnight, "msg now", "note You joined #" + room]
        assert await page.evaluate(LAYOUT) == want

        # The time element: HH:MM shown, the exact time in datetime, the day in the title.
        t = page.locator(f"{MESSAGES}", has_text="just before midnight").locator("time")
        await expect(t).to_have_text("23:58")
        stamp = utc_at(1, 23, 58)
        await expect(t).to_have_attribute("datetime", stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        await expect(t).to_have_attribute("title", en_gb(stamp) + ", 23:58")
        # A group of one sender's messages does not run over midnight.
        if after_midnight:
            row = page.locator(MESSAGES, has_text="just after midnight")
            await expect(row).not_to_have_class(re.compile(r"\bcont\b"))
        second = page.locator(MESSAGES, has_text=f"old {first_shown + 1:02d}")
        await expect(second).to_have_class(re.compile(r"\bcont\b"))
        await browser.shot(page)

        # Older history goes above: still one separator per day, at the day's first message.
        await page.locator("#load-older").click()
        await expect(page.locator(MESSAGES)).to_have_count(55 + 1 + len(after_midnight) + 1)
        layout = await page.evaluate(LAYOUT)
        assert layout[:2] == ["day " + en_gb(old), "msg old 00"], layout[:3]
        assert [x for x in layout if x.startswith("day ")] == ["day " + en_gb(old), "day Yesterday", "day Today"]
        # Live messages of today join today's part.
        await sam.say(room, "later today")
        await expect(page.locator(f"{MESSAGES} .text").last).to_have_text("later today")
        layout = await page.evaluate(LAYOUT)
        assert layout[-2:] == ["note You joined #" + room, "msg later today"], layout[-4:]
        assert [x for x in layout if x.startswith("day ")] == ["day " + en_gb(old), "day Yesterday", "day Today"]
    finally:
        await sam.close()


async def test_length_counter_and_limit(make_cluster, cluster, room, browser):
    c = make_cluster(1, env={"CHAT_MAX_TEXT": "50"})
    page, response = await browser.open(c[0].http_url + "/", label="lou", init_script=WS_SPY + SPEECH_SPY)
    # The limit comes from the server (CHAT_MAX_TEXT), rendered into the page.
    await expect(page.locator("#message")).to_have_attribute("data-max-text", "50")
    await join(page, room, "Lou")
    box, counter = page.locator("#message"), page.locator("#counter")

    await box.fill("x" * 39)
    await expect(counter).to_be_hidden()
    await box.fill("x" * 40)                                   # 80%
    await expect(counter).to_be_visible()
    await expect(counter).to_have_text("40 / 50 characters")   # " characters" for screen readers only
    assert await counter.evaluate(VISIBLE) == "40 / 50"
    # The box is described by the counter.
    assert await box.get_attribute("aria-describedby") == "counter"
    # Trimmed, and characters (code points), as the server counts: 50 emoji and spaces fit.
    await box.fill("   " + "😀" * 50 + "  ")
    await expect(counter).to_have_text("50 / 50 characters")
    await expect(counter).not_to_have_class(re.compile(r"\bover\b"))
    await browser.shot(page, "at-the-limit")
    await box.press("Enter")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["😀" * 50])
    await expect(counter).to_be_hidden()

    # Over: by how much, the box marked invalid; Enter sends nothing and says why.
    await box.fill("y" * 50)
    await box.press("End")
    await page.keyboard.type("zzz")
    await expect(counter).to_have_text("53 / 50 characters · 3 too many")
    await expect(counter).to_have_class(re.compile(r"\bover\b"))
    await expect(box).to_have_attribute("aria-invalid", "true")
    await box.press("Enter")
    toast = page.locator('#errors .toast[data-code="too_long"]:not(.leaving)')
    await expect(toast).to_contain_text("Message too long: 53 characters, the limit is 50")
    await expect(toast).to_contain_text("Shorten it by 3 to send it.")
    await expect(box).to_have_value("y" * 50 + "zzz")
    await browser.shot(page, "over-the-limit")
    sent = await frames(page, "sent", "message")
    assert len(sent) == 1, sent   # the emoji message alone: nothing over the limit went
    # A screen reader was told once, when the text went over (not at each key).
    said = [s["text"] for s in await speech(page) if s["region"] == "#sr-status"]
    assert said.count("Over the limit of 50 characters: 1 too many.") == 1, said
    assert not [s for s in said if "too many" in s and not s.startswith("Over the limit of 50 characters: 1")], said

    # Back under the limit: sent.
    for _ in range(3):
        await box.press("Backspace")
    await expect(counter).to_have_text("50 / 50 characters")
    await expect(box).not_to_have_attribute("aria-invalid", "true")
    await expect(toast).to_have_count(0)   # it went with its cause
    await box.press("Enter")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["😀" * 50, "y" * 50])
    await expect(box).to_have_value("")
    await expect(counter).to_be_hidden()

    # A refused message (here: a control character) edited past the limit is not sent
    # either: it stays in its editor, the toast says why.
    await box.fill("a bell \x07 rings")
    await box.press("Enter")
    item = page.locator("#pending .pending-item.failed")
    await expect(item).to_have_count(1)
    await item.locator("button.edit").click()
    editor = page.locator("#pending textarea.pending-edit")
    await editor.fill("e" * 60)
    await editor.press("Enter")
    await expect(toast).to_contain_text("Message too long: 60 characters, the limit is 50")
    await expect(editor).to_have_value("e" * 60)
    await expect(editor).to_be_focused()
    await editor.fill("edited to fit")
    await editor.press("Enter")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["😀" * 50, "y" * 50, "edited to fit"])
    await expect(page.locator("#pending .pending-item")).to_have_count(0)
    assert len(await frames(page, "sent", "message")) == 4

    # The default limit (2,000), with thousands separators.
    other, _ = await browser.open(cluster[0].http_url + "/", label="default")
    await expect(other.locator("#message")).to_have_attribute("data-max-text", "2000")
    await join(other, room + "_default", "Lou")
    await other.locator("#message").fill("w" * 1850)
    await expect(other.locator("#counter")).to_have_text("1,850 / 2,000 characters")
    await settle(0.1)
