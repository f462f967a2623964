"""The results as text: one Markdown table per scenario."""

from __future__ import annotations

from typing import Any

COLUMNS = {
    "fanout": [("clients", "clients"), ("offered msg/s", "offered_msg_s"), ("deliv/s", "deliveries_s"),
               ("p50 ms", "p50_ms"), ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"),
               ("lost", "lost"), ("errors", "errors"), ("cpu srv%", "cpu_servers_pct"), ("cpu gen%", "cpu_gen_pct")],
    "capacity": [("clients", "clients"), ("msg/s held", "capacity_msg_s"), ("deliv/s", "capacity_deliveries_s"),
                 ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("failed at msg/s", "failed_at_msg_s"),
                 ("cpu srv%", "cpu_servers_pct"), ("cpu gen%", "cpu_gen_pct")],
    "rooms": [("clients", "clients"), ("offered msg/s", "offered_msg_s"), ("deliv/s", "deliveries_s"),
              ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"), ("lost", "lost"),
              ("foreign", "foreign"), ("errors", "errors"), ("cpu srv%", "cpu_servers_pct")],
    "idle": [("clients", "clients"), ("KB/conn", "kb_per_conn"), ("RSS before KB", "rss_before_kb"),
             ("RSS after KB", "rss_after_kb"), ("connects/s", "connects_s")],
    "joinstorm": [("clients", "clients"), ("history", "history"), ("joined", "joined"), ("joins/s", "joins_s"),
                  ("p50 ms", "p50_join_ms"), ("p99 ms", "p99_join_ms"), ("max ms", "max_join_ms"),
                  ("errors", "errors")],
    "storm": [("clients", "clients"), ("instances", "instances"), ("on killed", "affected"),
              ("recovered", "recovered"), ("all recovered s", "recovery_s"), ("join p50 ms", "p50_join_ms"),
              ("join p99 ms", "p99_join_ms"), ("attempts", "attempts"), ("others p99 ms", "bystander_p99_ms"),
              ("lost", "lost"), ("dups", "duplicates"), ("ooo", "ooo"), ("errors", "errors"),
              ("cpu srv%", "cpu_servers_pct"), ("cpu gen%", "cpu_gen_pct"), ("gen lag ms", "gen_lag_max_ms")],
}


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render_tables(rows: list[dict[str, Any]]) -> str:
    """One Markdown table per scenario."""
    out = []
    for scenario, cols in COLUMNS.items():
        body = [r for r in rows if r.get("scenario") == scenario]
        if not body:
            continue
        head = ["scenario"] + [c for c, _ in cols]
        cells = [[scenario + (" ERROR: " + r["error"][:80] if "error" in r else "")]
                 + ["" if "error" in r else fmt(r.get(k)) for _, k in cols] for r in body]
        widths = [max(len(str(x[i])) for x in [head] + cells) for i in range(len(head))]
        line = lambda row, widths=widths: "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |"
        out += [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells), ""]
    return "\n".join(out)
