"""A deploy with nothing to do is quick, and still finds drift (container lab).

On the session's deployed lab (conftest.py `deployed_lab`), first of the modules
sharing it, in this order:
  1. a first deploy has provisioned the bare pair;
  2. the next deploy changes nothing, converges neither node (each one's plan
     finds nothing different and ends its play) and is quick; with
     lb_deploy_converge=always both are converged (and nothing changes);
  3. a hand-edited haproxy.cfg on lb1 is found by the plan: lb1 is drained,
     converged (the file restored) and undrained; lb2 is left alone;
  4. a stopped haproxy on lb2 is found: lb2 is converged (started), lb1 left
     alone;
  5. a Debian package installed by hand on lb1 is found: lb1 is converged and
     the new package set recorded;
and after each of 3-5 the next deploy changes nothing again.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lbappliance.lab.podman import PodmanLab
from tests.deploy.conftest import DeployedLab, DeployResult, run_deploy

pytestmark = [pytest.mark.slow, pytest.mark.podman]

# A no-op deploy of the pair: target 15 s on a quiet machine (measured figures in
# docs/benchmarks/deploy.md). The bound is generous for a busy CI machine, and
# what it proves is mostly structural (no role runs), asserted below.
NOOP_BOUND = 60.0
SKIPPED = "Leave a node alone that is up to date"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("noop")


@pytest.fixture(scope="module")
def lab(deployed_lab: DeployedLab) -> PodmanLab:
    """The lab just after its first deploy: this module runs first on it."""
    return deployed_lab.lab


def deploy(lab: PodmanLab, source: Path, workdir: Path) -> DeployResult:
    return run_deploy(lab, source, workdir / "render")


def converged(result: DeployResult) -> set[str]:
    """Nodes whose roles ran in this deploy (a role task reported for them)."""
    return set(re.findall(r"^\s+(lb\d)\s+(?:ok|changed)\s+lb_haproxy : ", result.output, re.M))


def plan_says(workdir: Path, node: str) -> str:
    """The plan's report for ``node`` in the last deploy's log (whitespace folded)."""
    log = (workdir / "render" / "deploy.log").read_text()
    for block in log.split("TASK [")[1:]:
        if block.startswith("Plan | report]") and f"[{node}]" in block:
            return " ".join(block.split())
    return ""


def assert_noop(lab: PodmanLab, source: Path, workdir: Path, label: str) -> DeployResult:
    result = deploy(lab, source, workdir)
    print(f"MEASURE no-op deploy ({label}): {result.seconds:.1f} s, {result.changed} changed")
    assert result.ok
    assert result.changed == 0
    assert converged(result) == set(), "a role ran although nothing differed"
    for node in ("lb1", "lb2"):
        assert "nothing to converge" in plan_says(workdir, node), node
    assert result.seconds < NOOP_BOUND
    return result


def test_a_deploy_with_nothing_to_change_converges_nothing(
    lab: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    assert_noop(lab, source_snapshot, workdir, "after the first deploy")


def test_converge_always_still_converges_every_node(
    lab: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    """``lb_deploy_converge=always``: the full path (what every deploy did before),
    for the record of what the skip saves."""
    result = run_deploy(lab, source_snapshot, workdir / "render", "-e", "lb_deploy_converge=always")
    print(f"MEASURE deploy with lb_deploy_converge=always: {result.seconds:.1f} s")
    assert result.ok
    assert result.changed == 0
    assert converged(result) == {"lb1", "lb2"}


def test_a_hand_edited_config_is_found_and_restored(
    lab: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    path = "/etc/haproxy/haproxy.cfg"
    rendered = (workdir / "render" / "hosts" / "lb1" / path.lstrip("/")).read_text()
    lab.exec("lb1", "sh", "-c", f"echo '# edited by hand' >> {path}")
    result = deploy(lab, source_snapshot, workdir)
    print(f"MEASURE deploy after a hand edit on lb1: {result.seconds:.1f} s")
    assert result.ok
    assert result.changed > 0
    assert f"differs: {path}" in plan_says(workdir, "lb1")
    assert "nothing to converge" in plan_says(workdir, "lb2")
    assert converged(result) == {"lb1"}
    assert "Drain | maintenance on" in (workdir / "render" / "deploy.log").read_text()
    assert lab.exec("lb1", "cat", path).stdout == rendered
    assert_noop(lab, source_snapshot, workdir, "after restoring lb1's config")


def test_a_stopped_daemon_is_found_and_started(
    lab: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    lab.exec("lb2", "systemctl", "stop", "haproxy.service")
    result = deploy(lab, source_snapshot, workdir)
    print(f"MEASURE deploy after stopping haproxy on lb2: {result.seconds:.1f} s")
    assert result.ok
    assert result.changed > 0
    assert "not running: haproxy.service (inactive, enabled)" in plan_says(workdir, "lb2")
    assert "nothing to converge" in plan_says(workdir, "lb1")
    assert converged(result) == {"lb2"}
    assert lab.exec("lb2", "systemctl", "is-active", "haproxy.service").stdout.strip() == "active"
    assert_noop(lab, source_snapshot, workdir, "after starting lb2's haproxy")


DUMMY_CONTROL = """Package: lbapp-drift-test
Version: 1.0
Architecture: all
Maintainer: lbappliance tests <tests@example.invalid>
Description: a package installed by hand (deploy drift test)
"""


def test_a_package_installed_by_hand_is_found(
    lab: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    """The lab has no package index (offline), so the change is a package built
    and installed on the node itself with dpkg."""
    lab.write("lb1", "/tmp/lbapp-drift-test/DEBIAN/control", DUMMY_CONTROL)
    lab.exec("lb1", "dpkg-deb", "--build", "/tmp/lbapp-drift-test", "/tmp/lbapp-drift-test.deb")
    lab.exec("lb1", "dpkg", "-i", "/tmp/lbapp-drift-test.deb")
    try:
        result = deploy(lab, source_snapshot, workdir)
        print(f"MEASURE deploy after a package change on lb1: {result.seconds:.1f} s")
        assert result.ok
        assert "package lbapp-drift-test:all" in plan_says(workdir, "lb1")
        assert "nothing to converge" in plan_says(workdir, "lb2")
        assert converged(result) == {"lb1"}
        stamp = lab.exec("lb1", "cat", "/var/lib/lbappliance/deployed.json").stdout
        assert '"lbapp-drift-test:all": "1.0"' in stamp
        assert_noop(lab, source_snapshot, workdir, "after recording lb1's new package")
    finally:
        lab.exec("lb1", "dpkg", "-r", "lbapp-drift-test", check=False)
