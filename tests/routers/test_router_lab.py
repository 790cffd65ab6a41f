"""The routers' side, for real: BIRD runs the rendered router config in the namespace lab.

- BFD: a node whose links are cut leaves the router's FIB in well under 0.5 s,
  against the BGP hold timer without BFD, measured in the same run;
- the import policy rejects a prefix outside the site's anycast list;
- GRACEFUL_SHUTDOWN (65535:0) from a node in maintenance depreferences its path
  before the withdraw.
"""

from __future__ import annotations

import statistics
import subprocess

import pytest

from lbappliance.lab.netns import NetnsLab

pytestmark = pytest.mark.slow

VIP = "198.51.100.10/32"
BOTH = ["10.10.0.11", "10.10.0.12"]


@pytest.fixture
def lab():
    with NetnsLab.create() as lab:
        yield lab


def ecmp(lab: NetnsLab) -> None:
    lab.wait(lambda: lab.fib_nexthops(VIP) == BOTH, 30, f"ECMP for {VIP} over both nodes")


def test_bfd_detects_dead_node_fast_hold_timer_does_not(lab: NetnsLab) -> None:
    lab.start_all()
    ecmp(lab)
    with_bfd = [lab.route_loss_time("lb1", VIP, bfd=True) for _ in range(3)]
    for node in ("lb1", "lb2"):
        lab.stop(node, "bfd")
    lab.wait(lambda: lab.bfd_sessions_up() == 0, 10, "BFD down")
    ecmp(lab)
    hold_timer = [lab.route_loss_time("lb1", VIP, bfd=False) for _ in range(2)]
    print(f"\nroute loss after links cut: BFD {with_bfd} s; hold timer {hold_timer} s")
    assert max(with_bfd) < 0.5
    # The lab's 3 s hold time runs from the last keepalive (every ~1 s from ExaBGP, with
    # jitter): measured 1.65-3.3 s.
    assert statistics.median(hold_timer) > 1.5
    assert max(with_bfd) * 4 < min(hold_timer)


LEAKY = """
neighbor 10.10.0.1 {
    router-id 10.10.0.11;
    local-address 10.10.0.11;
    local-as 65100;
    peer-as 65000;
    hold-time 3;
    family { ipv4 unicast; }
    static {
        route 198.51.100.10/32 next-hop self;
        route 198.51.100.99/32 next-hop self;
        route 10.200.0.0/16 next-hop self;
        route 0.0.0.0/0 next-hop self;
    }
}
"""


def test_router_policy_rejects_leaked_prefixes(lab: NetnsLab) -> None:
    lab.start_all(("backend", "bird"))
    conf = lab.workdir / "leaky-exabgp.conf"
    conf.write_text(LEAKY)
    lab.popen("lb1", "leaky-exabgp", ["exabgp", "server", str(conf)], env=lab.exabgp_env("lb1"))
    lab.wait(lambda: lab.fib_nexthops(VIP) == ["10.10.0.11"], 20, "the allowed VIP")
    routes = lab.birdc("show", "route", "all")
    assert "198.51.100.10/32" in routes
    for leaked in ("198.51.100.99/32", "10.200.0.0/16", "0.0.0.0/0"):
        assert leaked not in routes, routes
        assert lab.fib_nexthops(leaked) == []
    filtered = lab.birdc("show", "route", "filtered")  # received, then rejected by policy
    for leaked in ("198.51.100.99/32", "10.200.0.0/16", "0.0.0.0/0"):
        assert leaked in filtered, filtered


def test_graceful_shutdown_depreferences_before_withdraw(lab: NetnsLab) -> None:
    lab.start_all()
    ecmp(lab)
    maintenance = lab.node_paths("lb1").maintenance_file
    subprocess.run(["touch", maintenance], check=True)
    lab.wait(lambda: lab.fib_nexthops(VIP) == ["10.10.0.12"], 10, "traffic drained off lb1")
    route = lab.bird_route(VIP)
    # lb1's path is still there, with the community and local preference 0.
    assert "10.10.0.11" in route, route
    assert "(65535,0)" in route, route
    assert "BGP.local_pref: 0" in route, route
