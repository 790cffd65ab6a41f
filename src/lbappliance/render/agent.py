"""The health agent's configuration: which signals gate each anycast VIP on a node.

Read by ``python -m lbappliance.health`` (the agent ExaBGP runs) and by the
node-side helper behind ``lbappliance status`` / ``maintenance``
(``python -m lbappliance.health.node``). Everything here derives from the model.
"""

from __future__ import annotations

from typing import Any

from lbappliance.inventory.derived import (
    effective_check,
    frontend_pools,
    interfaces,
    pool,
    services_on_vip,
)
from lbappliance.inventory.schema import AnycastVip, Inventory, L4Service, Node
from lbappliance.paths import NODE, RuntimePaths, target
from lbappliance.render import network
from lbappliance.render.keepalived import DEMOTE_VALUE

TARGET = target(NODE.agent_config)

# Flap dampening of an announcement (RFC 2439 style; not in the inventory model yet):
# each fall from announced to withdrawn adds `penalty`, which halves every `half_life`
# seconds; at `suppress` the VIP stays withdrawn until the penalty is below `reuse`.
DAMPENING = {
    "penalty": 1000,
    "suppress": 2500,
    "reuse": 800,
    "half_life": 30,
    "max_suppress": 300,
}


def _l4_pool(inv: Inventory, svc: L4Service, vip: AnycastVip) -> dict[str, Any]:
    check = svc.health_check
    port = check.port or svc.port
    targets = [
        {"kind": "http", "address": str(b.address), "port": port, "path": check.path}
        if check.type == "http"
        else {"kind": "tcp", "address": str(b.address), "port": port}
        for b in svc.backends
        if b.weight > 0
    ]
    minimum = (
        vip.min_servers_up if vip.min_servers_up is not None else inv.health_agent.min_servers_up
    )
    return {
        "name": svc.name,
        "targets": targets,
        "min_up": minimum,
        "min_ratio": inv.health_agent.min_servers_ratio,
    }


def _vip(inv: Inventory, node: Node, vip: AnycastVip, uplink: str) -> dict[str, Any]:
    agent = inv.health_agent
    frontends, l4 = services_on_vip(inv, vip)
    applicable = {"maintenance", "return_path"}
    haproxy = dataplane = None
    probes: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
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
        for fe in frontends:
            check = effective_check(inv, pool(inv, fe.default_pool))
            probes.append(
                {
                    # End to end through the local stack: the VIP, HAProxy, a backend.
                    "kind": "https" if fe.tls else "http",
                    "address": str(vip.prefix.ip),
                    "port": fe.port,
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
        # XDP forwards before the local stack sees a packet, so the VIP cannot be probed
        # from the node itself; probe the service's backends (enough of them must answer).
        pools = [
            _l4_pool(inv, s, vip)
            for s in l4
            if s.protocol == "tcp" and s.health_check.type != "none"
        ]
    signals = [s for s in agent.signals if s in applicable]
    if "probe" in signals and not (probes or pools):
        signals.remove("probe")
    return {
        "prefix": str(vip.prefix),
        "communities": list(vip.communities),
        "signals": signals,
        "haproxy": haproxy if "haproxy" in signals else None,
        "dataplane": dataplane if "dataplane" in signals else None,
        "probes": probes if "probe" in signals else [],
        "pools": pools if "probe" in signals else [],
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
        "dampening": DAMPENING,
        "maintenance": node.maintenance,
        "maintenance_file": paths.maintenance_file,
        "maintenance_drain": float(agent.maintenance_drain),
        "haproxy_socket": paths.haproxy_socket,
        "state_file": f"{paths.run_dir}/health-agent.state.json",
        "servers_file": f"{paths.state_dir}/maintenance-servers.json",
        "vrrp_demote_file": paths.vrrp_demote_file,
        "vrrp_demote_value": DEMOTE_VALUE,
        "vrrp": [
            {"name": g.name, "interface": g.interface, "vips": [str(v.ip) for v in g.vips]}
            for g in inv.vrrp
        ],
        "metrics": {"address": "127.0.0.1", "port": agent.metrics_port},
        "return_path": network.return_path(inv, node),
        "vips": [_vip(inv, node, vip, uplink) for vip in inv.anycast],
    }
