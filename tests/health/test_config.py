"""Agent configuration: the rendered file loads; a bad one is one clear error."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lbappliance.health.config import ConfigError, load, parse
from lbappliance.inventory import load_site
from lbappliance.paths import RuntimePaths
from lbappliance.render import agent as agent_render
from tests.conftest import INVENTORY
from tests.health.helpers import CONFIG


def test_rendered_lab_config_loads(tmp_path: Path):
    site = load_site(INVENTORY, "lab")
    node = site.model.nodes[0]
    data = agent_render.config(site.model, node, RuntimePaths(str(tmp_path)))
    path = tmp_path / "health-agent.json"
    path.write_text(json.dumps(data))
    cfg = load(path)
    assert cfg.node == node.name
    assert cfg.maintenance_file == f"{tmp_path}/var/lib/lbappliance/maintenance"
    web, l4, web6 = cfg.vips
    assert web.signals == ("haproxy", "probe", "return_path", "maintenance")
    # The return path, narrowed to each VIP's family: lb1's uplink and default routes.
    assert web.return_path.uplinks[0].name == "eth1"
    assert web.return_path.uplinks[0].addresses == ("10.10.0.11/24",)
    assert web.return_path.destinations == ("0.0.0.0/0",)
    assert web.probes[0].kind == "http" and web.probes[0].address == "198.51.100.10"
    # The frontend's IPv6 VIP: its own /128, probed end to end over IPv6.
    assert web6.prefix == "2001:db8:100::10/128" and web6.signals == web.signals
    assert web6.probes[0].address == "2001:db8:100::10"
    assert web6.return_path.uplinks[0].addresses == ("2001:db8:10::11/64",)
    assert web6.return_path.destinations == ("::/0",)
    assert l4.signals == ("dataplane", "probe", "return_path", "maintenance")
    # Every L4 backend is probed, not only the first one.
    backends = [str(b.address) for b in site.model.l4_services[0].backends]
    assert len(backends) > 1
    assert [t.address for t in l4.pools[0].targets] == backends
    assert cfg.vrrp[0].vips == ("203.0.113.10",)


def test_all_errors_reported_at_once():
    data = copy.deepcopy(CONFIG)
    data["timeout"] = 0.5  # above fast_interval
    data["rise"] = 0
    data["vips"][0]["prefix"] = "198.51.100.0/24"
    data["vips"][0]["signals"].append("telepathy")
    data["vips"][1]["communities"] = ["no-export"]
    del data["state_file"]
    with pytest.raises(ConfigError) as info:
        parse(data, "health-agent.json")
    assert info.value.errors == [
        "$: need timeout < fast_interval <= interval, got 0.5 / 0.2 / 0.5",
        "$.rise: 0 must be at least 1",
        "$.vips[0].prefix: 198.51.100.0/24 is not a host route (/32 or /128)",
        "$.vips[0].signals: 'telepathy' is not one of haproxy, dataplane, probe, return_path, "
        "maintenance",
        "$.vips[1].communities: 'no-export' is not a community 'A:B' or large community 'A:B:C'",
        "$.state_file: missing",
    ]


def test_unreadable_and_invalid_json(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"node": "lb1",\n "vips": [}')
    with pytest.raises(ConfigError, match=r"not valid JSON: .* at line 2 column 11"):
        load(bad)


def test_probe_signal_without_probe_is_an_error():
    data = copy.deepcopy(CONFIG)
    data["vips"][0]["probes"] = []
    with pytest.raises(ConfigError, match="signal 'probe' is on but no probe is configured"):
        parse(data)
