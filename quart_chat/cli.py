"""``quart-chat``: run the three-instance demo, or the load tool.

    quart-chat demo            Redis (embedded if none answers) + instances on 3000, 3001, 3002,
                               and with nginx installed all three behind one URL on 8080
    quart-chat demo --auth     the same in token mode, with a link each for Alice, Bob and Charlie
    quart-chat demo --fresh    the same, the embedded Redis emptied first (no history, no rooms)
    quart-chat token --name Alice --rooms 'general,team-*' --ttl 1h
                               a signed token (CHAT_JWT_SECRET, or --private-key FILE) and the
                               page URL that carries it (/#token=...)
    quart-chat check           can an instance serve with these settings? one line per part;
                               exit 0 if so, 78 for a setting that cannot be used, 69 when
                               Redis does not answer (for ExecStartPre= and CI)
    quart-chat bench ...       the load tool (see ``quart-chat bench --help``)
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
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

from . import auth, check
from .check import EX_UNAVAILABLE
from .config import MIN_SECRET_BYTES, Settings, SettingsError, parse_list
from .embedded import data_dir, start_redis
from .entry import EX_CONFIG, configuration_error
from .logs import redact
from .postgres import NoPostgres, Postgres, find_postgres, reachable, start_postgres
from .procs import free_port, stop_group
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


def empty_data_dir(path: Path) -> list[str]:
    """Remove what the embedded Redis keeps in ``path`` (its append-only file, any snapshot),
    leaving its log; returns the names removed."""
    removed = []
    for entry in sorted(path.iterdir()):
        if entry.name == "redis.log":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def start_archive(fresh: bool) -> Postgres | None:
    """The demo's private PostgreSQL for the archive, its data next to the embedded Redis's;
    None, saying why, when there is none (the demo runs on without an archive)."""
    folder = data_dir().parent / "postgres"
    if not reachable(folder):
        # As root the server runs as another user, who cannot enter /root: keep its data
        # where that user can, and where it lasts from one demo to the next.
        folder = Path("/var/lib/quart_chat/postgres")
    try:
        bin_dir = find_postgres()
    except NoPostgres as err:
        print(f"Archive off: {err} (or set CHAT_ARCHIVE_URL to a PostgreSQL of yours).")
        return None
    if fresh and (folder / "data").exists():
        shutil.rmtree(folder / "data")
        print(f"--fresh: emptied {folder} (the archive)")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Starting a private PostgreSQL for the archive (data in {folder})", flush=True)
    try:
        return start_postgres(folder / "data", free_port(), log_path=folder / "postgres.log", bin_dir=bin_dir)
    except NoPostgres as err:
        print(f"Archive off: {err} (or set CHAT_ARCHIVE_URL to a PostgreSQL of yours).")
        return None
    except Exception as err:  # the archive is optional: the demo goes on without it
        print(f"Archive off: the private PostgreSQL did not start ({str(err).splitlines()[0]}; "
              f"see {folder / 'postgres.log'}); set CHAT_ARCHIVE_URL to use another.")
        return None


# `demo --auth`: who gets a link, and the rooms each token allows (None: every room).
DEMO_USERS = (("Alice", None), ("Bob", None), ("Charlie", ["general", "team-*"]))
DEMO_TTL = 12 * 3600


def page_link(base: str, token: str) -> str:
    """The page at ``base`` with ``token`` in the fragment: browsers never send a fragment
    to any server, and the page moves it out of the address bar at once."""
    return base.rstrip("/") + "/#token=" + token


def token(args: argparse.Namespace) -> int:
    """Print a signed token for ``--name`` and the page URL that carries it."""
    from .protocol import ProtocolError, validate_user

    try:
        name = validate_user(args.name)
        ttl = auth.parse_ttl(args.ttl)
    except ProtocolError as err:
        print(f"--name: {err.message}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"--ttl: {err}", file=sys.stderr)
        return 2
    rooms = None if args.rooms is None else list(parse_list(args.rooms))
    # This command signs; the instances' own checks of token mode do not apply to it.
    settings = Settings.from_env({**os.environ, "CHAT_AUTH": "open"})
    if args.private_key:
        try:
            key, algorithm = auth.signing_key(Path(args.private_key).expanduser().read_bytes())
        except (OSError, ValueError, TypeError) as err:
            print(f"--private-key {args.private_key}: {err}", file=sys.stderr)
            return 1
    else:
        secret = settings.jwt_secret
        if not secret:
            print("Set CHAT_JWT_SECRET to the instances' secret (HS256), or pass --private-key FILE "
                  "(RS256 or ES256, the key whose public half is CHAT_JWT_PUBLIC_KEY).", file=sys.stderr)
            return 1
        if len(secret.encode()) < MIN_SECRET_BYTES:
            print(f"CHAT_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: the instances refuse it.",
                  file=sys.stderr)
            return 1
        key, algorithm = secret.encode(), "HS256"
    audience = args.audience if args.audience is not None else next(iter(settings.jwt_audience), "")
    issuer = args.issuer if args.issuer is not None else settings.jwt_issuer
    signed = auth.issue(key, algorithm, name, args.sub or name, rooms, ttl, audience, issuer)
    print(signed)
    print(page_link(args.url, signed))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Start Redis if needed, one instance per port and, when nginx is installed, nginx on
    ``--proxy-port`` in front of them all; stop everything on Ctrl+C."""
    # Every setting the instances will read, checked before anything starts (the demo's own
    # CHAT_AUTH aside: open unless --auth, checked below).
    url = Settings.from_env({**os.environ, "CHAT_AUTH": "open"}).redis_url
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
    if args.fresh and state is True:
        # A Redis that answers is not one this demo started: someone's data, never flushed here.
        print(f"--fresh empties only the embedded Redis, and a Redis already answers at {redact(url)}: "
              "nothing was flushed and nothing started.\n"
              "To start afresh on it, flush it yourself (e.g. redis-cli -u URL FLUSHDB); or stop it "
              "(or unset REDIS_URL) and run the demo with --fresh again to use the embedded one.",
              file=sys.stderr)
        return 1
    if state is not True:
        host = urlsplit(url).hostname or "localhost"
        if state is not False or host not in LOCAL_HOSTS:
            print(f"Redis at {redact(url)} does not answer ({state or 'connection refused'}).\n"
                  "Set REDIS_URL to a reachable Redis (with its password), or unset it to use the embedded one.",
                  file=sys.stderr)
            return 1
        if args.fresh:
            removed = empty_data_dir(data_dir())
            print(f"--fresh: emptied {data_dir()} ({', '.join(removed) or 'it was empty'}): no history, no rooms")
        print(f"No Redis at {redact(url)}: starting the embedded redis-server (data in {data_dir()})", flush=True)
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
    # The demo is open unless --auth: then token mode with HS256 and a secret for this run
    # (CHAT_JWT_SECRET's, when set), and a link per user printed below.
    env_extra = {"CHAT_AUTH": "open"}
    secret = ""
    if args.auth:
        secret = os.environ.get("CHAT_JWT_SECRET", "").strip() or secrets.token_urlsafe(32)
        env_extra.update(CHAT_AUTH="token", CHAT_JWT_SECRET=secret, CHAT_JWT_PUBLIC_KEY="")
        Settings.from_env({**os.environ, **env_extra})  # a SettingsError ends it with 78 (main)
    if nginx:
        # nginx connects to the instances from this address: they believe its X-Forwarded-*
        # headers (client address, Origin check), and nobody else's.
        trusted = Settings.from_env({**os.environ, "CHAT_AUTH": "open"}).trusted_proxies
        try:
            covered = any(ipaddress.ip_address(upstream) in net for net in trusted)
        except ValueError:  # a host name: add it as it is
            covered = False
        env_extra["CHAT_TRUSTED_PROXIES"] = ",".join([*map(str, trusted), *([] if covered else [upstream])])
    archive: Postgres | None = None
    try:
        # The archive: CHAT_ARCHIVE_URL's PostgreSQL when set, else a private one when a server is installed.
        if not os.environ.get("CHAT_ARCHIVE_URL", "").strip():
            archive = start_archive(args.fresh)
        if archive is not None:
            env_extra["CHAT_ARCHIVE_URL"] = archive.url
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
        if args.auth:
            settings = Settings.from_env({**os.environ, **env_extra})
            audience = next(iter(settings.jwt_audience), "")
            print(f"\nquart_chat is running in token mode (tokens valid {DEMO_TTL // 3600} h). "
                  "Open one link per tab (each keeps its token for the tab):")
            for (user, rooms), u in zip(DEMO_USERS, [*urls, *urls, *urls]):
                signed = auth.issue(secret.encode(), "HS256", user, user.lower(), rooms, DEMO_TTL,
                                    audience, settings.jwt_issuer)
                print(f"  {user} ({'rooms ' + ', '.join(rooms) if rooms else 'every room'}):")
                print("   ", page_link(u, signed))
            print("More links (another terminal):\n"
                  f"    CHAT_JWT_SECRET='{secret}' .venv/bin/quart-chat token --name Dana --url {urls[0]}")
        else:
            print("\nquart_chat is running. Open one tab per instance:")
            for u in urls:
                print("   ", u)
        if nginx:
            print("or all of them behind nginx, on one URL (each new tab goes to the least busy instance"
                  f"{'; a link above works there too, with its port changed' if args.auth else ''}):")
            print("   ", f"http://{shown}:{args.proxy_port}")
        elif args.proxy_port:
            print(f"(With nginx installed, all of them would also be on one URL, http://{shown}:{args.proxy_port}:\n"
                  " sudo apt-get install nginx, then run the demo again.)")
        print("Press Ctrl+C to stop everything.\n", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        # A demo started in the background by a script (`&`, nohup) inherits SIGINT ignored:
        # Ctrl+C, or a SIGINT to its group, must stop it all the same.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        while all(c.poll() is None for c in children) and (archive is None or archive.group.running):
            time.sleep(0.5)
        print("a process stopped unexpectedly; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        # nginx first; then every instance at once (each may wait out its graceful time
        # while its WebSockets close), and Redis and PostgreSQL last: stopping instances still use them.
        if front is not None:
            stop_group(front)
        for inst in instances:
            try:
                os.killpg(inst.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in [*instances, *(c for c in children if c is not front and c not in instances)]:
            stop_group(child)
        if archive is not None:
            archive.stop()
        if nginx_dir is not None:
            shutil.rmtree(nginx_dir, ignore_errors=True)


def migrate() -> int:
    """Apply the archive's migrations to $CHAT_ARCHIVE_URL (with $CHAT_ARCHIVE_LANGUAGE), as
    an instance does at start; for a database whose application user may not create tables,
    run it once with an owner's URL. Exit 0 when the schema is up to date."""
    from .archive import Archive, ArchiveDown

    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(configuration_error(err), file=sys.stderr)
        return EX_CONFIG
    if not settings.archive_url:
        print("quart-chat migrate: CHAT_ARCHIVE_URL is not set; nothing to migrate", file=sys.stderr)
        return EX_CONFIG

    async def run() -> list[int]:
        archive = Archive(settings.archive_url, settings.archive_language)
        try:
            await archive.open()  # which migrates
            return await archive.migrate()
        finally:
            await archive.close()

    try:
        asyncio.run(run())
    except (ArchiveDown, OSError) as err:
        print(f"quart-chat migrate: cannot reach the archive at {redact(settings.archive_url)}: {err}", file=sys.stderr)
        return EX_UNAVAILABLE
    except Exception as err:  # e.g. an unknown CHAT_ARCHIVE_LANGUAGE, a user without rights
        print(f"quart-chat migrate: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"quart-chat migrate: the archive at {redact(settings.archive_url)} is up to date")
    return 0


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
    p.add_argument("--auth", action="store_true",
                   help="token mode (CHAT_AUTH=token, HS256): print a signed link each for Alice, Bob and Charlie")
    p.add_argument("--fresh", action="store_true",
                   help="start with no history: empty the embedded Redis's data first "
                        "(refused when a Redis already answers at $REDIS_URL: the demo flushes none it did not start)")
    t = sub.add_parser("token", help="print a signed token and the page URL that carries it",
                       description="Sign a token as the site embedding the chat would (docs/token-mode.md): "
                                   "HS256 with $CHAT_JWT_SECRET, or RS256/ES256 with --private-key. "
                                   "Prints the token, then the page URL with it in the fragment.")
    t.add_argument("--name", required=True, help="the user name shown, fixed for the connection")
    t.add_argument("--sub", help="the user id (sub claim; default: the name)")
    t.add_argument("--rooms", help="comma-separated room names or patterns with * (e.g. 'general,team-*'); "
                                   "default: every room")
    t.add_argument("--ttl", default="1h", help="how long it is valid: 90s, 15m, 1h, 2d (default 1h)")
    t.add_argument("--url", default="http://localhost:3000", help="the chat page's address (default http://localhost:3000)")
    t.add_argument("--private-key", metavar="FILE", help="PEM private key (RSA: RS256, EC P-256: ES256) instead of "
                                                          "the HS256 secret in CHAT_JWT_SECRET")
    t.add_argument("--audience", help="aud claim (default: the first of $CHAT_JWT_AUDIENCE, if set)")
    t.add_argument("--issuer", help="iss claim (default: $CHAT_JWT_ISSUER, if set)")
    sub.add_parser("check", help="check the settings and reach Redis as an instance would; exit 0 if it could serve",
                   description=check.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_parser("bench", help="the load tool; see quart-chat bench --help")
    sub.add_parser("migrate", help="create or update the archive's tables in $CHAT_ARCHIVE_URL (docs/archive.md)",
                   description=migrate.__doc__)
    args = parser.parse_args(argv)
    if args.command == "token":
        return token(args)
    if args.command == "check":
        return check.check()
    if args.command == "migrate":
        return migrate()
    try:
        return demo(args)
    except SettingsError as err:
        print(configuration_error(err), file=sys.stderr)
        return EX_CONFIG


if __name__ == "__main__":
    sys.exit(main())
