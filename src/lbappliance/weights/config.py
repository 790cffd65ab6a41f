"""The controller's per-node configuration: ``/etc/lbappliance/weights.json``.

Rendered from the site inventory by ``lbappliance render`` (``render/weights.py``):
one entry per pool whose weight controller is enabled, with that pool's
effective ``weight_controller`` policy and its servers' inventory weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lbappliance.paths import NODE


@dataclass(frozen=True)
class PoolConfig:
    name: str
    servers: dict[str, int]  # server -> inventory weight (backup servers are left out)
    interval: float = 1.0
    target_latency: float = 0.1
    alpha: float = 0.3
    min_weight_percent: float = 5.0
    outlier_factor: float = 2.0
    outlier_min_latency: float = 0.02
    canary_weight_percent: float = 1.0
    max_capacity_fraction: float = 0.8
    panic_threshold: float = 0.5
    hysteresis_percent: float = 5.0
    probe_path: str = "/"  # what the controller requests from a parked server: the real path

    @property
    def min_span(self) -> float:
        """Shortest signal window, and how long no response at all means "missing"."""
        return max(3 * self.interval, 2.0)

    @property
    def max_span(self) -> float:
        """Longest signal window (servers near the floor see few requests)."""
        return max(30 * self.interval, 30.0)


@dataclass(frozen=True)
class Config:
    node: str
    site: str
    haproxy_socket: str
    pools: list[PoolConfig]
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9172
    history_file: str | None = None
    state_file: str | None = None  # the servers it has parked, for a restarted controller

    @property
    def tick(self) -> float:
        return min((p.interval for p in self.pools), default=1.0)


def parse(data: dict[str, Any]) -> Config:
    pools = []
    for p in data.get("pools", []):
        servers = {s["name"]: int(s["weight"]) for s in p["servers"] if not s.get("backup")}
        knobs: dict[str, Any] = {
            k: float(v) for k, v in p.items() if k not in ("name", "servers", "probe_path")
        }
        if "probe_path" in p:
            knobs["probe_path"] = str(p["probe_path"])
        pools.append(PoolConfig(name=p["name"], servers=servers, **knobs))
    metrics = data.get("metrics") or {}
    history = data.get("history_file")
    state = data.get("state_file") or (
        str(Path(history).with_name("weights-state.json")) if history else None
    )
    return Config(
        node=data.get("node", ""),
        site=data.get("site", ""),
        haproxy_socket=data["haproxy_socket"],
        pools=pools,
        metrics_address=metrics.get("address", "127.0.0.1"),
        metrics_port=int(metrics.get("port", 9172)),
        history_file=history,
        state_file=state,
    )


def load(path: Path) -> Config:
    return parse(json.loads(path.read_text()))


def config_option(help: str = "The node's rendered controller config.") -> Any:
    """``--config``: the node's weights.json (the controller and ``lbappliance imbalance``)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path(NODE.weights_config),
        show_default=True,
        help=help,
    )
