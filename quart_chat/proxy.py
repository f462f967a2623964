"""nginx in front of the instances: the shipped ``deploy/nginx.conf``, rendered for given ports.

The demo and the tests both run that file through `render_config`, which changes only its
``listen`` line and the upstream's ``server`` lines, so what they run is what ships. nginx
runs in the foreground (``daemon off;``) with ``-p DIR``: its pid, logs and every temp path
are relative, so they all land in that private directory.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
CONF_NAME = "nginx.conf"
ERROR_LOG = "error.log"
# Where Debian and the upstream packages put nginx; /usr/sbin is often not on a user's PATH.
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

_UPSTREAM = re.compile(r"(\n[ \t]*upstream[ \t]+quart_chat[ \t]*\{)(.*?)(\n[ \t]*\})", re.DOTALL)
_SERVER = re.compile(r"\n([ \t]*)server[ \t]+(\S+?)((?:[ \t]+[^;\n]*)?);[ \t]*(?=\n|\Z)")
_LISTEN = re.compile(r"^([ \t]*)listen[ \t]+[^;\n]+;", re.MULTILINE)


def find_nginx() -> str | None:
    """$NGINX, else ``nginx`` on PATH, else the usual sbin paths; None when there is none."""
    if os.environ.get("NGINX"):
        return os.environ["NGINX"]
    found = shutil.which("nginx")
    if found:
        return found
    return next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(listen_port: int, upstream_ports: list[int], *, listen_host: str = "127.0.0.1",
                  upstream_host: str = "127.0.0.1", template: Path = TEMPLATE) -> str:
    """The shipped config with nginx listening on ``listen_host:listen_port`` in front of
    ``upstream_host:port`` for each of ``upstream_ports``; everything else as shipped.

    Raises ValueError when the template no longer has exactly one ``listen`` line and an
    ``upstream quart_chat`` block with ``server`` lines (so a changed file cannot silently
    render into something else).
    """
    if not upstream_ports:
        raise ValueError("at least one upstream port is needed")
    text = template.read_text()
    block = _UPSTREAM.search(text)
    if block is None:
        raise ValueError(f"{template}: no `upstream quart_chat {{ ... }}` block")
    servers = list(_SERVER.finditer(block.group(2)))
    if not servers:
        raise ValueError(f"{template}: the upstream block has no `server` line")
    indent, options = servers[0].group(1), servers[0].group(3)
    lines = "".join(f"\n{indent}server {_hostport(upstream_host, p)}{options};" for p in upstream_ports)
    # The first `server` line becomes one per port; the others go (the comments stay).
    body = _SERVER.sub(lambda m: lines if m.start() == servers[0].start() else "", block.group(2))
    text = text[:block.start(2)] + body + text[block.end(2):]
    listens = _LISTEN.findall(text)
    if len(listens) != 1:
        raise ValueError(f"{template}: expected one `listen` line, found {len(listens)}")
    return _LISTEN.sub(lambda m: f"{m.group(1)}listen {_hostport(listen_host, listen_port)};", text)


def write_config(prefix: Path, listen_port: int, upstream_ports: list[int], *, listen_host: str = "127.0.0.1",
                 upstream_host: str = "127.0.0.1") -> Path:
    """Create the private directory ``prefix`` and write the rendered config into it."""
    prefix.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Run as root, nginx's workers switch to `nobody` and use the temp directories it
        # creates (and chowns) inside prefix: they must be able to pass through it.
        prefix.chmod(0o711)
    conf = prefix / CONF_NAME
    conf.write_text(render_config(listen_port, upstream_ports, listen_host=listen_host, upstream_host=upstream_host))
    return conf


def nginx_argv(binary: str, prefix: Path, conf: Path) -> list[str]:
    """The command line: that config, relative paths under ``prefix``, and the error log
    there from the first line on (``-e``; before reading the config nginx would otherwise
    try its compiled-in system log)."""
    return [binary, "-c", str(conf), "-p", str(prefix) + "/", "-e", str(prefix / ERROR_LOG)]


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on right now (e.g. "address already in use"), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx and Hypercorn do
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return "address already in use"
            return err.strerror or str(err)
    return None


def start_nginx(binary: str, prefix: Path, listen_port: int, upstream_ports: list[int], *,
                listen_host: str = "127.0.0.1", upstream_host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start nginx in the foreground, in its own process group, with its output in
    ``prefix``/nginx.out; stop it with `quart_chat.procs.stop_group`."""
    conf = write_config(prefix, listen_port, upstream_ports, listen_host=listen_host, upstream_host=upstream_host)
    with open(prefix / "nginx.out", "ab") as out:
        return subprocess.Popen(nginx_argv(binary, prefix, conf), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Wait until something accepts on ``host:port``; False if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def error_tail(prefix: Path, lines: int = 15) -> str:
    """The end of nginx's error log and output in ``prefix``, for a failure message."""
    out = []
    for name in (ERROR_LOG, "nginx.out"):
        try:
            out += (prefix / name).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            pass
    return "\n".join(out)
