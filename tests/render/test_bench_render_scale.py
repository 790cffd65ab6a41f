"""Smoke run of bench/render_scale.py: every stage, the CLI timings and the plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchload import load_bench
from tests.conftest import ROOT


@pytest.mark.slow  # ~6 s of CPU (checkers and three CLI runs), much longer on a busy machine
def test_render_scale_quick(tmp_path: Path) -> None:
    bench = load_bench("render_scale")
    bench.make_site(tmp_path / "site", 10)
    site = bench.load_site(tmp_path / "site", "scale")
    expected = len(bench.render_site(site, bench.Secrets(None, None)).files)
    png = tmp_path / "curve.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "render_scale.py"), "--quick", "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 10 |")]
    assert rows and f"{expected} files" in rows[0], proc.stdout
    assert "not ok" not in proc.stdout
    for command in ("validate", "render --no-check", "render"):
        assert f"lbappliance {command} at 20 services:" in proc.stdout
    assert png.read_bytes().startswith(b"\x89PNG"), "no plot written"
