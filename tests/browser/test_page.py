"""The chat page in a real Chromium, against real Redis and real Hypercorn instances.

The page is driven only through the hooks of PROTOCOL.md section 7 (plus #load-older,
#errors .toast[data-code], #pending, .message.mine).
"""

from __future__ import annotations

import re

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from client import ChatClient
from pagekit import MESSAGES, assert_in_id_order, join, send, settle, shown, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


# ------------------------------------------------------------------ 1. three users, three instances

@pytest.mark.per_version  # the browser smoke test
async def test_three_users_on_three_instances(cluster, room, browser):
    names = ["Alice", "Bob", "Charlie"]
    pages = []
    for k, name in enumerate(names):
        page, _ = await browser.open(cluster[k].http_url + "/", label=name)
        pages.append(page)
    for page, name in zip(pages, names):
        await join(page, room, name)
    for page, name in zip(pages, names):
        # A set of names, this page's user first.
        await expect(page.locator("#members .member-name")).to_have_text([name, *(n for n in names if n != name)])
        await expect(page.locator("#members li.member.me .member-name")).to_have_count(1)

    texts = {name: f"hello from {name} on instance {k}" for k, name in enumerate(names)}
    for k, (page, name) in enumerate(zip(pages, names)):
        await send(page, texts[name])
        for other in pages:
            await expect(other.locator(MESSAGES)).to_have_count(k + 1)
    await settle()

    expected = [(name, texts[name]) for name in names]
    first = await shown(pages[0])
    for page, name in zip(pages, names):
        rows = await shown(page)
        assert len(rows) == 3, rows
        assert [(u, t) for _, u, t in rows] == expected
        assert rows == first, "the three pages disagree on ids or order"
        assert_in_id_order(rows)
        mine = await page.eval_on_selector_all("#messages .message.mine .user", "els => els.map(e => e.textContent)")
        assert mine == [name]
    await browser.shot(pages[0])
    await browser.shot(pages[1], "bob")


# ------------------------------------------------------------------ 1b. members are names, not tabs

async def test_members_are_a_set_of_names(cluster, room, browser):
    alice, _ = await browser.open(cluster[0].http_url + "/", label="alice")
    await join(alice, room, "Alice")
    members = alice.locator("#members .member-name")
    notices = alice.locator("#messages .notice.join, #messages .notice.leave")
    dana = [await ChatClient.connect(cluster[k].ws_url) for k in (1, 2)]
    try:
        # Dana in two tabs on two instances: one member, one "joined".
        await dana[0].join(room, "Dana")
        await expect(members).to_have_text(["Alice", "Dana"])
        await dana[1].join(room, "Dana")
        # A second tab of Alice's own name, on another instance.
        alice2, _ = await browser.open(cluster[1].http_url + "/", label="alice2")
        await join(alice2, room, "Alice")
        await expect(alice2.locator("#members .member-name")).to_have_text(["Alice", "Dana"])
        await settle(0.4)
        await expect(members).to_have_text(["Alice", "Dana"])
        await expect(notices).to_have_text([re.compile("^Dana joined")])
        # One tab of each name goes: nobody left.
        await alice2.context.close()
        await dana[0].close()
        await settle(0.4)
        await expect(members).to_have_text(["Alice", "Dana"])
        await expect(notices).to_have_count(1)
        await browser.shot(alice)
        # The last tab of Dana goes: Dana left.
        await dana[1].close()
        await expect(members).to_have_text(["Alice"])
        await expect(notices).to_have_text([re.compile("^Dana joined"), re.compile("^Dana left")])
        await expect(alice.locator("#member-count")).to_have_text("1")
    finally:
        for d in dana:
            await d.close()


# ------------------------------------------------------------------ 2. rooms, isolation, unread

async def test_rooms_live_isolated_and_unread(cluster, room, browser):
    general, dev = room + "_general", room + "_dev"
    alice, _ = await browser.open(cluster[0].http_url + "/", label="alice")
    bob, _ = await browser.open(cluster[1].http_url + "/", label="bob")
    carol, _ = await browser.open(cluster[2].http_url + "/", label="carol")
    await join(alice, general, "Alice")
    await join(bob, general, "Bob")
    await join(carol, general, "Carol")

    # Alice creates dev: it shows up live in the other tabs' lists, not joined there.
    await join(alice, dev)
    for page in (bob, carol):
        entry = page.locator(f'#rooms li.room[data-room="{dev}"]')
        await expect(entry).to_have_count(1)
        await expect(entry).not_to_have_class(re.compile(r"\bjoined\b"))

    # Bob joins dev by clicking it; it becomes his active room.
    await bob.click(f'#rooms li.room[data-room="{dev}"]')
    await expect(bob.locator(f'#rooms li.room[data-room="{dev}"]')).to_have_class(re.compile(r"\bactive\b"))
    await expect(bob.locator("#members .member-name")).to_have_text(["Bob", "Alice"])

    await send(alice, "dev talk")
    await expect(bob.locator(MESSAGES)).to_have_count(1)
    await expect(bob.locator(f"{MESSAGES} .text")).to_have_text(["dev talk"])

    # Alice switches to general and sends twice: Bob's inactive general counts them.
    await alice.click(f'#rooms li.room[data-room="{general}"]')
    await expect(alice.locator("#room-title")).to_have_text(f"#{general}")
    await send(alice, "general one")
    await send(alice, "general two")
    await expect(carol.locator(MESSAGES)).to_have_count(2)
    bob_general = bob.locator(f'#rooms li.room[data-room="{general}"]')
    await expect(bob_general.locator(".unread")).to_have_text("2")
    await expect(bob_general.locator(".unread")).to_be_visible()
    await expect(bob_general).to_have_class(re.compile(r"\bhas-unread\b"))
    await browser.shot(bob)  # dev active, general with its badge

    # dev still shows only dev's message; Carol (not in dev) never got it.
    assert [t for _, _, t in await shown(bob)] == ["dev talk"]
    assert [t for _, _, t in await shown(carol)] == ["general one", "general two"]
    # The active room never counts unread.
    await expect(bob.locator(f'#rooms li.room[data-room="{dev}"] .unread')).to_be_hidden()

    # Making general active clears the badge and shows general's messages alone.
    await bob_general.click()
    await expect(bob.locator("#room-title")).to_have_text(f"#{general}")
    await expect(bob_general.locator(".unread")).to_be_hidden()
    await expect(bob_general).not_to_have_class(re.compile(r"\bhas-unread\b"))
    await expect(bob.locator(f"{MESSAGES} .text")).to_have_text(["general one", "general two"])

    # Back in dev: Alice's dev message once, no general message.
    await alice.click(f'#rooms li.room[data-room="{dev}"]')
    await send(alice, "dev again")
    await expect(bob_general.locator(".unread")).to_be_hidden()
    dev_entry = bob.locator(f'#rooms li.room[data-room="{dev}"]')
    await expect(dev_entry.locator(".unread")).to_have_text("1")
    await dev_entry.click()
    await expect(bob.locator(f"{MESSAGES} .text")).to_have_text(["dev talk", "dev again"])
    await expect(dev_entry.locator(".unread")).to_be_hidden()
    await browser.shot(alice, "alice")
    # Medium width: the members pane becomes a strip above the conversation.
    await bob.set_viewport_size({"width": 820, "height": 640})
    for sel in ("#message", "#send", "#members"):
        await expect(bob.locator(sel)).to_be_in_viewport()
    # Rooms that other tests made on the shared cluster may push this one down its list.
    entry = bob.locator(f'#rooms li.room[data-room="{general}"]')
    await entry.scroll_into_view_if_needed()
    await expect(entry).to_be_in_viewport()
    await browser.shot(bob, "tablet")


# ------------------------------------------------------------------ 3. history on join, load older

async def test_late_joiner_history_and_load_older(cluster, room, browser):
    total = 120
    writer = await ChatClient.connect(cluster[0].ws_url)
    try:
        await writer.join(room, "Writer")
        for n in range(total):
            await writer.say(room, f"m{n:03d}")
        got = await writer.messages(total, timeout=10)
    finally:
        await writer.close()
    sent_ids = [m["id"] for m in got]

    page, _ = await browser.open(cluster[1].http_url + "/", label="late", color_scheme="dark")
    await join(page, room, "Late")
    # A plain join brings the last CHAT_HISTORY_ON_JOIN (50) messages.
    await expect(page.locator(MESSAGES)).to_have_count(50)
    assert [t for _, _, t in await shown(page)] == [f"m{n:03d}" for n in range(total - 50, total)]

    older = page.locator("#load-older")
    await expect(older).to_be_visible()
    clicks = 0
    while await older.is_visible():
        before = await page.locator(MESSAGES).count()
        await older.click()
        clicks += 1
        assert clicks <= 5, "load older never hid"
        await expect(older).to_have_text("Load older messages")  # the fetch is done
        assert await page.locator(MESSAGES).count() > before or not await older.is_visible()
    await expect(page.locator(MESSAGES)).to_have_count(total)
    rows = await shown(page)
    assert [t for _, _, t in rows] == [f"m{n:03d}" for n in range(total)]
    assert [i for i, _, _ in rows] == sent_ids
    assert_in_id_order(rows)
    assert clicks == 2, f"expected two pages back (50 + 20), took {clicks} clicks"
    await page.locator(MESSAGES).first.scroll_into_view_if_needed()
    await browser.shot(page)


# ------------------------------------------------------------------ 4. user data is text, CSP

async def test_names_and_texts_are_never_markup(cluster, room, browser):
    evil_text = '<img src=x onerror="window.__pwned=1">'
    evil_name = "<b>Mallory</b>"
    mallory, response = await browser.open(cluster[0].http_url + "/", label="mallory")
    csp = response.headers.get("content-security-policy")
    assert csp, "GET / has no Content-Security-Policy header"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert re.search(r"(script-src|default-src) 'self'", csp), csp

    alice, _ = await browser.open(cluster[1].http_url + "/", label="alice")
    await join(alice, room, "Alice")
    await join(mallory, room, evil_name)
    await send(mallory, evil_text)
    await send(mallory, "<script>window.__pwned=2</script>")

    for page in (mallory, alice):
        await expect(page.locator(MESSAGES)).to_have_count(2)
        rows = await shown(page)
        assert [(u, t) for _, u, t in rows] == [(evil_name, evil_text),
                                                (evil_name, "<script>window.__pwned=2</script>")]
        for sel in ("#messages img", "#messages b", "#messages script", "#members b", "#members img"):
            assert await page.locator(sel).count() == 0, f"{sel} found: user data became markup"
        names = await page.eval_on_selector_all("#members .member-name", "els => els.map(e => e.textContent)")
        assert evil_name in names
        assert await page.evaluate("() => window.__pwned") is None
    # The join notice on Alice's page names Mallory literally too.
    await expect(alice.locator("#messages .notice.join")).to_contain_text(evil_name)
    await browser.shot(alice)


# ------------------------------------------------------------------ 5. an instance dies and returns

async def test_instance_restart_reconnects_and_catches_up(make_cluster, room, browser):
    c = make_cluster(3)
    alice, _ = await browser.open(c[0].http_url + "/", label="alice")
    bob, _ = await browser.open(c[1].http_url + "/", label="bob")
    await join(alice, room, "Alice")
    await join(bob, room, "Bob")
    await send(alice, "before 1")
    await send(bob, "before 2")
    await expect(bob.locator(MESSAGES)).to_have_count(2)

    carol = await ChatClient.connect(c[2].ws_url)
    try:
        await carol.join(room, "Carol")
        c[1].kill()
        await expect(bob.locator("#status")).to_have_attribute("data-state", re.compile(r"^(closed|connecting)$"))
        await browser.shot(bob, "down")
        meanwhile = []
        for n in range(3):
            await send(alice, f"while down {n}")
            meanwhile.append(f"while down {n}")
            await carol.say(room, f"carol while down {n}")
            meanwhile.append(f"carol while down {n}")
        await expect(alice.locator(MESSAGES)).to_have_count(2 + len(meanwhile))
        # Bob types while disconnected: queued, sent once the page is back.
        await bob.fill("#message", "bob queued")
        await bob.press("#message", "Enter")
        await expect(bob.locator("#pending")).to_contain_text("bob queued")
        c[1].start()
        # Backoff (0.5 s doubling, 10 s cap, jitter) plus Hypercorn's start: allow a longer wait.
        await wait_open(bob, timeout=15_000)
        expected = ["before 1", "before 2", *meanwhile, "bob queued"]
        for page in (bob, alice):
            await expect(page.locator(f"{MESSAGES} .text")).to_have_text(expected)
        await expect(bob.locator("#pending")).to_be_empty()
        got = await carol.messages(len(meanwhile) + 1, timeout=5)  # Alice's, own, then Bob's
        assert [m["text"] for m in got][-1] == "bob queued"
    finally:
        await carol.close()
    await settle(0.5)
    rows = await shown(bob)
    assert [t for _, _, t in rows] == expected
    assert rows == await shown(alice)
    assert_in_id_order(rows)
    await browser.shot(bob)


# ------------------------------------------------------------------ 6. errors reach the user

async def test_rate_limit_toast_keeps_the_text(make_cluster, room, browser):
    c = make_cluster(1, env={"CHAT_RATE": "3/10"})
    page, _ = await browser.open(c[0].http_url + "/", label="fast")
    await join(page, room, "Speedy")
    texts = [f"quick {n}" for n in range(1, 6)]
    # Five sends in one go, before any reply can come back (as a fast typist with Enter).
    await page.evaluate(
        """texts => { const m = document.getElementById('message'), s = document.getElementById('send');
                      for (const t of texts) { m.value = t; s.click(); } }""",
        texts,
    )
    toast = page.locator('#errors .toast[data-code="rate_limited"]')
    await expect(toast).to_have_count(1)  # a burst bumps one toast's counter
    await expect(toast).to_be_visible()
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(texts[:3])
    # Each refused text is kept in #pending, once, with Retry; none goes back into the box.
    await expect(page.locator("#pending .pending-item.failed .pending-text")).to_have_text(texts[3:])
    await expect(page.locator("#pending .pending-item.failed button.retry")).to_have_count(2)
    await expect(page.locator("#message")).to_have_value("")
    await browser.shot(page)


# ------------------------------------------------------------------ 7. phone width

async def test_phone_width_is_usable(cluster, room, browser):
    page, _ = await browser.open(cluster[2].http_url + "/", label="phone",
                                 viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                 is_mobile=True, has_touch=True)
    await browser.shot(page, "before-join")
    for sel in ("#username", "#room", "#join", "#message", "#send", "#status"):
        await expect(page.locator(sel)).to_be_in_viewport()
    await join(page, room, "Pat")
    other = await ChatClient.connect(cluster[0].ws_url)
    try:
        await other.join(room, "Sam")
        await other.say(room, "hi Pat, this message comes from a desktop and is long enough to wrap on a phone")
        await expect(page.locator(MESSAGES)).to_have_count(1)
        await page.tap("#message")
        await send(page, "sent from a phone")
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(
            ["hi Pat, this message comes from a desktop and is long enough to wrap on a phone", "sent from a phone"])
    finally:
        await other.close()
    for sel in ("#message", "#send", "#status", f"{MESSAGES} >> nth=-1"):
        await expect(page.locator(sel)).to_be_in_viewport()
    box = await page.locator("#composer").bounding_box()
    assert box and box["y"] + box["height"] <= 844 + 1, box
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width}px wide)"
    await browser.shot(page)
