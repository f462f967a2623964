"""``quart-chat bench --plot FILE.png``: what the load tool measured, as a picture.

One row of panels per scenario that has timed steps (fanout, capacity, rooms, storm), drawn
from the same result the tool writes with ``--json`` (so a saved run can be drawn again:
``python -m quart_chat.bench_plot results.json out.png``):

- fanout, capacity, rooms: p50, p90 and p99 latency and deliveries per second over the
  time into each step, one line per step; a failed capacity step is drawn red and thick and
  named in the legend with why it failed, and the p99 panel shows the limit;
- storm: from the SIGKILL on (a red line at 0 s): the share of the killed instance's clients
  recovered, every rejoin's latency, the message delay percentiles and deliveries per second.

matplotlib (Agg backend, nothing needs a display) is an optional dependency:
``pip install 'quart_chat[plot]'`` (the ``test`` extra has it too).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

STEP_SCENARIOS = ("fanout", "capacity", "rooms")
FAILED = "#d62728"
KILL = "#d62728"
DONE = "#2ca02c"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend, or PlotUnavailable saying how to get it."""
    try:
        import matplotlib
    except ImportError as err:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'quart_chat[plot]' "
            "(or pip install 'matplotlib>=3.8') into the environment quart-chat runs from") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------ helpers
def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _fmt_rate(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _si(v: float, _pos: Any = None) -> str:
    """Axis label of a count: 950, 12k, 1.5M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _latency_axis(axes: list[Any], values: list[float], ticker: Any) -> None:
    """A log scale when the values span more than ~1.5 decades, plain numbers as tick labels."""
    finite = [v for v in values if v is not None and not math.isnan(v) and v > 0]
    if finite and max(finite) / min(finite) > 30:
        for ax in axes:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        for ax in axes:
            ax.set_ylim(bottom=0)


def _series(points: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    return [p["t_s"] for p in points], [_num(p.get(key)) for p in points]


def _steps_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps of a row to draw, each with ``label``, ``failed`` and ``series``."""
    scenario = row["scenario"]
    if scenario == "capacity":
        steps = []
        for s in sorted(row.get("steps") or [], key=lambda s: s.get("offered_rate") or 0):
            if not s.get("series"):
                continue
            label = f"{_fmt_rate(s.get('offered_rate'))} msg/s"
            if not s.get("held"):
                label += f"  FAILED: {s.get('fail_reason') or 'failed'}"
            steps.append({"label": label, "failed": not s.get("held"), "series": s["series"],
                          "duration_s": s.get("duration_s")})
        return steps
    if row.get("series"):
        return [{"label": f"{_fmt_rate(row.get('offered_msg_s'))} msg/s", "failed": False, "series": row["series"],
                 "duration_s": row.get("duration_s")}]
    return []


def _row_title(row: dict[str, Any]) -> str:
    scenario = row["scenario"]
    clients = f"{row.get('clients', 0):,} clients"
    if scenario == "capacity":
        held = row.get("capacity_msg_s")
        title = f"capacity, {clients}, {row.get('senders')} senders: "
        title += (f"held {_fmt_rate(held)} msg/s ({_fmt_rate(row.get('capacity_deliveries_s'))} deliveries/s, "
                  f"p99 {row.get('p99_ms')} ms)") if held else "no step held"
        if row.get("failed_at_msg_s") is not None:
            title += f"; failed at {_fmt_rate(row['failed_at_msg_s'])} msg/s ({row.get('fail_reason')})"
        return title
    if scenario == "rooms":
        return (f"rooms, {row.get('rooms')} rooms x {row.get('clients', 0) // max(1, row.get('rooms') or 1)} "
                f"clients: p99 {row.get('p99_ms')} ms, lost {row.get('lost')}")
    return (f"fanout, {clients}, {_fmt_rate(row.get('offered_msg_s'))} msg/s: p50 {row.get('p50_ms')} ms, "
            f"p99 {row.get('p99_ms')} ms, lost {row.get('lost')}")


# ------------------------------------------------------------------ rows
def _draw_steps(fig: Any, axes: list[Any], row: dict[str, Any], plt: Any, ticker: Any) -> None:
    steps = _steps_of(row)
    held = [s for s in steps if not s["failed"]]
    cmap = plt.get_cmap("viridis")
    colours = {id(s): cmap(0.1 + 0.75 * k / max(1, len(held) - 1)) for k, s in enumerate(held)}
    failed_styles = iter(["-", "--", ":", "-."] * len(steps))
    latencies: list[float] = []
    for s in reversed(steps):  # the highest rate first: the first failed step gets the solid red line
        style = ({"color": FAILED, "lw": 2.6, "marker": "x", "ms": 5, "zorder": 5, "ls": next(failed_styles)}
                 if s["failed"] else {"color": colours[id(s)], "lw": 1.4, "marker": ".", "ms": 3})
        for ax, key in zip(axes, ("p50_ms", "p90_ms", "p99_ms", "deliveries_s")):
            t, v = _series(s["series"], key)
            ax.plot(t, v, label=s["label"] if key == "deliveries_s" else None, **style)
            if key != "deliveries_s":
                latencies += v
    limit = row.get("p99_limit_ms")
    if row["scenario"] == "capacity" and limit:
        axes[2].axhline(limit, color=FAILED, ls="--", lw=1, label=f"p99 limit {limit:g} ms")
        axes[2].legend(loc="best", fontsize=8, framealpha=0.8)
        latencies.append(limit)
    _latency_axis(axes[:3], latencies, ticker)
    for ax, name in zip(axes, ("p50 latency", "p90 latency", "p99 latency")):
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel("ms, send to receive (one scale for the three)")
    durations = {s.get("duration_s") for s in steps} - {None}
    if len(durations) == 1:  # past it the senders have stopped: what still arrives is the drain
        end = durations.pop()
        for ax in axes:
            ax.axvline(end, color="#888888", ls=":", lw=1)
        axes[3].annotate("senders stop", (end, 0.02), xycoords=("data", "axes fraction"), xytext=(-3, 0),
                         textcoords="offset points", ha="right", fontsize=8, color="#666666")
    axes[3].set_title("deliveries per second", fontsize=10)
    axes[3].set_ylabel("message frames received / s")
    axes[3].set_ylim(bottom=0)
    axes[3].yaxis.set_major_formatter(ticker.FuncFormatter(_si))
    for ax in axes:
        ax.set_xlabel("time into the step (s)")
    title = "step (offered rate)" if row["scenario"] == "capacity" else "step"
    axes[3].legend(title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title_fontsize=8,
                   frameon=False)


def _draw_storm(fig: Any, axes: list[Any], row: dict[str, Any], plt: Any, ticker: Any) -> None:
    affected = row.get("affected") or 0
    times = row.get("recover_times_s") or []
    series = row.get("series") or []
    t_min = min([p["t_s"] for p in series] + [0.0]) - 0.1
    t_max = max([p["t_s"] for p in series] + times + [1.0])
    ax = axes[0]
    if affected:
        xs = [t_min, 0.0] + [t for t in times for _ in (0, 1)]
        ys = [0.0, 0.0] + [100.0 * (k + d) / affected for k in range(len(times)) for d in (0, 1)]
        xs.append(t_max)
        ys.append(ys[-1])
        ax.plot(xs, ys, color="#1f77b4", lw=1.8)
    rec = row.get("recovery_s")
    label = (f"all {affected:,} recovered at {rec:.2f} s" if rec is not None
             else f"{row.get('recovered')}/{affected} recovered")
    if rec is not None:
        ax.axvline(rec, color=DONE, ls="--", lw=1.2, label=label)
    ax.set_title("the killed instance's clients recovered", fontsize=10)
    ax.set_ylabel("% rejoined and caught up")
    ax.set_ylim(0, 105)
    ax = axes[1]
    rejoins = row.get("rejoins") or []
    if rejoins:
        ax.scatter([r[0] for r in rejoins], [r[1] for r in rejoins], s=6, alpha=0.5, color="#9467bd",
                   label="one rejoin", linewidths=0)
    for key, ls in (("p50_join_ms", ":"), ("p99_join_ms", "--")):
        if row.get(key) is not None:
            ax.axhline(row[key], color="#555555", ls=ls, lw=1, label=f"{key[:3]} {row[key]:g} ms")
    _latency_axis([ax], [r[1] for r in rejoins], ticker)
    ax.set_title("rejoin latency, each at the time it completed", fontsize=10)
    ax.set_ylabel("ms, connect to joined")
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    ax = axes[2]
    latencies: list[float] = []
    for key, colour in (("p50_ms", "#1f77b4"), ("p90_ms", "#ff7f0e"), ("p99_ms", "#d62728")):
        t, v = _series(series, key)
        ax.plot(t, v, color=colour, lw=1.4, marker=".", ms=3, label=key[:3])
        latencies += v
    t, v = _series(row.get("bystander_series") or [], "p99_ms")
    if t:
        ax.plot(t, v, color="black", ls="--", lw=1.2, label="p99 of live messages to\nclients never disconnected")
        latencies += v
    _latency_axis([ax], latencies, ticker)
    ax.set_title("message delay, live and caught up", fontsize=10)
    ax.set_ylabel("ms, send to receive")
    ax.legend(loc="upper left", fontsize=7.5, framealpha=0.85)
    ax = axes[3]
    t, v = _series(series, "deliveries_s")
    ax.plot(t, v, color="#1f77b4", lw=1.4, marker=".", ms=3)
    ax.set_title("deliveries per second (history included)", fontsize=10)
    ax.set_ylabel("messages received / s")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_si))
    stop = row.get("senders_stop_s")
    for k, ax in enumerate(axes):
        ax.axvline(0, color=KILL, lw=1.6, label="SIGKILL" if k == 0 else None)
        if rec is not None and k:
            ax.axvline(rec, color=DONE, ls="--", lw=1.0)
        if stop is not None:
            ax.axvline(stop, color="#888888", ls=":", lw=1)
        ax.set_xlim(t_min, t_max + 0.1)
        ax.set_xlabel("seconds since the kill")
    # The recovery and the rejoins take a second or two of the whole run: zoom on them.
    end = max(times + [r[0] for r in rejoins] + [0.2])
    for ax in axes[:2]:
        ax.set_xlim(-0.08 * end, 1.15 * end)
        ax.set_xlabel("seconds since the kill (zoomed on the recovery)")
    if stop is not None:
        axes[3].annotate("senders stop", (stop, 0.02), xycoords=("data", "axes fraction"), xytext=(-3, 0),
                         textcoords="offset points", ha="right", fontsize=8, color="#666666")
    axes[0].legend(loc="lower right", fontsize=8, frameon=False)


def _storm_title(row: dict[str, Any]) -> str:
    rec = row.get("recovery_s")
    done = (f"all {row.get('affected', 0):,} recovered in {rec:.2f} s" if rec is not None
            else f"{row.get('recovered')} of {row.get('affected', 0):,} recovered")
    return (f"storm, {row.get('clients', 0):,} clients on {row.get('instances')} instances, "
            f"{_fmt_rate(row.get('rate_msg_s'))} msg/s flowing; one instance SIGKILLed: {done} "
            f"(reconnect backoff {row.get('backoff_ms'):g} ms); rejoin p50 {row.get('p50_join_ms')} / "
            f"p99 {row.get('p99_join_ms')} ms; lost {row.get('lost')}, duplicates {row.get('duplicates')}")


# ------------------------------------------------------------------ the figure
def plot(result: dict[str, Any], path: str | Path) -> bool:
    """Draw ``result`` (what ``--json`` writes) into the PNG ``path``; False when nothing to draw."""
    plt = require_matplotlib()
    from matplotlib import ticker

    rows = [r for r in result.get("results", []) if "error" not in r
            and ((r.get("scenario") in STEP_SCENARIOS and _steps_of(r)) or (r.get("scenario") == "storm"
                                                                            and r.get("series")))]
    if not rows:
        return False
    fig = plt.figure(figsize=(17, 0.6 + 3.9 * len(rows)), dpi=90, layout="constrained")
    subfigs = fig.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for sub, row in zip(subfigs, rows):
        axes = list(sub.subplots(1, 4))
        if row["scenario"] != "storm":  # p50, p90, p99 on one scale, so they compare at a glance
            axes[1].sharey(axes[0])
            axes[2].sharey(axes[0])
        for ax in axes:
            ax.grid(True, which="major", alpha=0.3)
            ax.tick_params(labelsize=8)
        if row["scenario"] == "storm":
            _draw_storm(sub, axes, row, plt, ticker)
            sub.suptitle(_storm_title(row), fontsize=11, x=0.01, ha="left")
        else:
            _draw_steps(sub, axes, row, plt, ticker)
            sub.suptitle(_row_title(row), fontsize=11, x=0.01, ha="left")
    meta = result.get("meta", {})
    fig.suptitle(f"quart-chat bench, {meta.get('date', '')}: {len(meta.get('urls') or [])} instance(s), "
                 f"{meta.get('cpus')} CPUs, Python {meta.get('python')}", fontsize=12, fontweight="bold")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m quart_chat.bench_plot RESULTS.json OUT.png``: draw a saved run again."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m quart_chat.bench_plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    try:
        drawn = plot(json.loads(Path(argv[0]).read_text()), argv[1])
    except PlotUnavailable as err:
        print(err, file=sys.stderr)
        return 1
    if not drawn:
        print("nothing to draw: no fanout, capacity, rooms or storm result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
