"""The health agent's configuration: which signals gate each anycast VIP on a node."""

from __future__ import annotations

from typing import Any

from ..inventory.derived import (
    RuntimePaths,
    effective_check,
    frontend_pools,
    interfaces,
    pool,
    services_on_vip,
)
from ..inventory.schema import AnycastVip, Inventory, Node

TARGET = "etc/lbappliance/health-agent.json"


def _vip(inv: Inventory, node: Node, vip: AnycastVip, uplink: str) -> dict[str, Any]:
    agent = inv.health_agent
    frontends, l4 = services_on_vip(inv, vip)
    applicable = {"maintenance"}
    haproxy = probes = dataplane = None
    if frontends:
        applicable |= {"haproxy", "probe"}
        backends = list(dict.fromkeys(p for fe in frontends for p in frontend_pools(fe)))
        haproxy = {
            "frontends": [fe.name for fe in frontends],
            "backends": backends,
            "min_servers_up": vip.min_servers_up
            if vip.min_servers_up is not None
            else agent.min_servers_up,
            "min_servers_ratio": agent.min_servers_ratio,
        }
        probes = []
        for fe in frontends:
            check = effective_check(inv, pool(inv, fe.default_pool))
            probes.append(
                {
                    "kind": "http",
                    "address": str(vip.prefix.ip),
                    "port": fe.port,
                    "tls": fe.tls is not None,
                    "path": check.path,
                    "host": check.host,
                    "expect_status": check.expect_status,
                }
            )
    if l4:
        applicable |= {"dataplane", "probe"}
        xdp = [s for s in l4 if s.dataplane == "xdp"]
        ipvs = [s for s in l4 if s.dataplane == "ipvs"]
        dataplane = {
            "xdp_interface": uplink if xdp else None,
            "xdp_services": [f"{s.vip}:{s.port}/{s.protocol}" for s in xdp],
            "ipvs_services": [f"{s.vip}:{s.port}/{s.protocol}" for s in ipvs],
        }
        probes = (probes or []) + [
            {"kind": "tcp", "address": str(b.address), "port": s.health_check.port or s.port}
            for s in l4
            if s.protocol == "tcp"
            for b in s.backends[:1]
        ]
    signals = [s for s in agent.signals if s in applicable]
    return {
        "prefix": str(vip.prefix),
        "communities": list(vip.communities),
        "signals": signals,
        "haproxy": haproxy if "haproxy" in signals else None,
        "dataplane": dataplane if "dataplane" in signals else None,
        "probes": probes if "probe" in signals else [],
    }


def config(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    agent = inv.health_agent
    role = inv.dataplane.interface_role
    uplink = interfaces(node, role)[0].name if interfaces(node, role) else ""
    return {
        "node": node.name,
        "site": inv.site.name,
        "local_asn": inv.site.asn,
        "interval": float(agent.interval),
        "fast_interval": float(agent.fast_interval),
        "timeout": float(agent.timeout),
        "rise": agent.rise,
        "fall": agent.fall,
        "degraded": {
            "action": agent.degraded_action,
            "med": agent.degraded_med,
            "prepend": agent.degraded_prepend,
        },
        "maintenance_file": paths.maintenance_file,
        "maintenance_drain": float(agent.maintenance_drain),
        "haproxy_socket": paths.haproxy_socket,
        "state_file": f"{paths.run_dir}/health-agent.state.json",
        "metrics": {"address": "127.0.0.1", "port": agent.metrics_port},
        "vips": [_vip(inv, node, vip, uplink) for vip in inv.anycast],
    }
