"""`lbappliance lab` on a host that cannot run it: one line saying what to do, exit 1.

Each case breaks one precondition for real where this machine allows it (no podman
on PATH, a netavark path that does not exist, a containers.conf that picks CNI with
the real podman); only "not root" is simulated, since the suite itself runs as root.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.lab import podmancli as labpodman

needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None or os.geteuid() != 0, reason="needs rootful podman"
)


def lab_up(tmp_path: Path, **env: str):
    env = {"LBAPPLIANCE_LAB_DIR": str(tmp_path / "lab"), **env}
    return CliRunner().invoke(main, ["lab", "up"], env=env)


def assert_one_line(result, *words: str) -> None:
    assert result.exit_code == 1, (result.output, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: lab: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.output


def test_podman_missing(tmp_path: Path):
    bare = tmp_path / "bin"  # a PATH with python and nothing else
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    assert_one_line(lab_up(tmp_path, PATH=str(bare)), "podman is not installed", "install-deps")


def test_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(labpodman.shutil, "which", lambda _: "/usr/bin/podman")
    monkeypatch.setattr(labpodman.os, "geteuid", lambda: 1000)
    assert_one_line(lab_up(tmp_path), "as root")


@needs_podman
def test_netavark_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(labpodman, "NETAVARK", tmp_path / "no-netavark")
    assert_one_line(lab_up(tmp_path), "netavark", "install-deps")


@needs_podman
def test_podman_on_cni_is_refused_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cni = labpodman.CONTAINERS_CONF.replace(
        'network_backend = "netavark"', 'network_backend = "cni"'
    )
    monkeypatch.setattr(labpodman, "CONTAINERS_CONF", cni)
    result = lab_up(tmp_path)
    assert_one_line(result, "does not use netavark", "lab down")
    assert not (tmp_path / "lab" / "lab.json").exists()  # nothing was created


@needs_podman
def test_the_lab_pins_netavark_in_its_own_containers_conf(tmp_path: Path):
    podman = labpodman.Podman(tmp_path)
    podman.preflight()  # this machine: netavark in effect through the lab's file alone
    info = podman.run("info", "--format", "{{.Host.NetworkBackend}}")
    assert info.stdout.strip() == "netavark"
    assert 'network_backend = "netavark"' in podman.conf.read_text()
