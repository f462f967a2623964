"""What an operator watches: counters kept as plain numbers, turned into Prometheus metrics
only when ``/metrics`` is scraped (docs/observability.md).

The hot path only ever does ``stats.x += n`` or a bisect into a bucket list: no locks, no
label lookups, no prometheus_client objects per message. `ChatCollector` reads the numbers
at scrape time.

Hypercorn workers (``-w N``) are separate processes behind one port: a scrape reaches one
of them. So that the numbers are the instance's, each worker writes its snapshot every
`SHARE_EVERY` seconds to a folder named after the Hypercorn parent, and the worker that
answers adds up its own live numbers and its siblings' latest snapshots (counters and
histograms summed, ``redis_up`` the lowest). With one worker (the default) nothing is
written and every number is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "quart_chat_"
# Seconds; delivery lag and Redis latencies of a healthy instance sit in the first few.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHARE_EVERY = 2.0


class Histogram:
    """Bucket counts and a sum, for `BUCKETS`; ``observe`` is a bisect and two additions."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> list[float]:
        """Bucket counts then the sum, for sharing between workers."""
        return [*self.counts, self.total]


class Stats:
    """One process's counters; bumped where things happen, read at scrape time."""

    __slots__ = ("sent", "duplicates", "delivered", "catchup", "errors", "closes", "delivery_lag", "join_seconds",
                 "append_seconds", "changes", "changes_refused")

    def __init__(self) -> None:
        self.sent = 0  # messages stored for this instance's clients
        self.duplicates = 0  # resends answered with the first id (G8)
        self.delivered = 0  # message frames queued for clients
        self.catchup = 0  # of those, from a catch-up read of the streams (G5)
        self.errors: Counter[str] = Counter()  # error frames by code
        self.changes: Counter[str] = Counter()  # edits, deletes and reactions stored, by kind
        self.changes_refused: Counter[str] = Counter()  # and refused, by error code
        self.closes: Counter[int] = Counter()  # connections closed by the server, by close code
        self.delivery_lag = Histogram()
        self.join_seconds = Histogram()
        self.append_seconds = Histogram()


def _metrics(values: dict[str, Any]) -> Iterator[Metric]:
    """Metric families from one (possibly summed) snapshot."""
    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + name, doc, value=value)

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, doc, value=value)

    def histogram(name: str, doc: str, snap: list[float]) -> HistogramMetricFamily:
        counts, total = snap[:-1], snap[-1]
        running, buckets = 0.0, []
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], counts):
            running += n
            buckets.append((bound, running))
        return HistogramMetricFamily(PREFIX + name, doc, buckets=buckets, sum_value=total)

    def labelled(name: str, doc: str, label: str, table: dict[str, float]) -> CounterMetricFamily:
        family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
        for key, n in sorted(table.items()):
            family.add_metric([key], n)
        return family

    yield gauge("connections", "Open WebSocket connections.", values["connections"])
    yield gauge("rooms_local", "Rooms with at least one member on this instance.", values["rooms_local"])
    yield counter("messages_sent", "Messages this instance stored for its clients.", values["sent"])
    yield counter("messages_duplicate", "Resent messages answered with the first id, not stored again (G8).",
                  values["duplicates"])
    yield counter("messages_delivered", "Message frames this instance queued for its clients.", values["delivered"])
    yield histogram("delivery_lag_seconds", "From a message's ts to this instance's fan-out of it.",
                    values["delivery_lag"])
    yield counter("subscriber_reconnects", "Times the subscriber subscribed again after its link broke.",
                  values["reconnects"])
    yield counter("janitor_passes", "Whole passes of the janitor (dead nodes swept, failed leaves retried, "
                  "idle rooms removed), every 7.5 to 12.5 s.", values.get("janitor_passes", 0))
    yield counter("catchup_messages", "Messages delivered from the streams by catch-up (G5).", values["catchup"])
    yield counter("slow_consumer_drops", "Connections closed with 1013 (a client that did not read).",
                  values["closes"].get("1013", 0))
    yield labelled("errors", "Error frames sent, by code.", "code", values["errors"])
    yield labelled("changes_stored", "Edits, deletes and reactions this instance stored for its clients, by kind.",
                   "kind", values.get("changes", {}))
    yield labelled("changes_refused", "Edits, deletes and reactions refused, by error code.", "reason",
                   values.get("changes_refused", {}))
    yield labelled("closes", "Connections the server closed, by WebSocket close code.", "close_code",
                   values["closes"])
    yield labelled("refused_handshakes", "WebSocket handshakes refused before the upgrade, by reason.", "reason",
                   values["refused"])
    yield gauge("redis_up", "1 when Redis answers and the subscriber is live, else 0.", values["redis_up"])
    yield gauge("subscriber_up", "1 while the pub/sub link is subscribed and heard from, else 0.",
                values["subscriber_up"])
    yield histogram("join_seconds", "Time to answer a join (Redis script and reply).", values["join_seconds"])
    yield histogram("redis_append_seconds", "Time of the append script (and WAIT) for one message.",
                    values["append_seconds"])
    yield gauge("outbox_frames", "Frames queued for clients and not yet written, all connections.",
                values["outbox_frames"])
    yield gauge("outbox_frames_max", "The most frames queued for one connection.", values["outbox_max"])
    yield counter("fast_path_fallbacks", "Connections that fell back to the portable outbound path.",
                  values["fallbacks"])
    yield gauge("workers", "Hypercorn worker processes whose numbers are included.", values["workers"])
    if "archive_up" in values:  # docs/archive.md
        yield gauge("archive_up", "1 while the archiver writes to PostgreSQL without errors, else 0.",
                    values["archive_up"])
        yield gauge("archive_lag_seconds", "Age of the oldest entry the archiver's last pass found waiting.",
                    values["archive_lag"])
        yield gauge("archive_entries_behind", "Entries the archiver's last pass found waiting.",
                    values["archive_behind"])
        yield counter("archive_rows_written", "Stream entries written to the archive.", values["archive_written"])
        yield counter("archive_errors", "Archiver passes (or connection attempts) that failed.",
                      values["archive_errors"])
        yield counter("archive_gaps", "Rooms found to have lost entries the archive never got.",
                      values["archive_gaps"])


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up workers' snapshots: numbers and histogram buckets summed, tables per key,
    ``redis_up`` the lowest (the instance is only as healthy as its worst worker)."""
    out: dict[str, Any] = {}
    for snap in snapshots:
        for key, value in snap.items():
            if key in ("redis_up", "subscriber_up", "archive_up"):
                out[key] = min(out.get(key, 1), value)
            elif key in ("outbox_max", "archive_lag"):
                out[key] = max(out.get(key, 0), value)
            elif isinstance(value, dict):
                table = out.setdefault(key, {})
                for k, n in value.items():
                    table[k] = table.get(k, 0) + n
            elif isinstance(value, list):
                acc = out.setdefault(key, [0.0] * len(value))
                out[key] = [a + b for a, b in zip(acc, value)]
            else:
                out[key] = out.get(key, 0) + value
    return out


class ChatCollector(Collector):
    """Reads one application's numbers (and its sibling workers') when /metrics is scraped."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], share_dir: Path | None) -> None:
        self.snapshot = snapshot
        self.share_dir = share_dir

    def collect(self) -> Iterator[Metric]:
        """The metric families, summed over this instance's workers."""
        snaps = [self.snapshot()]
        if self.share_dir is not None:
            snaps += siblings(self.share_dir)
        yield from _metrics(merge(snaps))


def share_dir() -> Path | None:
    """Where this Hypercorn worker and its siblings share snapshots; None outside a worker."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    base, prefix = Path(tempfile.gettempdir()), f"quart_chat-metrics-{os.getuid()}-"
    sweep_stale(base, prefix)
    path = base / f"{prefix}{parent.pid}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def sweep_stale(base: Path, prefix: str) -> None:
    """Remove the share folders of Hypercorn parents that are gone: one killed with SIGKILL
    never removed its own, and a crash-looping service would leave one per crash."""
    for folder in base.glob(prefix + "*"):
        pid = folder.name[len(prefix):]
        if not pid.isdigit() or _alive(int(pid)) or not folder.is_dir():
            continue
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                entry.unlink()
            folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def siblings(folder: Path) -> list[dict[str, Any]]:
    """The latest snapshots of the other live workers sharing ``folder``."""
    snaps = []
    for path in folder.glob("*.json"):
        pid = int(path.stem) if path.stem.isdigit() else -1
        if pid == os.getpid():
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)  # a worker that died: its numbers go with it
            continue
        try:
            snaps.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return snaps


async def share_forever(folder: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
    """Write this worker's snapshot for its siblings every `SHARE_EVERY` seconds, until cancelled."""
    path = folder / f"{os.getpid()}.json"
    tmp = folder / f".{os.getpid()}.tmp"
    try:
        while True:
            tmp.write_text(json.dumps(snapshot()))
            tmp.replace(path)  # atomic: a reader never sees half a file
            await asyncio.sleep(SHARE_EVERY)
    finally:
        path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # noqa: ASYNC240 - once, at stop; the last worker out removes the folder


def now() -> float:
    """A monotonic clock for latencies."""
    return time.perf_counter()
