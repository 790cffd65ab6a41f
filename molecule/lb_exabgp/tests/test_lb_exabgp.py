"""lb_exabgp on lb1: ExaBGP and the health agent running this build, config private."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import testinfra

from lbappliance.paths import NODE_VENV

HOST = testinfra.get_host("podman://lbamol-lb1")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render" / "hosts" / "lb1"
VENV = NODE_VENV
AGENT = json.loads((RENDER / "etc/lbappliance/health-agent.json").read_text())


def test_exabgp_runs_enabled() -> None:
    service = HOST.service("exabgp")
    assert service.is_running and service.is_enabled


def test_config_validated_and_private() -> None:
    conf = HOST.file("/etc/exabgp/exabgp.conf")
    assert conf.mode == 0o600 and conf.user == "root"
    assert HOST.file("/etc/exabgp").mode == 0o750
    HOST.run_expect([0], f"exabgp_daemon_user=root {VENV}/bin/exabgp validate {conf.path}")


def test_installed_files_are_the_rendered_ones() -> None:
    for path in ("etc/exabgp/exabgp.conf", "etc/lbappliance/health-agent.json"):
        want = hashlib.sha256((RENDER / path).read_bytes()).hexdigest()
        assert HOST.file(f"/{path}").sha256sum == want, path


def test_health_agent_is_exabgp_s_child_and_answers() -> None:
    main_pid = int(HOST.check_output("systemctl show -p MainPID --value exabgp"))
    ps = HOST.check_output("ps -e -o pid=,ppid=,args=")
    table = [line.split(None, 2) for line in ps.splitlines()]
    parent = {int(pid): int(ppid) for pid, ppid, _ in table}

    def under_exabgp(pid: int) -> bool:
        while pid > 1:
            if pid == main_pid:
                return True
            pid = parent.get(pid, 0)
        return False

    agents = [int(pid) for pid, _, args in table if "-m lbappliance.health" in args]
    assert agents and all(under_exabgp(pid) for pid in agents), table
    url = f"http://{AGENT['metrics']['address']}:{AGENT['metrics']['port']}/metrics"
    metrics = HOST.check_output(f"curl -sf --retry 10 --retry-connrefused --retry-delay 1 {url}")
    assert "# TYPE" in metrics


def test_running_code_is_the_installed_build() -> None:
    """The unit records the wheelhouse digest it started with (the role restarts on change)."""
    started = HOST.file("/run/exabgp/code-digest").content_string.strip()
    assert started == HOST.file(f"{VENV}/.wheelhouse-digest").content_string.strip()
