"""The accessibility audit: axe-core (the npm package, pinned in tests/browser/package.json)
run inside the page, and a screen-reader stand-in that records what the live regions say.

axe-core is installed with ``npm ci --prefix tests/browser`` (scripts/test does it). Without
it the audits skip, saying so, and fail under CI=true. The script is evaluated through the
DevTools protocol (``page.evaluate``), which the page's Content-Security-Policy does not
govern: the page under audit keeps its real, strict CSP; nothing is added to its markup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
AXE_PACKAGE = HERE / "node_modules" / "axe-core" / "package.json"
AXE_JS = HERE / "node_modules" / "axe-core" / "axe.min.js"
AXE_VERSION = json.loads((HERE / "package.json").read_text())["dependencies"]["axe-core"]
INSTALL = "npm ci --prefix tests/browser"

# WCAG 2.0 and 2.1, levels A and AA: every axe rule with one of these tags.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def require_axe() -> None:
    """Skip (fail under CI=true) unless the pinned axe-core is installed."""
    reason = None
    if not AXE_JS.exists():
        reason = f"{AXE_JS.relative_to(HERE.parents[1])} is missing (run: {INSTALL})"
    else:
        installed = json.loads(AXE_PACKAGE.read_text()).get("version")
        if installed != AXE_VERSION:
            reason = f"axe-core {installed} is installed, the tests pin {AXE_VERSION} (run: {INSTALL})"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the accessibility audit must run)", pytrace=False)
    pytest.skip(reason)


_AXE_SOURCE: str | None = None


def _axe_source() -> str:
    global _AXE_SOURCE
    if _AXE_SOURCE is None:
        _AXE_SOURCE = AXE_JS.read_text()
    return _AXE_SOURCE


# Waits until every finite animation has finished (a message or a toast caught fading in
# would be measured half transparent), then runs the WCAG rules over the whole document.
_RUN = """async (tags) => {
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && document.getAnimations().some(a =>
      a.playState === 'running' && a.effect && a.effect.getComputedTiming().endTime !== Infinity)) {
    await new Promise(r => setTimeout(r, 50));
  }
  const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
  return { version: axe.version, violations: r.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, tags: v.tags,
    nodes: v.nodes.map(n => ({ target: n.target.join(' '), html: n.html, summary: n.failureSummary })),
  })) };
}"""


def describe(state: str, violations: list[dict]) -> str:
    """The rule, each element and the help text, as a person fixing it needs them."""
    lines = []
    for v in violations:
        lines.append(f"[{state}] {v['id']} ({v['impact']}): {v['help']} -- {v['helpUrl']}")
        for n in v["nodes"]:
            lines.append(f"    at {n['target']}: {n['html'][:200]}")
            for s in (n["summary"] or "").splitlines():
                lines.append(f"        {s}")
    return "\n".join(lines)


class Audit:
    """Runs axe over a page in each state a test brings it to; check() fails with them all."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.found: list[tuple[str, list[dict]]] = []

    async def __call__(self, page, state: str) -> list[dict]:
        if not await page.evaluate("() => typeof window.axe === 'object'"):
            await page.evaluate(_axe_source())
            assert await page.evaluate("() => typeof window.axe === 'object'"), "axe-core did not load"
        result = await page.evaluate(_RUN, WCAG_TAGS)
        assert result["version"] == AXE_VERSION, result["version"]
        self.states.append(state)
        violations = result["violations"]
        if violations:
            self.found.append((state, violations))
            print(describe(state, violations))
        return violations

    def check(self) -> None:
        assert self.states, "no state was audited"
        if self.found:
            report = "\n".join(describe(s, v) for s, v in self.found)
            pytest.fail(f"axe-core {AXE_VERSION} found WCAG 2.1 A/AA violations:\n{report}", pytrace=False)


# A stand-in for a screen reader: what the page's live regions would make one say. For each
# change inside a live region (aria-live, or a role that implies it, unless aria-live="off"),
# it records the region and the text: the whole region when it is atomic (role status/alert
# or aria-atomic="true"), otherwise each added node's text or the changed text.
SPEECH_SPY = r"""
(() => {
  const said = window.__said = [];
  const LIVE_ROLES = { log: 'polite', status: 'polite', alert: 'assertive', marquee: 'off', timer: 'off' };
  function liveOf(el) {
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const attr = e.getAttribute('aria-live');
      const role = e.getAttribute('role');
      const live = attr || (role && LIVE_ROLES[role]) || null;
      if (live) return live === 'off' ? null : { region: e, live };
    }
    return null;
  }
  function atomic(region) {
    const a = region.getAttribute('aria-atomic');
    if (a) return a === 'true';
    const role = region.getAttribute('role');
    return role === 'status' || role === 'alert';
  }
  function hidden(el) {
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      if (e.hidden || e.getAttribute('aria-hidden') === 'true') return true;
    }
    return false;
  }
  const name = (r) => r.id ? '#' + r.id : (r.className ? '.' + String(r.className).split(' ')[0] : r.tagName);
  function say(region, live, text) {
    text = (text || '').replace(/\s+/g, ' ').trim();
    if (text) said.push({ region: name(region), live, text, t: Date.now() });
  }
  new MutationObserver((records) => {
    const atomicDone = new Set();
    for (const m of records) {
      const target = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      if (!target) continue;
      const found = liveOf(target);
      if (!found || hidden(target)) continue;
      if (atomic(found.region)) {
        if (!atomicDone.has(found.region)) {
          atomicDone.add(found.region);
          say(found.region, found.live, found.region.textContent);
        }
        continue;
      }
      if (m.type === 'characterData') say(found.region, found.live, m.target.data);
      for (const n of m.addedNodes) {
        if (n.nodeType === 1 && (n.getAttribute('aria-hidden') === 'true' || n.hidden)) continue;
        say(found.region, found.live, n.textContent);
      }
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
})();
"""


async def speech(page, since: int = 0) -> list[dict]:
    """What the live regions said (SPEECH_SPY), from entry ``since`` on."""
    return await page.evaluate("(k) => window.__said.slice(k)", since)


async def said_count(page) -> int:
    return await page.evaluate("() => window.__said.length")
