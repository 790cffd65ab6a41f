"""JSON specs read on the node: the XDP data plane and the NIC tuning input."""

from __future__ import annotations

import dataclasses
from typing import Any

from lbappliance.inventory.derived import first_address, interfaces
from lbappliance.inventory.schema import Inventory, Node
from lbappliance.paths import NODE, RuntimePaths, target

DATAPLANE_TARGET = target(NODE.dataplane_spec)
NIC_TARGET = target(NODE.nic_config)


def dataplane(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    dp = inv.dataplane
    iface = interfaces(node, dp.interface_role)[0]
    return {
        "node": node.name,
        "interface": iface.name,
        "xdp_mode": dp.xdp_mode,
        "table_size": dp.table_size,
        "flow_table_size": dp.flow_table_size,
        "udp_idle_timeout": float(dp.udp_idle_timeout),
        "previous_table_window": float(dp.previous_table_window),
        "tunnel_source_v4": str(a) if (a := first_address(iface, 4)) else None,
        "tunnel_source_v6": str(a) if (a := first_address(iface, 6)) else None,
        "services": [
            {
                "name": s.name,
                "vip": str(s.vip),
                "port": s.port,
                "protocol": s.protocol,
                "forwarding": s.forwarding,
                "backends": [
                    {
                        "address": str(b.address),
                        "weight": b.weight,
                        "mac": b.mac,
                        "mtu": b.path_mtu or dp.path_mtu,
                    }
                    for b in s.backends
                ],
            }
            for s in inv.l4_services
            if s.dataplane == "xdp"
        ],
    }


def nic(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    return {
        "node": node.name,
        "interfaces": [i.name for i in node.interfaces if i.role in ("uplink", "backend")],
        "profile": dataclasses.asdict(inv.nic_profiles[node.nic_profile]),
    }
