"""The execution environment definition stays in sync with what the project installs.

Its Python requirements are pyproject.toml's dependencies, its system packages
(Debian names) are scripts/install-deps.sh's controller packages, ``bindep``
itself reads the file (every Debian package it names is installed here, by
install-deps.sh), and ``ansible-builder create`` produces the build context.
Building the image needs registries this machine cannot reach.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EE = ROOT / "execution-environment.yml"
BIN = Path(sys.executable).parent


def definition() -> dict:
    return yaml.safe_load(EE.read_text())


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def controller_packages() -> list[str]:
    script = (ROOT / "scripts" / "install-deps.sh").read_text()
    m = re.search(r"^CONTROLLER_PACKAGES=\(([^)]*)\)", script, re.M)
    assert m, "scripts/install-deps.sh has no CONTROLLER_PACKAGES=(...) list"
    return m[1].split()


def bindep_packages(profile: str) -> list[str]:
    """The packages bindep.txt names for ``profile`` (bindep's own parser)."""
    from bindep.depends import Depends

    text = (ROOT / definition()["dependencies"]["system"]).read_text()
    depends = Depends(text)
    return [rule[0] for rule in depends.active_rules(["default", f"platform:{profile}"])]


def test_python_requirements_are_the_projects() -> None:
    deps = definition()["dependencies"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    controller = [*project["dependencies"], *project["optional-dependencies"]["controller"]]
    ee = [*requirement_lines(ROOT / deps["python"]), deps["ansible_core"]["package_pip"]]
    assert sorted(ee) == sorted(controller)


def test_system_packages_are_the_controllers() -> None:
    assert sorted(bindep_packages("dpkg")) == sorted(controller_packages())
    # The image is RPM-based (ansible-builder installs with dnf): one name per package there too.
    assert len(bindep_packages("rpm")) == len(controller_packages())


def test_bindep_finds_them_installed_here() -> None:
    text = (ROOT / definition()["dependencies"]["system"]).read_text()
    out = subprocess.run(
        [str(BIN / "bindep"), "-b", "-f", "/dev/stdin"], input=text, capture_output=True, text=True
    )
    assert out.returncode == 0, f"missing on this Debian machine: {out.stdout}{out.stderr}"


def test_build_files_exist() -> None:
    for item in definition()["additional_build_files"]:
        assert (ROOT / item["src"]).exists(), item


def test_ansible_builder_creates_the_context(tmp_path: Path) -> None:
    builder = BIN / "ansible-builder"
    if not builder.exists() and not shutil.which("ansible-builder"):
        pytest.fail("ansible-builder is missing: pip install -e '.[test]'")
    context = tmp_path / "context"
    cmd = [str(builder), "create", "-f", str(EE), "-c", str(context)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    containerfile = (context / "Containerfile").read_text()
    assert "quay.io/fedora/fedora" in containerfile
    assert "ENV LBAPPLIANCE_SOURCE=/opt/lbappliance/src" in containerfile
    build = context / "_build"
    assert requirement_lines(build / "requirements.txt") == requirement_lines(
        ROOT / "execution-environment" / "requirements.txt"
    )
    assert (build / "lbappliance" / "pyproject.toml").exists()
    assert (build / "lbappliance" / "src" / "lbappliance" / "cli.py").exists()
    assert (build / "lbappliance" / "roles" / "lb_base" / "tasks" / "main.yml").exists()
