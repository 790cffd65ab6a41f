"""The gray-failure benchmark's own arithmetic: its percentiles decide the targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchload import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gray_failure.py"


def _bench():
    return load_bench("gray_failure")


def test_nearest_rank_percentiles() -> None:
    values = [float(i) for i in range(1, 2001)]  # 1..2000
    pct = _bench().percentile
    assert pct(values, 50) == 1000
    assert pct(values, 99) == 1980  # the 21st slowest
    assert pct(values, 99.9) == 1998  # the 3rd slowest, not the 2nd (float rounding)
    assert pct(values, 100) == 2000
    assert pct([5.0], 99.9) == 5.0


def test_sliding_window_time_to_react_and_recovery() -> None:
    bench = _bench()
    # 100 req/s for 10 s: slow (500 ms) until 3.0 s, then fast (2 ms); backend1 only after 6 s.
    results = [
        [i / 100, 0.5 if i < 300 else 0.002, 200, "backend1" if i >= 600 else "backend2"]
        for i in range(1000)
    ]
    # The window of the second before t is clean from t = 4.0 on.
    assert bench.time_to_react(results, 0.0, 10.0, 10.0) == pytest.approx(4.0, abs=0.01)
    results[800][1] = 0.5  # one slow request per 1 s window is under its p99 (the 2nd slowest)
    assert bench.time_to_react(results, 0.0, 10.0, 10.0) == pytest.approx(4.0, abs=0.01)
    results[850][1] = 0.5  # two are not: windows ending in (8.5, 9.0] hold both
    assert bench.time_to_react(results, 0.0, 10.0, 10.0) == pytest.approx(9.1, abs=0.01)
    assert bench.time_to_react(results[300:], 0.0, 10.0, 1000.0) == 0.0  # never over
    # Own: only windows where the slow backend's requests are over the limit count.
    noise = [[i / 100, 0.5 if i < 300 else 0.002, 200, "backend2"] for i in range(1000)]
    assert bench.time_to_react(noise, 0.0, 10.0, 10.0) == pytest.approx(4.0, abs=0.01)
    assert bench.time_to_react(noise, 0.0, 10.0, 10.0, own=True) == 0.0
    noise[800][1:] = [0.5, 200, "backend1"]
    noise[850][1] = 0.5
    assert bench.time_to_react(noise, 0.0, 10.0, 10.0, own=True) == pytest.approx(9.1, abs=0.01)
    results[990][1] = 0.5
    results[995][1] = 0.5
    assert bench.time_to_react(results, 0.0, 10.0, 10.0) is None  # still over at the end
    rec = bench.recovery(results, 5.0, 10.0, 4, 10.0)
    assert rec["max_window_p99_ms"] == 500
    assert rec["healed_over_limit"] == 4 and rec["healed_over_share"] == 4 / 400  # 800..995
    assert rec["others_over_share"] == 0
    # Healed at 5 s, an equal share (every 4th request) from 8 s: the 5 s window before t
    # holds 80 % of an equal share from t = 12 s on.
    results = [[i / 100, 0.002, 200, "backend1" if i >= 800 and i % 4 == 0 else "b2"]
               for i in range(2000)]  # fmt: skip
    rec = bench.recovery(results, 5.0, 20.0, 4, 10.0)
    assert rec["share_back_s"] == pytest.approx(7.0, abs=0.11)
    assert bench.recovery(results[:1100], 5.0, 11.0, 4, 10.0)["share_back_s"] is None


@pytest.mark.slow
def test_quick_run_smoke(tmp_path: Path) -> None:
    """The bench's ``--quick`` form end to end: the lab, a hard failure, the report."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    out = tmp_path / "gray.json"
    cmd = [sys.executable, str(BENCH), "--quick", "--failures", "healthy,hard"]
    cmd += ["--configs", "a,d", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time to react" in proc.stdout and "p99.9" in proc.stdout
    runs = {(r["failure"], r["config"]): r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {("healthy", "d"), ("hard", "a"), ("hard", "d")}
    assert runs[("hard", "a")]["measured"]["p99_ms"] >= 850  # the failure was injected
    assert runs[("hard", "a")]["react_s"] is None  # round-robin never reacts
    assert "recovery" in runs[("hard", "d")]
    assert all(r["measured"]["errors"] == 0 for r in runs.values())
