"""lb_nic on lb1: the scenario's nic.json applied to a two-queue veth, kept across boots.

What a veth can show: the queue count (ethtool over netlink). RSS, IRQ
affinity, RPS/XPS and rings need a real NIC (tests/nic, the VM lab).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import testinfra

HOST = testinfra.get_host("podman://lbamol-lb1")
NIC_JSON = Path(__file__).resolve().parents[1] / "render" / "etc" / "lbappliance" / "nic.json"
CONFIG = json.loads(NIC_JSON.read_text())
UNIT = "lbappliance-nic.service"


def queues(interface: str) -> str:
    """Current rx/tx queue counts of ``interface`` as "rx/tx"."""
    out = HOST.check_output(f"ethtool -l {interface}")
    current = out.split("Current hardware settings:")[1]
    counts = dict(line.split(":") for line in current.strip().splitlines())
    return f"{counts['RX'].strip()}/{counts['TX'].strip()}"


def test_config_installed() -> None:
    installed = HOST.file("/etc/lbappliance/nic.json")
    assert installed.sha256sum == hashlib.sha256(NIC_JSON.read_bytes()).hexdigest()


def test_queue_count_applied() -> None:
    for interface in CONFIG["interfaces"]:
        assert queues(interface) == "1/1"


def test_boot_unit_and_udev_rule_installed() -> None:
    assert HOST.service("lbappliance-nic").is_enabled
    rule = HOST.file("/etc/udev/rules.d/70-lbappliance-nic.rules")
    assert f'KERNEL=="{"|".join(CONFIG["interfaces"])}"' in rule.content_string


def test_boot_unit_applies_it_again() -> None:
    """What a reboot does: queues back to two, the unit puts one back."""
    interface = CONFIG["interfaces"][0]
    HOST.run_expect([0], f"ethtool -L {interface} rx 2 tx 2")
    assert queues(interface) == "2/2"
    HOST.run_expect([0], f"systemctl restart {UNIT}")
    assert HOST.check_output(f"systemctl is-active {UNIT}") == "active"
    assert queues(interface) == "1/1"
