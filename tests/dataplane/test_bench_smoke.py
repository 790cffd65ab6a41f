"""Smoke runs of the data-plane benchmarks (``--quick`` and tiny repeat counts):
they run to the end and report what they measure, with generous checks only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _need_root_and_tools() -> None:
    if os.geteuid() != 0 or not shutil.which("clang") or not shutil.which("bpftool"):
        pytest.skip("needs root, clang and bpftool")


def test_testrun_bench_reports_every_path():
    _need_root_and_tools()
    out = subprocess.run(
        [sys.executable, str(REPO / "bench/dataplane_testrun.py"), "--repeat", "1000",
         "--rounds", "1", "--backends", "10"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    for path in ("tcp4 ipip (undo's cost removed)", "tcp6 ip6ip6 (undo's cost removed)",
                 "tcp4 SYN + insert", "tcp6 SYN + insert"):  # fmt: skip
        assert path in out, out


def test_flow_survival_bench_quick(tmp_path):
    """20 connections through the namespace lab: a backend added, one drained
    and removed, one added while lb1 dies (previous-table rule on). The flow
    table must keep every connection (a stall counts only past 1 s)."""
    _need_root_and_tools()
    results = tmp_path / "flows.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench/dataplane_flows.py"), "--quick", "--json",
         str(results)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    by_case = {r["case"]: r for r in json.loads(results.read_text())}
    assert set(by_case) == {"add", "drain", "add+lb-dies"}
    for r in by_case.values():
        assert r["connections"] >= 20 and r["answers"] > 20 * 5, r
        assert r["broken"] == 0, r
    # The drained backend's sessions ended, `dataplane drain` saw it idle on
    # both nodes, and no replacement connection reached it.
    drain = by_case["drain"]
    assert drain["ended_by_client"] > 0 and drain["new_on_drained"] == 0, drain
    assert all("drained after" in out for out in drain["drain"].values()), drain
    # lb1's flows reached lb2 without an entry and went by the previous table.
    assert by_case["add+lb-dies"]["lb2_flow_counters"]["previous_table"] > 0
