"""The VM lab: a pair deployed over SSH to two qemu VMs with their own kernel.

One booted pair for the session (``conftest.vm_lab``; the lab site with NIC tuning
and an IPVS service, ``conftest.VM_SITE``), in this order:
  1. the VMs run their own kernel (not the host's) with multi-queue virtio NICs, whose
     verifier accepts the XDP programs (generic and native XDP);
  2. `lbappliance deploy --site lab` provisions the bare VMs over SSH; the next run
     changes nothing;
  3. the client's requests to the anycast VIP are answered by both backends, and
     those to the XDP L4 service by every backend through the forwarder in native
     mode (virtio-net: the forwarder on eth1, an XDP_PASS program on eth2);
  4. IPVS: client connections to the IPVS service (Maglev, DR) reach every backend
     through the VMs; a backend failing its check leaves the table (keepalived) and
     `lbappliance status` shows it; it comes back when healthy;
  5. NIC tuning: what the role applied (queues, IRQ affinity, RPS/XPS, irqbalance)
     is what `nic plan` makes of `nic capture` on the VM;
  6. lb1's qemu is killed: the VRRP VIP moves to lb2, the router's FIB drops lb1's
     route within BFD time (100 ms x 3), and lb1, booted again, rejoins by itself
     with its NIC tuning in force.
Timings are printed as ``MEASURE`` lines (the README's VM lab figures).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from lbappliance.dataplane.loader import bpf_source_dir, compile_object
from lbappliance.lab.vm import VmLab, wait
from lbappliance.nic.ethtool import parse_channels
from lbappliance.paths import NODE_CLI
from tests.deploy.conftest import ClientStream, run_deploy
from tests.vm.conftest import DEPLOY_TIMEOUT, IPVS_VIP

pytestmark = [pytest.mark.slow, pytest.mark.vm]
# The tests on the deployed VMs (vm_deploy) are not in the default run: one deploy to a
# TCG VM takes 12+ minutes here. `-m vm` runs them.

VRRP_VIP = "203.0.113.10"
ANYCAST_VIP = "198.51.100.10"
L4_VIP = "198.51.100.20"  # the lab site's XDP service, echo: port 8080 over the 3 backends
# Generous bounds: the router and BFD run at host speed, the VMs ~17x slower (TCG).
VRRP_BUDGET = 2.0  # VRRPv3 at 100 ms: 3 adverts + skew; measured 0.32-0.34 s quiet
BFD_BUDGET = 1.5  # BFD 100 ms x 3 = 0.3 s detection, then BIRD and the kernel
BACKENDS = {"backend1", "backend2", "backend-23"}
LB_VENV = NODE_CLI


@pytest.fixture(scope="session")
def deployed(vm_lab: VmLab, vm_source: Path, vm_workdir: Path, vm_inventory: Path) -> VmLab:
    """The VMs after a first, full deploy (measured)."""
    result = run_deploy(
        vm_lab, vm_source, vm_workdir / "render", inventory=vm_inventory, timeout=DEPLOY_TIMEOUT
    )
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


# ``ip -d -j link``'s XDP attach modes (linux/if_link.h XDP_ATTACHED_*).
XDP_MODES = {"xdpdrv": 1, "xdpgeneric": 2}


def test_xdp_programs_pass_the_vm_kernels_verifier_and_attach(
    vm_lab: VmLab, tmp_path: Path
) -> None:
    """Debian 12's 6.1 verifier is stricter than the host's: both objects, compiled as
    the node compiles them, load and attach there, generic and native (virtio-net)."""
    lb = vm_lab.topology.lbs[0].name
    remote = "/tmp/lbappliance-xdp-check"
    vm_lab.exec(lb, "mkdir", "-p", remote)
    try:
        for name in ("xdp_lb", "xdp_pass", "xdp_decap"):
            obj = compile_object(bpf_source_dir() / f"{name}.c", tmp_path / f"{name}.o")
            vm_lab.exec(
                lb, "sh", "-c", f"base64 -d > {remote}/{name}.o",
                stdin=base64.b64encode(obj.read_bytes()).decode(),
            )  # fmt: skip
            for mode, code in XDP_MODES.items():
                # iproute2 loads the object through libbpf: the guest kernel verifies it.
                load = vm_lab.exec(
                    lb, "ip", "link", "set", "dev", "eth1", mode, "obj", f"{remote}/{name}.o",
                    "sec", "xdp", check=False,
                )  # fmt: skip
                assert load.returncode == 0, f"{name}.o {mode}: {load.stderr[-3000:]}"
                try:
                    link = vm_lab.exec(lb, "ip", "-d", "-j", "link", "show", "dev", "eth1")
                    xdp = json.loads(link.stdout)[0].get("xdp", {})
                    assert xdp.get("mode") == code, (name, mode, xdp)
                    assert xdp.get("prog", {}).get("name") == name, (name, mode, xdp)
                finally:
                    vm_lab.exec(lb, "ip", "link", "set", "dev", "eth1", mode, "off")
    finally:
        vm_lab.exec(lb, "rm", "-rf", remote)


@pytest.mark.vm_deploy
def test_first_deploy_converges_both_vms(deployed: VmLab) -> None:
    protocols = deployed.birdc("show", "protocols")
    for lb in deployed.topology.lbs:
        assert any(
            line.startswith(lb.name) and "Established" in line for line in protocols.splitlines()
        ), protocols
    assert deployed.birdc("show", "bfd", "sessions").count(" Up ") >= 2


@pytest.mark.vm_deploy
def test_second_deploy_changes_nothing(
    deployed: VmLab, vm_source: Path, vm_workdir: Path, vm_inventory: Path
) -> None:
    again = run_deploy(
        deployed, vm_source, vm_workdir / "render", inventory=vm_inventory, timeout=DEPLOY_TIMEOUT
    )
    print(f"MEASURE VM second deploy: {again.seconds:.1f} s, {again.changed} changed")
    assert again.ok
    assert again.changed == 0


@pytest.mark.vm_deploy
def test_client_requests_are_answered_by_both_backends(deployed: VmLab) -> None:
    with ClientStream(deployed, ANYCAST_VIP, rate=20, max_requests=40, max_seconds=30) as stream:
        stream.wait_sent(40, 60)
    report = stream.stop()
    assert not report.failures, report.failures
    assert set(report.answers) == {"backend1", "backend2"}, report.answers


def dataplane_status(lab: VmLab, node: str) -> dict:
    return json.loads(lab.exec(node, NODE_CLI, "dataplane", "status", "--json").stdout)


def spare_queue_pairs(lab: VmLab, node: str, ifname: str) -> tuple[int, int, int]:
    """(combined in use, CPUs, max combined) of a VM NIC: native XDP on virtio-net
    needs combined + CPUs <= max combined (``xdplink.virtio_xdp_hint``)."""
    channels = parse_channels(lab.exec(node, "ethtool", "-l", ifname).stdout)
    assert channels and channels.combined and channels.max_combined, (node, ifname, channels)
    cpus = int(lab.exec(node, "nproc").stdout)
    return channels.combined, cpus, channels.max_combined


@pytest.mark.vm_deploy
def test_the_xdp_service_is_answered_through_the_native_forwarder(deployed: VmLab) -> None:
    """Native XDP on virtio-net: the forwarder on eth1 redirects to the backend NIC
    eth2, which drops redirected frames unless it has an XDP program of its own: the
    loader's XDP_PASS program. Every backend answers; the forwarder counts the packets."""
    lab = deployed
    wait(lambda: len(lab.fib_nexthops(f"{L4_VIP}/32")) == 2, 120, f"{L4_VIP} via both VMs")
    before = {}
    for lb in lab.topology.lbs:
        for ifname in ("eth1", "eth2"):
            combined, cpus, maximum = spare_queue_pairs(lab, lb.name, ifname)
            assert combined + cpus <= maximum, (lb.name, ifname, combined, cpus, maximum)
        st = dataplane_status(lab, lb.name)
        assert st["attached"] == {"mode": "native", "prog_id": st["pinned_prog_id"]}, st
        (egress,) = st["egress_programs"]
        assert egress["interface"] == "eth2", egress
        assert egress["attached"] == {"mode": "native", "prog_id": egress["pinned_prog_id"]}
        link = lab.exec(lb.name, "ip", "-d", "-j", "link", "show", "dev", "eth2").stdout
        xdp = json.loads(link)[0].get("xdp", {})
        assert xdp.get("mode") == XDP_MODES["xdpdrv"], xdp
        assert xdp.get("prog", {}).get("name") == "xdp_pass", xdp
        (svc,) = st["services"]
        assert {b["egress"] for b in svc["backends"]} == {"eth2"}, svc
        before[lb.name] = svc["packets"]

    count = 60
    with ClientStream(lab, L4_VIP, port=8080, rate=20, max_requests=count, max_seconds=60) as s:
        s.wait_sent(count, 90)
    report = s.stop()
    assert not report.failures, report.failures
    assert set(report.answers) == BACKENDS, report.answers
    forwarded = {
        lb.name: dataplane_status(lab, lb.name)["services"][0]["packets"] - before[lb.name]
        for lb in lab.topology.lbs
    }
    print(f"MEASURE VM native XDP: {count} connections answered {dict(report.answers)}, "
          f"forwarded packets per VM {forwarded}")  # fmt: skip
    # Each connection: SYN, the request (with its ACK), the ACK of the FIN, at least.
    assert sum(forwarded.values()) >= 3 * count, forwarded


def ipvs_answers(lab: VmLab, count: int) -> Counter:
    """``count`` HTTP requests from the client to the IPVS service, one connection each."""
    answers: Counter = Counter()
    with ClientStream(lab, IPVS_VIP, port=8080, rate=20, max_requests=count, max_seconds=60) as s:
        s.wait_sent(count, 90)
    report = s.stop()
    assert not report.failures, report.failures
    answers.update(report.answers)
    return answers


def real_servers(lab: VmLab, node: str) -> list[str]:
    out = lab.exec(node, "ipvsadm", "-Ln", "-t", f"{IPVS_VIP}:8080").stdout
    return sorted(line.split()[1] for line in out.splitlines() if line.strip().startswith("->")
                  and line.split()[1][0].isdigit())  # fmt: skip


def lab_status(lab: VmLab, vm_inventory: Path) -> str:
    """`lbappliance status --site lab` from the controller, over SSH as deploy goes."""
    cmd = [sys.executable, "-c", "from lbappliance.cli import main; main()", "status"]
    proc = subprocess.run(
        [*cmd, "--site", "lab", "--inventory", str(vm_inventory)],
        env={**os.environ, **lab.deploy_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(proc.stdout + proc.stderr)
    return proc.stdout


@pytest.mark.vm_deploy
def test_ipvs_forwards_client_connections_to_every_backend(deployed: VmLab) -> None:
    for lb in deployed.topology.lbs:
        table = deployed.exec(lb.name, "ipvsadm", "-Ln", "-t", f"{IPVS_VIP}:8080").stdout
        assert " mh" in table and "Route" in table, table
        assert real_servers(deployed, lb.name) == [f"10.30.0.{n}:8080" for n in (21, 22, 23)]
    t = time.monotonic()
    answers = ipvs_answers(deployed, 60)
    print(f"MEASURE VM IPVS: 60 connections (one request each) in {time.monotonic() - t:.1f} s, "
          f"answers {dict(answers)}")  # fmt: skip
    assert set(answers) == BACKENDS, answers


@pytest.mark.vm_deploy
def test_ipvs_check_takes_a_dead_real_server_out_and_status_shows_it(
    deployed: VmLab, vm_inventory: Path
) -> None:
    lab = deployed
    dead = "10.30.0.23:8080"
    lab.set_backend("backend-23", health_status=503)
    try:
        t = time.monotonic()
        for lb in lab.topology.lbs:
            wait(lambda n=lb.name: dead not in real_servers(lab, n), 60, f"{dead} out on {lb.name}")
        print(f"MEASURE VM IPVS check: dead real server out on both VMs after "
              f"{time.monotonic() - t:.1f} s (HTTP check every 2 s, fall 2)")  # fmt: skip
        answers = ipvs_answers(lab, 30)
        assert set(answers) == {"backend1", "backend2"}, answers
        status = lab_status(lab, vm_inventory)
        line = f"  IPVS     {IPVS_VIP}:8080/tcp mh: "
        shown = [ln for ln in status.splitlines() if ln.startswith(line)]
        assert len(shown) == 2, status  # one per node
        assert all("10.30.0.21:8080" in ln and dead not in ln for ln in shown), shown
    finally:
        lab.set_backend("backend-23", health_status=200)
    for lb in lab.topology.lbs:
        wait(lambda n=lb.name: dead in real_servers(lab, n), 60, f"{dead} back on {lb.name}")


def nic_plan_from_capture(lab: VmLab, node: str, vm_inventory: Path, tmp: Path) -> dict:
    """`nic capture` on the VM, copied here, fed to `nic plan` on the controller."""
    lab.exec(node, "rm", "-rf", "/tmp/nic-facts")
    lab.exec(node, LB_VENV, "nic", "capture", "--out", "/tmp/nic-facts")
    tarball = subprocess.run(
        [*lab.ssh_command(node), "tar -C /tmp/nic-facts -c ."], capture_output=True, timeout=120,
        check=True,
    ).stdout  # fmt: skip
    facts = tmp / f"{node}-facts"
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        tar.extractall(facts, filter="data")
    out = subprocess.run(
        [sys.executable, "-c", "from lbappliance.cli import main; main()", "nic", "plan",
         "--site", "lab", "--inventory", str(vm_inventory), "--node", node,
         "--facts-root", str(facts), "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_nic_state_is_the_plan(lab: VmLab, node: str, plan: dict) -> None:
    """The VM's live queues, IRQ affinity, RPS/XPS masks and irqbalance are the plan's."""
    assert plan["nics"], plan
    for nic in plan["nics"]:
        name = nic["name"]
        channels = lab.exec(node, "ethtool", "-l", name).stdout
        current = channels.split("Current hardware settings:")[1]
        assert f"Combined:\t{nic['channels']['combined']}" in current, channels
        script = (
            f"for i in {' '.join(nic['irq_affinity'])}; do "
            'echo "$i $(cat /proc/irq/$i/smp_affinity_list)"; done; '
            f"for f in /sys/class/net/{name}/queues/*/[rx]ps_cpus; do "
            'echo "$f $(cat $f)"; done'
        )
        live = dict(
            line.rsplit(" ", 1) for line in lab.exec(node, "sh", "-c", script).stdout.splitlines()
        )
        for irq, cpu in nic["irq_affinity"].items():
            assert live[irq] == str(cpu), (name, irq, live[irq], cpu)
        for kind, masks in (("rps", nic["rps_cpus"]), ("xps", nic["xps_cpus"])):
            for queue, mask in masks.items():
                path = f"/sys/class/net/{name}/queues/{queue}/{kind}_cpus"
                assert int(live[path], 16) == int(mask, 16), (path, live[path], mask)
    assert plan["irqbalance"]["mode"] == "stop"
    active = lab.exec(node, "systemctl", "is-active", "irqbalance", check=False).stdout.strip()
    assert active != "active", "irqbalance runs although the profile stops it"


@pytest.mark.vm_deploy
def test_nic_tuning_applied_is_what_nic_plan_makes_of_the_vm(
    deployed: VmLab, vm_inventory: Path, vm_workdir: Path
) -> None:
    for lb in deployed.topology.lbs:
        plan = nic_plan_from_capture(deployed, lb.name, vm_inventory, vm_workdir)
        print(json.dumps(plan["nics"][0], indent=1))
        assert {n["name"] for n in plan["nics"]} == {"eth1", "eth2"}
        # Two vCPUs, none reserved (housekeeping_cpus: []): two queues of the four.
        assert all(n["channels"] == {"combined": 2} for n in plan["nics"]), plan["nics"]
        assert_nic_state_is_the_plan(deployed, lb.name, plan)


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


@pytest.mark.vm_deploy
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


@pytest.mark.vm_deploy
def test_nic_tuning_still_in_force_after_the_reboot(
    deployed: VmLab, vm_inventory: Path, vm_workdir: Path
) -> None:
    """lb1 was killed and booted again above: the boot-time unit put its tuning back."""
    uptime = float(deployed.exec("lb1", "cat", "/proc/uptime").stdout.split()[0])
    assert uptime < 1200, "lb1 did not reboot in this session"
    plan = nic_plan_from_capture(deployed, "lb1", vm_inventory, vm_workdir / "rebooted")
    assert_nic_state_is_the_plan(deployed, "lb1", plan)
