"""keepalived: VRRP groups for the pair, and IPVS virtual servers for `ipvs` services."""

from __future__ import annotations

from typing import Any

from lbappliance.inventory.schema import Inventory, Node
from lbappliance.paths import RuntimePaths

TARGET = "etc/keepalived/keepalived.conf"
DEMOTE_VALUE = 254  # x weight -1: drops any priority to the floor, so the peer takes over

_LB_KIND = {"ipip": "TUN", "l2dsr": "DR", "nat": "NAT"}
_LB_ALGO = {"maglev": "mh", "wrr": "wrr", "wlc": "wlc"}


def _seconds(value: float) -> str:
    return f"{value:g}"


def context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    groups = [
        {
            "name": g.name,
            "interface": g.interface,
            "vrid": g.vrid,
            "version": g.version,
            "advert": _seconds(g.advert_interval),
            "preempt_delay": _seconds(g.preempt_delay) if g.preempt_delay else "",
            "vips": [str(v) for v in g.vips],
        }
        for g in inv.vrrp
    ]
    virtual_servers = [
        {
            "name": svc.name,
            "vip": str(svc.vip),
            "port": svc.port,
            "protocol": svc.protocol.upper(),
            "lb_algo": _LB_ALGO[svc.scheduler],
            "lb_kind": _LB_KIND[svc.forwarding],
            "delay_loop": _seconds(svc.health_check.interval),
            "check": svc.health_check,
            "check_port": svc.health_check.port or svc.port,
            "connect_timeout": _seconds(svc.health_check.timeout),
            "retry": svc.health_check.fall - 1,
            "real_servers": [{"address": str(b.address), "weight": b.weight} for b in svc.backends],
        }
        for svc in inv.l4_services
        if svc.dataplane == "ipvs"
    ]
    return {"groups": groups, "virtual_servers": virtual_servers, "demote_value": DEMOTE_VALUE}
