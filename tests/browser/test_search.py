"""Search on the page (PROTOCOL.md section 13, docs/archive.md; the issue's words: "a search
box in the active room's header, results in a list, clicking a result shows the message in
context, loaded or not; Escape closes the results; Load more with next"; hidden without an
archive).

The page's hooks for it: `#search` (in `#search-form`, hidden without an archive),
`#search-results` with a `.search-result[data-id]` button per message (`.result-user`,
`.result-time`, `.result-text` with `mark.hit` on the words found), `#search-status`,
`#search-more`; `<body data-archive>` ("1" or "0", rendered by the server).
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from a11y import Audit, require_axe
from client import ChatClient, get_json
from pagekit import DARK_AND_PHONE, MESSAGES, assert_in_id_order, join, shown

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

TEXTS = [f"status update {k}" if 10 <= k < 35 else "the zebra crossing plan" if k == 3 else f"note {k}"
         for k in range(100)]


async def send_all(client: ChatClient, room: str, texts: list[str]) -> list[str]:
    """Each acked before the next: their ids, in order."""
    ids = []
    for k, text in enumerate(texts):
        cid = f"s-{k}"
        await client.send({"type": "message", "room": room, "text": text, "client_id": cid})
        ids.append((await client.until(lambda f, cid=cid: f["type"] == "ack" and f["client_id"] == cid))["id"])
    return ids


async def searchable(base: str, room: str, q: str, count: int, timeout: float = 30.0) -> None:
    """Wait until the archive has taken what a search for ``q`` should find."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    url = f"{base}/rooms/{room}/search?" + urllib.parse.urlencode({"q": q, "limit": "100"})
    while True:
        status, body = get_json(url)
        if status == 200 and len(body["results"]) >= count:
            return
        assert loop.time() < deadline, f"search for {q!r} found {body} after {timeout} s"
        await asyncio.sleep(0.2)


async def archived_room(make_cluster, pg_url, room, texts: list[str], finds: dict[str, int]):
    """An instance with an archive, Sam's client, and the ids of the ``texts`` he sent to
    ``room``, once each search in ``finds`` finds that many."""
    c = make_cluster(1, env={"CHAT_ARCHIVE_URL": pg_url})
    sam = await ChatClient.connect(c[0].ws_url)
    await sam.join(room, "Sam")
    ids = await send_all(sam, room, texts)
    for q, count in finds.items():
        await searchable(c[0].http_url, room, q, count)
    return c, sam, ids


async def test_search_finds_a_message_and_shows_it_in_context(make_cluster, pg_url, room, browser):
    require_axe()
    audit = Audit()
    c, sam, ids = await archived_room(make_cluster, pg_url, room, TEXTS, {"zebra": 1, "update": 25})
    try:
        page, _ = await browser.open(c[0].http_url + "/", label="al", viewport={"width": 1100, "height": 700})
        assert await page.evaluate("() => document.body.dataset.archive") == "1"
        await join(page, room, "Al")
        await expect(page.locator(MESSAGES)).to_have_count(50)   # the last 50: the zebra is not loaded
        box = page.locator("#search")
        await expect(box).to_be_visible()
        await box.fill("zebra crossing")
        await box.press("Enter")
        results = page.locator("#search-results .search-result")
        await expect(results).to_have_count(1)
        await expect(page.locator("#search-status")).to_have_text("1 result")
        hit = results.first
        await expect(hit).to_have_attribute("data-id", ids[3])
        await expect(hit.locator(".result-user")).to_have_text("Sam")
        await expect(hit.locator(".result-text")).to_have_text("the zebra crossing plan")
        await expect(hit.locator(".result-text mark.hit")).to_have_text(["zebra", "crossing"])
        await audit(page, "search results open")
        await browser.shot(page, "results")

        # A click: the history back to it is loaded, with no hole, and it is shown lit up.
        await hit.click()
        await expect(page.locator("#search-panel")).to_be_hidden()
        zebra = page.locator(f'{MESSAGES}[data-id="{ids[3]}"]')
        await expect(zebra).to_be_in_viewport()
        await expect(zebra).to_have_class(re.compile(r"\bflash\b"))
        await expect(page.locator(MESSAGES)).to_have_count(100)
        rows = await shown(page)
        assert_in_id_order(rows)
        assert [t for _, _, t in rows] == TEXTS, "every message once, between it and the newest too"
        await browser.shot(page, "in context")

        # Many results: 20 a page, then Load more; Escape closes them.
        await box.fill("update")
        await box.press("Enter")
        await expect(results).to_have_count(20)
        await expect(page.locator("#search-status")).to_have_text("20 results, more below")
        await page.locator("#search-more").click()
        await expect(results).to_have_count(25)
        await expect(page.locator("#search-more")).to_be_hidden()
        got = await results.evaluate_all("els => els.map(e => e.dataset.id)")
        assert got == list(reversed(ids[10:35])), "newest first, each once across the pages"
        await results.nth(3).focus()
        await page.keyboard.press("Escape")
        await expect(page.locator("#search-panel")).to_be_hidden()
        await expect(box).to_be_focused()
        await box.press("Enter")
        await expect(results).to_have_count(20)
        await box.press("Escape")
        await expect(page.locator("#search-panel")).to_be_hidden()
        # A loaded message: scrolled to at once.
        await box.fill("note 98")
        await box.press("Enter")
        await page.locator(f'#search-results .search-result[data-id="{ids[98]}"]').click()
        await expect(page.locator(f'{MESSAGES}[data-id="{ids[98]}"]')).to_have_class(re.compile(r"\bflash\b"))
        audit.check()
    finally:
        await sam.close()


VARIANTS = {k: v for k, v in DARK_AND_PHONE.items() if k != "phone-dark"}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_axe_finds_nothing_with_results_open(make_cluster, pg_url, room, browser, variant):
    require_axe()
    audit = Audit()
    c, sam, _ = await archived_room(make_cluster, pg_url, room, ["deploy on friday", "the deploy went fine", "lunch?"],
                                 {"deploy": 2})
    try:
        page, _ = await browser.open(c[0].http_url + "/", label=variant, **VARIANTS[variant])
        await join(page, room, "Al")
        await page.locator("#search").fill("deploy")
        await page.locator("#search").press("Enter")
        await expect(page.locator("#search-results .search-result")).to_have_count(2)
        await audit(page, f"{variant}: search results open")
        await browser.shot(page, variant)
        audit.check()
    finally:
        await sam.close()


async def test_no_archive_no_search_box(cluster, room, browser):
    page, _ = await browser.open(cluster[0].http_url + "/", label="al")
    assert await page.evaluate("() => document.body.dataset.archive") == "0", "the server says it has none"
    await join(page, room, "Al")
    await expect(page.locator("#search-form")).to_be_hidden()
