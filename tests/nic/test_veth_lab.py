"""Apply on a multi-queue veth in a network namespace; read the result back from sysfs.

veth has rx/tx channels (ethtool -L rx N tx N) and RPS/XPS in sysfs, but no IRQs, rings,
RSS table or irqbalance: those paths are covered by the fixture tests with FakeDriver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import lbappliance.nic
from lbappliance.nic.cpulist import format_mask, parse_cpulist, parse_mask

pytestmark = pytest.mark.slow
SRC = str(Path(lbappliance.nic.__file__).parents[2])  # the src/ holding this checkout


def sh(*argv: str, ns: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    res = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"lbnic-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        sh(
            "ip", "-n", name, "link", "add", "va", "numrxqueues", "4", "numtxqueues", "4",
            "type", "veth", "peer", "name", "vb", "numrxqueues", "4", "numtxqueues", "4",
        )  # fmt: skip
        sh("ip", "-n", name, "link", "set", "va", "up")
        sh("ip", "-n", name, "link", "set", "vb", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        assert name not in sh("ip", "netns", "list")


def apply(ns: str, config: Path, *extra: str) -> dict:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "lbappliance.nic", "apply",
         "--json", "--config", str(config), *extra],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    return json.loads(res.stdout)


def host_sysctl(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


def test_apply_on_veth_then_nothing_to_do(netns: str, tmp_path: Path) -> None:
    online = sorted(parse_cpulist(Path("/sys/devices/system/cpu/online").read_text()))
    if len(online) < 2:
        pytest.skip("needs two CPUs")
    a, b = online[:2]
    busy = host_sysctl("busy_poll")
    if host_sysctl("busy_read") != busy:
        pytest.skip("busy_poll != busy_read on this host")
    # The host's own sysctl values: should net.core.* be visible in the namespace on some
    # kernel, this lab still must not change the host.
    profile = {
        "queues": 2,
        "housekeeping_cpus": [],
        "irq_cpus": [a, b],
        "rps": "on",
        "irqbalance": "leave",
        "netdev_max_backlog": host_sysctl("netdev_max_backlog"),
        "netdev_budget": host_sysctl("netdev_budget"),
        "busy_poll_us": busy,
    }
    config = tmp_path / "nic.json"
    config.write_text(json.dumps({"node": "lab", "interfaces": ["va"], "profile": profile}))

    dry = apply(netns, config, "--dry-run")
    assert dry["changed"] and dry["dry_run"]
    assert "Current hardware settings:\nRX:\t\t4" in sh("ethtool", "-l", "va", ns=netns)

    first = apply(netns, config)
    assert first["failed"] == [] and first["changed"] is True
    changes = {c["what"]: (c["before"], c["after"]) for c in first["changes"]}
    assert changes["va rx/tx queues"] == ("4/4", "2/2")
    assert changes["va rx-0 rps_cpus"][1] == format_mask(1 << a)
    assert changes["va rx-1 rps_cpus"][1] == format_mask(1 << b)

    queues = sorted(sh("ls", "/sys/class/net/va/queues", ns=netns).split())
    assert queues == ["rx-0", "rx-1", "tx-0", "tx-1"]
    assert "Current hardware settings:\nRX:\t\t2\nTX:\t\t2" in sh("ethtool", "-l", "va", ns=netns)

    def mask(path: str) -> int:
        return parse_mask(sh("cat", f"/sys/class/net/va/queues/{path}", ns=netns))

    assert (mask("rx-0/rps_cpus"), mask("rx-1/rps_cpus")) == (1 << a, 1 << b)
    xps0, xps1 = mask("tx-0/xps_cpus"), mask("tx-1/xps_cpus")
    assert xps0 >> a & 1 and not xps0 >> b & 1 and xps1 >> b & 1 and not xps1 >> a & 1
    assert xps0 | xps1 == sum(1 << c for c in online)  # every CPU has a tx queue
    if online == [a, b]:
        assert (xps0, xps1) == (1 << a, 1 << b)

    second = apply(netns, config)
    assert (second["changed"], second["changes"], second["failed"]) == (False, [], [])
    assert any("sysctl" in n for n in second["notes"]) or all(
        "sysctl" not in c["what"] for c in first["changes"]
    )
