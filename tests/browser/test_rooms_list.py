"""The room list with thousands of rooms (paged GET /rooms, followed to the end) and rooms
that expire (`room_removed`, CHAT_ROOM_TTL).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
import redis.asyncio as aioredis

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from client import ChatClient
from pagekit import MESSAGES, WS_SPY, frames, join, joined, send, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


ROOMS = "#rooms [data-room]"


async def add_rooms(redis_url: str, names: list[str]) -> None:
    """Rooms as the server keeps them: members of the sorted set chat:rooms, by creation ms."""
    r = aioredis.from_url(redis_url, decode_responses=True)
    try:
        base = int(time.time() * 1000) - len(names)
        await r.zadd("chat:rooms", {name: base + k for k, name in enumerate(names)})
    finally:
        await r.aclose()


async def test_thousands_of_rooms_all_listed_quickly(make_cluster, browser):
    c = make_cluster(1)
    names = [f"bulk-{k:04d}" for k in range(2500)]
    await add_rooms(c.redis.url, names)

    context_urls: list[str] = []
    started = time.monotonic()
    page, _ = await browser.open(c[0].http_url + "/", label="many", init_script=WS_SPY)
    page.on("request", lambda req: context_urls.append(req.url) if "/rooms" in req.url else None)
    await expect(page.locator(ROOMS)).to_have_count(2500, timeout=10_000)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"2,500 rooms took {elapsed:.1f} s to show"
    await expect(page.locator("#room-count")).to_have_text("2,500")
    await wait_open(page)

    # The server pages (1000 a page: three pages) and the page followed `next` to the end.
    listed, after = [], None
    for _ in range(10):
        q = "?limit=1000" + (f"&after={after}" if after else "")
        data = await asyncio.to_thread(get_json, c[0].http_url + "/rooms" + q)
        listed.append(len(data["rooms"]))
        after = data["next"]
        if not after:
            break
    assert listed == [1000, 1000, 500], listed
    assert any("after=bulk-0999" in u for u in context_urls), context_urls
    assert any("after=bulk-1999" in u for u in context_urls), context_urls

    shown = await page.eval_on_selector_all(ROOMS, "els => els.map(e => e.dataset.room)")
    assert shown == sorted(names, key=lambda n: (n.lower(), n)), "not in name order"

    # Typing in the room field narrows the list.
    await page.fill("#room", "bulk-24")
    await expect(page.locator(f"{ROOMS}:visible")).to_have_count(100)
    await browser.shot(page, "filtered")
    await expect(page.locator(ROOMS)).to_have_count(2500)
    await page.fill("#room", "nothing-like-it")
    await expect(page.locator(f"{ROOMS}:visible")).to_have_count(0)
    await expect(page.locator("#rooms-empty")).to_have_text("No room matches — press Join to create #nothing-like-it")
    await page.fill("#room", "")
    await expect(page.locator(f"{ROOMS}:visible")).to_have_count(2500)
    await expect(page.locator("#rooms-empty")).to_be_hidden()

    # The list stays usable: the last room joins on a click, a new room drops into its place.
    last = page.locator('#rooms [data-room="bulk-2499"]')
    await last.scroll_into_view_if_needed()
    t0 = time.monotonic()
    await page.fill("#username", "Many")
    await last.click()
    await joined(page, "bulk-2499")
    assert time.monotonic() - t0 < 3.0
    await send(page, "hello from the end of the list")
    await expect(page.locator(f"{MESSAGES} .text")).to_have_text(["hello from the end of the list"])
    other = await ChatClient.connect(c[0].ws_url)
    try:
        await other.join("bulk-1234x", "Other")
        entry = page.locator('#rooms [data-room="bulk-1234x"]')
        await expect(entry).to_have_count(1)
        assert await entry.evaluate("e => e.previousElementSibling.dataset.room") == "bulk-1234"
        await expect(page.locator("#room-count")).to_have_text("2,501")
    finally:
        await other.close()
    await browser.shot(page)
    # One pass at start-up and one when the socket opened (rooms created in between), each
    # of three pages: no page fetched twice in a pass, no endless paging.
    assert len(context_urls) <= 6, context_urls
    assert not await frames(page, "received", "error")


async def test_idle_rooms_disappear_live(make_cluster, room, browser):
    c = make_cluster(1, env={"CHAT_ROOM_TTL": "1"})
    page, _ = await browser.open(c[0].http_url + "/", label="tidy", init_script=WS_SPY)
    await join(page, room + "_kept", "Tidy")
    other = await ChatClient.connect(c[0].ws_url)
    try:
        await other.join(room + "_idle", "Passer")
        await other.say(room + "_idle", "just passing")
        await expect(page.locator(f'#rooms [data-room="{room}_idle"]')).to_have_count(1)
    finally:
        await other.close()
    await browser.shot(page, "before")
    # Empty and idle for CHAT_ROOM_TTL: removed everywhere within ~30 s (the janitor's pace).
    await expect(page.locator(f'#rooms [data-room="{room}_idle"]')).to_have_count(0, timeout=35_000)
    removed = await frames(page, "received", "room_removed")
    assert [f["room"] for f in removed] == [f"{room}_idle"], removed
    # The room this page is in stays, joined and active.
    await expect(page.locator(f'#rooms li.room.joined.active[data-room="{room}_kept"]')).to_have_count(1)
    await expect(page.locator(ROOMS)).to_have_count(1)
    await expect(page.locator("#room-count")).to_have_text("1")
    await browser.shot(page)
