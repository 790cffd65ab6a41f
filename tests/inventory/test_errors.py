"""Bad inventories: every error names file, line, column, field path and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbappliance.inventory import InventoryInvalid, load_site

BASE = """\
site:
  name: t
  asn: 65100
  announce_prefixes: [198.51.100.0/24]
bgp:
  peers:
    - {name: r1, address: 10.10.0.1, asn: 65000}
nodes:
  - name: lb1
    management_address: 10.99.0.11
    router_id: 10.10.0.11
    vrrp_priority: 150
    interfaces:
      - {name: eth1, role: uplink, addresses: [10.10.0.11/24]}
  - name: lb2
    management_address: 10.99.0.12
    router_id: 10.10.0.12
    vrrp_priority: 100
    interfaces:
      - {name: eth1, role: uplink, addresses: [10.10.0.12/24]}
vrrp:
  - {name: a, vrid: 10, interface: eth1, vips: [203.0.113.10/24]}
  - {name: b, vrid: 11, interface: eth1, vips: [203.0.113.11/24]}
anycast:
  - prefix: 198.51.100.10/32
l7:
  policy:
    timeouts: {client_deadline: 30s, server: 25s, backend_deadline: 20s}
  frontends:
    - {name: web, vip: 198.51.100.10, port: 80, default_pool: web}
  pools:
    - name: web
      servers:
        - {name: s1, address: 10.30.0.21, port: 8080}
"""


def load(tmp_path: Path, text: str):
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "sites" / "t.yml").write_text(text)
    return load_site(tmp_path, "t")


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryInvalid) as exc:
        load(tmp_path, text)
    return [str(e) for e in exc.value.errors]


def test_base_is_valid(tmp_path: Path) -> None:
    assert load(tmp_path, BASE).model.site.name == "t"


# (case, old text, new text, the line the error must point at (a unique fragment of it),
#  the text on that line where its column must point, expected fragment of the message)
CASES = [
    ("yaml syntax", "  asn: 65100\n", "  asn: [65100\n", "announce_prefixes", ":",
     "(top level): YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
     "sequence started at line 3)"),
    ("unknown key", "  asn: 65100\n", "  asn: 65100\n  asnn: 1\n", "asnn:", "asnn",
     "site.asnn: unknown key 'asnn' (did you mean 'asn'?)"),
    ("wrong type", "vrrp_priority: 150", "vrrp_priority: high", "vrrp_priority: high", "high",
     "nodes[0].vrrp_priority: expected an integer, got 'high'"),
    ("out of range", "vrrp_priority: 150", "vrrp_priority: 300", "vrrp_priority: 300", "300",
     "nodes[0].vrrp_priority: 300 is out of range"),
    ("duplicate vrid", "vrid: 11", "vrid: 10", "{name: b, vrid: 10", "10,",
     "vrrp[1].vrid: duplicate VRID on segment (10, 'eth1')"),
    ("overlapping vip", "203.0.113.11/24", "203.0.113.10/24", "{name: b, vrid: 11", "203.0.113.10/24",
     "vrrp[1].vips[0]: duplicate VIP 203.0.113.10"),
    ("vip is a node address", "203.0.113.11/24", "10.10.0.12/24", "{name: b, vrid: 11", "10.10.0.12/24",
     "vrrp[1].vips[0]: VIP 10.10.0.12 is also a node address"),
    ("bad cidr", "[198.51.100.0/24]", "[198.51.100.7/24]", "announce_prefixes", "198.51",
     "site.announce_prefixes[0]: expected a network in CIDR form with no host bits set"),
    ("timeouts descend", "server: 25s", "server: 35s", "client_deadline", "35s",
     "l7.policy.timeouts.server: timeouts must descend client_deadline (30s) > server (35s)"),
    ("check timeout", "    timeouts:", "    health_check: {interval: 2s, timeout: 2s}\n    timeouts:",
     "health_check", "2s}",
     "l7.policy.health_check.timeout: timeout 2s must be below the interval 2s"),
    ("duplicate router-id", "router_id: 10.10.0.12", "router_id: 10.10.0.11",
     "router_id: 10.10.0.11\n    vrrp_priority: 100", "10.10", "nodes[1].router_id: duplicate router-id 10.10.0.11"),
    ("equal priorities", "vrrp_priority: 100", "vrrp_priority: 150", "vrrp_priority: 150\n    interfaces:\n      - {name: eth1, role: uplink, addresses: [10.10.0.12/24]}",
     "150", "nodes[1].vrrp_priority: duplicate VRRP priority 150"),
    ("reserved asn", "asn: 65000}", "asn: 23456}", "asn: 23456", "23456",
     "bgp.peers[0].asn: AS 23456 is reserved"),
    ("anycast outside prefixes", "prefix: 198.51.100.10/32", "prefix: 203.0.113.99/32",
     "prefix: 203.0.113.99", "203", "anycast[0].prefix: 203.0.113.99/32 is outside the site's announce_prefixes"),
    ("duplicate listener", "default_pool: web}", "default_pool: web}\n    - {name: web2, vip: 198.51.100.10, port: 80, default_pool: web}",
     "name: web2", "198.51", "l7.frontends[1].vip: duplicate listener (VIP, port, protocol)"),
    ("unknown pool", "default_pool: web}", "default_pool: wbe}", "default_pool: wbe", "wbe",
     "l7.frontends[0].default_pool: unknown pool 'wbe' (defined: web)"),
    ("missing field", "    management_address: 10.99.0.11\n", "", "- name: lb1", "name",
     "nodes[0]: missing required field 'management_address'"),
    ("duplicate yaml key", "  asn: 65100\n", "  asn: 65100\n  asn: 65101\n", "asn: 65101", "asn",
     "site.asn: duplicate key 'asn' (first given at line 3)"),
    ("v2 sub-second", "vips: [203.0.113.10/24]}", "vips: [203.0.113.10/24], version: 2, advert_interval: 100ms}",
     "version: 2", "100ms", "vrrp[0].advert_interval: sub-second advert interval 100ms needs VRRP version 3"),
    ("peer off-subnet", "address: 10.10.0.1,", "address: 10.11.0.1,", "address: 10.11.0.1", "10.11",
     "bgp.peers[0].address: peer 10.11.0.1 is on no uplink subnet of node lb1"),
    ("family mismatch",
     "anycast:\n", "l4_services:\n  - {name: dns, vip: 198.51.100.10, port: 53, protocol: udp, backends: [{address: '2001:db8::1'}]}\nanycast:\n",
     "name: dns", "'2001", "l4_services[0].backends[0].address: IPv6 backend for an IPv4 VIP"),
    ("canary over floor", "    - name: web\n", "    - name: web\n      policy:\n        weight_controller: {canary_weight_percent: 10}\n",
     "canary_weight_percent: 10", "10}",
     "l7.pools[0].policy.weight_controller.canary_weight_percent: the outliers' floor (10.0) must not exceed min_weight_percent (5.0)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "marker", "at", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_inventory(
    tmp_path: Path, old: str, new: str, marker: str, at: str, expected: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    errors = errors_of(tmp_path, text)
    line = text[: text.index(marker)].count("\n") + 1
    column = text.splitlines()[line - 1].index(at) + 1
    match = [e for e in errors if expected in e]
    assert match, f"{expected!r} not in {errors}"
    location = match[0].split(": ")[0]
    file, got_line, got_col = location.rsplit(":", 2)
    assert file == str(tmp_path / "sites" / "t.yml")
    assert (int(got_line), int(got_col)) == (line, column), match[0]


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("asn: 65100", "asn: x").replace("vrid: 11", "vrid: 300")
    text = text.replace("port: 8080", "port: 0")
    errors = errors_of(tmp_path, text)
    assert len(errors) == 3, errors
    assert [e.split(": ")[1] for e in errors] == [
        "site.asn",
        "vrrp[1].vrid",
        "l7.pools[0].servers[0].port",
    ]


def test_site_name_must_match_file(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, BASE.replace("name: t\n", "name: tokyo\n", 1))
    assert any("does not match its file t.yml" in e for e in errors)


def test_unknown_site_lists_known(tmp_path: Path) -> None:
    load(tmp_path, BASE)
    with pytest.raises(InventoryInvalid) as exc:
        load_site(tmp_path, "nope")
    assert "known sites: t" in str(exc.value)


def test_defaults_file_merges_under_site(tmp_path: Path) -> None:
    (tmp_path / "defaults.yml").write_text("bgp:\n  hold_time: 30\nhealth_agent:\n  rise: 5\n")
    model = load(tmp_path, BASE).model
    assert model.bgp.hold_time == 30
    assert model.health_agent.rise == 5
    assert model.bgp.peers[0].name == "r1"


def test_error_in_defaults_points_at_defaults(tmp_path: Path) -> None:
    (tmp_path / "defaults.yml").write_text("bgp:\n  hold_time: 1\n")
    errors = errors_of(tmp_path, BASE)
    assert errors == [f"{tmp_path / 'defaults.yml'}:2:14: bgp.hold_time: 1 is out of range "
                      "(expected an integer in 3..65535)"]  # fmt: skip
