"""``quart-chat``: run the three-instance demo, or the load tool.

    quart-chat demo            Redis (embedded if none answers) + instances on 3000, 3001, 3002,
                               and with nginx installed all three behind one URL on 8080
    quart-chat bench ...       the load tool (see ``quart-chat bench --help``)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import redis

from .app import redact
from .config import Settings
from .embedded import data_dir, start_redis, stop_group
from .proxy import (
    TEMPLATE,
    error_tail,
    find_nginx,
    port_taken,
    start_nginx,
    wait_listening,
)

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


def loopback_for(host: str) -> str:
    """The address to reach a server bound to ``host`` on this machine."""
    if host in ("0.0.0.0", "localhost", ""):
        return "127.0.0.1"
    return "::1" if host == "::" else host


def ports_in_use(host: str, ports: list[int], proxy_port: int | None) -> str | None:
    """What to tell the user when a port the demo needs is taken, before anything starts."""
    for port in ports:
        if why := port_taken(host, port):
            return (f"Port {port} on {host} is taken ({why}): stop what uses it, "
                    "or choose other ports with --ports.")
    if proxy_port and (why := port_taken(host, proxy_port)):
        return (f"Port {proxy_port} on {host}, for nginx in front of the instances, is taken ({why}): "
                "choose another with --proxy-port N, or --proxy-port 0 to run without nginx.")
    return None


def demo(args: argparse.Namespace) -> int:
    """Start Redis if needed, one instance per port and, when nginx is installed, nginx on
    ``--proxy-port`` in front of them all; stop everything on Ctrl+C."""
    url = Settings.from_env().redis_url
    nginx = find_nginx() if args.proxy_port else None
    if nginx and not TEMPLATE.exists():
        print(f"({TEMPLATE} is not there (an installed copy, not a checkout): running without nginx.)")
        nginx = None
    if args.proxy_port and args.proxy_port in args.ports:
        print(f"--proxy-port {args.proxy_port} is also one of --ports.", file=sys.stderr)
        return 1
    if problem := ports_in_use(args.host, args.ports, args.proxy_port if nginx else None):
        print(problem, file=sys.stderr)
        return 1
    children: list[subprocess.Popen] = []  # everything started, for the watch loop
    instances: list[subprocess.Popen] = []
    front: subprocess.Popen | None = None  # nginx
    nginx_dir: Path | None = None
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
    upstream = loopback_for(args.host)
    env_extra = {}
    if nginx:
        # nginx connects to the instances from this address: they believe its X-Forwarded-*
        # headers (client address, Origin check), and nobody else's.
        trusted = [t for t in os.environ.get("CHAT_TRUSTED_PROXIES", "").split(",") if t.strip()]
        env_extra["CHAT_TRUSTED_PROXIES"] = ",".join(trusted + [upstream] if upstream not in trusted else trusted)
    try:
        for port in args.ports:
            env = {**os.environ, **env_extra, "REDIS_URL": url, "CHAT_INSTANCE": f"demo-{port}"}
            argv = [sys.executable, "-m", "hypercorn", *config_args, "quart_chat:app",
                    "-b", f"{args.host}:{port}"]
            instances.append(subprocess.Popen(argv, env=env, start_new_session=True))
            children.append(instances[-1])
        shown = 'localhost' if args.host in ('127.0.0.1', '0.0.0.0') else args.host
        urls = [f"http://{shown}:{p}" for p in args.ports]
        for u in urls:
            if not wait_healthy(u.replace("localhost", "127.0.0.1")):
                print(f"{u} did not become healthy", file=sys.stderr)
                return 1
        if nginx:
            # deploy/nginx.conf for these ports, its pid, logs and temp files in a private
            # directory, in its own process group: stopped with the rest.
            nginx_dir = Path(tempfile.mkdtemp(prefix="quart-chat-nginx-"))
            try:
                front = start_nginx(nginx, nginx_dir, args.proxy_port, args.ports,
                                    listen_host=args.host, upstream_host=upstream)
            except (OSError, ValueError) as err:
                print(f"nginx could not start: {err}", file=sys.stderr)
                return 1
            children.append(front)
            if not wait_listening(upstream, args.proxy_port, front):
                print(f"nginx did not start on port {args.proxy_port}:\n{error_tail(nginx_dir)}\n"
                      "(--proxy-port 0 runs the demo without nginx)", file=sys.stderr)
                return 1
        print("\nquart_chat is running. Open one tab per instance:")
        for u in urls:
            print("   ", u)
        if nginx:
            print("or all of them behind nginx, on one URL (each new tab goes to the least busy instance):")
            print("   ", f"http://{shown}:{args.proxy_port}")
        elif args.proxy_port:
            print(f"(With nginx installed, all of them would also be on one URL, http://{shown}:{args.proxy_port}:\n"
                  " sudo apt-get install nginx, then run the demo again.)")
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
        # nginx first; then every instance at once (each may wait out its graceful time
        # while its WebSockets close), and Redis last: stopping instances still use it.
        if front is not None:
            stop_group(front)
        for inst in instances:
            try:
                os.killpg(inst.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in [*instances, *(c for c in children if c is not front and c not in instances)]:
            stop_group(child)
        if nginx_dir is not None:
            shutil.rmtree(nginx_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``quart-chat`` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from . import bench

        return bench.main(argv[1:])
    parser = argparse.ArgumentParser(prog="quart-chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run Redis and three instances for the three-tab demo (and nginx, when installed)")
    p.add_argument("--ports", type=lambda s: [int(x) for x in s.split(",")], default=[3000, 3001, 3002],
                   help="comma-separated ports (default 3000,3001,3002)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--proxy-port", type=int, default=8080, metavar="N",
                   help="with nginx installed, also serve every instance on this one port "
                        "(deploy/nginx.conf; default 8080; 0: no nginx)")
    sub.add_parser("bench", help="the load tool; see quart-chat bench --help")
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
