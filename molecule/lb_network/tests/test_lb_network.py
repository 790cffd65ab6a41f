"""lb_network on `net`: lb1's networkd files applied and confirmed, every address and route up."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import testinfra
import yaml

HOST = testinfra.get_host("podman://lbamol-net")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render"
HOST_VARS = yaml.safe_load(
    (RENDER / "inventory/host_vars/lb1.yml").read_text().replace("!unsafe", "")
)
EXPECTED = HOST_VARS["lb_network_expected"]


def test_networkd_runs_enabled_with_the_foreign_routes_drop_in() -> None:
    service = HOST.service("systemd-networkd")
    assert service.is_running and service.is_enabled
    drop_in = HOST.file("/etc/systemd/networkd.conf.d/lbappliance.conf")
    assert "ManageForeignRoutes=no" in drop_in.content_string


@pytest.mark.parametrize("name", HOST_VARS["lb_network_files"])
def test_installed_files_are_the_rendered_ones(name: str) -> None:
    installed = HOST.file(f"/{name}")
    want = hashlib.sha256((RENDER / "hosts/lb1" / name).read_bytes()).hexdigest()
    assert installed.sha256sum == want and installed.mode == 0o644


def test_change_confirmed_no_rollback_pending() -> None:
    timers = HOST.run("systemctl is-active lbappliance-network-rollback.timer").stdout.strip()
    assert timers in ("inactive", "unknown"), timers


@pytest.mark.parametrize("entry", EXPECTED["addresses"], ids=lambda e: e["address"])
def test_every_inventory_address_on_its_link(entry: dict[str, str]) -> None:
    link = json.loads(HOST.check_output(f"ip -j address show dev {entry['interface']}"))[0]
    have = {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]}
    assert entry["address"] in have, have
    assert "UP" in link["flags"]


@pytest.mark.parametrize("entry", EXPECTED["routes"], ids=lambda e: e["to"])
def test_every_inventory_route(entry: dict[str, str]) -> None:
    family = "-6" if ":" in entry["to"] else "-4"
    to = "default" if entry["to"] in ("0.0.0.0/0", "::/0") else entry["to"]
    routes = json.loads(HOST.check_output(f"ip {family} -j route show {to}"))
    assert any(r.get("gateway") == entry["via"] and r["dev"] == entry["interface"] for r in routes)
