"""End to end on the container lab: deploy over SSH, serve, fail over, roll with no loss.

On the session's deployed lab (conftest.py `deployed_lab`: one lab-up and one first
deploy for this module, test_deploy_noop_lab.py and test_network_lab.py), after the
no-op module and before the network one, in this order:
  1. `lbappliance deploy --site lab` has provisioned the bare lb1 and lb2 over SSH;
  2. the client's requests to the anycast VIP (IPv4 and IPv6) are answered by
     both backends;
  3. lb1 is killed (its cables pulled, then SIGKILL): the VRRP VIP moves to lb2
     within 0.5 s (VRRPv3, 100 ms adverts); lb1 then boots again;
  4. a rolling deploy that changes the HAProxy config, under a steady client
     stream, loses no request;
  5. the next deploy changes nothing;
  6. a deploy whose verify fails on lb1 stops there: lb1 stays drained, lb2
     serves untouched; a good deploy then brings lb1 back.
The lab is left serving, with the changed maxconn of step 4.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from lbappliance.lab.podman import PodmanLab, wait
from tests.deploy.conftest import ClientStream, DeployedLab, run_deploy

pytestmark = [pytest.mark.slow, pytest.mark.podman]

ROOT = Path(__file__).resolve().parents[2]
VRRP_VIP = "203.0.113.10"
ANYCAST_VIP = "198.51.100.10"
ANYCAST_VIP6 = "2001:db8:100::10"  # the same frontend, announced over the IPv6 peer
FAILOVER_BUDGET = 0.5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def deployed(deployed_lab: DeployedLab) -> PodmanLab:
    """The lab after its first, full deploy (measured in conftest.py), both nodes serving."""
    wait(lambda: serving(deployed_lab.lab), 90, "both nodes serving")
    return deployed_lab.lab


def announced_by_both(lab: PodmanLab) -> bool:
    """The router's FIB spreads both anycast VIPs (IPv4 and IPv6) over both nodes."""
    return all(
        len(lab.fib_nexthops(prefix)) == 2
        for prefix in (f"{ANYCAST_VIP}/32", f"{ANYCAST_VIP6}/128")
    )


def serving(lab: PodmanLab) -> bool:
    """Both nodes announce the anycast VIPs and lb1 (higher priority) holds the VRRP VIP."""
    return announced_by_both(lab) and lab.vrrp_holders(VRRP_VIP) == ["lb1"]


def test_first_deploy_converges_both_nodes(deployed: PodmanLab) -> None:
    assert deployed.vrrp_holders(VRRP_VIP) == ["lb1"]
    protocols = deployed.birdc("show", "protocols")
    for lb in deployed.topology.lbs:
        assert any(
            line.startswith(lb.name) and "Established" in line for line in protocols.splitlines()
        ), protocols


@pytest.mark.parametrize("vip", [ANYCAST_VIP, ANYCAST_VIP6, VRRP_VIP])
def test_client_requests_are_answered_by_both_backends(deployed: PodmanLab, vip: str) -> None:
    with ClientStream(deployed, vip, rate=50, max_requests=60, max_seconds=20) as stream:
        stream.wait_sent(60, 30)
    report = stream.stop()
    assert not report.failures, report.failures
    assert set(report.answers) == {"backend1", "backend2"}, report.answers


def _vip_appears(lab: PodmanLab, node: str, vip: str, armed: threading.Event, out: dict) -> None:
    """Poll ``node``'s addresses over netlink (1 ms) until ``vip`` shows; record when."""
    with lab.inside(node), IPRoute() as ipr:
        armed.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(a.get_attr("IFA_ADDRESS") == vip for a in ipr.get_addr(family=socket.AF_INET)):
                out["t"] = time.monotonic()
                return
            time.sleep(0.001)


def _first_answer_after(lab: PodmanLab, vip: str, t0: threading.Event, out: dict) -> None:
    """From the client: time of the first TCP connect to ``vip`` that succeeds after t0."""
    with lab.inside("client"):
        t0.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.05)
                if s.connect_ex((vip, 80)) == 0:
                    out["t"] = time.monotonic()
                    return
            time.sleep(0.005)


def test_vrrp_vip_moves_to_lb2_within_half_a_second_when_lb1_dies(deployed: PodmanLab) -> None:
    lab = deployed
    assert lab.vrrp_holders(VRRP_VIP) == ["lb1"]
    armed, cut, moved, answered = threading.Event(), threading.Event(), {}, {}
    watcher = threading.Thread(target=_vip_appears, args=(lab, "lb2", VRRP_VIP, armed, moved))
    prober = threading.Thread(target=_first_answer_after, args=(lab, VRRP_VIP, cut, answered))
    watcher.start()
    prober.start()
    assert armed.wait(10)
    t0 = lab.cut_links("lb1")  # the node dies: every cable pulled at once...
    cut.set()
    lab.kill("lb1")  # ...and its processes with it (SIGKILL, no clean VRRP hand-over)
    watcher.join(15)
    prober.join(15)
    assert "t" in moved, "the VRRP VIP never appeared on lb2"
    gap = moved["t"] - t0
    client_gap = answered.get("t", float("nan")) - t0
    print(
        f"MEASURE VRRP failover: VIP on lb2 {gap * 1000:.0f} ms after lb1's links were cut; "
        f"client connects again after {client_gap * 1000:.0f} ms"
    )
    assert gap < FAILOVER_BUDGET, f"VIP moved in {gap:.3f} s"
    assert lab.vrrp_holders(VRRP_VIP) == ["lb2"]
    # lb1 boots again and takes its place back (services enabled, configs persisted).
    lab.start("lb1")
    wait(lambda: serving(lab), 90, "lb1 back: ECMP via both and the VRRP VIP")


def test_rolling_deploy_changing_haproxy_loses_no_request(
    deployed: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    lab = deployed
    wait(lambda: serving(lab), 90, "both nodes serving before the roll")
    inventory = workdir / "inventory"
    shutil.copytree(ROOT / "inventory", inventory)
    site = inventory / "sites" / "lab.yml"
    text = site.read_text()
    assert "    maxconn: 5000" in text
    site.write_text(text.replace("    maxconn: 5000", "    maxconn: 4000", 1))
    with ClientStream(lab, ANYCAST_VIP, rate=20, max_requests=6000, max_seconds=400) as stream:
        time.sleep(2)
        result = run_deploy(lab, source_snapshot, workdir / "render", inventory=inventory)
        time.sleep(2)
    report = stream.stop()
    print(
        f"MEASURE rolling deploy (HAProxy config change): {result.seconds:.1f} s, "
        f"{result.changed} changed; client stream {report.sent} requests, "
        f"{len(report.failures)} lost, answers {dict(report.answers)}"
    )
    assert result.ok
    assert result.changed > 0
    assert "Drain | maintenance on" in (workdir / "render" / "deploy.log").read_text()
    for lb in lab.topology.lbs:
        cfg = lab.exec(lb.name, "cat", "/etc/haproxy/haproxy.cfg").stdout
        assert "maxconn 4000" in cfg
    assert report.sent >= 200, "the stream did not cover the deploy"
    assert report.failures == [], report.failures
    assert set(report.answers) == {"backend1", "backend2"}

    again = run_deploy(lab, source_snapshot, workdir / "render", inventory=inventory)
    print(f"MEASURE idempotent deploy: {again.seconds:.1f} s, {again.changed} changed")
    assert again.ok
    assert again.changed == 0
    assert serving(lab)


def test_failed_verify_stops_the_roll_and_leaves_the_peer_serving(
    deployed: PodmanLab, source_snapshot: Path, workdir: Path
) -> None:
    """A change that breaks lb1's BGP (its AS no longer matches the router's) fails
    lb1's verify: the roll stops, lb1 stays drained, lb2 is untouched and serves."""
    lab = deployed
    good = workdir / "inventory"  # the rolling test's inventory: what the nodes run now
    broken = workdir / "inventory-broken"
    shutil.copytree(good, broken)
    site = broken / "sites" / "lab.yml"
    site.write_text(site.read_text().replace("  asn: 65100\n", "  asn: 65101\n", 1))
    before = lab.exec("lb2", "cat", "/etc/exabgp/exabgp.conf").stdout
    result = run_deploy(
        lab, source_snapshot, workdir / "broken", "-e", "lb_deploy_settle_timeout=10",
        inventory=broken,
    )  # fmt: skip
    assert result.returncode == 1
    assert "lb1: Verify | BGP sessions" in result.output
    assert "Error rendering template" not in result.output  # it failed for the right reason
    assert not re.search(r"^\s+lb2\s+changed", result.output, re.MULTILINE)  # lb2 untouched
    assert lab.exec("lb2", "cat", "/etc/exabgp/exabgp.conf").stdout == before
    assert lab.fib_nexthops(f"{ANYCAST_VIP}/32") == [
        str(lab.topology.host("lb2").address_on("uplink"))
    ]
    assert lab.vrrp_holders(VRRP_VIP) == ["lb2"]
    with ClientStream(lab, ANYCAST_VIP, rate=50, max_requests=40, max_seconds=20) as stream:
        stream.wait_sent(40, 30)
    assert stream.stop().failures == []
    restored = run_deploy(lab, source_snapshot, workdir / "render", inventory=good)
    print(f"MEASURE recovery deploy after the failed one: {restored.seconds:.1f} s")
    assert restored.ok
    wait(lambda: serving(lab), 60, "both nodes serving again")
