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

import datetime as dt
import os
import shutil

from a11y import Audit, require_axe
from client import ChatClient
from pagekit import MESSAGES, WS_SPY, frames, join, joined, seed_messages, send, settle, until, utc_at, wait_open

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
    await expect(chip).to_have_attribute("title", "Bo, Al reacted with 👍")
    await expect(chip).to_have_accessible_name("Bo, Al reacted with 👍")

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


async def open_menu(page, text: str):
    """The actions menu of the message whose text is ``text`` (through its tools)."""
    m = msg(page, text)
    await m.hover()
    await m.locator(".tool-more").click()
    await expect(page.locator("#msg-menu")).to_be_visible()
    return page.locator("#msg-menu")


async def react_with_picker(page, text: str, emoji: str) -> None:
    m = msg(page, text)
    await m.hover()
    await m.locator(".tool-react").click()
    await expect(page.locator("#emoji-picker")).to_be_visible()
    await page.locator(f'#emoji-picker .emoji-choice[data-emoji="{emoji}"]').click()
    await expect(page.locator("#emoji-picker")).to_be_hidden()


async def chip_state(page, text: str) -> list[tuple[str, str, str | None, str | None]]:
    """(emoji, count, aria-pressed, who reacted) of each chip of that message, in order; who
    reacted is both its title and what a screen reader says of it (its text less the emoji
    and count, which are hidden from screen readers)."""
    rows = await msg(page, text).locator(".reaction").evaluate_all(
        "els => els.map(e => [e.dataset.emoji, e.querySelector('.count').textContent,"
        " e.getAttribute('aria-pressed'), e.title, e.querySelector('.who').textContent])")
    for row in rows:
        assert row[3] == row[4], f"the title and the spoken label say the same: {row}"
    return [tuple(row[:4]) for row in rows]


async def test_two_users_edit_delete_reply_and_react_live_and_after_a_reload(cluster, room, browser):
    require_axe()
    audit = Audit()

    async def look(page, state: str) -> None:
        """axe over the page in this state, and a screenshot of it."""
        await audit(page, state)
        await browser.shot(page, state)

    al, _ = await browser.open(cluster[0].http_url + "/", label="al", init_script=WS_SPY)
    bo, _ = await browser.open(cluster[1].http_url + "/", label="bo", init_script=WS_SPY)
    await join(al, room, "Al")
    await join(bo, room, "Bo")
    for k, (page, text) in enumerate([(al, "helo everyone"), (bo, "hi Al"), (al, "lunch at noon?")], 1):
        await send(page, text)
        await expect(page.locator(MESSAGES)).to_have_count(k)   # stored before the next is sent
    for page in (al, bo):
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["helo everyone", "hi Al", "lunch at noon?"])

    # Up in the empty box edits Al's last message, in place; Enter saves; both see it.
    await al.locator("#message").press("ArrowUp")
    editor = msg(al, "lunch at noon?").locator(".edit-input")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("lunch at noon?")
    await look(al, "editing in place")
    await editor.fill("lunch at 12:30?")
    await editor.press("Enter")
    await expect(al.locator("#message")).to_be_focused()
    for page in (al, bo):
        edited = msg(page, "lunch at 12:30?")
        await expect(edited.locator(".edited")).to_have_text("(edited)")
        assert (await edited.locator(".edited").get_attribute("title")).startswith("Edited ")

    # Escape cancels an edit: nothing is sent, the text stays.
    edits_before = len(await frames(al, "sent", "edit"))
    await al.locator("#message").press("ArrowUp")
    await msg(al, "lunch at 12:30?").locator(".edit-input").fill("never mind")
    await al.keyboard.press("Escape")
    await expect(al.locator(".edit-input")).to_have_count(0)
    await expect(msg(al, "lunch at 12:30?")).to_have_count(1)
    assert len(await frames(al, "sent", "edit")) == edits_before, "Escape sent nothing"

    # Edit from the menu; the menu offers edit and delete on one's own messages only.
    menu = await open_menu(al, "helo everyone")
    await expect(menu.locator('[role="menuitem"]')).to_have_text(["Add reaction", "Reply", "Edit", "Delete"])
    await expect(menu.locator('[role="menuitem"]').first).to_be_focused()
    await look(al, "actions menu open")
    await menu.locator(".menu-edit").click()
    await msg(al, "helo everyone").locator(".edit-input").fill("hello everyone")
    await al.keyboard.press("Enter")
    menu_bo = await open_menu(bo, "hello everyone")
    await expect(menu_bo.locator('[role="menuitem"]')).to_have_text(["Add reaction", "Reply"])
    await bo.keyboard.press("Escape")
    await expect(menu_bo).to_be_hidden()
    await expect(msg(bo, "hello everyone").locator(".tool-more")).to_be_focused()

    # Bo replies to Al's question: the bar above the box, then a quote in the reply.
    lunch = msg(bo, "lunch at 12:30?")
    lunch_id = await lunch.get_attribute("data-id")
    await lunch.hover()
    await lunch.locator(".tool-reply").click()
    await expect(bo.locator("#reply-bar")).to_be_visible()
    await bo.locator("#reply-cancel").click()   # changed his mind: the bar goes
    await expect(bo.locator("#reply-bar")).to_be_hidden()
    await lunch.hover()
    await lunch.locator(".tool-reply").click()
    await expect(bo.locator("#reply-bar")).to_be_visible()
    await expect(bo.locator("#reply-bar-text")).to_have_text("Replying to Al: lunch at 12:30?")
    await expect(bo.locator("#message")).to_be_focused()
    await look(bo, "replying")
    await send(bo, "count me in")
    await expect(bo.locator("#reply-bar")).to_be_hidden()
    sent = [f for f in await frames(bo, "sent", "message") if f["text"] == "count me in"]
    assert sent and sent[-1].get("reply_to") == lunch_id, sent
    for page in (al, bo):
        quote = msg(page, "count me in").locator(".reply-quote")
        await expect(quote).to_have_attribute("data-reply-to", lunch_id)
        await expect(quote.locator(".quote-user")).to_have_text("Al")
        await expect(quote.locator(".quote-text")).to_have_text("lunch at 12:30?")

    # Reactions: Bo with the picker, Al by clicking Bo's chip; Al's 🎉 with the keyboard.
    await react_with_picker(bo, "lunch at 12:30?", "👍")
    await expect(msg(al, "lunch at 12:30?").locator('.reaction[data-emoji="👍"] .count')).to_have_text("1")
    await msg(al, "lunch at 12:30?").locator('.reaction[data-emoji="👍"]').click()
    m = msg(al, "lunch at 12:30?")
    await m.hover()
    await m.locator(".tool-react").click()
    await expect(al.locator("#emoji-picker .emoji-choice").first).to_be_focused()
    await look(al, "emoji picker open")
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowLeft"):   # 👍 -> ❤️ -> 😂 -> 🎉 -> 😂
        await al.keyboard.press(key)
    await al.keyboard.press("ArrowRight")
    await expect(al.locator('#emoji-picker .emoji-choice[data-emoji="🎉"]')).to_be_focused()
    await al.keyboard.press("Enter")
    await expect(al.locator("#emoji-picker")).to_be_hidden()
    want_al = [("👍", "2", "true", "Bo, Al reacted with 👍"), ("🎉", "1", "true", "Al reacted with 🎉")]
    want_bo = [("👍", "2", "true", "Bo, Al reacted with 👍"), ("🎉", "1", "false", "Al reacted with 🎉")]
    await until(al, "() => document.querySelectorAll('#messages .reaction').length === 2", what="two chips")
    await until(bo, "() => document.querySelectorAll('#messages .reaction').length === 2", what="two chips")
    assert await chip_state(al, "lunch at 12:30?") == want_al
    assert await chip_state(bo, "lunch at 12:30?") == want_bo
    # Clicking one's own chip takes the reaction off (react with on: false).
    await msg(al, "lunch at 12:30?").locator('.reaction[data-emoji="🎉"]').click()
    for page in (al, bo):
        await expect(msg(page, "lunch at 12:30?").locator(".reaction")).to_have_count(1)
    reacts = [(f["emoji"], f["on"]) for f in await frames(al, "sent", "react")]
    assert reacts == [("👍", True), ("🎉", True), ("🎉", False)], reacts

    # Bo deletes a message of his, after confirming in a dialog.
    await send(bo, "oops, wrong room")
    await expect(msg(al, "oops, wrong room")).to_have_count(1)
    oops_id = await msg(bo, "oops, wrong room").get_attribute("data-id")
    menu_bo = await open_menu(bo, "oops, wrong room")
    await menu_bo.locator(".menu-delete").click()
    await expect(bo.locator("#confirm-delete")).to_be_visible()
    await expect(bo.locator("#confirm-delete-preview")).to_have_text("oops, wrong room")
    await expect(bo.locator("#confirm-delete-cancel")).to_be_focused()
    await look(bo, "delete confirmation")
    await bo.locator("#confirm-delete-ok").click()
    for page in (al, bo):
        gone = page.locator(f'{MESSAGES}[data-id="{oops_id}"]')
        await expect(gone).to_have_class(re.compile(r"\bremoved\b"))
        await expect(gone.locator(".removed-note")).to_have_text("This message was deleted")
        await expect(gone.locator(".text")).to_have_text("")
    await look(al, "a removed message")
    assert "wrong room" not in await al.locator("#messages").text_content()

    # After a reload each page shows the latest state; the deleted message is left out.
    final = ["hello everyone", "hi Al", "lunch at 12:30?", "count me in"]
    for page in (al, bo):
        await page.reload(wait_until="load")
        await wait_open(page)
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(final)
        await expect(msg(page, "hello everyone").locator(".edited")).to_have_count(1)
        await expect(msg(page, "count me in").locator(".reply-quote .quote-text")).to_have_text("lunch at 12:30?")
        await expect(msg(page, "lunch at 12:30?").locator('.reaction[data-emoji="👍"] .count')).to_have_text("2")
    assert "wrong room" not in await bo.locator("#messages").text_content()

    # Changes made while a page is away come with its rejoin (since), live state and all.
    await al.goto("about:blank")
    await react_with_picker(bo, "hello everyone", "🔥")
    edit_box = msg(bo, "count me in")
    await edit_box.hover()
    await edit_box.locator(".tool-edit").click()
    await msg(bo, "count me in").locator(".edit-input").fill("count me in!")
    await bo.keyboard.press("Enter")
    await expect(msg(bo, "count me in!")).to_have_count(1)
    await al.goto(cluster[0].http_url + "/", wait_until="load")
    await wait_open(al)
    await expect(al.locator(f"{MESSAGES} .text")).to_have_text(final[:3] + ["count me in!"])
    await expect(msg(al, "hello everyone").locator('.reaction[data-emoji="🔥"]')).to_have_accessible_name(
        "Bo reacted with 🔥")
    await settle()
    audit.check()


async def change_by(client: ChatClient, frame: dict, cid: str) -> None:
    """Send a change as ``client`` and wait for its ack."""
    await client.send({**frame, "client_id": cid})
    got = await client.until(lambda f: (f["type"] == "ack" and f.get("client_id") == cid)
                             or (f["type"] == "error" and f.get("ref") == cid))
    assert got["type"] == "ack", got


async def test_a_reply_quote_goes_to_its_original_loaded_or_not(make_cluster, room, browser):
    c = make_cluster(1)
    sam = await ChatClient.connect(c[0].ws_url)
    try:
        await sam.join(room, "Sam")
        start = utc_at(1, 8, 0)
        items = [(start + dt.timedelta(minutes=k), "Sam", f"message {k}") for k in range(70)]
        items.append((utc_at(1, 9, 10), "Sam", "soon gone"))
        ids = await seed_messages(c.redis.url, room, items)
        doomed = ids[-1]
        await seed_messages(c.redis.url, room, [
            (utc_at(1, 9, 15), "Sam", "answering the very first", {"reply_to": ids[0]}),
            (utc_at(1, 9, 16), "Sam", "answering forty", {"reply_to": ids[40]}),
            (utc_at(1, 9, 17), "Sam", "answering the doomed one", {"reply_to": doomed}),
        ])
        page, _ = await browser.open(c[0].http_url + "/", label="al", viewport={"width": 1100, "height": 700})
        await join(page, room, "Al")
        await expect(page.locator(f'{MESSAGES}[data-id="{ids[0]}"]')).to_have_count(0)   # not loaded (the last 50)

        # A loaded original: Enter on the quote scrolls to it and lights it up.
        quote = msg(page, "answering forty").locator(".reply-quote")
        await expect(quote.locator(".quote-text")).to_have_text("message 40")
        forty = page.locator(f'{MESSAGES}[data-id="{ids[40]}"]')
        await expect(forty).not_to_be_in_viewport()
        await quote.focus()
        await quote.press("Enter")
        await expect(forty).to_be_in_viewport()
        await expect(forty).to_have_class(re.compile(r"\bflash\b"))
        await expect(forty).to_be_focused()

        # An original older than what is loaded: the quote fetched it; a click pages back to it.
        first = msg(page, "answering the very first").locator(".reply-quote")
        await expect(first.locator(".quote-user")).to_have_text("Sam")
        await expect(first.locator(".quote-text")).to_have_text("message 0")
        await first.click()
        zero = page.locator(f'{MESSAGES}[data-id="{ids[0]}"]')
        await expect(zero).to_be_in_viewport()
        await expect(zero).to_have_class(re.compile(r"\bflash\b"))

        # The original deleted: its quote says so, live and after a reload.
        doomed_quote = msg(page, "answering the doomed one").locator(".reply-quote")
        await expect(doomed_quote.locator(".quote-text")).to_have_text("soon gone")
        await change_by(sam, {"type": "delete", "room": room, "id": doomed}, "del-1")
        await expect(doomed_quote.locator(".quote-text")).to_have_text("message deleted")
        await expect(page.locator(f'{MESSAGES}[data-id="{doomed}"]')).to_have_class(re.compile(r"\bremoved\b"))
        await page.reload(wait_until="load")
        await joined(page, room)
        await expect(page.locator(f'{MESSAGES}[data-id="{doomed}"]')).to_have_count(0)
        await expect(msg(page, "answering the doomed one").locator(".reply-quote .quote-text")).to_have_text(
            "message deleted")
        await expect(msg(page, "answering the very first").locator(".reply-quote .quote-text")).to_have_text(
            "message 0")
    finally:
        await sam.close()


async def test_the_conversation_screenshot(make_cluster, browser):
    """docs/conversation.png: a conversation with an edit, replies and reactions, with fixed
    names, texts and times (yesterday, UTC). Saved under artifacts/screenshots/ on every run;
    UPDATE_DOCS_SCREENSHOT=1 copies it to docs/ as well."""
    c = make_cluster(1)
    room = "launch"
    maya = await ChatClient.connect(c[0].ws_url)
    leo = await ChatClient.connect(c[0].ws_url)
    try:
        await maya.join(room, "Maya")
        await leo.join(room, "Leo")
        at = lambda h, m: utc_at(1, h, m)
        ids = await seed_messages(c.redis.url, room, [
            (at(9, 12), "Maya", "Release candidate 2.4 is on staging"),
            (at(9, 14), "Leo", "Smoke tests are green. Anything else?"),
            (at(9, 15), "Ana", "The changelog still says 2.3, fixing it"),
        ])
        ids += await seed_messages(c.redis.url, room, [
            (at(9, 17), "Maya", "Just the migration note for self-hosters", {"reply_to": ids[1]}),
        ])
        ids += await seed_messages(c.redis.url, room, [
            (at(9, 19), "Ana", "Added it under Upgrading", {"reply_to": ids[3]}),
            (at(9, 21), "Leo", "Then we ship at 10:00"),
        ])
        page, _ = await browser.open(c[0].http_url + "/", label="ana", viewport={"width": 1100, "height": 700},
                                     timezone_id="UTC", locale="en-GB")
        await join(page, room, "Ana")
        await expect(page.locator(MESSAGES)).to_have_count(6)
        # Ana fixes her message (from its menu), and reacts; Maya and Leo react too.
        menu = await open_menu(page, "The changelog still says 2.3, fixing it")
        await menu.locator(".menu-edit").click()
        await page.locator(".edit-input").fill("The changelog said 2.3: fixed")
        await page.keyboard.press("Enter")
        await expect(msg(page, "The changelog said 2.3: fixed").locator(".edited")).to_have_count(1)
        reactions = [(leo, 0, "🎉"), (maya, 4, "👍"), (leo, 4, "👍"), (leo, 4, "✅"), (maya, 5, "🚀"), (leo, 0, "🚀")]
        for k, (who, target, emoji) in enumerate(reactions):
            cid = f"r{k}"
            await change_by(who, {"type": "react", "room": room, "id": ids[target], "emoji": emoji, "on": True}, cid)
        await react_with_picker(page, "Release candidate 2.4 is on staging", "🎉")
        await expect(msg(page, "Then we ship at 10:00").locator(".reaction")).to_have_count(1)
        release = msg(page, "Release candidate 2.4 is on staging")
        await expect(release.locator('.reaction[data-emoji="🎉"] .count')).to_have_text("2")
        await page.locator("#message").focus()
        await page.locator("#message").blur()
        await msg(page, "Then we ship at 10:00").locator(".bubble").hover()   # its tools show
        await settle(0.3)
        path = await browser.shot(page, "conversation")
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(path, ROOT / "docs" / "conversation.png")
    finally:
        await maya.close()
        await leo.close()


PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
VARIANTS = {
    "desktop-dark": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "dark"},
    "phone": PHONE,
    "phone-dark": {**PHONE, "color_scheme": "dark"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_axe_finds_nothing_in_the_new_states(cluster, room, browser, variant):
    """A quote, chips, "(edited)" and a removed message, the menu, the picker, editing and
    replying: clean in the dark colour scheme and on a phone too (the light desktop is audited
    by the two-user test)."""
    require_axe()
    audit = Audit()
    sam = await ChatClient.connect(cluster[1].ws_url)
    try:
        await sam.join(room, "Sam")
        page, _ = await browser.open(cluster[0].http_url + "/", label=variant, init_script=WS_SPY, **VARIANTS[variant])
        await join(page, room, "Al")
        await send(page, "mine, to be edited")
        await expect(page.locator(MESSAGES)).to_have_count(1)   # stored: Sam's comes after it
        await sam.say(room, "doomed")
        await expect(page.locator(MESSAGES)).to_have_count(2)
        ids = [await msg(page, t).get_attribute("data-id") for t in ("mine, to be edited", "doomed")]
        await change_by(sam, {"type": "react", "room": room, "id": ids[0], "emoji": "👍", "on": True}, "a1")
        await sam.send({"type": "message", "room": room, "text": "a reply", "reply_to": ids[0]})
        await change_by(sam, {"type": "delete", "room": room, "id": ids[1]}, "a2")
        await page.locator("#message").press("ArrowUp")
        await page.locator(".edit-input").fill("mine, edited")
        await page.keyboard.press("Enter")
        await expect(msg(page, "mine, edited").locator(".edited")).to_have_count(1)
        await expect(msg(page, "a reply").locator(".reply-quote .quote-text")).to_have_text("mine, edited")
        await expect(page.locator(f"{MESSAGES}.removed")).to_have_count(1)
        await audit(page, "quote, chips, edited, removed")
        await browser.shot(page, "conversation")

        menu = await open_menu(page, "a reply")
        await audit(page, "menu open")
        await menu.locator(".menu-react").click()
        await expect(page.locator("#emoji-picker")).to_be_visible()
        await audit(page, "picker open")
        await browser.shot(page, "picker")
        await page.keyboard.press("Escape")
        await expect(page.locator("#emoji-picker")).to_be_hidden()
        await open_menu(page, "a reply")
        await page.locator("#msg-menu .menu-reply").click()
        await expect(page.locator("#reply-bar")).to_be_visible()
        await audit(page, "replying")
        await page.locator("#message").press("Escape")
        await expect(page.locator("#reply-bar")).to_be_hidden()
        await page.locator("#message").press("ArrowUp")
        await expect(page.locator(".edit-input")).to_be_focused()
        await audit(page, "editing")
        await browser.shot(page, "editing")
        await page.keyboard.press("Escape")
        audit.check()
    finally:
        await sam.close()
