"""Browser fixtures: Debian's Chromium driven by Playwright (async API), one browser per test.

Every test saves screenshots into ``<repo>/artifacts/screenshots/`` and the run's terminal
summary lists them. A test that fails also gets a screenshot of each of its open pages and
the pages' console output in its report.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOT_DIR = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Every wait is bounded: Playwright actions and expect() give up after this many ms.
WAIT_MS = 5_000

_saved: list[Path] = []


def _unavailable(reason: str) -> None:
    """Skip (fail on CI) when the browser cannot run here."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(reason)


def _chromium_missing() -> bool:
    return not os.path.exists(CHROMIUM)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


class Browser:
    """One Chromium for one test: pages in separate contexts (separate storage), screenshots."""

    def __init__(self, browser, test_name: str) -> None:
        self.browser = browser
        self.test_name = _safe(test_name)
        self.pages: list = []
        self.labels: dict = {}
        self.console: list[str] = []
        self.page_errors: list[str] = []

    async def open(self, url: str, label: str = "page", viewport: dict | None = None,
                   init_script: str | None = None, clock: bool = False, **context_kw):
        """A fresh context (own localStorage) with one page on ``url``; returns (page, response).

        ``init_script`` runs in every document of the context before the page's own scripts
        (e.g. ``pagekit.WS_SPY``, which watches and steers the page's WebSocket). ``clock``
        installs Playwright's clock before them: time flows as usual until the test moves it
        on with ``page.clock.fast_forward`` (the page's own timers fire on the way).
        """
        context = await self.browser.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                                 **context_kw)
        context.set_default_timeout(WAIT_MS)
        context.set_default_navigation_timeout(WAIT_MS)
        if clock:
            await context.clock.install()
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        page.on("console", lambda m: self.console.append(f"[{label}] {m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.page_errors.append(f"[{label}] {e}"))
        self.pages.append(page)
        self.labels[id(page)] = label
        response = await page.goto(url, wait_until="load")
        return page, response

    async def shot(self, page, suffix: str | None = None) -> Path:
        """Save ``<test-name>.png`` (or ``<test-name>--<suffix>.png``) and remember it for the summary."""
        SHOT_DIR.mkdir(parents=True, exist_ok=True)
        name = self.test_name + (f"--{_safe(suffix)}" if suffix else "")
        path = SHOT_DIR / f"{name}.png"
        # Finished animations: a message caught fading in would look washed out.
        await page.screenshot(path=str(path), timeout=WAIT_MS, animations="disabled")
        if path not in _saved:
            _saved.append(path)
        return path


def pytest_runtest_setup(item) -> None:
    # Before any fixture starts Redis or instances for nothing.
    if item.get_closest_marker("browser") and _chromium_missing():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"_rep_{rep.when}", rep)


@pytest.fixture
async def browser(request) -> AsyncIterator[Browser]:
    """A headless Chromium for this test (skipped, or failed on CI, when it cannot run).

    Request it after the cluster fixtures: it is then closed first, so the instances do not
    stop with pages still connected (and reconnecting) to them.
    """
    if _chromium_missing():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=15_000)
        b = Browser(chromium, request.node.name)
        for stale in SHOT_DIR.glob(f"{b.test_name}.png"):
            stale.unlink()
        for stale in SHOT_DIR.glob(f"{b.test_name}--*.png"):
            stale.unlink()
        try:
            yield b
            failed = getattr(request.node, "_rep_call", None)
            if failed is not None and failed.failed:
                for k, page in enumerate(b.pages):
                    try:
                        await b.shot(page, f"failed-{b.labels[id(page)]}-{k}")
                    except Exception:  # a crashed page: nothing to show
                        pass
                print("\n".join(["--- browser console ---", *b.console[-200:]]))
            assert not b.page_errors, f"uncaught errors in the page: {b.page_errors}"
        finally:
            await chromium.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _saved:
        return
    terminalreporter.write_sep("-", "browser screenshots")
    for path in _saved:
        try:
            shown = path.relative_to(ROOT)
        except ValueError:
            shown = path
        terminalreporter.write_line(str(shown))
