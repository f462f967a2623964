"""Token mode in the page (PROTOCOL.md section 9), against a real token-mode instance (the file is
not test_token.py: pytest needs unique basenames, and tests/test_token.py is the server side):
the token comes in the URL fragment, the name is the token's and cannot be changed, only
the rooms the token allows are listed or can be joined, the token is never shown in the page
nor sent in any URL but /ws's, and an expired token stops the retries and asks for a new link.
"""

from __future__ import annotations

import asyncio
import re
import time

import jwt
import pytest
import redis

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (fails when CI=true) and says why
    expect = None

from a11y import SPEECH_SPY, Audit, require_axe, speech
from client import ChatClient
from cluster import Cluster
from pagekit import MESSAGES, WS_SPY, frames, join, send, wait_open

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

SECRET = "browser-test-secret-" + "z" * 40
EXPIRED_TEXT = "Your session has expired — get a new link"


def token(name: str, rooms: list[str] | None = None, ttl: float = 600) -> str:
    claims = {"sub": f"id-{name}", "name": name, "exp": int(time.time() + ttl)}
    if rooms is not None:
        claims["rooms"] = rooms
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def tcluster(tmp_path_factory):
    """One token-mode instance on a Redis of its own: its rooms stay out of other tests' lists."""
    env = {"CHAT_RATE": "100000/1", "CHAT_AUTH": "token", "CHAT_JWT_SECRET": SECRET}
    c = Cluster(1, env=env, logdir=tmp_path_factory.mktemp("token-page")).start()
    yield c
    c.close()


def entry(page, name: str):
    return page.locator(f'#rooms li.room[data-room="{name}"]')


async def test_token_page_fixed_name_limited_rooms_nothing_leaks(tcluster, room, browser):
    inst = tcluster[0]
    gen, team_a, secret = f"{room}_gen", f"{room}_team-a", f"{room}_secret"
    admin = await ChatClient.connect(inst.ws_url + "?token=" + token("Admin"))  # every room
    for name in (gen, team_a, secret):
        await admin.join(name)
    alice = token("Alice", rooms=[gen, f"{room}_team-*"])
    requests: list[tuple[str, dict]] = []
    sockets: list[str] = []
    page, _ = await browser.open("about:blank", label="alice", init_script=WS_SPY)
    page.on("request", lambda req: requests.append((req.url, req.headers)))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(inst.http_url + "/#token=" + alice, wait_until="load")
    try:
        await wait_open(page)
        # The token left the address bar at once; the name is the token's, fixed.
        assert "token" not in page.url and page.url == inst.http_url + "/"
        name = page.locator("#username")
        await expect(name).to_have_value("Alice")
        assert await name.evaluate("e => e.readOnly")
        await expect(name).to_have_attribute("title", re.compile("token"))

        # Only the rooms the token allows are listed: from GET /rooms, and live.
        await expect(entry(page, gen)).to_have_count(1)
        await expect(entry(page, team_a)).to_have_count(1)
        await expect(entry(page, secret)).to_have_count(0)
        await admin.join(f"{room}_team-b")
        await admin.join(f"{room}_other")
        await expect(entry(page, f"{room}_team-b")).to_have_count(1)
        await expect(entry(page, f"{room}_other")).to_have_count(0)

        # Join and speak as Alice.
        await join(page, gen)
        await expect(page.locator("#members li.member.me .member-name")).to_have_text("Alice")
        await send(page, "hello from the token page")
        await expect(page.locator(f"{MESSAGES} .user")).to_have_text(["Alice"])
        said = await admin.until(lambda f: f["type"] == "message" and f["room"] == gen, timeout=5)
        assert said["user"] == "Alice"
        assert all(f.get("user") in (None, "Alice") for f in await frames(page, "sent", "join"))

        # A room the token does not allow: refused, said so, nothing created, nothing listed.
        await page.fill("#room", f"{room}_secret2")
        await page.click("#join")
        await expect(page.locator("#errors .toast[data-code='forbidden']")).to_contain_text("not allowed")
        await expect(entry(page, f"{room}_secret2")).to_have_count(0)
        r = redis.Redis.from_url(tcluster.redis.url)
        try:
            assert r.zscore("chat:rooms", f"{room}_secret2") is None
        finally:
            r.close()
        await browser.shot(page)

        # The token is nowhere in the page, nor in localStorage (which new tabs read): only
        # this tab's sessionStorage keeps it.
        html = await page.content()
        assert alice not in html
        values = await page.eval_on_selector_all("input, textarea", "els => els.map(e => e.value)")
        assert all(alice not in v for v in values)
        stored = await page.evaluate("() => [JSON.stringify(localStorage), JSON.stringify(sessionStorage)]")
        assert alice not in stored[0] and alice in stored[1]

        # It went in no URL but /ws's, only to this server, and never as a Referer.
        assert sockets and all(u == inst.ws_url + "?token=" + alice for u in sockets), sockets
        for url, headers in requests:
            if url == "about:blank":
                continue
            assert url.startswith(inst.http_url + "/"), url
            if "/#token=" in url:
                continue  # the navigation itself: a fragment is never sent to any server
            assert alice not in url, url
            assert alice not in headers.get("referer", ""), (url, headers)
            auth = headers.get("authorization")
            assert auth is None or (auth == "Bearer " + alice and "/rooms" in url), (url, auth)
        assert any(h.get("authorization") == "Bearer " + alice for _, h in requests)
    finally:
        await admin.close()


async def test_a_token_expiring_in_the_page_asks_for_a_new_link(tcluster, room, browser):
    require_axe()
    audit = Audit()
    inst = tcluster[0]
    short = token("Shortlived", ttl=5)
    sockets: list[str] = []
    page, _ = await browser.open("about:blank", label="short", init_script=SPEECH_SPY)
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(inst.http_url + "/#token=" + short, wait_until="load")
    await join(page, room)
    await expect(page.locator("#session-expired")).to_have_count(0)
    # The server closes with 1008 at `exp`; the page stops and says why.
    notice = page.locator("#session-expired")
    await expect(notice).to_be_visible(timeout=10_000)
    await expect(notice).to_contain_text(EXPIRED_TEXT)
    # Said once, assertively (#errors is the page's assertive live region).
    heard = [s for s in await speech(page) if EXPIRED_TEXT in s["text"]]
    assert len(heard) == 1 and heard[0]["live"] == "assertive", heard
    await expect(page.locator("#status-text")).to_have_text(EXPIRED_TEXT)
    await expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    await expect(page.locator("#reconnect")).to_be_hidden()
    opened = len(sockets)
    await asyncio.sleep(3)  # the first retry would come within 0.5 s
    assert len(sockets) == opened == 1, sockets
    await expect(notice).to_be_visible()  # no timer takes it away
    await audit(page, "token expired")
    audit.check()
    await browser.shot(page)


async def test_an_expired_token_at_load_is_not_retried_forever(tcluster, browser):
    inst = tcluster[0]
    stale = token("Late", ttl=-60)
    sockets: list[str] = []
    page, _ = await browser.open("about:blank", label="late")
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(inst.http_url + "/#token=" + stale, wait_until="load")
    # The handshake's 401 is invisible to the page; its REST call with the token is not.
    await expect(page.locator("#session-expired")).to_be_visible()
    await expect(page.locator("#status-text")).to_have_text(EXPIRED_TEXT)
    await expect(page.locator("#username")).to_have_value("Late")
    attempts = len(sockets)
    await asyncio.sleep(3)
    assert len(sockets) == attempts <= 2, sockets
    # A reload (same tab, same token) says the same at once.
    await page.reload(wait_until="load")
    await expect(page.locator("#session-expired")).to_be_visible()
    await browser.shot(page)
