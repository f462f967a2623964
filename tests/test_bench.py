"""The load tool end to end: `quart-chat bench --spawn 2` on a tiny fanout, checked through its JSON."""

from __future__ import annotations

import json
import os
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


def test_help_shows_the_defaults() -> None:
    proc = subprocess.run(bench_command() + ["--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split("show this help message and exit", 1)[1].split())  # the options, unwrapped
    for option, default in (("--clients CLIENTS", "300"), ("--rate RATE", "30"), ("--max-time MAX_TIME", "900"),
                            ("--sample-interval SAMPLE_INTERVAL", "0.5"), ("--spawn N", "0"),
                            ("--storm-backoff STORM_BACKOFF", "500"), ("--drain-max DRAIN_MAX", "20")):
        shown = text.split(option + " ", 1)[1].split(" --", 1)[0]
        assert f"(default: {default})" in shown, (option, shown)
    # Nothing where there is no default to show.
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text


def ours(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith(("quart-chat", "quart_chat")))


@pytest.mark.timeout(60)
def test_log_folder_removed_after_a_good_run_kept_with_keep_logs(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    argv = bench_command() + ["--spawn", "1", "--scenario", "fanout", "--clients", "2", "--rate", "10",
                              "--duration", "1", "--drain-idle", "1", "--max-time", "20"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=25)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "logs in " + str(tmpdir) in proc.stderr  # it did write there, while it ran
    assert ours(tmpdir) == [], proc.stderr  # the instances' own temp folders (metrics) too
    assert "kept in" not in proc.stderr

    proc = subprocess.run(argv + ["--keep-logs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=25)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (kept,) = ours(tmpdir)
    assert f"logs of the spawned processes kept in {tmpdir / kept}" in proc.stderr
    assert {"redis.log", "instance-0.log"} <= {p.name for p in (tmpdir / kept).iterdir()}


# ------------------------------------------------------------------ --plot
def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, checked as one (PIL when there, else signature and IHDR)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    try:
        from PIL import Image
    except ImportError:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    with Image.open(path) as img:
        img.verify()
        return img.size


def _series(rate: float, p99: float) -> list[dict]:
    return [{"t_s": 0.5 * k, "deliveries_s": rate * 100, "n": 50, "p50_ms": p99 / 4, "p90_ms": p99 / 2,
             "p99_ms": p99 * (1 + k / 10)} for k in range(1, 9)]


@pytest.mark.timeout(60)
def test_plot_draws_every_scenario_with_the_failed_step(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from quart_chat.bench_plot import plot

    steps = [{"offered_rate": r, "offered_msg_s": r, "held": r < 1000, "duration_s": 4.0,
              "fail_reason": None if r < 1000 else "p99 310 ms > 100 ms", "series": _series(r, p)}
             for r, p in ((100, 2.0), (300, 4.0), (900, 20.0), (1350, 310.0))]
    storm_series = [{"t_s": -1 + 0.1 * k, "deliveries_s": 6000, "n": 600, "p50_ms": 2, "p90_ms": 5,
                     "p99_ms": 900 if 10 <= k < 20 else 9} for k in range(40)]
    result = {"meta": {"date": "2026-01-01T00:00:00+00:00", "urls": ["a", "b", "c"], "cpus": 2, "python": "3.11"},
              "results": [
                  {"scenario": "fanout", "clients": 300, "offered_msg_s": 30.0, "p50_ms": 3, "p99_ms": 5, "lost": 0,
                   "duration_s": 4.0, "series": _series(30, 5)},
                  {"scenario": "capacity", "clients": 300, "senders": 3, "capacity_msg_s": 900.0,
                   "capacity_deliveries_s": 270000.0, "p99_ms": 20.0, "failed_at_msg_s": 1350.0,
                   "fail_reason": "p99 310 ms > 100 ms", "p99_limit_ms": 100, "steps": steps},
                  {"scenario": "idle", "clients": 3000, "kb_per_conn": 29.6},
                  {"scenario": "storm", "clients": 3000, "instances": 3, "rate_msg_s": 60, "backoff_ms": 500,
                   "affected": 1000, "recovered": 1000, "recovery_s": 1.8, "p50_join_ms": 300, "p99_join_ms": 900,
                   "lost": 0, "duplicates": 0, "senders_stop_s": 2.8, "series": storm_series,
                   "recover_times_s": [0.3 + 1.5 * k / 999 for k in range(1000)],
                   "rejoins": [[0.3 + 1.5 * k / 999, 50 + k] for k in range(1000)]}]}
    out = tmp_path / "all.png"
    assert plot(result, out)
    width, height = png_size(out)
    assert 1200 <= width <= 2400 and 900 <= height <= 1800  # three rows of panels (idle has none)
    assert 20_000 < out.stat().st_size < 600_000
    # Nothing timed: nothing drawn, no file.
    assert not plot({"meta": {}, "results": [{"scenario": "idle", "clients": 1}]}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_plot_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from quart_chat import bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    args = bench.build_parser().parse_args(["--spawn", "1", "--plot", "x.png"])
    with pytest.raises(SystemExit, match=r"pip install 'quart_chat\[plot\]'"):
        bench.check_args(args)


@pytest.mark.timeout(60)
def test_bench_capacity_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "bench.json", tmp_path / "capacity.png"
    argv = bench_command() + ["--spawn", "2", "--scenario", "capacity", "--clients", "10", "--start-rate", "20",
                              "--factor", "2", "--step-duration", "1.5", "--max-steps", "3", "--refine", "0",
                              "--drain-idle", "1", "--max-time", "40", "--json", str(out), "--plot", str(png)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["scenario"] == "capacity" and len(row["steps"]) == 3
    for step in row["steps"]:  # each step sampled over time: ~3 intervals of 0.5 s, plus the drain
        assert len(step["series"]) >= 3 and all(p["deliveries_s"] >= 0 for p in step["series"])
        assert any(p["p99_ms"] for p in step["series"])
    width, height = png_size(png)
    assert 1000 <= width <= 2400 and 250 <= height <= 800
    assert 10_000 < png.stat().st_size < 400_000


# ------------------------------------------------------------------ storm
@pytest.mark.timeout(90)
def test_bench_storm_recovers_every_client_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    argv = bench_command() + ["--spawn", "3", "--scenario", "storm", "--storm-clients", "150", "--storm-rooms", "10",
                              "--storm-rate", "100", "--storm-before", "1.5", "--storm-timeout", "20",
                              "--drain-idle", "2", "--max-time", "60", "--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=75)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["instances_killed"] == ["instance-2"] and not result["meta"]["instances_died"]
    (row,) = result["results"]
    assert row["scenario"] == "storm" and "error" not in row, row.get("error")
    assert row["clients"] == 150 and row["instances"] == 3 and row["affected"] == 50
    assert row["recovered"] == row["affected"] and row["unrecovered"] == 0
    assert row["recovery_s"] is not None and 0.2 < row["recovery_s"] < 20  # the first retry waits 250-500 ms
    assert row["p99_join_ms"] >= row["p50_join_ms"] > 0
    assert row["rejoin_history_max"] > 0  # the rejoins' `since` really had messages to return
    assert row["stored"] == row["sent"] > 0 and row["received"] == row["expected"] > 0
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["ooo"] == 0 and row["extra"] == 0
    assert row["errors"] == 0 and row["closes"] == 0
    assert row["bystander_p99_ms"] is not None and row["series"] and row["bystander_series"]
    assert sum(v["rejoined"] for v in row["by_instance"].values()) == 50 and len(row["by_instance"]) == 2
    assert "| storm" in proc.stdout
