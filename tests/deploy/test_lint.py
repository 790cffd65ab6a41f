"""The Ansible content lints clean: ansible-lint (production profile) and yamllint."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # ansible-lint takes ~15 s

ROOT = Path(__file__).resolve().parents[2]
OWN = ["roles/lb_base", "roles/lb_network", "roles/lb_haproxy", "roles/lb_keepalived",
       "roles/lb_exabgp", "playbooks", "molecule", ".ansible-lint", ".yamllint"]  # fmt: skip


@pytest.mark.parametrize("tool", ["ansible-lint", "yamllint"])
def test_lint(tool: str, tmp_path: Path) -> None:
    assert shutil.which(tool), f"{tool} is not installed (pyproject.toml's test extra has it)"
    if tool == "ansible-lint":
        cmd = [tool, "--nocolor", "--format=pep8"]
    else:
        cmd = [tool, "--strict", *OWN]
    # ansible-lint installs the project's collection in ANSIBLE_HOME: a scratch one
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible-home")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
