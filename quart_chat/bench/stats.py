"""The load tool's arithmetic: percentiles, latency summaries, per-interval series, and a
client's messages checked against its room's stream. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (the smallest value with at least q %
    of them at or below it), in the values' unit; None when empty."""
    if not sorted_values:
        return None
    n = len(sorted_values)
    k = min(n - 1, max(0, math.ceil(q * n / 100.0) - 1))
    return sorted_values[k]


def _ms(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v / 1000.0, digits)


def latency_summary(latencies_us: Sequence[int]) -> dict[str, float | None]:
    """p50/p90/p99/max of latencies in µs, as milliseconds (None when there are none)."""
    values = sorted(latencies_us)
    return {"p50_ms": _ms(percentile(values, 50)), "p90_ms": _ms(percentile(values, 90)),
            "p99_ms": _ms(percentile(values, 99)), "max_ms": _ms(values[-1] if values else None)}


def rate(count: float, seconds: float, digits: int = 1) -> float:
    """``count`` per second over ``seconds`` (0 for an empty window)."""
    return round(count / seconds, digits) if seconds > 0 else 0.0


def lag_summary(lags_us: Sequence[int]) -> dict[str, float | None]:
    """An event loop's lateness: p99 and max in ms, to 0.1 ms."""
    lags = sorted(lags_us)
    return {"gen_lag_p99_ms": round((percentile(lags, 99) or 0) / 1000, 1) if lags else None,
            "gen_lag_max_ms": round(lags[-1] / 1000, 1) if lags else None}


def series(samples: Sequence[tuple[int, int, int]], latencies: Sequence[int], t0_us: int) -> list[dict[str, Any]]:
    """One point per interval between two samples ``(time µs, latencies so far, received so
    far)``: ``t_s`` (its end, seconds after ``t0_us``), ``deliveries_s``, ``n`` and p50/p90/p99
    in ms (None when nothing arrived) of the latencies appended in that interval. Trailing
    empty intervals are cut (one is kept)."""
    points: list[dict[str, Any]] = []
    for (ta, ia, ra), (tb, ib, rb) in pairwise(samples):
        dt = (tb - ta) / 1e6
        if dt <= 0:
            continue
        values = sorted(latencies[ia:ib])
        point: dict[str, Any] = {"t_s": round((tb - t0_us) / 1e6, 3), "deliveries_s": round((rb - ra) / dt, 1),
                                 "n": len(values)}
        for q in (50, 90, 99):
            point[f"p{q}_ms"] = _ms(percentile(values, q), 3)
        points.append(point)
    while len(points) > 1 and points[-1]["deliveries_s"] == 0 and points[-2]["deliveries_s"] == 0:
        points.pop()
    return points


def compare_to_stream(got: Sequence[int], want: Sequence[int]) -> dict[str, int]:
    """What one client got against its room's stream (both as message seqs, in order).

    ``lost``: in the stream, never received; ``duplicates``: received more than once;
    ``ooo``: first receptions that came after a message later in the stream; ``extra``:
    received, not in the stream.
    """
    if list(got) == list(want):
        return {"lost": 0, "duplicates": 0, "ooo": 0, "extra": 0}
    have, wanted = set(got), set(want)
    pos = {v: i for i, v in enumerate(want)}
    seen: set[int] = set()
    ooo, last = 0, -1
    for v in got:
        if v in seen or v not in pos:
            continue
        seen.add(v)
        if pos[v] < last:
            ooo += 1
        last = max(last, pos[v])
    return {"lost": len(wanted - have), "duplicates": len(got) - len(have), "ooo": ooo,
            "extra": len(have - wanted)}
