"""A real Redis Sentinel set-up on loopback: one primary, replicas, three sentinels.

Each is a `redis-server` process (sentinels run it with ``--sentinel``) in its own process
group, stopped by that group; nothing is stopped by name.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from quart_chat.embedded import redis_server_binary
from quart_chat.procs import HOST, free_port

from cluster import Process, RedisProcess

SERVICE = "mymaster"


class ReplicaProcess(RedisProcess):
    """A redis-server replicating ``primary_port``."""

    def __init__(self, logdir: Path, primary_port: int, password: str | None) -> None:
        super().__init__(logdir, password=password)
        self.primary_port = primary_port

    def start(self) -> ReplicaProcess:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--dir", str(self.datadir), "--replicaof", HOST, str(self.primary_port)]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        self.launch(argv)
        self.wait_ready()
        return self


class SentinelProcess(Process):
    """One sentinel watching ``primary_port`` as `SERVICE`, quick to call it down."""

    def __init__(self, logdir: Path, primary_port: int, password: str | None) -> None:
        self.port = free_port()
        super().__init__(f"sentinel-{self.port}", logdir)
        self.conf = logdir / f"sentinel-{self.port}.conf"
        lines = [f"port {self.port}", f"bind {HOST}", f"dir {logdir}",
                 f"sentinel monitor {SERVICE} {HOST} {primary_port} 2",
                 f"sentinel down-after-milliseconds {SERVICE} 1000",
                 f"sentinel failover-timeout {SERVICE} 4000",
                 f"sentinel parallel-syncs {SERVICE} 2"]
        if password:
            lines += [f"sentinel auth-pass {SERVICE} {password}", f"requirepass {password}"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> SentinelProcess:
        self.launch([redis_server_binary(), str(self.conf), "--sentinel"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sentinel did not start:\n{self.tail()}")


class SentinelSet:
    """A primary, ``replicas`` replicas and three sentinels; `url` is the app's REDIS_URL."""

    def __init__(self, logdir: Path, replicas: int = 2, password: str | None = "s3ntinel-pw") -> None:
        self.logdir = logdir
        self.password = password
        self.primary = RedisProcess(logdir, password=password)
        self.replicas = [ReplicaProcess(logdir, self.primary.port, password) for _ in range(replicas)]
        self.sentinels = [SentinelProcess(logdir, self.primary.port, password) for _ in range(3)]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/0/{SERVICE}"

    def start(self) -> SentinelSet:
        self.primary.start()
        for r in self.replicas:
            r.start()
        for s in self.sentinels:
            s.start()
        self.wait_replicas(len(self.replicas))
        return self

    def client_for(self, port: int):
        import redis

        return redis.Redis(host=HOST, port=port, password=self.password, decode_responses=True, socket_timeout=2)

    def wait_replicas(self, n: int, timeout: float = 20) -> None:
        """Wait until the primary has ``n`` replicas online and the sentinels know them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = self.client_for(self.primary.port)
                info = r.info("replication")
                r.close()
                s = self.client_for(self.sentinels[0].port)
                known = s.execute_command("SENTINEL", "REPLICAS", SERVICE)
                s.close()
                if info.get("connected_slaves", 0) >= n and len(known) >= n:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError("replicas did not come up")

    def current_primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers sees it."""
        for s in self.sentinels:
            try:
                c = self.client_for(s.port)
                host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                c.close()
                return int(port)
            except Exception:
                continue
        return None

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until the sentinels name a primary other than ``old_port`` that accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.current_primary_port()
            if port is not None and port != old_port:
                try:
                    c = self.client_for(port)
                    role = c.info("replication")["role"]
                    c.close()
                    if role == "master":
                        return port
                except Exception:
                    pass
            time.sleep(0.1)
        raise RuntimeError("no failover")

    def process_on(self, port: int) -> RedisProcess:
        for p in [self.primary, *self.replicas]:
            if p.port == port:
                return p
        raise KeyError(port)

    def close(self) -> None:
        for p in [*self.sentinels, *self.replicas, self.primary]:
            p.stop()
