"""Molecule scenarios: `molecule test -s pair` (the LB pair on the container lab)
and `molecule test -s lb_haproxy` (the role alone, TLS included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import lab_lock, podman_lab_available

pytestmark = [pytest.mark.slow, pytest.mark.podman]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("scenario", ["pair", "lb_haproxy"])
def test_molecule_scenario(scenario: str, source_snapshot: Path, tmp_path: Path) -> None:
    if reason := podman_lab_available():
        pytest.skip(reason)
    if not shutil.which("molecule"):
        pytest.skip("molecule is not installed")
    env = {**os.environ, "LBAPPLIANCE_SOURCE": str(source_snapshot), "ANSIBLE_FORCE_COLOR": "0"}
    env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")  # molecule's collection install goes here
    with lab_lock():
        t = time.monotonic()
        proc = subprocess.run(
            ["molecule", "test", "-s", scenario],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        seconds = time.monotonic() - t
    print(proc.stdout[-20000:], proc.stderr[-5000:])
    print(f"MEASURE molecule test -s {scenario}: {seconds:.1f} s")
    assert proc.returncode == 0, f"molecule test -s {scenario} failed"
