"""The data-plane spec parser: the documented shape in, clear errors out."""

from __future__ import annotations

import copy
import json
import re

import pytest

from lbappliance.dataplane import spec as specmod

GOOD = {
    "node": "lb1",
    "interface": "eth1",
    "xdp_mode": "native",
    "table_size": 65537,
    "flow_table_size": 1048576,
    "udp_idle_timeout": 30,
    "previous_table_window": 60,
    "tunnel_source_v4": "10.10.0.11",
    "tunnel_source_v6": None,
    "services": [
        {
            "name": "dns",
            "vip": "198.51.100.20",
            "port": 53,
            "protocol": "udp",
            "forwarding": "ipip",
            "backends": [{"address": "10.30.0.21", "weight": 100, "mac": None, "mtu": 1500}],
        },
        {
            "name": "web",
            "vip": "2001:db8:0:0::20",
            "port": 443,
            "protocol": "tcp",
            "forwarding": "l2dsr",
            "backends": [
                {"address": "10.30.0.22", "weight": 1, "mac": "02:AA:bb:cc:dd:ee", "mtu": 9000}
            ],
        },
    ],
}


def test_the_documented_example_parses(tmp_path):
    p = tmp_path / "dataplane.json"
    p.write_text(json.dumps(GOOD))
    s = specmod.load(p)
    assert (s.node, s.interface, s.xdp_mode, s.table_size) == ("lb1", "eth1", "native", 65537)
    assert s.services[0].backends[0] == specmod.Backend("10.30.0.21", 100, None, 1500)
    assert s.services[1].vip == "2001:db8::20"  # canonical form
    assert s.services[1].backends[0].mac == "02:aa:bb:cc:dd:ee"
    assert s.service_for("198.51.100.20", 53, "udp") is s.services[0]


def broken(path: str, value: object) -> dict:
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("node", KeyError, "spec: missing node"),
        ("extra", 1, "spec: unknown extra"),
        ("xdp_mode", "offload", "xdp_mode: expected one of native, generic"),
        ("table_size", 65536, "table_size: 65536 is not prime"),
        ("table_size", True, "table_size: expected an integer"),
        ("interface", "a/b", "interface: 'a/b' is not an interface name"),
        ("tunnel_source_v4", "2001:db8::1", "tunnel_source_v4: 2001:db8::1 is not an IPv4"),
        ("services.0.port", 0, r"services\[0\].port: expected an integer in 1..65535"),
        ("services.0.protocol", "sctp", r"services\[0\].protocol"),
        ("services.0.vip", "not-an-ip", r"services\[0\].vip: 'not-an-ip' is not an IP"),
        ("services.0.backends.0.weight", -1, r"services\[0\].backends\[0\].weight"),
        ("services.0.backends.0.mac", "zz", r"services\[0\].backends\[0\].mac"),
        ("services.1.backends.0.mac", None, r"services\[1\].backends\[0\].mac: required for l2dsr"),
        ("tunnel_source_v4", None, r"IPv4 backend needs tunnel_source_v4"),
        ("services.1.port", 53, None),  # fine: different VIP
        ("flow_table_size", 100, "flow_table_size: expected an integer in 1024.."),
        ("udp_idle_timeout", 0, r"udp_idle_timeout: expected seconds in 1..86400"),
        ("udp_idle_timeout", "30s", r"udp_idle_timeout: expected seconds"),
        ("previous_table_window", -1, r"previous_table_window: expected seconds in 0..86400"),
        ("previous_table_window", 0, None),  # fine: no previous-table lookups
        ("services.0.backends.0.mtu", 1200, r"services\[0\].backends\[0\].mtu: .* 1280..65535"),
        ("services.0.backends.0.mtu", KeyError, r"services\[0\].backends\[0\]: missing mtu"),
    ],
)
def test_errors_name_the_field(path, value, message):
    raw = broken(path, value)
    if message is None:
        specmod.parse(raw)
        return
    with pytest.raises(specmod.SpecError, match=message):
        specmod.parse(raw)


def test_duplicate_vip_and_backend_are_refused():
    raw = copy.deepcopy(GOOD)
    raw["services"].append(copy.deepcopy(raw["services"][0]) | {"name": "dns2"})
    with pytest.raises(
        specmod.SpecError, match=re.escape("'dns2' and 'dns' share 198.51.100.20 53/udp")
    ):
        specmod.parse(raw)
    raw = copy.deepcopy(GOOD)
    raw["services"][0]["backends"].append(
        {"address": "10.30.0.021", "weight": 1, "mac": None, "mtu": 1500}
    )
    with pytest.raises(specmod.SpecError):  # 10.30.0.021 is not an address in Python 3.11
        specmod.parse(raw)
    raw["services"][0]["backends"][1]["address"] = "10.30.0.21"
    with pytest.raises(specmod.SpecError, match=re.escape("duplicate address 10.30.0.21")):
        specmod.parse(raw)


def test_unreadable_files(tmp_path):
    with pytest.raises(specmod.SpecError, match="no such file"):
        specmod.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(specmod.SpecError, match="not JSON"):
        specmod.load(tmp_path / "bad.json")
