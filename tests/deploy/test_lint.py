"""The Ansible content lints clean: ansible-lint (production profile) and yamllint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # ansible-lint takes ~15 s

ROOT = Path(__file__).resolve().parents[2]
OWN = ["roles/lb_base", "roles/lb_network", "roles/lb_haproxy", "roles/lb_keepalived",
       "roles/lb_exabgp", "playbooks", "molecule", ".ansible-lint", ".yamllint"]  # fmt: skip


@pytest.mark.parametrize("tool", ["ansible-lint", "yamllint"])
def test_lint(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")
    if tool == "ansible-lint":
        cmd = [tool, "--nocolor", "--format=pep8"]
    else:
        cmd = [tool, "--strict", *OWN]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
