"""The page's JavaScript: its unit tests (tests/js/*.test.mjs, run by Node's built-in runner)
and the limits the page is given by the server rather than copying them.

The unit tests cover the page's pure parts (frames, backoff, ordering, day separators,
pending sends, limits, the stored session, token claims); this runs them as part of the
Python test run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = ROOT / "tests" / "js"
TIMEOUT_S = 60


def test_js_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing (CI=true: the JavaScript tests must run)", pytrace=False)
        pytest.skip("node is missing: the JavaScript tests cannot run")
    files = sorted(JS_TESTS.glob("*.test.mjs"))
    assert files, f"no JavaScript tests in {JS_TESTS}"
    try:
        done = subprocess.run([node, "--test", *map(str, files)], cwd=ROOT, capture_output=True,
                              text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"node --test took more than {TIMEOUT_S} s:\n{err.stdout or ''}", pytrace=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"node --test failed:\n{out}"
    # A run that found nothing also exits 0: the tests must have run, and all passed.
    ran = re.search(r"^# tests (\d+)$", out, re.M)
    failed = re.search(r"^# fail (\d+)$", out, re.M)
    assert ran and int(ran.group(1)) > 0, f"node ran no test:\n{out}"
    assert failed and int(failed.group(1)) == 0, f"node reported failures:\n{out}"


def test_the_page_carries_the_servers_limits(make_cluster) -> None:
    c = make_cluster(1, env={"CHAT_MAX_TEXT": "1234", "CHAT_MAX_FRAME": "23456"})
    with urllib.request.urlopen(c[0].http_url + "/", timeout=10) as r:
        page = r.read().decode()
    box = re.search(r"<textarea id=\"message\"[^>]*>", page)
    assert box, "the message box is on the page"
    assert 'data-max-text="1234"' in box.group(0), "the text limit is CHAT_MAX_TEXT's, not a copy"
    assert 'data-max-frame="23456"' in box.group(0), "the frame limit is CHAT_MAX_FRAME's, not a copy"
    assert '<script type="module" src="/static/app.js"></script>' in page, "the page loads as ES modules"
