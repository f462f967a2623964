"""The load tool end to end: `quart-chat bench --spawn 2` on a tiny fanout, checked through its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_command() -> list[str]:
    """`quart-chat bench` when the console script is installed next to this Python, else `-m`."""
    script = Path(sys.executable).parent / "quart-chat"
    if script.exists():
        return [str(script), "bench"]
    return [sys.executable, "-m", "quart_chat.bench"]


@pytest.mark.timeout(60)
def test_bench_spawn_fanout_reports_no_loss(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = bench_command() + ["--spawn", "2", "--scenario", "fanout", "--clients", "6", "--senders", "2",
                              "--rate", "20", "--duration", "2", "--drain-idle", "2", "--max-time", "40",
                              "--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["spawned"] == 2 and not result["meta"]["instances_died"]
    (row,) = result["results"]
    assert row["scenario"] == "fanout" and "error" not in row
    assert row["lost"] == 0 and row["errors"] == 0 and row["closes"] == 0 and row["ooo"] == 0
    assert row["received"] == row["expected"] > 0 and row["deliveries_s"] > 0
    assert row["p99_ms"] is not None and row["p99_ms"] >= row["p50_ms"] > 0
    assert "| fanout" in proc.stdout  # the table
