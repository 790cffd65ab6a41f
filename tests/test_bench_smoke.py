"""Every script under bench/ runs in the suite in a tiny form, so none can rot unseen.

The figures they print are not checked here (those are the benchmarks' own business,
in the README); a smoke run only has to finish and print its result lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# script -> (arguments of its smallest run, needs root (namespace lab, BPF maps), a word it prints)
SMOKE: dict[str, tuple[list[str], bool, str]] = {
    "bfd_failover.py": (["--trials", "1", "--hold-trials", "1"], True, "with BFD"),
    "dataplane_e2e_pps.py": (["--count", "20000", "--seconds", "2"], True, "pps"),
    "dataplane_maglev.py": (["--quick"], True, "re-apply, one service changed"),
    "health_withdraw.py": (["--trials", "1", "--loss-seconds", "3"], True, "withdraw"),
}


# Scripts whose smoke run lives beside the tests of what they measure (richer checks).
DP = "tests/dataplane/test_bench_smoke.py"
ELSEWHERE = {
    "dataplane_flows.py": f"{DP}::test_flow_survival_bench_quick",
    "dataplane_testrun.py": f"{DP}::test_testrun_bench_reports_every_path",
    "gray_failure.py": "tests/weights/test_bench.py::test_quick_run_smoke",
    "l7_policy_cost.py": "tests/l7/test_bench.py::test_quick_run",
    "render_scale.py": "tests/render/test_bench_render_scale.py::test_render_scale_quick",
    "control_rounds.py": "tests/test_control_rounds.py::test_control_rounds_quick",
}


def test_every_bench_script_has_a_smoke_run():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted([*SMOKE, *ELSEWHERE])
    for script, test in ELSEWHERE.items():
        path, name = test.split("::")
        assert f"def {name}(" in (BENCH.parent / path).read_text(), (script, test)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_smoke(script: str):
    args, root, word = SMOKE[script]
    if root and os.geteuid() != 0:
        pytest.skip("needs root (a namespace lab or BPF maps)")
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=600, cwd=BENCH.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert word in proc.stdout, proc.stdout[-3000:]
