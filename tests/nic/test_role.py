"""Role lb_nic: documented variables, syntax, rendered unit and udev rule.

test_role_in_container runs the role against a systemd container from the lab image
(LB_NIC_ROLE_IMAGE may name another Debian image with systemd, python3 and ethtool):
install, idempotent second run, unit start, lb_nic_persist: false cleanup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pytest
import yaml

if TYPE_CHECKING:
    from lbappliance.lab.podmancli import Podman

ROLE = Path(__file__).parents[2] / "roles" / "lb_nic"
SRC = Path(__file__).parents[2] / "src"


def test_every_default_is_documented_and_prefixed() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    assert all(name.startswith("lb_nic_") for name in defaults)
    for name, option in options.items():
        assert option.get("description"), name


def render(template: str, **variables: object) -> str:
    env = jinja2.Environment(  # as ansible.builtin.template sets it up
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(ansible_managed="Ansible managed", **variables)


def test_unit_waits_for_each_interface_and_udev_rule_matches_them() -> None:
    unit = render(
        "lbappliance-nic.service.j2",
        lb_nic_interfaces=["eth1", "bond-up"],
        lb_nic_cli="/opt/lbappliance/venv/bin/lbappliance",
        lb_nic_config_path="/etc/lbappliance/nic.json",
    )
    assert "Wants=sys-subsystem-net-devices-bond\\x2dup.device\n" in unit
    assert "After=sys-subsystem-net-devices-eth1.device\n" in unit
    assert "Before=network-pre.target irqbalance.service shutdown.target\n" in unit
    assert (
        "ExecStart=/opt/lbappliance/venv/bin/lbappliance nic apply"
        " --config /etc/lbappliance/nic.json\n"
    ) in unit
    rule = render(
        "70-lbappliance-nic.rules.j2",
        lb_nic_interfaces=["eth1", "eth2"],
        lb_nic_unit_name="lbappliance-nic.service",
    )
    assert (
        'ACTION=="add|move", SUBSYSTEM=="net", KERNEL=="eth1|eth2", '
        'RUN+="/bin/systemctl --no-block restart lbappliance-nic.service"\n'
    ) in rule


def playbook(tmp_path: Path, hosts: str, config: dict[str, Any] | None = None) -> Path:
    render_dir = tmp_path / "render"
    (render_dir / "etc/lbappliance").mkdir(parents=True)
    config = config or {"node": "lb1", "interfaces": ["eth0"], "profile": {"irqbalance": "leave"}}
    (render_dir / "etc/lbappliance/nic.json").write_text(json.dumps(config) + "\n")
    play = [
        {
            "hosts": hosts,
            "gather_facts": False,
            "roles": [{"role": "lb_nic", "vars": {"lb_render_host_dir": str(render_dir)}}],
        }
    ]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    return path


def ansible_playbook(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    env = {**(env or os.environ), "ANSIBLE_ROLES_PATH": str(ROLE.parent), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_syntax(tmp_path: Path) -> None:
    if not shutil.which("ansible-playbook"):
        pytest.skip("ansible-playbook not installed")
    res = ansible_playbook("-i", "localhost,", "--syntax-check", str(playbook(tmp_path, "all")))
    assert res.returncode == 0, res.stdout + res.stderr


# The container test's nic.json. Its eth0 is a two-queue veth made inside the container: the
# lab has no real NIC, and its /sys is read-only, so of the tuning only the queue count
# (ethtool over netlink) can change there: one queue, no RPS/XPS to write. Sysctls are left
# alone by the applier (net.core.* is absent outside the host's network namespace).
CONTAINER_NIC = {
    "node": "lb1",
    "interfaces": ["eth0"],
    "profile": {"queues": 1, "housekeeping_cpus": [], "rps": "off", "irqbalance": "leave"},
}
UNIT = "lbappliance-nic.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
UDEV_RULE = "/etc/udev/rules.d/70-lbappliance-nic.rules"
# Stand-in for lb_base's venv: `lbappliance nic ...` from the mounted source and click.
SHIM = """#!/bin/sh
shift
PYTHONPATH=/opt/lbappliance/src:/opt/lbappliance/lib exec python3 -m lbappliance.nic "$@"
"""


@dataclass
class RoleContainer:
    podman: Podman
    name: str

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", self.name, "sh", "-c", script, check=check, timeout=60)

    def queues(self) -> str:
        """eth0's current rx/tx queue counts, as "rx/tx"."""
        out = self.sh("ethtool -l eth0").stdout
        current = out.split("Current hardware settings:")[1]
        counts = dict(line.split(":") for line in current.strip().splitlines())
        return f"{counts['RX'].strip()}/{counts['TX'].strip()}"

    def playbook(self, play: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """The role over the podman connection, with the lab's containers.conf.

        ``extra`` are ``-e key=value`` strings, typed as an operator would.
        """
        args = ["-i", f"{self.name},", "-c", "containers.podman.podman"]
        args += ["-e", json.dumps({"ansible_python_interpreter": "/usr/bin/python3"})]
        for item in extra:
            args += ["-e", item]
        return ansible_playbook(*args, str(play), env=self.podman.env, timeout=180)


@pytest.fixture
def role_container() -> Iterator[RoleContainer]:
    """A systemd container from the lab image (or LB_NIC_ROLE_IMAGE), without network,
    with a two-queue veth eth0 and the lbappliance shim; removed afterwards."""
    import click
    from tests.deploy.conftest import lab_lock, podman_lab_available

    from lbappliance.lab.image import ensure_image
    from lbappliance.lab.podmancli import CAPS, LABEL, Podman, state_dir, wait

    if reason := podman_lab_available():
        pytest.skip(reason)
    if not shutil.which("ansible-playbook"):
        pytest.skip("ansible-playbook not installed")

    # The lab lock: ensure_image removes stale images, and a lab's `down` leaves netavark's
    # chains behind while any other container runs.
    with lab_lock():
        podman = Podman(state_dir())
        image = os.environ.get("LB_NIC_ROLE_IMAGE")
        if not image:
            image, _ = ensure_image(podman, state_dir() / "images", state_dir() / "image.log")
        name = f"lbnic-role-{uuid.uuid4().hex[:8]}"
        box = RoleContainer(podman, name)

        def booted() -> bool:
            out = box.sh("systemctl is-system-running", check=False).stdout.strip()
            return out in ("running", "degraded")

        try:
            podman.run(
                "run", "-d", "--name", name, "--hostname", "lb1", "--label", f"{LABEL}=scratch",
                "--systemd=always", "--cap-add", CAPS, "--network", "none", "--stop-timeout", "5",
                "-v", f"{SRC}:/opt/lbappliance/src:ro",
                "-v", f"{Path(click.__path__[0])}:/opt/lbappliance/lib/click:ro",
                image,
            )  # fmt: skip
            wait(booted, 60, f"systemd in {name}")
            box.sh(
                "ip link add eth0 numrxqueues 2 numtxqueues 2 type veth"
                " peer name eth0-peer numrxqueues 2 numtxqueues 2"
                " && ip link set eth0 up && ip link set eth0-peer up"
            )
            podman.run(
                "exec", "-i", name, "sh", "-c",
                "mkdir -p /opt/lbappliance/venv/bin && cat > /opt/lbappliance/venv/bin/lbappliance"
                " && chmod +x /opt/lbappliance/venv/bin/lbappliance",
                input=SHIM,
            )  # fmt: skip
            yield box
        finally:
            podman.run("rm", "-f", "-t", "0", name, check=False)
            assert not podman.ok("container", "exists", name), f"{name} was not removed"


def recap(result: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    """The PLAY RECAP counters of ``host`` (ok, changed, failed, ...)."""
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(f"{host} "))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


@pytest.mark.slow
@pytest.mark.podman
def test_role_in_container(role_container: RoleContainer, tmp_path: Path) -> None:
    box, host = role_container, role_container.name
    play = playbook(tmp_path, host, CONTAINER_NIC)
    assert box.queues() == "2/2"

    first = box.playbook(play)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first, host)["changed"] > 0
    assert '"what": "eth0 rx/tx queues"' in first.stdout  # the applier's report, shown
    assert box.queues() == "1/1"
    assert box.sh(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    assert box.sh(f"test -f {UDEV_RULE}", check=False).returncode == 0

    second = box.playbook(play)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second, host)["changed"] == 0, second.stdout

    # The boot-time unit applies nic.json again: undo the tuning, start the unit.
    box.sh("ethtool -L eth0 rx 2 tx 2")
    box.sh(f"systemctl start {UNIT}")
    assert box.sh(f"systemctl is-active {UNIT}").stdout.strip() == "active"
    assert box.queues() == "1/1"

    box.sh("ethtool -L eth0 rx 2 tx 2")
    removed = box.playbook(play, "lb_nic_persist=false")  # a string: the role casts with | bool
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert recap(removed, host)["changed"] > 0
    gone = f"{UNIT_PATH} {UDEV_RULE} /etc/systemd/system/multi-user.target.wants/{UNIT}"
    assert box.sh(f"ls -d {gone}", check=False).stdout == ""
    state = box.sh(f"systemctl show -p LoadState,UnitFileState {UNIT}").stdout.split()
    assert state == ["LoadState=not-found", "UnitFileState="]
    assert box.queues() == "1/1"  # the play still applies the tuning; only persistence goes
