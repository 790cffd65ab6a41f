"""Nothing from an inventory is ever templated by Ansible.

Every string field of the lab site gets a Jinja payload (validation bypassed,
so this holds even for a value the schema would let through); the rendered
Ansible files must carry each one as ``!unsafe`` text, and neither
``ansible-inventory`` nor ``ansible-playbook --check`` may run it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbappliance.inventory import load_site
from lbappliance.render import render_site, write_render
from lbappliance.render.ansible import RENDER_HOST_DIR
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY
from tests.security.hostile import Tagged, UnsafeLoader, ansible_strings, mutate_strings

SCRATCH = Path("/tmp/h-sec")
ANSIBLE_FILES = ("inventory/hosts.yml", "inventory/group_vars/all.yml", "site.yml")


def _payload(marker: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(marker) + "; echo root') }}"


def hostile_site(marker: Path, **node_changes: Any):
    """The lab site with the payload in front of every string field but node names
    (they name files of the render: host_vars/<node>.yml, hosts/<node>/)."""
    site = load_site(INVENTORY, "lab")
    payload = _payload(marker)
    model = mutate_strings(site.model, lambda s: payload + s)
    nodes = [
        dataclasses.replace(n, name=orig.name, **node_changes)
        for n, orig in zip(model.nodes, site.model.nodes, strict=True)
    ]
    return dataclasses.replace(site, model=dataclasses.replace(model, nodes=nodes))


@pytest.fixture
def marker() -> Path:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / f"pwned-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


def test_every_inventory_string_in_ansible_files_is_unsafe(marker: Path) -> None:
    files = render_site(hostile_site(marker), Secrets(None, None)).by_path()
    ansible_files = [p for p in files if p.startswith("inventory/")] + ["site.yml"]
    assert set(ANSIBLE_FILES) <= set(ansible_files)
    payload = _payload(marker)
    carried = 0
    for path in ansible_files:
        data = yaml.load(files[path].content, Loader=UnsafeLoader)
        for s in ansible_strings(data):
            if "{{" not in s:
                continue
            if s == RENDER_HOST_DIR:  # the project's own template, on purpose
                continue
            assert isinstance(s, Tagged), f"{path}: {s!r} is not !unsafe"
            carried += payload in s
    assert "ansible.cfg" in files and payload not in files["ansible.cfg"].content.decode()
    # The payload did reach Ansible (ssh_user, site name, ...): the test can fail.
    assert carried >= 3


def test_ansible_inventory_shows_the_payload_as_text(tmp_path: Path, marker: Path) -> None:
    out = tmp_path / "out"
    write_render(render_site(hostile_site(marker), Secrets(None, None)), out)
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(out / "inventory" / "hosts.yml"), "--list"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    user = hostvars["lb1"]["ansible_user"]
    assert user == {"__ansible_unsafe": _payload(marker) + "root"}  # text, marked unsafe
    assert not marker.exists()


def _check_run(out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(out / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "site.yml", "--check", "--limit", "lb1"],
        cwd=out, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_ansible_playbook_check_does_not_run_the_payload(tmp_path: Path, marker: Path) -> None:
    # Nothing listens on 127.0.0.1:9: the run gets as far as connecting to lb1 (which
    # needs ansible_user) and stops there, unreachable.
    site = hostile_site(marker, management_address=ipaddress.ip_address("127.0.0.1"), ssh_port=9)
    out = tmp_path / "out"
    write_render(render_site(site, Secrets(None, None)), out)
    proc = _check_run(out)
    assert "UNREACHABLE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert not marker.exists(), "ansible-playbook templated an inventory value"
    # Control: the same host_vars without !unsafe do run the payload.
    host_vars = out / "inventory" / "host_vars" / "lb1.yml"
    host_vars.write_text(host_vars.read_text().replace("!unsafe ", ""))
    _check_run(out)
    assert marker.exists(), "the payload does not work: this test proves nothing"


def test_status_and_maintenance_ad_hoc_runs_do_not_run_the_payload(marker: Path) -> None:
    """`status` and `maintenance` reach nodes with ad-hoc `ansible` and an inventory of
    their own: the payload must stay text there too."""
    from lbappliance.remote import NodeError, NodeRunner

    site = hostile_site(marker, management_address=ipaddress.ip_address("127.0.0.1"), ssh_port=9)
    with NodeRunner(site.model, timeout=60) as runner:
        assert "!unsafe" in runner.inventory.read_text()
        with pytest.raises(NodeError, match="unreachable"):
            runner("lb1", ["report"])
    assert not marker.exists(), "ad-hoc ansible templated an inventory value"
