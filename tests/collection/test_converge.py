"""A playbook that uses only the installed collection converges a container (root, podman).

The collection is built and installed offline as in test_collection.py; the play
names ``lbappliance.edge.lb_nic`` (no roles path into this checkout) and runs over
the podman connection against the systemd container test_role.py's fixture sets
up for that role (a two-queue veth eth0, the lbappliance shim). Converge, then an
idempotent second run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.nic.test_role import (  # the role's own container fixture and its node config
    CONTAINER_NIC,
    RoleContainer,
    ansible_playbook,
    recap,
    role_container,  # noqa: F401 (a fixture)
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.podman]


def test_collection_role_converges_a_container(
    role_container: RoleContainer,  # noqa: F811
    tmp_path: Path,
) -> None:
    box, host = role_container, role_container.name
    build = [sys.executable, str(ROOT / "scripts" / "build-collection.py"), "--out", str(tmp_path)]
    tarball = subprocess.run(build, capture_output=True, text=True, check=True).stdout.strip()
    install = ["ansible-galaxy", "collection", "install", "--offline", "--force"]
    install += ["-p", str(tmp_path / "c")]
    subprocess.run([*install, tarball], capture_output=True, text=True, check=True)

    render_dir = tmp_path / "render"
    (render_dir / "etc/lbappliance").mkdir(parents=True)
    (render_dir / "etc/lbappliance/nic.json").write_text(json.dumps(CONTAINER_NIC) + "\n")
    play = [
        {
            "name": "NIC tuning from the installed collection",
            "hosts": host,
            "gather_facts": False,
            "roles": [
                {"role": "lbappliance.edge.lb_nic", "vars": {"lb_render_host_dir": str(render_dir)}}
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(box.podman.env, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "c"))
    args = ["-i", f"{host},", "-c", "containers.podman.podman"]
    args += ["-e", json.dumps({"ansible_python_interpreter": "/usr/bin/python3"})]

    assert box.queues() == "2/2"
    first = ansible_playbook(*args, str(tmp_path / "play.yml"), env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "lbappliance.edge.lb_nic" in first.stdout  # the task names carry the FQCN role
    assert recap(first, host)["changed"] > 0
    assert box.queues() == "1/1"
    second = ansible_playbook(*args, str(tmp_path / "play.yml"), env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second, host)["changed"] == 0, second.stdout
