"""lb_base on lb1: the venv, the rendered sysctls in force, notrack table, anycast VIPs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import testinfra

from lbappliance.paths import NODE_CLI, NODE_PYTHON, NODE_VENV

HOST = testinfra.get_host("podman://lbamol-lb1")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render" / "hosts" / "lb1"
SYSCTLS = {
    key.strip(): value.strip()
    for line in (RENDER / "etc/sysctl.d/90-lbappliance.conf").read_text().splitlines()
    if line.strip() and not line.startswith("#")
    for key, value in [line.split("=", 1)]
}
VIPS = [
    line.split()[3]
    for line in (RENDER / "etc/systemd/system/lbappliance-vips.service").read_text().splitlines()
    if line.startswith("ExecStart=")
]


def test_venv_runs_this_build() -> None:
    HOST.run_expect([0], f"{NODE_CLI} --help")
    digest = HOST.file(f"{NODE_VENV}/.wheelhouse-digest")
    assert digest.mode == 0o644 and len(digest.content_string.strip()) >= 16
    HOST.run_expect([0], f"{NODE_PYTHON} -c 'import lbappliance.health'")


def test_state_directories() -> None:
    for path in ("/var/lib/lbappliance", "/etc/lbappliance", "/run/lbappliance"):
        d = HOST.file(path)
        assert d.is_directory and d.mode == 0o755 and d.user == "root"


@pytest.mark.parametrize("key", sorted(SYSCTLS))
def test_rendered_sysctl_in_force(key: str) -> None:
    """Every rendered key holds the rendered value (whitespace-insensitive, as applied);
    an optional key (``-key``) may be absent from a container's network namespace."""
    proc = "/proc/sys/" + key.lstrip("-").replace(".", "/")
    if key.startswith("-") and not HOST.file(proc).exists:
        pytest.skip(f"{key} is optional and absent here")
    assert HOST.check_output(f"cat {proc}").split() == SYSCTLS[key].split()


def test_nonlocal_bind_is_among_them() -> None:
    assert HOST.sysctl("net.ipv4.ip_nonlocal_bind") == 1 and "net.ipv4.ip_nonlocal_bind" in SYSCTLS


def test_conntrack_bypass_table_loaded() -> None:
    assert HOST.service("lbappliance-notrack").is_running
    assert HOST.service("lbappliance-notrack").is_enabled
    table = json.loads(HOST.check_output("nft -j list table inet lbappliance_notrack"))
    rules = [item["rule"] for item in table["nftables"] if "rule" in item]
    assert rules and all(any("notrack" in e for e in r["expr"]) for r in rules)


def test_anycast_vips_on_lo() -> None:
    assert VIPS
    service = HOST.service("lbappliance-vips")
    assert service.is_running and service.is_enabled
    addresses = json.loads(HOST.check_output("ip -j address show dev lo"))[0]["addr_info"]
    on_lo = {f"{a['local']}/{a['prefixlen']}" for a in addresses}
    assert set(VIPS) <= on_lo, f"missing on lo: {set(VIPS) - on_lo}"
