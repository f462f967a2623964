"""Sending from the page: shown as sent only when the server confirms (its `ack` or its own
`message`), resent after a drop with the same client_id and shown once (G8), and refused texts
kept apart in the pending list, never run together (the issue's "first five minutes", item 1).

The WebSocket spy (pagekit.WS_SPY) holds, drops or rewrites frames and cuts the socket at a
chosen moment, from outside the page's code.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from client import ChatClient
from pagekit import (
    MESSAGES,
    WS_SPY,
    assert_in_id_order,
    frames,
    join,
    pending_texts,
    send,
    settle,
    shown,
    until,
    wait_open,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

OWN_ECHO = "f => f.type === 'message' && typeof f.client_id === 'string'"


async def test_ack_marks_sent(cluster, room, browser):
    alice, _ = await browser.open(cluster[0].http_url + "/", label="alice", init_script=WS_SPY)
    bob, _ = await browser.open(cluster[1].http_url + "/", label="bob")
    await join(alice, room, "Alice")
    await join(bob, room, "Bob")

    # 1. Nothing confirmed yet: the text is pending ("Sending…"), not a message.
    await alice.evaluate(f"() => {{ __ws.hold = f => f.type === 'ack' || ({OWN_ECHO})(f); }}")
    await send(alice, "held back")
    item = alice.locator("#pending .pending-item")
    await expect(item).to_have_count(1)
    await expect(item).to_have_class(re.compile(r"\bsent\b"))
    await expect(item.locator(".pending-status")).to_have_text("Sending…")
    await expect(alice.locator(MESSAGES)).to_have_count(0)
    await expect(bob.locator(MESSAGES)).to_have_count(1)  # stored and delivered meanwhile
    await browser.shot(alice, "unconfirmed")

    # 2. The ack alone (its `message` dropped, as for a resend G8 recognised) marks it sent.
    await alice.evaluate(f"() => {{ __ws.drop = {OWN_ECHO}; __ws.release(); }}")
    await expect(alice.locator("#pending .pending-item")).to_have_count(0)
    await expect(alice.locator(MESSAGES)).to_have_count(1)
    acks = await frames(alice, "received", "ack")
    assert len(acks) == 1, acks
    sent = await frames(alice, "sent", "message")
    assert acks[0]["client_id"] == sent[0]["client_id"]
    row = alice.locator(f'{MESSAGES}[data-id="{acks[0]["id"]}"]')
    await expect(row).to_have_class(re.compile(r"\bmine\b"))
    await expect(row.locator(".user")).to_have_text("Alice")
    await expect(row.locator(".text")).to_have_text("held back")

    # 3. The `message` alone (its ack dropped) marks it sent too; each shows once.
    await alice.evaluate("() => { __ws.drop = f => f.type === 'ack'; }")
    await send(alice, "no ack for this one")
    await expect(alice.locator("#pending .pending-item")).to_have_count(0)
    await expect(alice.locator(f"{MESSAGES} .text")).to_have_text(["held back", "no ack for this one"])

    # 4. Both, in whatever order they come: once.
    await alice.evaluate("() => { __ws.drop = null; }")
    await send(alice, "plain")
    await expect(alice.locator(f"{MESSAGES} .text")).to_have_text(["held back", "no ack for this one", "plain"])
    await expect(alice.locator("#pending .pending-item")).to_have_count(0)
    await settle()
    rows = await shown(alice)
    assert rows == await shown(bob)
    assert_in_id_order(rows)
    assert rows[0][0] == acks[0]["id"]
    await browser.shot(alice)


async def test_unconfirmed_message_offers_retry_and_posts_once(cluster, room, browser):
    alice, _ = await browser.open(cluster[0].http_url + "/", label="alice", init_script=WS_SPY, clock=True)
    bob, _ = await browser.open(cluster[2].http_url + "/", label="bob")
    await join(alice, room, "Alice")
    await join(bob, room, "Bob")
    # Stored and delivered to Bob, but the page hears nothing back on a socket that stays open.
    await alice.evaluate(f"() => {{ __ws.drop = f => f.type === 'ack' || ({OWN_ECHO})(f); }}")
    await send(alice, "lost answer")
    await expect(bob.locator(f"{MESSAGES} .text")).to_have_text(["lost answer"])
    item = alice.locator("#pending .pending-item")
    await expect(item).to_have_class(re.compile(r"\bsent\b"))
    # After a while (pending.js UNCONFIRMED_MS, 15 s: the page's clock is moved on) it says
    # so, and offers Retry.
    await alice.clock.fast_forward(16_000)
    await expect(item).to_have_class(re.compile(r"\bfailed\b"))
    await expect(item.locator(".pending-reason")).to_contain_text("No answer from the server yet")
    await expect(alice.locator("#status")).to_have_attribute("data-state", "open")
    await browser.shot(alice, "unconfirmed")
    await alice.evaluate("() => { __ws.drop = null; }")
    await item.locator("button.retry").click()
    # The server knew that client_id: an ack with the first id, no second message (G8).
    await expect(alice.locator("#pending .pending-item")).to_have_count(0)
    await expect(alice.locator(f"{MESSAGES} .text")).to_have_text(["lost answer"])
    await settle(0.5)
    await expect(bob.locator(f"{MESSAGES} .text")).to_have_text(["lost answer"])
    sent = await frames(alice, "sent", "message")
    assert len(sent) == 2 and sent[0]["client_id"] == sent[1]["client_id"], sent
    acks = await frames(alice, "received", "ack")
    assert len(acks) == 2 and acks[0]["id"] == acks[1]["id"], acks
    assert (await shown(alice))[0][0] == (await shown(bob))[0][0] == acks[0]["id"]
    echoes = [f for f in await frames(alice, "received", "message") if f.get("client_id") == sent[0]["client_id"]]
    assert len(echoes) == 1, echoes


async def test_message_cut_off_is_resent_and_shown_once(cluster, room, browser):
    alice, _ = await browser.open(cluster[0].http_url + "/", label="alice", init_script=WS_SPY)
    bob, _ = await browser.open(cluster[1].http_url + "/", label="bob")
    await join(alice, room, "Alice")
    await join(bob, room, "Bob")
    await send(alice, "first")
    await expect(bob.locator(MESSAGES)).to_have_count(1)
    first_id = (await shown(alice))[0][0]

    # a) The socket closes right after the frame left: the server stores it, the page never
    #    hears back. After the reconnect its rejoin (with `since`) brings it back: once.
    await alice.evaluate("() => { __ws.cut = 'after'; }")
    await send(alice, "cut after sending")
    await expect(alice.locator("#status")).not_to_have_attribute("data-state", "open")
    await expect(alice.locator("#pending .pending-text")).to_have_text(["cut after sending"])
    await wait_open(alice, timeout=10_000)
    expected = ["first", "cut after sending"]
    for page in (alice, bob):
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(expected)
    await expect(alice.locator("#pending .pending-item")).to_have_count(0)
    joins = await frames(alice, "sent", "join")
    assert joins[-1].get("since") == first_id, joins

    # b) The socket closes before the frame leaves: the page resends it after the rejoin.
    await alice.evaluate("() => { __ws.cut = 'before'; }")
    await send(alice, "cut before sending")
    await expect(alice.locator("#pending .pending-text")).to_have_text(["cut before sending"])
    await wait_open(alice, timeout=10_000)
    expected.append("cut before sending")
    for page in (alice, bob):
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(expected)

    # c) Stored, but the rejoin's history does not show it (rewritten by the spy, as when
    #    the page's copy was lost): the page resends it with the same client_id; the server
    #    only acks it with the first id (G8), and every page still shows it once.
    await alice.evaluate("""() => {
        __ws.cut = 'after';
        __ws.map = f => f.type !== 'joined' ? f
          : { ...f, history: f.history.filter(m => m.text !== 'stored, then lost') };
    }""")
    await send(alice, "stored, then lost")
    await wait_open(alice, timeout=10_000)
    expected.append("stored, then lost")
    for page in (alice, bob):
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(expected)
    await expect(alice.locator("#pending .pending-item")).to_have_count(0)
    await alice.evaluate("() => { __ws.map = null; }")

    sent = [f for f in await frames(alice, "sent", "message") if f["text"] == "stored, then lost"]
    assert len(sent) == 2 and sent[0]["client_id"] == sent[1]["client_id"], sent
    # The first send's ack and message reached a closing socket: the page never saw them.
    # The resend got the ack alone, with the first one's id (G8), and no `message`.
    acks = [f for f in await frames(alice, "received", "ack") if f["client_id"] == sent[0]["client_id"]]
    echoes = [f for f in await frames(alice, "received", "message") if f.get("client_id") == sent[0]["client_id"]]
    assert len(acks) == 1 and not echoes, (acks, echoes)
    bob_rows = {t: i for i, _, t in await shown(bob)}
    assert acks[0]["id"] == bob_rows["stored, then lost"]
    once = [f for f in await frames(alice, "sent", "message") if f["text"] == "cut after sending"]
    assert len(once) == 1, "resent although the rejoin's history had it"

    await settle(0.5)
    rows = await shown(alice)
    assert [t for _, _, t in rows] == expected
    assert rows == await shown(bob)
    assert_in_id_order(rows)
    # A third page that joins now: the room's history holds each message once.
    carol = await ChatClient.connect(cluster[2].ws_url)
    try:
        history = (await carol.join(room, "Carol"))["history"]
    finally:
        await carol.close()
    assert [m["text"] for m in history] == expected
    await browser.shot(alice)


async def test_fast_typing_never_merges_refused_texts(make_cluster, room, browser):
    c = make_cluster(1, env={"CHAT_RATE": "5/3"})
    page, _ = await browser.open(c[0].http_url + "/", label="eve", init_script=WS_SPY)
    await join(page, room, "Eve")
    box = page.locator("#message")
    await box.focus()
    texts = [f"eve{n:02d}" for n in range(25)]
    for text in texts:  # a fast typist: real keys, Enter after each line, no pause
        await page.keyboard.type(text)
        await page.keyboard.press("Enter")
    # ... who goes on typing while the refusals come back.
    await page.keyboard.type("draft in progress")
    # Every line answered: accepted (a message) or refused (kept in the pending list).
    await until(page, """() => !document.querySelector('#pending .pending-item.sent, #pending .pending-item.queued')
                      && document.querySelectorAll('#messages .message[data-id]').length
                         + document.querySelectorAll('#pending .pending-item.failed').length === 25""",
                what="an answer to each of the 25 lines")
    failed = page.locator("#pending .pending-item.failed")
    refused = await failed.count()
    assert refused >= 15, f"only {refused} refused: the typing was too slow for the test"
    await expect(box).to_have_value("draft in progress")
    toast = page.locator('#errors .toast[data-code="rate_limited"]')
    await expect(toast).to_have_count(1)
    await expect(page.locator("#pending .pending-bar")).to_contain_text(f"{refused} messages not sent")
    await browser.shot(page, "refused")

    async def texts_shown() -> tuple[list[str], list[str]]:
        delivered = [t for _, _, t in await shown(page)]
        return delivered, await pending_texts(page)

    delivered, kept = await texts_shown()
    # Every text once, whole, either delivered or in the pending list; none in the box.
    assert sorted(delivered + kept) == texts, (delivered, kept)
    assert delivered == texts[:25 - refused]
    sent = await frames(page, "sent", "message")
    assert sorted({f["text"] for f in sent}) == texts, [f["text"] for f in sent]
    assert len(sent) == 25

    # Edit one in place (a new text is a new message), discard another.
    edit = page.locator('#pending .pending-item', has_text="eve23")
    await edit.locator("button.edit").click()
    editor = page.locator("#pending textarea.pending-edit")
    await expect(editor).to_have_value("eve23")
    await expect(box).to_have_value("draft in progress")
    await editor.fill("eve23 edited")
    await page.locator('#pending .pending-item', has_text="eve24").locator("button.discard").click()
    await expect(page.locator("#pending .pending-text", has_text="eve24")).to_have_count(0)

    # Retry until everything is through (5 per 3 s): each keeps its client_id.
    deadline = time.monotonic() + 30
    await asyncio.sleep(3.1)
    await editor.press("Enter")  # sends "eve23 edited"
    while await failed.count():
        assert time.monotonic() < deadline, "retries never got everything through"
        await page.locator("#pending button.retry-all, #pending .pending-item.failed button.retry").first.click()
        await asyncio.sleep(3.1)
    await expect(page.locator("#pending .pending-item")).to_have_count(0, timeout=10_000)
    await expect(box).to_have_value("draft in progress")

    final = [t for _, _, t in await shown(page)]
    want = sorted([*texts[:23], "eve23 edited"])
    assert sorted(final) == want, final
    assert len(final) == len(set(final))
    cids: dict[str, set] = {}
    for f in await frames(page, "sent", "message"):
        cids.setdefault(f["text"], set()).add(f["client_id"])
    assert all(len(v) == 1 for v in cids.values()), {k: v for k, v in cids.items() if len(v) > 1}
    # The edited text went as a new message, under a new client_id.
    assert cids["eve23 edited"] != cids["eve23"]
    await settle()
    assert [t for _, _, t in await shown(page)] == final
    await browser.shot(page)


async def test_refused_join_leaves_no_trace(make_cluster, room, browser):
    c = make_cluster(1, env={"CHAT_MAX_ROOMS": "2"})
    page, _ = await browser.open(c[0].http_url + "/", label="max")
    await join(page, room + "_a", "Max")
    await join(page, room + "_b")
    await page.fill("#room", room + "_c")
    await page.click("#join")
    toast = page.locator('#errors .toast[data-code="limit_exceeded"]')
    await expect(toast).to_contain_text("room limit")
    await expect(page.locator(f'#rooms [data-room="{room}_c"]')).to_have_count(0)
    await expect(page.locator("#room-title")).to_have_text(f"#{room}_b")
    await expect(page.locator('#rooms li.room.active')).to_have_count(1)
    await expect(page.locator(f'#rooms li.room.active[data-room="{room}_b"]')).to_have_count(1)
    await expect(page.locator("#send")).to_be_enabled()
    await send(page, "still here")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["still here"])
    await browser.shot(page)
    # A join that works clears the refusal.
    await page.fill("#room", room + "_a")
    await page.click("#join")
    await expect(toast).to_have_count(0)
