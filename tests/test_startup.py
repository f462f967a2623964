"""Starting under a process manager: a setting that cannot be used stops the start with one
line and status 78 (EX_CONFIG), before anything is served; `quart-chat check` says whether an
instance could serve; the systemd units we ship pass `systemd-analyze verify`, and their
ExecStart line, run as written, serves and exits 0 on SIGTERM.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quart_chat.procs import HOST, free_port, listening

from cluster import ROOT

pytestmark = [pytest.mark.timeout(60), pytest.mark.per_version]

EX_CONFIG = 78
HYPERCORN = [sys.executable, "-m", "hypercorn"]
QUART_CHAT = [sys.executable, "-m", "quart_chat.cli"]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def run(argv: list[str], env: dict[str, str], timeout: float = 20) -> tuple[int, str]:
    """Run ``argv`` in its own process group; its status and its output (stdout and stderr)."""
    proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out


KEY_FILE = "/nonexistent/quart-chat/jwt.pem"
# One bad setting of each kind, and what its line must say.
BAD = {
    "number": ({"CHAT_MAX_TEXT": "abc"}, "CHAT_MAX_TEXT must be a whole number, got 'abc'"),
    "choice": ({"CHAT_LOG_FORMAT": "xml"}, "CHAT_LOG_FORMAT must be one of text, json, got 'xml'"),
    "url-scheme": ({"REDIS_URL": "foo://:hunter2@127.0.0.1:1"}, "REDIS_URL has scheme 'foo'; it must start with"),
    "missing-key": ({"CHAT_AUTH": "token", "CHAT_JWT_SECRET": "", "CHAT_JWT_PUBLIC_KEY": ""},
                    "CHAT_AUTH=token needs CHAT_JWT_SECRET (HS256) or CHAT_JWT_PUBLIC_KEY"),
    "unreadable-key": ({"CHAT_AUTH": "token", "CHAT_JWT_PUBLIC_KEY": KEY_FILE},
                       "CHAT_JWT_PUBLIC_KEY is neither PEM text nor a readable file"),
}


def assert_one_line(out: str, expected: str) -> None:
    """``out`` is exactly one configuration-error line that contains ``expected``."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out, out
    assert len(lines) == 1, out
    assert lines[0].startswith("quart_chat: configuration error: ") and expected in lines[0], out
    assert "hunter2" not in out  # a password in REDIS_URL is never repeated


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_setting_stops_the_start_with_78(kind, redis_proc):
    env, expected = BAD[kind]
    port = free_port()
    code, out = run([*HYPERCORN, "-c", "hypercorn.toml", "quart_chat:app", "-b", f"{HOST}:{port}"],
                    {"REDIS_URL": redis_proc.url, **env})
    assert code == EX_CONFIG, out
    assert_one_line(out, expected)
    assert not listening(port)


@pytest.mark.parametrize("workers", ["0", "1", "2"])
def test_bad_setting_under_plain_hypercorn(workers, redis_proc):
    """``hypercorn quart_chat:app -w N``: the same one line from each worker, no traceback.
    With -w 0 the status is ours (78). With one worker or more, Hypercorn 0.18's supervisor
    reports 0 whatever its worker's status (hypercorn issue 269): the README says so, and the
    shipped hypercorn.toml serves in one process (workers = 0) for that reason."""
    port = free_port()
    code, out = run([*HYPERCORN, "-w", workers, "quart_chat:app", "-b", f"{HOST}:{port}"],
                    {"REDIS_URL": redis_proc.url, "CHAT_MAX_TEXT": "abc"})
    lines = {line for line in out.splitlines() if line.strip()}
    assert "Traceback" not in out, out
    assert lines == {"quart_chat: configuration error: CHAT_MAX_TEXT must be a whole number, got 'abc'"}, out
    if workers == "0":
        assert code == EX_CONFIG
    assert not listening(port)


def test_a_bug_of_ours_keeps_its_traceback(tmp_path, redis_proc):
    """Not a configuration error: its traceback, and a status other than 78."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib\n"
        "def broken(settings=None):\n"
        "    raise RuntimeError('a bug in create_app')\n"
        "importlib.import_module('quart_chat.app').create_app = broken\n")
    code, out = run([*HYPERCORN, "-c", "hypercorn.toml", "quart_chat:app", "-b", f"{HOST}:{free_port()}"],
                    {"REDIS_URL": redis_proc.url, "PYTHONPATH": str(tmp_path)})
    assert code not in (0, EX_CONFIG), out
    assert "Traceback" in out and "RuntimeError: a bug in create_app" in out


def test_demo_with_a_bad_setting_starts_nothing():
    ports = [free_port(), free_port()]
    code, out = run([*QUART_CHAT, "demo", "--ports", ",".join(map(str, ports)), "--proxy-port", "0"],
                    {"CHAT_RATE": "fast"})
    assert code == EX_CONFIG, out
    assert_one_line(out, "CHAT_RATE must look like N/S (e.g. 20/10), got 'fast'")
    assert not any(listening(p) for p in ports)


def test_check_against_a_live_and_a_dead_redis(redis_proc):
    code, out = run([*QUART_CHAT, "check"], {"REDIS_URL": redis_proc.url})
    assert code == 0, out
    assert re.search(r"^redis: ok \(Redis \d+\.\d+\.\d+ at redis://127\.0\.0\.1:\d+/0\)$", out, re.M), out
    assert out.splitlines()[-1] == "ready: an instance with these settings could serve"
    dead = f"redis://:hunter2@{HOST}:{free_port()}/0"
    code, out = run([*QUART_CHAT, "check"], {"REDIS_URL": dead})
    assert code == 69, out
    assert "redis: FAILED: no answer from redis://:***@127.0.0.1:" in out and "hunter2" not in out
    code, out = run([*QUART_CHAT, "check"], {"REDIS_URL": redis_proc.url, "CHAT_ROOM_TTL": "-1"})
    assert code == EX_CONFIG, out
    assert "settings: FAILED: quart_chat: configuration error: CHAT_ROOM_TTL must be at least 0, got -1" in out


# ---------------------------------------------------------------- the systemd units
def installed(unit: Path, dest: Path, port: int) -> Path:
    """``unit`` as it would be installed from this checkout: /opt/quart-chat is ROOT, the
    virtualenv is the one running the tests. Returns the instance unit's path (PORT)."""
    venv = Path(sys.executable).parent.parent
    text = unit.read_text().replace("/opt/quart-chat/.venv", str(venv)).replace("/opt/quart-chat", str(ROOT))
    path = dest / unit.name
    path.write_text(text)
    return path.with_name(unit.name.replace("@.", f"@{port}."))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    if shutil.which("systemd-analyze") is None:
        reason = "no systemd-analyze here (apt-get install systemd)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the units must be verified)", pytrace=False)
        pytest.skip(reason)
    path = installed(unit, tmp_path, 3000)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=30)
    # verify exits 0 on unknown keys and bad values too ("..., ignoring"): nothing may be said.
    said = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line or "ignoring" in line]
    assert result.returncode == 0 and not said, result.stdout + result.stderr


def unit_lines(text: str, key: str) -> list[str]:
    return [line.partition("=")[2] for line in text.splitlines() if line.startswith(key + "=")]


def test_unit_execstart_serves_and_exits_0_on_sigterm(tmp_path, redis_proc):
    """The template unit's ExecStartPre and ExecStart lines, run as written (paths of this
    checkout, %i a free port, %H this host) with an environment file as systemd reads it."""
    [unit] = [u for u in UNITS if u.name == "quart-chat@.service"]
    port = free_port()
    text = installed(unit, tmp_path, port).with_name(unit.name).read_text()
    env_file = tmp_path / "quart-chat.env"
    shipped = (ROOT / "deploy" / "systemd" / "quart-chat.env").read_text()
    env_file.write_text(shipped.replace("redis://localhost:6379/0", redis_proc.url))
    [env_path] = unit_lines(text, "EnvironmentFile")
    assert env_path == "/etc/quart-chat/quart-chat.env"
    env = {k: v for k, _, v in (line.partition("=") for line in env_file.read_text().splitlines()
                                  if line.strip() and not line.startswith("#"))}
    for assignment in unit_lines(text, "Environment"):
        k, _, v = assignment.partition("=")
        env[k] = v.replace("%H", "test").replace("%i", str(port))
    assert env["REDIS_URL"] == redis_proc.url

    def argv(line: str) -> list[str]:
        return shlex.split(line.replace("%i", str(port)))

    [pre] = unit_lines(text, "ExecStartPre")
    code, out = run(argv(pre), env)
    assert code == 0, out
    [start] = unit_lines(text, "ExecStart")
    proc = subprocess.Popen(argv(start), env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + 20
        while not listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        import urllib.request

        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)  # KillMode=mixed: SIGTERM to the main process
        assert proc.wait(10) == 0
        out = proc.communicate()[0]
        assert f"instance test:{port} using Redis" in out, out  # CHAT_INSTANCE=%H:%i
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
