"""`quart-chat demo --fresh` (the embedded Redis emptied, never someone else's Redis) and the
first run of `scripts/bootstrap` (quiet: no setuptools editable-install warning)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from quart_chat.procs import HOST, free_port, listening

from client import ChatClient
from cluster import Process

ROOT = Path(__file__).resolve().parent.parent


async def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return False


def history(port: int, room: str) -> list[str] | None:
    """The texts of ``room``'s history on the instance at ``port``; None when there is no such room."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/rooms/{room}/history", timeout=5) as r:
            return [m["text"] for m in json.loads(r.read())["messages"]]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


class Demo:
    """`quart-chat demo` on one port, no nginx, in its own process group."""

    def __init__(self, tmp_path: Path, env: dict[str, str], port: int) -> None:
        self.env, self.port, self.tmp_path, self.runs = env, port, tmp_path, 0

    async def run(self, *extra: str) -> Process:
        self.runs += 1
        demo = Process(f"demo-{self.runs}", self.tmp_path)
        demo.launch([sys.executable, "-m", "quart_chat.cli", "demo", "--ports", str(self.port), "--proxy-port", "0",
                     *extra], env=self.env, cwd=ROOT)
        if not await wait_until(lambda: "Press Ctrl+C" in demo.tail() or not demo.running, 30):
            demo.stop(20)
            raise AssertionError(demo.tail())
        return demo

    @staticmethod
    async def stop(demo: Process) -> str:
        code = await asyncio.to_thread(demo.stop, 20)  # SIGTERM to its group, then SIGKILL what is left
        assert code == 0, demo.tail()
        return demo.tail()


@pytest.mark.timeout(120)
async def test_demo_fresh_empties_the_embedded_redis(tmp_path: Path) -> None:
    """History survives a restart of the demo; with --fresh it is gone, rooms and all."""
    data_home = tmp_path / "data"
    redis_port, port = free_port(), free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(data_home), "REDIS_URL": f"redis://{HOST}:{redis_port}/0"}
    for name in ("CHAT_TRUSTED_PROXIES", "CHAT_AUTH"):
        env.pop(name, None)
    demo = Demo(tmp_path, env, port)
    room = "fresh-test"

    run = await demo.run()
    try:
        assert f"data in {data_home / 'quart_chat' / 'redis'}" in run.tail(), run.tail()
        client = await ChatClient.connect(f"ws://{HOST}:{port}/ws")
        try:
            await client.join(room, "Alice")
            await client.say(room, "kept between runs")
            assert [m["text"] for m in await client.messages(1)] == ["kept between runs"]
        finally:
            await client.close()
    finally:
        await demo.stop(run)
    assert (data_home / "quart_chat" / "redis" / "appendonly.aof").stat().st_size > 0

    run = await demo.run()  # without --fresh: the history is still there
    try:
        assert history(port, room) == ["kept between runs"], run.tail()
    finally:
        await demo.stop(run)

    run = await demo.run("--fresh")
    try:
        assert "--fresh: emptied" in run.tail() and "appendonly.aof" in run.tail(), run.tail()
        assert history(port, room) is None, run.tail()  # no such room any more
    finally:
        output = await demo.stop(run)
    assert "stopping..." in output
    assert not listening(port) and not listening(redis_port)


@pytest.mark.timeout(60)
def test_demo_fresh_refuses_a_redis_it_did_not_start(redis_proc, tmp_path: Path) -> None:
    """With a Redis answering at REDIS_URL, --fresh flushes nothing, starts nothing, and says why."""
    r = redis.Redis.from_url(redis_proc.url)
    key = f"qc-fresh-guard-{os.getpid()}"
    r.set(key, "someone's data")
    try:
        port = free_port()
        env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "REDIS_URL": redis_proc.url}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "quart_chat.cli", "demo", "--fresh", "--ports", str(port),
                               "--proxy-port", "0"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1 and time.monotonic() - t0 < 15, proc
        assert "--fresh empties only the embedded Redis" in proc.stderr and "FLUSHDB" in proc.stderr, proc.stderr
        assert r.get(key) == b"someone's data"
        assert not listening(port)
    finally:
        r.delete(key)


def test_demo_says_at_once_which_instance_port_is_taken(tmp_path: Path) -> None:
    """A port already taken (3000 is a common development port) is named at once, with the
    option that picks others, before anything starts: no traceback, no wait for health."""
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        free = free_port()
        env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "quart_chat.cli", "demo", "--ports", f"{free},{taken}",
                               "--proxy-port", "0"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and time.monotonic() - t0 < 10, proc
    assert f"Port {taken}" in proc.stderr and "--ports" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not listening(free)


# ---------------------------------------------------------------- scripts/bootstrap
def quiet_filter() -> str:
    """The PYTHONWARNINGS entry scripts/bootstrap gives pip."""
    found = re.search(r"^qc_quiet_editable='([^']+)'", (ROOT / "scripts" / "bootstrap").read_text(), re.M)
    assert found, "qc_quiet_editable not in scripts/bootstrap"
    return found.group(1)


def test_bootstrap_filter_drops_that_warning_only() -> None:
    """The filter matches the editable-install warning as pip re-raises it, and no other warning."""
    code = (
        "import warnings\n"
        "class BuildBackendWarning(UserWarning): pass\n"
        "warnings.warn('Editable installation.\\n!!\\n Please be careful with folders', BuildBackendWarning)\n"
        "warnings.warn('Compat editable installs: transitional', BuildBackendWarning)\n"
        "warnings.warn('Editable installation is broken', UserWarning)\n"
        "warnings.warn('Editable installation.', DeprecationWarning)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": quiet_filter() + ",always::DeprecationWarning"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Please be careful" not in proc.stderr
    for other in ("Compat editable installs", "Editable installation is broken", "DeprecationWarning: Editable"):
        assert other in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bootstrap_first_run_is_quiet_and_imports_from_the_checkout(tmp_path: Path) -> None:
    """scripts/bootstrap in a copy of the checkout (tracked files): a new .venv, the editable
    install, no setuptools warning block, and quart_chat imported from the copy. Needs the
    package index pip is configured with."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    copy = tmp_path / "checkout"
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("PYTHONWARNINGS", None)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(["bash", str(copy / "scripts" / "bootstrap")], env=env, capture_output=True, text=True,
                          timeout=380)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "installing quart_chat" in proc.stderr, output  # it did run the install
    for noise in ("BuildBackendWarning", "Editable installation", "Please be careful with folders"):
        assert noise not in output, output
    python = str(copy / ".venv" / "bin" / "python")
    where = subprocess.run([python, "-c", "import quart_chat; print(quart_chat.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert where.stdout.strip() == str(copy / "quart_chat" / "__init__.py"), where
    # An edit in the checkout takes effect without reinstalling.
    (copy / "quart_chat" / "edit_probe.py").write_text("VALUE = 42\n")
    probe = subprocess.run([python, "-c",
                            "from quart_chat.edit_probe import VALUE; print(VALUE)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert probe.stdout.strip() == "42", probe


@pytest.mark.timeout(60)
def test_demo_stops_on_sigint_even_when_started_with_it_ignored(redis_proc, tmp_path: Path) -> None:
    """A script that starts the demo with `&` hands it SIGINT ignored; Ctrl+C (SIGINT to its
    group) must stop it and everything it started all the same."""
    import signal
    import subprocess
    import time

    port = free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "REDIS_URL": redis_proc.url}
    env.pop("CHAT_AUTH", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "quart_chat.cli", "demo", "--ports", str(port), "--proxy-port",
                                 "0"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 30
        while "Press Ctrl+C" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(20) == 0, log.read_text(errors="replace")
        assert not listening(port)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
