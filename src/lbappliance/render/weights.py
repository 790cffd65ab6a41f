"""The weight controller's configuration: ``etc/lbappliance/weights.json`` per node.

One entry per pool whose effective ``weight_controller`` is enabled; pools with
the controller switched off are left out (HAProxy keeps their inventory weights).
"""

from __future__ import annotations

from typing import Any

from lbappliance.inventory.derived import effective_controller
from lbappliance.inventory.schema import Inventory, Node
from lbappliance.paths import NODE, RuntimePaths, target

TARGET = target(NODE.weights_config)
METRICS_PORT = 9172  # the health agent exports on 9171


def config(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    pools = []
    for pool in inv.l7.pools:
        wc = effective_controller(inv, pool)
        if not wc.enabled:
            continue
        pools.append(
            {
                "name": pool.name,
                "interval": float(wc.interval),
                "target_latency": float(wc.target_latency),
                "alpha": wc.alpha,
                "min_weight_percent": wc.min_weight_percent,
                "outlier_factor": wc.outlier_factor,
                "outlier_min_latency": float(wc.outlier_min_latency),
                "canary_weight_percent": wc.canary_weight_percent,
                "max_capacity_fraction": wc.max_capacity_fraction,
                "panic_threshold": wc.panic_threshold,
                "hysteresis_percent": wc.hysteresis_percent,
                "probe_path": wc.probe_path,
                "servers": [
                    {"name": s.name, "weight": s.weight, "backup": s.backup} for s in pool.servers
                ],
            }
        )
    return {
        "node": node.name,
        "site": inv.site.name,
        "haproxy_socket": paths.haproxy_socket,
        "history_file": paths.weights_history,
        "metrics": {"address": "127.0.0.1", "port": METRICS_PORT},
        "pools": pools,
    }


def context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    """Context for ``templates/lbappliance/json.j2``."""
    return {"data": config(inv, node, paths)}
