"""The converged LB pair on the container lab, checked from the outside (testinfra).

Hosts are the lab's containers, reached through testinfra's podman backend;
names, VIPs and addresses come from the lab topology and the site inventory.
"""

from __future__ import annotations

import json
import time

import pytest
import testinfra

from lbappliance.lab.podman import PodmanLab
from lbappliance.paths import NODE_PYTHON, NODE_VENV

LAB = PodmanLab.load()
LBS = [lb.name for lb in LAB.topology.lbs]
VRRP_VIPS = [str(v.ip) for g in LAB.site.model.vrrp for v in g.vips]
ANYCAST_L7 = str(LAB.site.model.l7.frontends[0].vip)
BACKENDS = {s.name for p in LAB.site.model.l7.pools for s in p.servers}
UNITS = [
    "haproxy",
    "keepalived",
    "exabgp",
    "bird",
    "lbappliance-vips",
    "lbappliance-notrack",
    "lbappliance-weights",
]
CONTROLLED = [
    (p.name, s.name)
    for p in LAB.site.model.l7.pools
    if (p.policy.weight_controller or LAB.site.model.l7.policy.weight_controller).enabled
    for s in p.servers
]
REQUESTS = 40


def host(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{LAB.container(name)}")


@pytest.mark.parametrize("node", LBS)
@pytest.mark.parametrize("unit", UNITS)
def test_service_running_and_enabled(node: str, unit: str) -> None:
    service = host(node).service(unit)
    assert service.is_running, f"{unit} is not running on {node}"
    assert service.is_enabled, f"{unit} is not enabled on {node}"


@pytest.mark.parametrize("node", LBS)
def test_installed_configs_are_valid(node: str) -> None:
    h = host(node)
    h.run_expect([0], "haproxy -c -q -f /etc/haproxy/haproxy.cfg")
    h.run_expect([0], "keepalived -t -f /etc/keepalived/keepalived.conf")
    exabgp = f"{NODE_VENV}/bin/exabgp"
    h.run_expect([0], f"exabgp_daemon_user=root {exabgp} validate /etc/exabgp/exabgp.conf")
    h.run_expect([0], "bird -p -c /etc/bird/bird.conf")
    assert h.file("/etc/exabgp/exabgp.conf").mode == 0o600


def _addresses(node: str) -> set[str]:
    out = host(node).check_output("ip -j address show")
    return {a["local"] for link in json.loads(out) for a in link["addr_info"]}


@pytest.mark.parametrize("vip", VRRP_VIPS)
def test_each_vrrp_vip_is_on_exactly_one_node(vip: str) -> None:
    holders = [n for n in LBS if vip in _addresses(n)]
    assert len(holders) == 1, f"{vip} held by {holders or 'nobody'}"


def test_bgp_sessions_with_the_router_are_established() -> None:
    out = host("router").check_output("birdc show protocols")
    states = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    for node in LBS:
        line = states.get(node.replace("-", "_"), "")
        assert "Established" in line, f"BGP {node}: {line or 'no such protocol'}"


def _frontend_sessions(node: str) -> int:
    """Sessions HAProxy's `web` frontend has accepted so far (stot)."""
    cmd = "echo 'show stat -1 1 -1' | socat stdio /run/haproxy/admin.sock"
    rows = [r.split(",") for r in host(node).check_output(cmd).splitlines() if r[:1] != "#"]
    return sum(int(r[7]) for r in rows if r and r[0] != "stats")


def test_client_requests_to_the_anycast_vip_reach_both_backends_through_haproxy() -> None:
    before = sum(_frontend_sessions(n) for n in LBS)
    script = (
        f"for i in $(seq {REQUESTS}); do "
        f"curl -s -o /dev/null -w '%{{http_code}} ' -m 2 http://{ANYCAST_L7}/; "
        f"curl -s -m 2 http://{ANYCAST_L7}/; done"
    )
    out = host("client").check_output(script)
    codes = [w for w in out.split() if w.isdigit()]
    names = {w for w in out.split() if not w.isdigit()}
    assert codes == ["200"] * REQUESTS, f"non-200 answers: {out}"
    assert names == BACKENDS, f"answered by {names}, expected {BACKENDS}"
    through_haproxy = sum(_frontend_sessions(n) for n in LBS) - before
    assert through_haproxy >= 2 * REQUESTS, f"only {through_haproxy} sessions seen by HAProxy"


def _metrics(node: str) -> dict[str, float]:
    """The weight controller's Prometheus exposition on ``node``, as name{labels} -> value."""
    url = "http://127.0.0.1:9172/metrics"
    fetch = f"import urllib.request as u; print(u.urlopen('{url}').read().decode())"
    out = host(node).check_output(f'{NODE_PYTHON} -c "{fetch}"')
    samples = (line.rsplit(" ", 1) for line in out.splitlines() if line[:1] != "#")
    return {name: float(value) for name, value in samples}


@pytest.mark.parametrize("node", LBS)
def test_weight_controller_steers_every_controlled_server(node: str) -> None:
    assert CONTROLLED, "the lab site runs the weight controller"
    m = _metrics(node)
    for pool, server in CONTROLLED:
        weight = m.get(f'lbappliance_weights_weight{{pool="{pool}",server="{server}"}}')
        assert weight is not None and weight >= 1, f"{pool}/{server}: weight {weight}"
    # It reads HAProxy's admin socket every interval (1 s): the last success is recent.
    assert time.time() - m["lbappliance_weights_last_success_timestamp_seconds"] < 10
