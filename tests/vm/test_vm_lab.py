"""The VM lab: a pair deployed over SSH to two qemu VMs with their own kernel.

One booted pair for the session (``conftest.vm_lab``), in this order:
  1. the VMs run their own kernel (not the host's) with multi-queue virtio NICs;
  2. `lbappliance deploy --site lab` provisions the bare VMs over SSH; the next run
     changes nothing;
  3. the client's requests to the anycast VIP are answered by both backends;
  4. lb1's qemu is killed: the VRRP VIP moves to lb2, the router's FIB drops lb1's
     route within BFD time (100 ms x 3), and lb1, booted again, rejoins by itself.
Timings are printed as ``MEASURE`` lines (the README's VM lab figures).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from lbappliance.lab.vm import VmLab, wait

from ..deploy.conftest import ClientStream, run_deploy

pytestmark = [pytest.mark.slow, pytest.mark.vm]

VRRP_VIP = "203.0.113.10"
ANYCAST_VIP = "198.51.100.10"
# Generous bounds: the router and BFD run at host speed, the VMs ~17x slower (TCG).
VRRP_BUDGET = 2.0  # VRRPv3 at 100 ms: 3 adverts + skew; measured 0.32-0.34 s quiet
BFD_BUDGET = 1.5  # BFD 100 ms x 3 = 0.3 s detection, then BIRD and the kernel


@pytest.fixture(scope="session")
def deployed(vm_lab: VmLab, source_snapshot: Path, vm_workdir: Path) -> VmLab:
    """The VMs after a first, full deploy (measured)."""
    result = run_deploy(vm_lab, source_snapshot, vm_workdir / "render")
    print(f"MEASURE VM first deploy: {result.seconds:.1f} s, {result.changed} changed")
    assert result.ok, "first deploy to the VMs failed"
    assert result.changed > 0
    wait(lambda: serving(vm_lab), 120, "ECMP via both VMs and lb1 holding the VRRP VIP")
    return vm_lab


def announced_by_both(lab: VmLab) -> bool:
    return len(lab.fib_nexthops(f"{ANYCAST_VIP}/32")) == 2


def serving(lab: VmLab) -> bool:
    return announced_by_both(lab) and lab.vrrp_holders(VRRP_VIP) == ["lb1"]


def test_each_vm_runs_its_own_kernel_with_multiqueue_nics(vm_lab: VmLab) -> None:
    host_kernel = Path("/proc/sys/kernel/osrelease").read_text().strip()
    for lb in vm_lab.topology.lbs:
        kernel = vm_lab.exec(lb.name, "uname", "-r").stdout.strip()
        assert kernel != host_kernel and kernel.startswith("6.1."), kernel
        assert vm_lab.exec(lb.name, "hostname").stdout.strip() == lb.name
        assert vm_lab.exec(lb.name, "nproc").stdout.strip() == "2"
        channels = vm_lab.exec(lb.name, "ethtool", "-l", "eth1").stdout
        assert "Combined:\t4" in channels, channels
        # IPVS and its Maglev scheduler exist in this kernel (the host's has no IPVS).
        vm_lab.exec(lb.name, "modprobe", "-a", "ip_vs", "ip_vs_mh")


def test_first_deploy_converges_both_vms(deployed: VmLab) -> None:
    protocols = deployed.birdc("show", "protocols")
    for lb in deployed.topology.lbs:
        assert any(
            line.startswith(lb.name) and "Established" in line for line in protocols.splitlines()
        ), protocols
    assert deployed.birdc("show", "bfd", "sessions").count(" Up ") >= 2


def test_second_deploy_changes_nothing(
    deployed: VmLab, source_snapshot: Path, vm_workdir: Path
) -> None:
    again = run_deploy(deployed, source_snapshot, vm_workdir / "render")
    print(f"MEASURE VM second deploy: {again.seconds:.1f} s, {again.changed} changed")
    assert again.ok
    assert again.changed == 0


def test_client_requests_are_answered_by_both_backends(deployed: VmLab) -> None:
    with ClientStream(deployed, ANYCAST_VIP, rate=20, max_requests=40, max_seconds=30) as stream:
        wait(lambda: stream.report.sent >= 40, 60, "40 requests")
    report = stream.stop()
    assert not report.failures, report.failures
    assert set(report.answers) == {"backend1", "backend2"}, report.answers


def _router_watch(lab: VmLab, lb2_mac: str, lb1_hop: str, armed: threading.Event, out: dict):
    """In the router: when the VRRP VIP's ARP entry turns to lb2's MAC, and when lb1's
    next hop leaves the anycast route (netlink, polled every 2 ms)."""
    with lab.inside("router"), IPRoute() as ipr:
        armed.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(out) < 2:
            now = time.monotonic()
            if "vrrp" not in out:
                for n in ipr.get_neighbours(family=socket.AF_INET):
                    if n.get_attr("NDA_DST") == VRRP_VIP and n.get_attr("NDA_LLADDR") == lb2_mac:
                        out["vrrp"] = now
            if "fib" not in out:
                hops = {
                    h.get_attr("RTA_GATEWAY")
                    for r in ipr.get_routes(family=socket.AF_INET)
                    if r.get_attr("RTA_DST") == ANYCAST_VIP
                    for h in (r.get_attr("RTA_MULTIPATH") or [r])
                }
                if lb1_hop not in hops:
                    out["fib"] = now
            time.sleep(0.002)


def test_qemu_killed_vip_moves_route_goes_and_the_vm_rejoins(deployed: VmLab) -> None:
    lab = deployed
    wait(lambda: serving(lab), 120, "both VMs serving")
    lb1, lb2 = lab.topology.host("lb1"), lab.topology.host("lb2")
    armed, seen = threading.Event(), {}
    args = (lab, lab.mac(lb2, "uplink"), str(lb1.address_on("uplink", 4)), armed, seen)
    watcher = threading.Thread(target=_router_watch, args=args)
    watcher.start()
    assert armed.wait(10)
    t0 = lab.kill("lb1")
    watcher.join(25)
    vrrp, fib = seen.get("vrrp", float("nan")) - t0, seen.get("fib", float("nan")) - t0
    print(
        f"MEASURE VM failover (lb1's qemu SIGKILLed): VRRP VIP answered by lb2's MAC "
        f"after {vrrp * 1000:.0f} ms, lb1's route gone from the router's FIB after "
        f"{fib * 1000:.0f} ms"
    )
    assert "vrrp" in seen, "the router never saw the VRRP VIP move to lb2"
    assert "fib" in seen, "lb1's next hop stayed in the router's FIB"
    assert vrrp < VRRP_BUDGET
    assert fib < BFD_BUDGET
    assert lab.vrrp_holders(VRRP_VIP) == ["lb2"]
    assert lab.fib_nexthops(f"{ANYCAST_VIP}/32") == [str(lb2.address_on("uplink", 4))]
    # Booted again from its overlay, lb1 rejoins by itself: no deploy.
    t1 = time.monotonic()
    lab.start("lb1")
    booted = time.monotonic() - t1
    wait(lambda: serving(lab), 240, "lb1 back: ECMP via both and the VRRP VIP")
    print(
        f"MEASURE VM lb1 rejoin: SSH {booted:.0f} s after qemu started, serving "
        f"(BGP + VRRP) after {time.monotonic() - t1:.0f} s"
    )
