"""A reload keeps the tab where it was (PROTOCOL.md section 7, last paragraph; the issue's
"first five minutes", item 2): the same name, every room joined again with `since` = the last
id seen there, the same active room, each message once, and what came meanwhile as unread.
"""

from __future__ import annotations

import re

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from client import ChatClient
from pagekit import MESSAGES, WS_SPY, assert_in_id_order, frames, join, send, settle, shown, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


async def test_reload_rejoins_rooms_and_restores_the_active_room(cluster, room, browser):
    a, b, c = room + "_a", room + "_b", room + "_c"
    url = cluster[0].http_url + "/"
    page, _ = await browser.open(url, label="rita", init_script=WS_SPY)
    sam = await ChatClient.connect(cluster[1].ws_url)
    try:
        await sam.join(a, "Sam")
        await sam.join(b)
        await join(page, a, "Rita")
        await send(page, "a1")
        await join(page, b)
        await send(page, "b1")
        await send(page, "b2")
        await join(page, c)          # a room with no message yet
        await page.click(f'#rooms li.room[data-room="{b}"]')
        await expect(page.locator("#room-title")).to_have_text(f"#{b}")
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["b1", "b2"])
        before_b = await shown(page)
        await page.click(f'#rooms li.room[data-room="{a}"]')
        before_a = await shown(page)
        await page.click(f'#rooms li.room[data-room="{b}"]')
        await expect(page.locator("#room-title")).to_have_text(f"#{b}")

        # 1. A reload, at once: same rooms, same active room, same messages, once each.
        await page.reload(wait_until="load")
        await wait_open(page)
        for name in (a, b, c):
            await expect(page.locator(f'#rooms li.room[data-room="{name}"]')).to_have_class(re.compile(r"\bjoined\b"))
        await expect(page.locator(f'#rooms li.room[data-room="{b}"]')).to_have_class(re.compile(r"\bactive\b"))
        await expect(page.locator("#room-title")).to_have_text(f"#{b}")
        await expect(page.locator("#username")).to_have_value("Rita")
        await expect(page.locator("#members .member-name")).to_have_text(["Rita", "Sam"])
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["b1", "b2"])
        assert await shown(page) == before_b
        joins = {f["room"]: f for f in await frames(page, "sent", "join")}
        assert set(joins) == {a, b, c}, joins
        assert joins[a].get("since") == before_a[-1][0], joins[a]
        assert joins[b].get("since") == before_b[-1][0], joins[b]
        assert joins[c].get("since") == "0-0", joins[c]
        assert all(f.get("user") == "Rita" for f in joins.values())
        # The active room is joined first.
        assert [f["room"] for f in await frames(page, "sent", "join")][0] == b
        await send(page, "b3 after reload")
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["b1", "b2", "b3 after reload"])

        # 2. Away from the page while Sam writes; back in the same tab.
        await page.goto("about:blank")
        await sam.say(a, "a while away")
        await sam.say(b, "b while away")
        await sam.messages(2, timeout=5)
        await page.goto(url, wait_until="load")
        await wait_open(page)
        await expect(page.locator("#room-title")).to_have_text(f"#{b}")
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["b1", "b2", "b3 after reload", "b while away"])
        entry_a = page.locator(f'#rooms li.room[data-room="{a}"]')
        await expect(entry_a.locator(".unread")).to_have_text("1")
        await expect(entry_a).to_have_class(re.compile(r"\bhas-unread\b"))
        await expect(page.locator(f'#rooms li.room[data-room="{c}"] .unread')).to_be_hidden()
        await browser.shot(page, "back")
        await entry_a.click()
        await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["a1", "a while away"])
        await expect(entry_a.locator(".unread")).to_be_hidden()
        await page.click(f'#rooms li.room[data-room="{c}"]')
        await expect(page.locator("#room-title")).to_have_text(f"#{c}")
        await expect(page.locator(MESSAGES)).to_have_count(0)
        await page.click(f'#rooms li.room[data-room="{b}"]')
        await settle(0.4)
        rows = await shown(page)
        assert [t for _, _, t in rows] == ["b1", "b2", "b3 after reload", "b while away"]
        assert rows[:2] == before_b
        assert_in_id_order(rows)

        # 3. Leaving a room is kept too.
        await page.click(f'#rooms li.room[data-room="{c}"]')
        await page.click("#leave")
        await expect(page.locator(f'#rooms li.room[data-room="{c}"]')).not_to_have_class(re.compile(r"\bjoined\b"))
        await page.reload(wait_until="load")
        await wait_open(page)
        await expect(page.locator(f'#rooms li.room[data-room="{a}"]')).to_have_class(re.compile(r"\bjoined\b"))
        await expect(page.locator(f'#rooms li.room[data-room="{c}"]')).not_to_have_class(re.compile(r"\bjoined\b"))
        await expect(page.locator("#members li.member.me")).to_have_count(1)
        assert {f["room"] for f in await frames(page, "sent", "join")} == {a, b}
        await browser.shot(page)
    finally:
        await sam.close()


async def test_reload_keeps_unsent_messages(make_cluster, room, browser):
    c = make_cluster(1, env={"CHAT_RATE": "1/30"})
    page, _ = await browser.open(c[0].http_url + "/", label="una", init_script=WS_SPY)
    await join(page, room, "Una")
    await send(page, "accepted")
    await send(page, "refused, then reloaded")
    await expect(page.locator("#pending .pending-item.failed .pending-text")).to_have_text(["refused, then reloaded"])
    cid = (await frames(page, "sent", "message"))[-1]["client_id"]
    await page.reload(wait_until="load")
    await wait_open(page)
    await expect(page.locator("#room-title")).to_have_text(f"#{room}")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["accepted"])
    item = page.locator("#pending .pending-item.failed")
    await expect(item.locator(".pending-text")).to_have_text(["refused, then reloaded"])
    await expect(item).to_have_attribute("data-client-id", cid)
    await expect(item.locator("button.retry")).to_be_visible()
    await browser.shot(page)


async def test_token_from_the_fragment(cluster, room, browser):
    """Token mode's page side (section 9): the token comes from `#token=`, leaves the address
    bar, is kept for the tab, goes with the WebSocket and REST calls, and fixes the name.
    (Against an open-mode server, which ignores it: the page side alone.)"""
    import base64
    import json

    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"sub": "u1", "name": "Tōken Holder", "exp": 4102444800}
    token = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64(claims) + ".sig"
    ws_urls: list[str] = []
    auth: list[str | None] = []
    page, _ = await browser.open(cluster[0].http_url + "/#token=" + token, label="token")
    page.on("websocket", lambda ws: ws_urls.append(ws.url))
    page.on("request", lambda r: auth.append(r.headers.get("authorization")) if "/rooms" in r.url else None)
    await wait_open(page)
    assert "token" not in page.url
    name = page.locator("#username")
    await expect(name).to_have_value("Tōken Holder")
    assert await name.evaluate("e => e.readOnly")
    await page.fill("#room", room)
    await page.click("#join")
    await expect(page.locator("#members li.member.me .member-name")).to_have_text("Tōken Holder")
    await page.reload(wait_until="load")
    await wait_open(page)
    await expect(page.locator("#room-title")).to_have_text(f"#{room}")
    await expect(page.locator("#members li.member.me .member-name")).to_have_text("Tōken Holder")
    assert ws_urls and all(u.endswith("/ws?token=" + token) for u in ws_urls), ws_urls
    assert auth and all(a == "Bearer " + token for a in auth), auth
