"""The AWX example (examples/awx/) runs: its playbook validates and renders a site
with the secrets its credential types inject.

The playbook runs for real against localhost, as AWX runs it, in a copy of the
inventory laid out as the project repository (awx/deploy.yml next to
inventory/); the deploy task is skipped (it needs the site's nodes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "examples" / "awx"
SECRETS = "LBA_TOKYO_R1_MD5=awx-secret-one\n# a comment\nLBA_TOKYO_R2_MD5=awx=secret=two\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "inventory", tmp_path / "inventory")
    (tmp_path / "awx").mkdir()
    shutil.copy2(AWX / "deploy.yml", tmp_path / "awx" / "deploy.yml")
    (tmp_path / "hosts.ini").write_text(f"localhost ansible_python_interpreter={sys.executable}\n")
    return tmp_path


def playbook(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LBA_")}
    environ["PATH"] = f"{Path(sys.executable).parent}:{environ['PATH']}"
    cmd = ["ansible-playbook", "-i", "hosts.ini", "awx/deploy.yml", *args]
    return subprocess.run(
        cmd, cwd=project, env=environ | env, capture_output=True, text=True, timeout=180
    )


def test_syntax(project: Path) -> None:
    out = playbook(project, "--syntax-check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_renders_with_the_injected_bgp_secrets(project: Path) -> None:
    (project / "bgp").write_text(SECRETS)
    out = playbook(
        project, "-e", "lba_site=tokyo", "--skip-tags", "deploy",
        LBA_BGP_SECRETS_FILE=str(project / "bgp"),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "awx-secret-one" not in out.stdout + out.stderr
    rendered = (project / "build" / "tokyo" / "routers").rglob("*")
    routers = "".join(p.read_text() for p in rendered if p.is_file())
    assert "awx-secret-one" in routers and "awx=secret=two" in routers


def test_without_the_secrets_the_render_fails(project: Path) -> None:
    out = playbook(project, "-e", "lba_site=tokyo", "--skip-tags", "deploy")
    assert out.returncode != 0
    assert "LBA_TOKYO_R1_MD5 is not set" in out.stdout


def test_a_bad_site_name_is_refused(project: Path) -> None:
    out = playbook(project, "-e", "lba_site=../etc", "--skip-tags", "deploy")
    assert out.returncode != 0
    assert "set lba_site" in out.stdout


def test_credential_types_inject_what_the_playbook_reads() -> None:
    types = yaml.safe_load((AWX / "credential-types.yml").read_text())
    text = (AWX / "deploy.yml").read_text()
    for kind in types.values():
        for name in kind["injectors"]["env"]:
            assert f"'{name}'" in text, name
