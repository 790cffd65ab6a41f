"""The node network files: what the inventory says becomes networkd's, and what would
lock the controllers out is refused before anything is rendered."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbappliance.inventory import load_site
from lbappliance.render import render_site
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY, ROOT

TOOL = ROOT / "roles" / "lb_network" / "files" / "network_apply.py"


def _tool():
    spec = importlib.util.spec_from_file_location("network_apply", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _render(inventory: Path, site: str = "lab") -> dict[str, str]:
    files = render_site(load_site(inventory, site), Secrets(None, None)).files
    return {f.path: f.content.decode() for f in files}


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    shutil.copytree(INVENTORY, tmp_path / "inventory")
    return tmp_path / "inventory"


def edit(inventory: Path, old: str, new: str) -> None:
    site = inventory / "sites" / "lab.yml"
    text = site.read_text()
    assert old in text
    site.write_text(text.replace(old, new, 1))


def test_every_rendered_file_passes_the_role_check(tokyo_env: dict[str, str]) -> None:
    tool = _tool()
    for site in ("lab", "tokyo"):
        for path, text in _render(INVENTORY, site).items():
            if path.endswith(".network"):
                sections = [name for name, _ in tool.parse(text, path)]
                assert sections[:2] in (["Match", "Network"], ["Match", "Link"]), path


def test_lab_uplink_has_its_addresses_and_the_return_routes() -> None:
    text = _render(INVENTORY)["hosts/lb1/etc/systemd/network/10-lbappliance-eth1.network"]
    parsed = _tool().parse(text, "eth1")
    assert ("Match", {"Name": "eth1"}) in parsed
    assert ("Address", {"Address": "2001:db8:10::11/64", "DuplicateAddressDetection": "none"}) in (
        parsed
    )
    assert ("Route", {"Gateway": "10.10.0.1", "Metric": "100"}) in parsed
    assert ("Route", {"Gateway": "2001:db8:10::1", "Metric": "100"}) in parsed
    network = dict(parsed)["Network"]
    assert network["ConfigureWithoutCarrier"] == "yes"
    assert network["KeepConfiguration"] == "static"
    assert network["IPv6DuplicateAddressDetection"] == "0"


def test_client_prefixes_management_route_and_mtu(lab_copy: Path) -> None:
    edit(lab_copy, "bgp:\n", "network:\n  client_prefixes: [10.40.0.0/16]\n"
         "  management_prefixes: [10.200.0.0/16]\nbgp:\n")  # fmt: skip
    edit(
        lab_copy,
        "{name: eth0, role: mgmt, addresses: [10.99.0.11/24]}",
        "{name: eth0, role: mgmt, addresses: [10.99.0.11/24], gateways: [10.99.0.1], "
        "routes: [{to: 10.200.0.0/16}]}",
    )
    edit(lab_copy, "{name: eth2, role: backend, addresses: [10.30.0.11/24]}",
         "{name: eth2, role: backend, addresses: [10.30.0.11/24], mtu: 1520}")  # fmt: skip
    edit(lab_copy, "{name: eth0, role: mgmt, addresses: [10.99.0.12/24]}",
         "{name: eth0, role: mgmt, addresses: [10.99.0.12/24], gateways: [10.99.0.1], "
         "routes: [{to: 10.200.0.0/16}]}")  # fmt: skip
    files = _render(lab_copy)
    tool = _tool()
    base = "hosts/lb1/etc/systemd/network/10-lbappliance-"
    uplink = tool.parse(files[base + "eth1.network"], "eth1")
    assert ("Route", {"Destination": "10.40.0.0/16", "Gateway": "10.10.0.1", "Metric": "100"}) in (
        uplink
    )
    assert ("Route", {"Gateway": "2001:db8:10::1", "Metric": "100"}) in uplink  # no IPv6 listed
    mgmt = tool.parse(files[base + "eth0.network"], "eth0")
    assert ("Route", {"Destination": "10.200.0.0/16", "Gateway": "10.99.0.1"}) in mgmt
    assert ("Link", {"MTUBytes": "1520"}) in tool.parse(files[base + "eth2.network"], "eth2")
    agent = json.loads(files["hosts/lb1/etc/lbappliance/health-agent.json"])
    assert agent["return_path"]["destinations"] == ["10.40.0.0/16", "::/0"]


def test_a_node_managed_elsewhere_gets_no_files_but_its_expectations(lab_copy: Path) -> None:
    edit(lab_copy, "    nic_tuning: false", "    nic_tuning: false\n    network_managed: false")
    files = _render(lab_copy)
    assert not [p for p in files if p.startswith("hosts/lb1/") and p.endswith(".network")]
    assert [p for p in files if p.startswith("hosts/lb2/") and p.endswith(".network")]
    host_vars = files["inventory/host_vars/lb1.yml"]
    assert "lb_network_managed: false" in host_vars
    assert "via: !unsafe '10.10.0.1'" in host_vars  # verify still checks the live routes


def validate(inventory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from lbappliance.cli import main; main()",
         "validate", "--site", "lab", "--inventory", str(inventory)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_validate_refuses_a_change_that_drops_the_management_address(lab_copy: Path) -> None:
    edit(lab_copy, "addresses: [10.99.0.11/24]", "addresses: [10.99.1.11/24]")
    out = validate(lab_copy)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "nodes[0].management_address: 10.99.0.11 is on no interface of lb1" in out.stderr
    assert "cut the controllers off" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_refuses_losing_the_route_to_the_controllers(lab_copy: Path) -> None:
    edit(lab_copy, "bgp:\n", "network:\n  management_prefixes: [10.200.0.0/16]\nbgp:\n")
    out = validate(lab_copy)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "10.200.0.0/16 would not be reachable through eth0" in out.stderr


def test_apply_tool_plans_only_the_appliance_files(tmp_path: Path) -> None:
    installed, staged = tmp_path / "etc", tmp_path / "staged"
    installed.mkdir()
    staged.mkdir()
    (installed / "50-other.network").write_text("[Match]\nName=eth9\n")
    (installed / "10-lbappliance-eth1.network").write_text("[Match]\nName=eth1\n")
    (installed / "10-lbappliance-eth3.network").write_text("[Match]\nName=eth3\n")
    (staged / "10-lbappliance-eth1.network").write_text("[Match]\nName=eth1\n")
    (staged / "10-lbappliance-eth2.network").write_text("[Match]\nName=eth2\n")
    assert _tool().changes(staged, installed) == {
        "added": ["10-lbappliance-eth2.network"],
        "removed": ["10-lbappliance-eth3.network"],
        "changed": [],
    }
    with pytest.raises(ValueError, match="unknown key Adress in \\[Address\\]"):
        _tool().parse("[Address]\nAdress=10.0.0.1/24\n", "x.network")
