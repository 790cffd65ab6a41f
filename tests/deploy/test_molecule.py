"""Molecule scenarios: `pair` (the LB pair on the container lab) and one per role.

The role scenarios run together, `molecule test --all --exclude pair`: they say
`shared_state: true`, so the `default` scenario's create and destroy run once for
all of them and they share its containers (molecule/default/molecule.yml). Each
stretch of output is timed and counted to the scenario it names (MEASURE lines).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import lab_lock, podman_lab_available

pytestmark = [pytest.mark.slow, pytest.mark.podman]

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
# Seconds a molecule run may take: the role scenarios took 20 min at load 9-11.
TIMEOUT = 3600
# "INFO     [lb_base > converge] Executed: Successful"
_STEP = re.compile(r"\[(?P<scenario>[\w-]+) > (?P<step>[\w-]+)\] (?P<what>.*)$")


def _molecule(args: list[str], source: Path, home: Path) -> tuple[int, list[tuple[float, str]]]:
    """Run molecule under the lab lock; its output lines, each with the seconds it came at."""
    if reason := podman_lab_available():
        pytest.skip(reason)
    if not shutil.which("molecule"):
        pytest.skip("molecule is not installed")
    env = {**os.environ, "LBAPPLIANCE_SOURCE": str(source), "ANSIBLE_FORCE_COLOR": "0"}
    env["ANSIBLE_HOME"] = str(home)  # molecule's collection install goes here
    lines: list[tuple[float, str]] = []
    with lab_lock():
        start = time.monotonic()
        with subprocess.Popen(
            ["molecule", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            watchdog = threading.Timer(TIMEOUT, proc.kill)  # bounded even when it goes quiet
            watchdog.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.monotonic() - start, line.rstrip("\n")))
            returncode = proc.wait()
            watchdog.cancel()
    print("\n".join(line for _, line in lines[-1500:]))
    return returncode, lines


def test_molecule_pair(source_snapshot: Path, tmp_path: Path) -> None:
    returncode, lines = _molecule(["test", "-s", "pair"], source_snapshot, tmp_path / "ah")
    print(f"MEASURE molecule test -s pair: {lines[-1][0] if lines else 0:.1f} s")
    assert returncode == 0, "molecule test -s pair failed"


def test_molecule_role_scenarios(source_snapshot: Path, tmp_path: Path) -> None:
    """Every role has a scenario, and each one's converge, idempotence and verify pass."""
    scenarios = sorted(p.parent.name for p in (ROOT / "molecule").glob("lb_*/molecule.yml"))
    assert scenarios == ROLES, "a role without a Molecule scenario (or one without a role)"
    args = ["test", "--all", "--exclude", "pair"]
    returncode, lines = _molecule(args, source_snapshot, tmp_path / "ah")

    spent: dict[str, float] = {}  # each stretch of output goes to the scenario it names
    done: set[tuple[str, str]] = set()
    current, since = "", 0.0
    for seconds, line in lines:
        if m := _STEP.search(line):
            spent[current] = spent.get(current, 0.0) + seconds - since
            current, since = m["scenario"], seconds
            if m["what"].startswith("Executed: Successful"):
                done.add((m["scenario"], m["step"]))
    spent[current] = spent.get(current, 0.0) + (lines[-1][0] if lines else 0.0) - since
    for scenario, seconds in spent.items():
        name = scenario or "(molecule start-up)"
        print(f"MEASURE molecule scenario {name}: {seconds:.1f} s")
    print(f"MEASURE molecule test --all --exclude pair: {lines[-1][0]:.1f} s")
    assert returncode == 0, "molecule test --all failed"
    for scenario in scenarios:
        for step in ("converge", "idempotence", "verify"):
            assert (scenario, step) in done, f"{scenario}: {step} did not succeed"
