"""The return-path signal: a VIP is healthy only if the node can answer its clients.

Judgement on hand-made network views, the agent's exact ExaBGP lines when the
return route goes and comes back, the sensor on a real kernel (a namespace of its
own), and the whole path on the namespace lab (real ExaBGP, BIRD, HAProxy).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from dataclasses import replace

import pytest

from lbappliance.health.config import parse
from lbappliance.health.sensors import read_network
from lbappliance.health.signals import (
    Health,
    LinkView,
    Observation,
    RouteView,
    evaluate,
)
from lbappliance.lab.netns import NetnsLab
from lbappliance.lab.setns import entered
from tests.health.helpers import CONFIG, WEB, Harness, config, healthy_network
from tests.health.labtools import cli, lab_hooks, uplink

WEB6 = "2001:db8:100::10/128"
ANNOUNCE_WEB = "announce route 198.51.100.10/32 next-hop self community [65100:10]"
WITHDRAW_WEB = "withdraw route 198.51.100.10/32 next-hop self"


def _cfg(**return_path):
    data = copy.deepcopy(CONFIG)
    data["return_path"].update(return_path)
    v6 = copy.deepcopy(data["vips"][0])
    v6["prefix"] = WEB6
    data["vips"].append(v6)
    return parse(data)


def judge(view, prefix: str = WEB, **return_path):
    cfg = _cfg(**return_path)
    vip = next(v for v in cfg.vips if v.prefix == prefix)
    obs = Observation(network=view)
    check = next(c for c in evaluate(cfg, vip, obs).checks if c.signal == "return_path")
    return check.health, check.reason


def without_route(view, destination: str):
    return replace(view, routes=tuple(r for r in view.routes if r.destination != destination))


def test_healthy_node_answers_its_clients():
    assert judge(healthy_network()) == (
        Health.OK,
        "return_path: eth1 up with its addresses, 0.0.0.0/0 via eth1",
    )
    assert judge(healthy_network(), WEB6)[1] == (
        "return_path: eth1 up with its addresses, ::/0 via eth1"
    )


def test_lost_default_route_fails_that_family_only():
    view = without_route(healthy_network(), "0.0.0.0/0")
    assert judge(view) == (Health.FAIL, "return_path: no route toward 0.0.0.0/0")
    assert judge(view, WEB6)[0] is Health.OK


def test_default_route_through_the_management_interface_is_no_return_path():
    # The black hole of a node whose default route is the management network's.
    view = without_route(healthy_network(), "0.0.0.0/0")
    view = replace(view, routes=(*view.routes, RouteView("0.0.0.0/0", 0, ("eth0",))))
    assert judge(view) == (
        Health.FAIL,
        "return_path: route toward 0.0.0.0/0 leaves through eth0, not an uplink",
    )
    # The kernel's choice counts: a better metric through the uplink wins.
    view = replace(view, routes=(*view.routes, RouteView("0.0.0.0/0", 100, ("eth1",))))
    assert judge(view)[0] is Health.FAIL  # eth0's metric 0 still wins
    better = replace(view, routes=(*view.routes[:-2], RouteView("0.0.0.0/0", 50, ("eth1",)),
                                   RouteView("0.0.0.0/0", 200, ("eth0",))))  # fmt: skip
    assert judge(better)[0] is Health.OK


def test_uplink_down_fails_and_its_routes_do_not_count():
    view = healthy_network()
    links = {**view.links, "eth1": LinkView(False, view.links["eth1"].addresses)}
    health, reason = judge(replace(view, links=links))
    assert health is Health.FAIL
    assert reason == "return_path: uplink eth1 is down; no route toward 0.0.0.0/0"


def test_lost_ipv6_address_fails_the_ipv6_vip_only():
    view = healthy_network()
    links = {**view.links, "eth1": LinkView(True, frozenset({"10.10.0.11/24"}))}
    view = replace(view, links=links)
    assert judge(view, WEB6) == (Health.FAIL, "return_path: uplink eth1 lost 2001:db8:10::11/64")
    assert judge(view)[0] is Health.OK


def test_client_prefixes_use_the_longest_matching_route():
    view = without_route(healthy_network(), "0.0.0.0/0")
    view = replace(
        view,
        routes=(
            *view.routes,
            RouteView("0.0.0.0/0", 0, ("eth0",)),  # management default route
            RouteView("10.40.0.0/16", 100, ("eth1",)),
        ),
    )
    assert judge(view, destinations=["10.40.0.0/24", "::/0"]) == (
        Health.OK,
        "return_path: eth1 up with its addresses, 10.40.0.0/24 via eth1",
    )
    assert judge(view, destinations=["10.50.0.0/24", "::/0"])[0] is Health.FAIL


def test_unreadable_network_fails():
    cfg = _cfg()
    obs = Observation(network_error="no answer within 150 ms")
    verdict = evaluate(cfg, cfg.vips[0], obs)
    assert verdict.health is Health.FAIL
    assert "return_path: network unreadable (no answer within 150 ms)" in verdict.reason


def test_return_route_lost_withdraws_after_fall_and_returns_after_rise(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.network = without_route(healthy_network(), "0.0.0.0/0")
    assert h.rounds(2, dt=0.2) == []
    assert h.rounds(1, dt=0.2) == [WITHDRAW_WEB]
    assert h.state() == "down"
    assert h.agent.machines[WEB].reason == (
        "3 consecutive bad rounds: return_path: no route toward 0.0.0.0/0"
    )
    state = json.loads((tmp_path / "state.json").read_text())
    assert "no route toward 0.0.0.0/0" in state["vips"][WEB]["reason"]
    h.signals.network = healthy_network()
    assert h.rounds(2, dt=0.2) == []
    assert h.rounds(1, dt=0.2) == [ANNOUNCE_WEB]


def test_config_without_return_path_section_is_refused():
    data = copy.deepcopy(CONFIG)
    del data["return_path"]
    with pytest.raises(Exception, match=r"\$\.return_path: needed by the 'return_path' signal"):
        parse(data)


# --- the sensor on a real kernel ------------------------------------------------------


@pytest.fixture
def netns_pair():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tag = uuid.uuid4().hex[:6]
    node, peer = f"lbrp{tag}-n", f"lbrp{tag}-p"
    for ns in (node, peer):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        sh = [
            f"ip link add eth1 netns {node} type veth peer name up0 netns {peer}",
            f"ip -n {peer} link set up0 up",
            f"ip -n {node} link set eth1 up",
            f"ip -n {node} address add 10.10.0.11/24 dev eth1",
            f"ip -n {node} address add 2001:db8:10::11/64 dev eth1 nodad",
            f"ip -n {node} route add default via 10.10.0.1 metric 100",
            f"ip -n {node} -6 route add default via 2001:db8:10::1 metric 100",
        ]
        for line in sh:
            subprocess.run(line.split(), check=True)
        yield node, peer
    finally:
        for ns in (node, peer):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_sensor_reads_links_addresses_and_routes(netns_pair):
    node, peer = netns_pair
    with entered(f"/run/netns/{node}"):
        view = read_network()
    assert view.links["eth1"] == LinkView(True, frozenset({"10.10.0.11/24", "2001:db8:10::11/64"}))
    assert view.route_toward("0.0.0.0/0") == RouteView("0.0.0.0/0", 100, ("eth1",))
    assert view.route_toward("::/0") == RouteView("::/0", 100, ("eth1",))
    # The far end goes away: no carrier, and the kernel flags the routes linkdown.
    subprocess.run(["ip", "-n", peer, "link", "set", "up0", "down"], check=True)
    with entered(f"/run/netns/{node}"):
        view = read_network()
    assert view.links["eth1"].up is False
    assert view.route_toward("0.0.0.0/0") is None
    # A tentative address (duplicate detection still running) is not usable.
    subprocess.run(["ip", "-n", peer, "link", "set", "up0", "up"], check=True)
    subprocess.run(
        ["ip", "-n", node, "address", "add", "2001:db8:10::99/64", "dev", "eth1"], check=True
    )
    with entered(f"/run/netns/{node}"):
        view = read_network()
    assert "2001:db8:10::99/64" not in view.links["eth1"].addresses


# --- the namespace lab: real ExaBGP, BIRD, HAProxy ---------------------------------------


@pytest.mark.slow
def test_return_route_deleted_on_lb1_withdraws_its_vips_then_they_return():
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    with NetnsLab.create() as lab:
        lab.start_all()
        lab.wait_ecmp(WEB)
        lb1, lb2 = uplink(lab, "lb1"), uplink(lab, "lb2")
        ns = lab.ns("lb1")
        cfg = config()
        bound = cfg.fall * cfg.fast_interval + cfg.interval
        t0 = time.monotonic()
        subprocess.run(["ip", "-n", ns, "route", "del", "default"], check=True)
        lab.wait(lambda: lab.fib_nexthops(WEB) == [lb2], 10, "lb1 withdrawn")
        withdrawn = time.monotonic() - t0
        print(f"MEASURE return route deleted on lb1 -> VIP out of the FIB: {withdrawn:.2f} s")
        # fall x interval, with room for a busy machine (both cores loaded in CI)
        assert withdrawn < bound + 2.0, (withdrawn, bound)
        status = cli("status", "--site", "lab", "--json", *lab_hooks(lab))
        assert status.returncode == 0, status.stderr
        vip = json.loads(status.stdout)["nodes"]["lb1"]["agent"]["vips"][WEB]
        assert vip["state"] == "down"
        assert "return_path: no route toward 0.0.0.0/0" in vip["reason"]
        text = cli("status", "--site", "lab", *lab_hooks(lab)).stdout
        assert "no route toward 0.0.0.0/0" in text
        # The IPv6 VIP keeps its own route: still announced by both.
        assert lab.fib_nexthops(WEB6) == sorted(
            [str(lab.topology.host(n).address_on("uplink", 6)) for n in ("lb1", "lb2")]
        )
        gw = str(lab.topology.router.address_on("uplink", 4))
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", gw], check=True)
        lab.wait(lambda: lab.fib_nexthops(WEB) == sorted([lb1, lb2]), 15, "lb1 back")
