"""Role lb_nic: documented variables, syntax, rendered unit and udev rule.

The role was also run against a systemd container (install, idempotent second run,
unit start, lb_nic_persist: false cleanup); test_role_in_container does that when
LB_NIC_ROLE_IMAGE names a Debian image with systemd and python3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import jinja2
import pytest
import yaml

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
        lb_nic_lbappliance="/opt/lbappliance/venv/bin/lbappliance",
        lb_nic_config_path="/etc/lbappliance/nic.json",
    )
    assert "Wants=sys-subsystem-net-devices-bond\\x2dup.device\n" in unit
    assert "After=sys-subsystem-net-devices-eth1.device\n" in unit
    assert "Before=network-pre.target irqbalance.service shutdown.target\n" in unit
    assert (
        "ExecStart=/opt/lbappliance/venv/bin/lbappliance nic apply"
        " --config /etc/lbappliance/nic.json --format text\n"
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


def playbook(tmp_path: Path, hosts: str) -> Path:
    render_dir = tmp_path / "render"
    (render_dir / "etc/lbappliance").mkdir(parents=True)
    config = {"node": "lb1", "interfaces": ["eth0"], "profile": {"irqbalance": "leave"}}
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


def ansible_playbook(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROLE.parent), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_syntax(tmp_path: Path) -> None:
    if not shutil.which("ansible-playbook"):
        pytest.skip("ansible-playbook not installed")
    res = ansible_playbook("-i", "localhost,", "--syntax-check", str(playbook(tmp_path, "all")))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.podman
def test_role_in_container(tmp_path: Path) -> None:
    image = os.environ.get("LB_NIC_ROLE_IMAGE")
    if not image:
        pytest.skip("set LB_NIC_ROLE_IMAGE to a Debian image with systemd and python3")
    import click

    name = f"lbnic-role-{uuid.uuid4().hex[:8]}"
    podman = ["podman", "--runtime", "runc"]
    click_dir = Path(click.__path__[0])
    subprocess.run(
        [*podman, "run", "-d", "--name", name, "--systemd=always",
         "--cap-add", "SYS_ADMIN,NET_ADMIN,NET_RAW",
         "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
         "-v", f"{SRC}:/opt/lbappliance/src:ro", "-v", f"{click_dir}:/opt/lbappliance/lib/click:ro",
         image],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        # Stand-in for lb_base's venv: `lbappliance nic ...` from the mounted source.
        shim = (
            "mkdir -p /opt/lbappliance/venv/bin && printf '#!/bin/sh\\nshift\\n"
            "PYTHONPATH=/opt/lbappliance/src:/opt/lbappliance/lib exec python3 -m lbappliance.nic"
            ' "$@"\\n\' > /opt/lbappliance/venv/bin/lbappliance'
            " && chmod +x /opt/lbappliance/venv/bin/lbappliance"
        )
        subprocess.run([*podman, "exec", name, "sh", "-c", shim], check=True, timeout=60)
        play = str(playbook(tmp_path, name))
        args = ("-i", f"{name},", "-c", "containers.podman.podman",
                "-e", "ansible_python_interpreter=/usr/bin/python3", play)  # fmt: skip
        first = ansible_playbook(*args)
        assert first.returncode == 0, first.stdout + first.stderr
        second = ansible_playbook(*args)
        assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout
        started = subprocess.run(
            [*podman, "exec", name, "systemctl", "start", "lbappliance-nic.service"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
    finally:
        subprocess.run([*podman, "rm", "-f", name], capture_output=True, timeout=120)
