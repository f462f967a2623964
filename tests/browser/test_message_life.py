"""A message's life after it is sent, on the page (PROTOCOL.md section 11; the issue's words:
"edit your own last message with Up, edit/delete from a message's menu, "(edited)" with the
time on hover, a deleted message shown as removed, reply with a quote of the original that
scrolls to it, reactions as chips with counts and who reacted, an emoji picker").

The page's hooks for it, beside section 7's: in each `.message[data-id]`, `.edited` (its
title the time of the edit), `.reply-quote[data-reply-to]`, `.reactions` with a
`.reaction[data-emoji]` button per emoji (`.count`, `aria-pressed`, who in `aria-label`),
`.reaction-add`, the tools `.tool-react`, `.tool-reply`, `.tool-edit`, `.tool-more` (the
actions menu `#msg-menu` with `.menu-react`, `.menu-reply`, `.menu-edit`, `.menu-delete`),
`.removed` on a deleted message; `#emoji-picker` (`.emoji-choice[data-emoji]`),
`#confirm-delete` (`#confirm-delete-ok`), `#reply-bar` (`#reply-cancel`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from a11y import Audit, require_axe
from pagekit import MESSAGES, WS_SPY, frames, join, send, settle, until, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]


def msg(page, text: str):
    """The `.message` whose `.text` is exactly ``text``."""
    return page.locator(MESSAGES).filter(has=page.locator(".text", has_text=re.compile("^" + re.escape(text) + "$")))


async def last_id(page, room: str) -> str:
    """The `since` this tab would rejoin ``room`` with (its saved session)."""
    await page.evaluate("() => new Promise(r => setTimeout(r, 300))")   # the save is batched
    return await page.evaluate(
        "(room) => (JSON.parse(sessionStorage.getItem('quart_chat.session')).rooms.find(r => r[0] === room) || [])[1]",
        room)


async def test_change_frames_apply_as_the_contract_says(cluster, room, browser):
    """The page's side alone, with change frames handed to it as the server sends them: set,
    never toggle; a change to an unknown id is ignored quietly; the last id seen follows
    change ids too; a deleted message keeps its place and loses its text."""
    page, _ = await browser.open(cluster[0].http_url + "/", label="al", init_script=WS_SPY)
    await join(page, room, "Al")
    await send(page, "first")
    await send(page, "second")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["first", "second"])
    ids = await page.eval_on_selector_all(MESSAGES, "els => els.map(e => e.dataset.id)")
    ms = int(ids[-1].split("-")[0])

    def change(kind: str, seq: int, **fields) -> dict:
        return {"type": kind, "room": room, "change_id": f"{ms + 10}-{seq}", **fields}

    async def inject(f: dict) -> None:
        await page.evaluate("(f) => window.__ws.inject(f)", f)

    await inject(change("message_edited", 0, id=ids[0], text="first, fixed", edited_ts=ms + 10))
    first = page.locator(f'{MESSAGES}[data-id="{ids[0]}"]')
    await expect(first.locator(".text")).to_have_text("first, fixed")
    await expect(first.locator(".edited")).to_have_text("(edited)")
    assert (await first.locator(".edited").get_attribute("title")).startswith("Edited "), "the time on hover"

    for seq, (user, on) in enumerate([("Bo", True), ("Bo", True), ("Cy", True), ("Al", True), ("Cy", False)], 1):
        await inject(change("reaction", seq, id=ids[0], emoji="👍", user=user, on=on))
    chip = first.locator('.reaction[data-emoji="👍"]')
    await expect(chip.locator(".count")).to_have_text("2")
    await expect(chip).to_have_attribute("aria-pressed", "true")
    await expect(chip).to_have_attribute("aria-label", "Bo, Al reacted with 👍")

    # Unknown ids, malformed frames: nothing shown changes, nothing breaks.
    await inject(change("message_edited", 8, id="1-0", text="not here", edited_ts=1))
    await inject(change("reaction", 9, id="1-0", emoji="👍", user="Bo", on=True))
    await inject({"type": "reaction", "room": room, "id": ids[0], "emoji": "a b", "user": "Bo", "on": True})
    await inject(change("message_deleted", 10, id=ids[1]))
    second = page.locator(f'{MESSAGES}[data-id="{ids[1]}"]')
    await expect(second).to_have_class(re.compile(r"\bremoved\b"))
    await expect(second.locator(".text")).to_have_text("")
    await expect(second.locator(".removed-note")).to_have_text("This message was deleted")
    await expect(second.locator(".msg-tools")).to_have_count(0)
    assert "second" not in await second.text_content(), "the deleted text is nowhere on the page"
    await expect(page.locator(MESSAGES)).to_have_count(2)
    assert await last_id(page, room) == f"{ms + 10}-10", "the last id seen follows change ids"
    await first.hover()
    await browser.shot(page, "changes")
