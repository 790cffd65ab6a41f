"""Smoke run of bench/dataplane_maglev.py --quick: builds, then 20 services
built and loaded into real maps on a private bpffs (needs root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dataplane_maglev.py"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf(2), bpffs)")
def test_quick_run():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert re.search(r"^compiled build +100 backends", out, re.M), out
    assert re.search(r"^python +build +100 backends", out, re.M), out
    times = dict(re.findall(r"^20 services x 65537 slots, (.+?) +([\d.]+) s$", out, re.M))
    assert set(times) == {
        "first apply (load + every table)",
        "re-apply, nothing changed",
        "re-apply, one service changed",
        "of which: loading the spec",
    }, out
    assert float(times["first apply (load + every table)"]) < 60  # generous: CI is busy
