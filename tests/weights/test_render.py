"""``etc/lbappliance/weights.json``: rendered from the inventory, one entry per controlled pool."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lbappliance.inventory import load_site
from lbappliance.render import render_site
from lbappliance.secrets import Secrets
from lbappliance.weights.config import parse
from tests.conftest import INVENTORY


def weights_json(inventory: Path, node: str = "lb1") -> dict:
    rendered = render_site(load_site(inventory, "lab"), Secrets(None, None))
    return json.loads(rendered.by_path()[f"hosts/{node}/etc/lbappliance/weights.json"].content)


def test_lab_renders_the_site_policy() -> None:
    data = weights_json(INVENTORY)
    assert data["node"] == "lb1" and data["haproxy_socket"] == "/run/haproxy/admin.sock"
    (web,) = data["pools"]
    assert web["name"] == "web" and web["interval"] == 1.0 and web["target_latency"] == 0.1
    assert (web["alpha"], web["min_weight_percent"], web["max_capacity_fraction"]) == (0.3, 5, 0.8)
    assert [s["name"] for s in web["servers"]] == ["backend1", "backend2"]
    cfg = parse(data)  # what the daemon reads
    assert cfg.pools[0].servers == {"backend1": 100, "backend2": 100}
    assert cfg.pools[0].probe_path == "/"  # parked servers are probed on the real path
    assert cfg.state_file == "/run/lbappliance/weights-state.json"  # beside the history
    assert weights_json(INVENTORY, "lb2")["node"] == "lb2"


def _edit(inventory: Path, edit) -> None:
    path = inventory / "sites" / "lab.yml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def test_disabled_pools_are_left_out_and_overrides_apply(inventory_copy: Path) -> None:
    def edit(data: dict) -> None:
        web = data["l7"]["pools"][0]
        data["l7"]["pools"].append(
            {**web, "name": "api", "policy": {"weight_controller": {"enabled": False}}}
        )
        web["policy"] = {
            "weight_controller": {
                "target_latency": "50ms",
                "min_weight_percent": 1,
                "probe_path": "/search?q=probe",
            }
        }
        web["servers"].append(
            {"name": "spare", "address": "10.30.0.23", "port": 8080, "backup": True}
        )
        data["l7"]["frontends"][0]["routes"] = [{"pool": "api", "path_prefix": "/api"}]

    _edit(inventory_copy, edit)
    (web,) = weights_json(inventory_copy)["pools"]
    assert web["name"] == "web" and web["target_latency"] == 0.05 and web["min_weight_percent"] == 1
    assert {"name": "spare", "weight": 100, "backup": True} in web["servers"]
    assert web["probe_path"] == "/search?q=probe"
    pool = parse({"haproxy_socket": "x", "pools": [web]}).pools[0]
    assert "spare" not in pool.servers and pool.probe_path == "/search?q=probe"


def test_site_wide_switch_off(inventory_copy: Path) -> None:
    _edit(inventory_copy, lambda d: d["l7"]["policy"].update(weight_controller={"enabled": False}))
    assert weights_json(inventory_copy)["pools"] == []
