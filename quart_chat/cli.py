"""``quart-chat``: run the three-instance demo, or the load tool.

    quart-chat demo            Redis (embedded if none answers) + instances on 3000, 3001, 3002
    quart-chat bench ...       the load tool (see ``quart-chat bench --help``)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import redis

from .app import redact
from .config import Settings
from .embedded import data_dir, start_redis, stop_group

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def redis_answers(url: str) -> bool | str:
    """True if Redis answers PING at ``url``; False if nothing listens; an error text otherwise."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping()
        return True
    except redis.ConnectionError:
        return False
    except redis.RedisError as err:
        return str(err)


def wait_healthy(url: str, timeout: float = 20.0) -> bool:
    """Wait until ``url``/healthz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def demo(args: argparse.Namespace) -> int:
    """Start Redis if needed and one instance per port; stop everything on Ctrl+C."""
    url = Settings.from_env().redis_url
    children: list[subprocess.Popen] = []
    state = redis_answers(url)
    if state is not True:
        host = urlsplit(url).hostname or "localhost"
        if state is not False or host not in LOCAL_HOSTS:
            print(f"Redis at {redact(url)} does not answer ({state or 'connection refused'}).\n"
                  "Set REDIS_URL to a reachable Redis (with its password), or unset it to use the embedded one.",
                  file=sys.stderr)
            return 1
        print(f"No Redis at {redact(url)}: starting the embedded redis-server (data in {data_dir()})")
        children.append(start_redis(url))
        deadline = time.monotonic() + 10
        while redis_answers(url) is not True:
            if time.monotonic() > deadline or children[0].poll() is not None:
                print("the embedded redis-server did not start; see its log in " + str(data_dir()), file=sys.stderr)
                stop_group(children[0])
                return 1
            time.sleep(0.1)
    # The checkout's hypercorn.toml (uvloop, graceful timeout, pings); plain defaults without it.
    config = Path(__file__).resolve().parent.parent / "hypercorn.toml"
    config_args = ["-c", str(config)] if config.exists() else []
    try:
        for port in args.ports:
            env = {**os.environ, "REDIS_URL": url, "CHAT_INSTANCE": f"demo-{port}"}
            argv = [sys.executable, "-m", "hypercorn", *config_args, "quart_chat:app",
                    "-b", f"{args.host}:{port}"]
            children.append(subprocess.Popen(argv, env=env, start_new_session=True))
        urls = [f"http://{'localhost' if args.host in ('127.0.0.1', '0.0.0.0') else args.host}:{p}" for p in args.ports]
        for u in urls:
            if not wait_healthy(u.replace("localhost", "127.0.0.1")):
                print(f"{u} did not become healthy", file=sys.stderr)
                return 1
        print("\nquart_chat is running. Open one tab per instance:")
        for u in urls:
            print("   ", u)
        print("Press Ctrl+C to stop everything.\n", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        print("a process stopped unexpectedly; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        for child in reversed(children):
            stop_group(child)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``quart-chat`` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from . import bench

        return bench.main(argv[1:])
    parser = argparse.ArgumentParser(prog="quart-chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run Redis and three instances for the three-tab demo")
    p.add_argument("--ports", type=lambda s: [int(x) for x in s.split(",")], default=[3000, 3001, 3002],
                   help="comma-separated ports (default 3000,3001,3002)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_parser("bench", help="the load tool; see quart-chat bench --help")
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
