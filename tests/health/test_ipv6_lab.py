"""IPv6 end to end on the namespace lab, with real packets and the real daemons.

The lab site is dual stack: each LB node peers with the router over IPv4 and
over IPv6, and the `web` frontend also listens on an IPv6 anycast VIP
(``WEB6``) that the health agent announces over the IPv6 session only. The
backends stay IPv4: HAProxy takes the IPv6 client to them.
"""

from __future__ import annotations

import http.client
import os
import re
import time

import pytest

from lbappliance.lab.netns import NetnsLab
from lbappliance.lab.router import router_sessions
from tests.health.labtools import WEB, WEB6, agent_log, cut_backends, frontend_sessions, get

pytestmark = pytest.mark.slow

if os.geteuid() != 0:
    pytest.skip("the namespace lab needs root", allow_module_level=True)

VIP6 = WEB6.split("/")[0]
CLIENT6 = "2001:db8:40::2"


@pytest.fixture
def lab():
    with NetnsLab.create() as lab:
        started = time.monotonic()
        lab.start_all()
        lab.wait_ecmp(WEB6)
        took = time.monotonic() - started
        print(f"\nMEASURE IPv6 VIP in the router's FIB over both nodes {took:.2f} s after start")
        yield lab


def test_both_nodes_announce_the_ipv6_vip_over_the_ipv6_session(lab: NetnsLab):
    assert lab.fib_nexthops(WEB6) == ["2001:db8:10::11", "2001:db8:10::12"]
    route = lab.bird_route(WEB6)
    assert route.count("BGP.community: (65100,10)") == 2
    # Learnt from the IPv6 sessions (the IPv6 peer's, renamed in the router's BIRD) only.
    v6_sessions = [router_sessions(lab.site, n)[1] for n in ("lb1", "lb2")]
    assert v6_sessions == ["lb1_router_v6", "lb2_router_v6"]
    assert sorted(re.findall(r"unicast \[(\w+) ", route)) == v6_sessions, route
    assert lab.fib_nexthops(WEB) == lab.via(WEB)  # the IPv4 VIP is there too


def test_http_over_ipv6_through_haproxy_to_ipv4_backends(lab: NetnsLab):
    before = sum(frontend_sessions(lab, n, "web") for n in ("lb1", "lb2"))
    with lab.inside("client"):  # the client speaks IPv6 from its own address
        conn = http.client.HTTPConnection(VIP6, 80, timeout=3)
        try:
            conn.request("GET", "/")
            assert conn.sock.getsockname()[0] == CLIENT6
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    answers = [get(lab, VIP6) for _ in range(20)]
    after = sum(frontend_sessions(lab, n, "web") for n in ("lb1", "lb2"))
    assert {status for status, _ in answers} == {200}
    # Answered by the IPv4-only backends: HAProxy carried every request across.
    assert {body for _, body in answers} <= {"backend1", "backend2"}
    # The `web` frontends took at least those 21 sessions (the agents' probes add theirs).
    assert after - before >= 21


def test_backends_lost_withdraws_the_ipv6_route_of_that_node_then_recovers(lab: NetnsLab):
    lb2 = lab.via(WEB6, "lb2")
    cut_backends(lab, "lb1")  # every backend dies as far as lb1 can tell
    cut = time.monotonic()
    lab.wait(lambda: lab.fib_nexthops(WEB6) == lb2, 5, "lb1's IPv6 route withdrawn")
    withdrawn = time.monotonic() - cut
    print(f"\nMEASURE IPv6 route of lb1 gone from the router's FIB {withdrawn:.2f} s after the cut")
    assert withdrawn < 2.0
    lab.wait(lambda: lab.fib_nexthops(WEB) == lab.via(WEB, "lb2"), 2, "the IPv4 VIP too")
    assert {get(lab, VIP6) for _ in range(6)} <= {(200, "backend1"), (200, "backend2")}
    down = [r for r in agent_log(lab, "lb1") if r.get("vip") == WEB6 and r.get("to") == "down"]
    assert down[-1]["command"] == f"withdraw route {WEB6} next-hop self"
    assert down[-1]["ack"] == "done"
    # Recovery: re-announced after `rise` good rounds, over the IPv6 session again.
    cut_backends(lab, "lb1", cut=False)
    healed = time.monotonic()
    lab.wait_ecmp(WEB6, 10)
    print(f"MEASURE IPv6 route of lb1 back in the FIB {time.monotonic() - healed:.2f} s after")
    up = [r for r in agent_log(lab, "lb1") if r.get("vip") == WEB6 and r.get("from") == "down"]
    assert up[-1]["to"] == "up"
    assert up[-1]["command"] == f"announce route {WEB6} next-hop self community [65100:10]"
    assert "[lb1_router_v6 " in lab.bird_route(WEB6)
