"""The rendered networkd files and the lb_network apply tool with the real systemd-networkd.

A network namespace of the test's own stands in for lb1 (eth0, eth1, eth2 as veths
into a "switch" namespace). systemd-networkd runs there in a private mount namespace
(its own /run, /etc/systemd/network and a D-Bus system bus for ``networkctl``;
/sys read-only, as in a container, so it does not wait for udev), as a child of the
test. Cheap (about a second) and parallel-safe: names are random, nothing outside
the namespaces changes. The container lab does the same through Ansible and systemd.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lbappliance.inventory import load_site
from lbappliance.render import render_site
from lbappliance.secrets import Secrets
from tests.security.hostile import UnsafeLoader

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "roles" / "lb_network" / "files" / "network_apply.py"
CHECK = ROOT / "playbooks" / "files" / "network_matches.py"
NETWORKD = Path("/lib/systemd/systemd-networkd")
INNER = """\
set -e
mount --make-rprivate /
mount -o remount,ro /sys
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/netif && chown systemd-network:systemd-network /run/systemd/netif
mount -t tmpfs tmpfs /run/dbus
mount --bind "$1" /etc/systemd/network
dbus-daemon --system --nofork --nopidfile &
BUS=$!
while [ ! -S /run/dbus/system_bus_socket ]; do sleep 0.05; done
/lib/systemd/systemd-networkd &
ND=$!
trap 'kill $ND $BUS; wait; exit 0' TERM
wait
"""


class Node:
    """lb1's namespace with networkd running in it."""

    def __init__(self, tmp: Path):
        tag = uuid.uuid4().hex[:6]
        self.ns, self.switch = f"lbnd{tag}-n", f"lbnd{tag}-s"
        self.etc, self.staged, self.backup = tmp / "etc", tmp / "staged", tmp / "backup"
        self.etc.mkdir()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        for ns in (self.ns, self.switch):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        for i in range(3):
            veth = ["ip", "link", "add", f"eth{i}", "netns", self.ns, "type", "veth"]
            subprocess.run([*veth, "peer", "name", f"sw{i}", "netns", self.switch], check=True)
            subprocess.run(["ip", "-n", self.switch, "link", "set", f"sw{i}", "up"], check=True)
        # What the node has before the deploy: its management address only.
        subprocess.run(["ip", "-n", self.ns, "address", "add", "10.99.0.11/24", "dev", "eth0"],
                       check=True)  # fmt: skip
        subprocess.run(["ip", "-n", self.ns, "link", "set", "eth0", "up"], check=True)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "-m", "sh", "-c", INNER, "sh",
             str(self.etc)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while self.run("networkctl", "list", check=False).returncode != 0:
            assert time.monotonic() < deadline, "networkd did not come up"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for ns in (self.ns, self.switch):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def networkd_pid(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-f", "systemd-networkd"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
        assert out, "networkd is not running"
        return int(out[0])

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A command in networkd's network and mount namespaces."""
        try:
            pid = self.networkd_pid()
        except AssertionError:
            if check:
                raise
            return subprocess.CompletedProcess(argv, 1, "", "no networkd")
        return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", *argv],
                              capture_output=True, text=True, check=check, timeout=60)  # fmt: skip

    def tool(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("python3", str(TOOL), *args, "--installed", str(self.etc),
                        "--backup", str(self.backup))  # fmt: skip

    def ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.ns, *args], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    def matches(self, expected: dict) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, "python3", str(CHECK),
                               json.dumps(expected)], capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("render")
    files = render_site(load_site(ROOT / "inventory", "lab"), Secrets(None, None)).files
    staged = out / "staged"
    staged.mkdir()
    host_vars = {}
    for f in files:
        if f.path.startswith("hosts/lb1/etc/systemd/network/"):
            (staged / Path(f.path).name).write_bytes(f.content)
        if f.path == "inventory/host_vars/lb1.yml":
            host_vars = yaml.load(f.content, UnsafeLoader)
    return staged, host_vars["lb_network_expected"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network and mount namespaces)")
    for tool in ("dbus-daemon", "nsenter", "unshare"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if not NETWORKD.is_file():
        pytest.skip("systemd-networkd is not installed")
    n = Node(tmp_path)
    try:
        n.start()
        yield n
    finally:
        n.stop()


def wait(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_rendered_files_give_the_node_its_network_and_it_survives_a_flap(node, rendered):
    staged, expected = rendered
    out = json.loads(node.tool("apply", "--staged", str(staged), "--arm", "none").stdout)
    assert out["reconfigured"] == ["eth0", "eth1", "eth2"]
    wait(lambda: node.matches(expected).returncode == 0, 20, "the inventory's network")
    # The management address was never taken away (it is static and kept).
    assert "10.99.0.11/24" in node.ip("address", "show", "eth0")
    # One uplink flap: the kernel drops the IPv6 address and every route of eth1 ...
    subprocess.run(["ip", "-n", node.ns, "link", "set", "eth1", "down"], check=True)
    assert "default" not in node.ip("route")
    assert "2001:db8:10::11" not in node.ip("address", "show", "eth1")
    time.sleep(1)
    subprocess.run(["ip", "-n", node.ns, "link", "set", "eth1", "up"], check=True)
    # ... and networkd puts them back by itself, usable at once (the check skips tentative
    # addresses: the inventory's IPv6 address skips duplicate detection).
    back = wait(lambda: node.matches(expected).returncode == 0, 20, "addresses and routes back")
    print(f"MEASURE networkd, link up -> lb1's addresses and routes back: {back * 1000:.0f} ms")
    v6 = next(
        line for line in node.ip("address", "show", "eth1").splitlines() if "2001:db8" in line
    )
    assert "nodad" in v6 and "tentative" not in v6


def test_a_change_keeps_foreign_addresses_removes_dropped_ones_and_rolls_back(node, rendered):
    staged, expected = rendered
    node.tool("apply", "--staged", str(staged), "--arm", "none")
    wait(lambda: node.matches(expected).returncode == 0, 20, "the inventory's network")
    node.tool("confirm")
    # keepalived's VRRP VIP: an address networkd did not make, which it must keep.
    subprocess.run(["ip", "-n", node.ns, "address", "add", "203.0.113.10/24", "dev", "eth1"],
                   check=True)  # fmt: skip
    change = staged.parent / "change"
    shutil.rmtree(change, ignore_errors=True)
    shutil.copytree(staged, change)
    eth2 = change / "10-lbappliance-eth2.network"
    eth2.write_text(eth2.read_text().replace("Address=10.30.0.11/24", "Address=10.30.0.31/24"))
    assert node.tool("plan", "--staged", str(change)).stdout.strip() == json.dumps(
        {"added": [], "removed": [], "changed": ["10-lbappliance-eth2.network"]}
    )
    out = json.loads(node.tool("apply", "--staged", str(change), "--arm", "none").stdout)
    assert out["reconfigured"] == ["eth2"]
    wait(lambda: "10.30.0.31/24" in node.ip("address", "show", "eth2"), 10, "the new address")
    assert "10.30.0.11/" not in node.ip("address", "show", "eth2")
    assert "203.0.113.10/24" in node.ip("address", "show", "eth1")
    # Unconfirmed: the rollback (what the timer runs) restores the previous network.
    assert json.loads(node.tool("rollback").stdout) == {"rolled_back": ["eth2"]}
    wait(lambda: node.matches(expected).returncode == 0, 20, "the previous network")
    assert "10.30.0.31" not in node.ip("address", "show", "eth2")
    assert "203.0.113.10/24" in node.ip("address", "show", "eth1")
    assert not node.backup.exists()
    assert node.tool("check", "--staged", str(staged)).returncode == 0
    bad = staged.parent / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(staged, bad)
    (bad / "10-lbappliance-eth9.network").write_text("[Match]\nName=eth9\n")
    refused = node.run("python3", str(TOOL), "check", "--staged", str(bad), check=False)
    assert refused.returncode == 1 and "interface eth9 does not exist" in refused.stderr
