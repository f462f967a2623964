"""Real processes for the tests: a redis-server and Hypercorn instances on free loopback ports.

Every process starts in its own process group and is stopped through that group's id, so
Hypercorn's worker never outlives its parent and nothing is ever stopped by name.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quart_chat.embedded import redis_server_binary
from quart_chat.procs import HOST, Group, free_port
from quart_chat.proxy import ERROR_LOG, find_nginx, nginx_argv, write_config
from quart_chat.store import Layout, is_cluster_url, parse_cluster_url

if TYPE_CHECKING:
    from redis_cluster import RedisClusterSet

ROOT = Path(__file__).resolve().parent.parent


def redis_client(url: str, decode_responses: bool = False) -> Any:
    """A sync client of the deployment at ``url`` (a test's look into what the server stored):
    for a ``redis+cluster://`` URL a redis.RedisCluster, which takes each key to its shard (and
    SCAN to every primary); otherwise redis.Redis. Name keys with `layout_of`."""
    import redis

    if is_cluster_url(url):
        conf = parse_cluster_url(url)
        return redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in conf.nodes],
                                  username=conf.username, password=conf.password,
                                  decode_responses=decode_responses, socket_connect_timeout=1)
    return redis.Redis.from_url(url, decode_responses=decode_responses)


def layout_of(where: Any) -> Layout:
    """The key and channel names the server uses on the deployment at ``where``, a URL or a
    `redis_client` (store.Layout: section 2's on one Redis, hash-tagged ones on a cluster)."""
    import redis

    if isinstance(where, str):
        return Layout(is_cluster_url(where))
    return Layout(isinstance(where, redis.RedisCluster))


def kill_pubsub_links(r: Any) -> int:
    """CLIENT KILL TYPE pubsub on every server of ``r`` (a `redis_client`: one Redis, or each node
    of a cluster), as a Redis dropping its subscribers would; returns how many links it cut."""
    import redis

    if isinstance(r, redis.RedisCluster):
        return sum(r.get_redis_connection(node).client_kill_filter(_type="pubsub") for node in r.get_nodes())
    return r.client_kill_filter(_type="pubsub")


def scrape(inst: ChatInstance) -> dict[str, float]:
    """Every sample of the instance's /metrics as ``name{label="v",...}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(inst.http_url + "/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def our_deprecations_are_errors() -> str:
    """A PYTHONWARNINGS value that makes a DeprecationWarning raised from any quart_chat module
    an error in the instances the tests start (as pyproject's filterwarnings does in-process;
    the variable names modules exactly, so each is listed)."""
    import pkgutil

    import quart_chat

    names = ["quart_chat", *(m.name for m in pkgutil.walk_packages(quart_chat.__path__, "quart_chat."))]
    return ",".join(f"error::DeprecationWarning:{name}" for name in names)


class Process(Group):
    """A child in its own process group, with its output in ``<logdir>/<name>.log``."""

    def __init__(self, name: str, logdir: Path) -> None:
        super().__init__(name, logdir / f"{name}.log")


class RedisProcess(Process):
    """A real redis-server; append-only with fsync always, so a restart loses nothing."""

    def __init__(self, logdir: Path, port: int | None = None, password: str | None = None) -> None:
        super().__init__(f"redis-{port or 'x'}", logdir)
        self.port = port or free_port()
        self.password = password
        self.datadir = Path(tempfile.mkdtemp(prefix="redis-", dir=logdir))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def start(self) -> RedisProcess:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.datadir)]
        if self.password:
            argv += ["--requirepass", self.password]
        self.launch(argv)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the server answers PING."""
        deadline = time.monotonic() + timeout
        auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                    s.sendall(auth + b"PING\r\n")
                    if b"PONG" in s.recv(100):
                        return
            except OSError:
                pass
            if not self.running:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on {self.port}:\n{self.tail()}")

    def restart(self, downtime: float = 0.0) -> None:
        """Stop the server, wait ``downtime`` seconds, start it again on the same port and data."""
        self.stop()
        time.sleep(downtime)
        self.start()


class ChatInstance(Process):
    """One ``hypercorn quart_chat:app`` instance; ``nofile`` = (soft, hard) open-file limit."""

    def __init__(self, logdir: Path, redis_url: str, name: str, env: dict[str, str] | None = None,
                 port: int | None = None, config: bool = False, nofile: tuple[int, int] | None = None) -> None:
        super().__init__(name, logdir)
        self.port = port or free_port()
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.config = config
        self.nofile = nofile
        self.workers = 1  # Hypercorn worker processes (-w; 0: served in Hypercorn's own process)

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self, wait: bool = True) -> ChatInstance:
        env = {**os.environ, "REDIS_URL": self.redis_url, "CHAT_INSTANCE": self.name,
               "PYTHONWARNINGS": our_deprecations_are_errors(), **self.extra_env}
        argv = [sys.executable, "-m", "hypercorn"]
        if self.config:
            argv += ["-c", str(ROOT / "hypercorn.toml")]
        argv += ["quart_chat:app", "-b", f"{HOST}:{self.port}"]
        if self.workers != 1:
            argv += ["-w", str(self.workers)]
        self.launch(argv, env=env, cwd=ROOT, nofile=self.nofile)
        if wait:
            self.wait_ready()
        return self

    def serving_process(self):
        """The psutil.Process that serves: Hypercorn's (only) spawned worker, or Hypercorn's own
        process when it serves in it (``-w 0``, hypercorn.toml)."""
        import psutil

        parent = psutil.Process(self.proc.pid)
        workers = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) <= 1, f"{len(workers)} workers: name the one you mean"
        return workers[0] if workers else parent

    def wait_ready(self, timeout: float = 20.0, healthy: bool = True) -> None:
        """Wait until /healthz answers (200 when ``healthy``, any answer otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.health_status()
            if status == 200 or (status is not None and not healthy):
                return
            if not self.running:
                break
            time.sleep(0.1)
        raise RuntimeError(f"instance {self.name} not ready on {self.port}:\n{self.tail()}")

    def health_status(self) -> int | None:
        """The HTTP status of /healthz, or None when nothing answers."""
        try:
            with urllib.request.urlopen(self.http_url + "/healthz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return None

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()


class Cluster:
    """One Redis and N instances sharing it. ``redis``: one that is already running and stays
    so (a RedisProcess, or the session's RedisClusterSet: anything with a `url`); without it
    the cluster starts and stops a RedisProcess of its own."""

    def __init__(self, n: int = 3, env: dict[str, str] | None = None, logdir: Path | None = None,
                 redis: RedisProcess | RedisClusterSet | None = None, config: bool = False) -> None:
        self.logdir = logdir or Path(tempfile.mkdtemp(prefix="quart-chat-test-"))
        self.own_redis = redis is None
        self.redis = redis or RedisProcess(self.logdir)
        self.instances = [ChatInstance(self.logdir, self.redis.url, f"i{k}-{os.getpid()}", env, config=config)
                          for k in range(n)]

    def start(self) -> Cluster:
        """Start Redis (when its own) and every instance; if one does not come up, stop all
        that was started (a fixture that fails in its set-up gets no teardown)."""
        try:
            if self.own_redis:
                self.redis.start()
            for inst in self.instances:
                inst.start(wait=False)
            for inst in self.instances:
                inst.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process this cluster started."""
        for inst in self.instances:
            inst.stop()
        if self.own_redis:
            self.redis.stop()

    def __getitem__(self, k: int) -> ChatInstance:
        return self.instances[k]

    def __len__(self) -> int:
        return len(self.instances)


class NginxProcess(Process):
    """nginx with the shipped deploy/nginx.conf, on a free loopback port in front of
    ``upstream_ports``; its pid, logs and temp files in a private directory under ``logdir``."""

    def __init__(self, logdir: Path, upstream_ports: list[int], port: int | None = None) -> None:
        super().__init__(f"nginx-{port or 'x'}", logdir)
        self.port = port or free_port()
        self.upstream_ports = list(upstream_ports)
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-", dir=logdir))

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self) -> NginxProcess:
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("no nginx found (apt-get install nginx)")
        conf = write_config(self.prefix, self.port, self.upstream_ports)
        self.launch(nginx_argv(binary, self.prefix, conf))
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until nginx answers HTTP on its port (whatever the instances behind it say)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                    s.sendall(b"HEAD /healthz HTTP/1.0\r\nHost: ready\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1."):
                        return
            except OSError:
                pass
            if not self.running:
                break
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not start on {self.port}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The end of nginx's error log and of its output."""
        try:
            errors = (self.prefix / ERROR_LOG).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            errors = []
        return "\n".join(errors) + "\n" + super().tail(lines)
