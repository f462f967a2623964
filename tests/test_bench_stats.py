"""The load tool's pure parts: the statistics (`quart_chat.bench.stats`) and the send-time
marker codec (`quart_chat.bench.marker`), without a server."""

from __future__ import annotations

import json

import pytest

from quart_chat.bench import marker, stats


# ------------------------------------------------------------------ percentiles and summaries
def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100: the q-th percentile is q itself
    for q in (1, 50, 90, 99, 100):
        assert stats.percentile(values, q) == q, q
    assert stats.percentile([7], 50) == 7 and stats.percentile([7], 99) == 7
    assert stats.percentile([1, 2], 50) == 1 and stats.percentile([1, 2], 51) == 2
    assert stats.percentile([], 50) is None, "no values: no percentile, not 0"
    assert stats.percentile([3, 5, 9], 0) == 3, "never below the first rank"
    # An exact rank is that rank, odd or even (Python's round() to even once made 1 % of 100 the 2nd).
    assert [stats.percentile(values, q) for q in (3, 7, 29, 57)] == [3, 7, 29, 57]


def test_latency_summary_in_milliseconds_whatever_the_order() -> None:
    latencies_us = [4000, 1000, 3000, 2000, 100_000]  # unsorted, as received
    assert stats.latency_summary(latencies_us) == {"p50_ms": 3.0, "p90_ms": 100.0, "p99_ms": 100.0,
                                                   "max_ms": 100.0}
    assert stats.latency_summary([1234]) == {"p50_ms": 1.23, "p90_ms": 1.23, "p99_ms": 1.23, "max_ms": 1.23}
    assert stats.latency_summary([]) == {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}


def test_rate_and_lag_summary() -> None:
    assert stats.rate(300, 2.0) == 150.0 and stats.rate(1, 3.0) == 0.3
    assert stats.rate(5, 0) == 0.0, "an empty window has no rate"
    assert stats.lag_summary([]) == {"gen_lag_p99_ms": None, "gen_lag_max_ms": None}
    assert stats.lag_summary([200, 1500, 80_000]) == {"gen_lag_p99_ms": 80.0, "gen_lag_max_ms": 80.0}


def test_series_has_one_point_per_interval_from_the_latencies_appended_in_it() -> None:
    t0 = 10_000_000
    latencies = [1000, 3000, 2000, 9000, 5000]
    samples = [(t0, 0, 0), (t0 + 500_000, 3, 30), (t0 + 1_000_000, 5, 50)]
    first, second = stats.series(samples, latencies, t0)
    assert first == {"t_s": 0.5, "deliveries_s": 60.0, "n": 3, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 3.0}
    assert second == {"t_s": 1.0, "deliveries_s": 40.0, "n": 2, "p50_ms": 5.0, "p90_ms": 9.0, "p99_ms": 9.0}


def test_series_cuts_trailing_empty_intervals_but_one_and_skips_empty_windows() -> None:
    t0 = 0
    samples = [(0, 0, 0), (100_000, 1, 1), (200_000, 1, 1), (300_000, 1, 1), (300_000, 1, 1), (400_000, 1, 1)]
    points = stats.series(samples, [1500], t0)
    assert [p["t_s"] for p in points] == [0.1, 0.2], "one empty interval kept after the last delivery"
    assert points[1] == {"t_s": 0.2, "deliveries_s": 0.0, "n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None}
    assert stats.series([(0, 0, 0)], [], 0) == [], "one sample is no interval"


def test_compare_to_stream_counts_each_kind_of_wrong() -> None:
    stream = [1, 2, 3, 4, 5]
    ok = {"lost": 0, "duplicates": 0, "ooo": 0, "extra": 0}
    assert stats.compare_to_stream([1, 2, 3, 4, 5], stream) == ok
    assert stats.compare_to_stream([1, 2, 4, 5], stream) == {**ok, "lost": 1}
    assert stats.compare_to_stream([1, 2, 3, 3, 4, 5], stream) == {**ok, "duplicates": 1}
    assert stats.compare_to_stream([1, 3, 2, 4, 5], stream) == {**ok, "ooo": 1}
    assert stats.compare_to_stream([1, 2, 3, 4, 5, 9], stream) == {**ok, "extra": 1}
    assert stats.compare_to_stream([], stream) == {**ok, "lost": 5}
    # A rejoin's history repeating what the client had: a duplicate, not out of order.
    assert stats.compare_to_stream([1, 2, 3, 2, 3, 4, 5], stream) == {**ok, "duplicates": 2}


# ------------------------------------------------------------------ the marker codec
def test_marker_round_trip_in_a_text_and_padding_to_the_text_size() -> None:
    pad = marker.padding(64)
    text = marker.encode(1_234_567_890_123, 7, 42, 99_999, pad)
    assert text.startswith(marker.PREFIX) and text.endswith(pad)
    assert 40 <= len(text) <= 64, "about --text-size characters, never more"
    assert marker.decode(text) == (1_234_567_890_123, 7, 42, 99_999)
    assert marker.decode(marker.encode(1, 2, 3, 4)) == (1, 2, 3, 4), "no padding at all"
    assert marker.padding(10) == "", "a size below the header pads nothing"
    assert marker.decode("history 3") is None and marker.decode("") is None, "a text without marker"


def test_marker_read_straight_out_of_a_server_message_frame() -> None:
    text = marker.encode(5_000_000, 3, 1, 17, marker.padding(64))
    # As quart_chat writes a message frame: type, then id, then the message's fields.
    raw = '{"type":"message",' + json.dumps({"id": "1796213337436-4", "room": "r", "user": "u", "text": text,
                                            "ts": 1796213337435}, separators=(",", ":"))[1:]
    assert marker.scan(raw) == ("1796213337436-4", (5_000_000, 3, 1, 17))
    assert marker.scan(raw.replace(text, "hello")) is None, "a message without marker: decode it as JSON"
    assert marker.scan('{"type":"joined","room":"r"}') is None
    other_order = json.dumps({"type": "message", "text": text, "id": "1-0"}, separators=(",", ":"))
    assert marker.scan(other_order) is None, "another field order: left to the JSON path"


def test_a_broken_marker_is_an_error_not_a_wrong_figure() -> None:
    with pytest.raises(ValueError):
        marker.decode("B|12|x|1|2|")
    with pytest.raises(ValueError):
        marker.decode("B|only|three")


def test_now_us_is_monotonic_microseconds() -> None:
    a, b = marker.now_us(), marker.now_us()
    assert 0 <= b - a < 1_000_000
