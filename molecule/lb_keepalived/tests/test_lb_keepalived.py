"""lb_keepalived on lb1: the rendered config checked and running, lb1's VRRP VIPs held."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import time
from pathlib import Path

import testinfra

HOST = testinfra.get_host("podman://lbamol-lb1")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render" / "hosts" / "lb1"
CONFIG = RENDER / "etc/keepalived/keepalived.conf"


def _vips() -> dict[str, str]:
    """{VIP: interface} of every vrrp_instance in lb1's rendered config."""
    vips, interface, inside = {}, "", False
    for line in CONFIG.read_text().splitlines():
        words = line.split()
        if words[:1] == ["interface"]:
            interface = words[1]
        elif words[:1] == ["virtual_ipaddress"]:
            inside = True
        elif inside and words[:1] == ["}"]:
            inside = False
        elif inside and words:
            vips[words[0].split("/")[0]] = (
                words[words.index("dev") + 1] if "dev" in words else interface
            )
    return vips


VIPS = _vips()


def test_keepalived_runs_enabled() -> None:
    service = HOST.service("keepalived")
    assert service.is_running and service.is_enabled


def test_config_is_the_rendered_one_and_valid() -> None:
    installed = HOST.file("/etc/keepalived/keepalived.conf")
    assert installed.sha256sum == hashlib.sha256(CONFIG.read_bytes()).hexdigest()
    assert installed.mode == 0o644 and installed.user == "root"
    HOST.run_expect([0], "keepalived -t -f /etc/keepalived/keepalived.conf")


def test_alone_on_its_segment_lb1_holds_every_vip() -> None:
    """No peer answers: each instance becomes master within its adverts (generous bound)."""
    assert VIPS and all(ipaddress.ip_address(vip) for vip in VIPS)
    deadline, missing = time.monotonic() + 20, set(VIPS)
    while missing and time.monotonic() < deadline:
        links = json.loads(HOST.check_output("ip -j address show"))
        held = {(a["local"], link["ifname"]) for link in links for a in link["addr_info"]}
        missing = {vip for vip, dev in VIPS.items() if (vip, dev) not in held}
        time.sleep(0.5)
    assert not missing, f"not on lb1: {missing}"
