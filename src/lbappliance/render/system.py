"""Kernel settings and the conntrack bypass every LB node needs."""

from __future__ import annotations

from typing import Any

from lbappliance.inventory.derived import interfaces
from lbappliance.inventory.schema import Inventory, Node
from lbappliance.paths import RuntimePaths

SYSCTL_TARGET = "etc/sysctl.d/90-lbappliance.conf"
NOTRACK_TARGET = "etc/nftables.d/lbappliance-notrack.nft"
VIPS_TARGET = "etc/systemd/system/lbappliance-vips.service"


def sysctl_context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    sections = [
        {
            "why": "HAProxy and ExaBGP bind VIPs that VRRP or the agent have not placed yet.",
            "settings": [("net.ipv4.ip_nonlocal_bind", 1), ("net.ipv6.ip_nonlocal_bind", 1)],
        },
        {
            "why": "DSR and floating VIPs: answer ARP only for addresses of the receiving "
            "interface, and source ARP from the best local address.",
            "settings": [
                ("net.ipv4.conf.all.arp_ignore", 1),
                ("net.ipv4.conf.all.arp_announce", 2),
            ],
        },
        {
            "why": "Anycast and DSR traffic is asymmetric: strict reverse-path filtering drops it.",
            "settings": [
                ("net.ipv4.conf.all.rp_filter", 2),
                ("net.ipv4.conf.default.rp_filter", 2),
            ],
        },
        {
            "why": "A route through a link without carrier is a black hole: the kernel skips "
            "it (another uplink's route takes over, the health agent withdraws if none does).",
            "settings": [
                ("net.ipv4.conf.all.ignore_routes_with_linkdown", 1),
                ("net.ipv6.conf.all.ignore_routes_with_linkdown", 1),
                ("net.ipv6.conf.default.ignore_routes_with_linkdown", 1),
            ],
        },
        {
            "why": "Connection capacity for the L7 tier.",
            "settings": [
                ("net.core.somaxconn", 65535),
                ("net.ipv4.tcp_max_syn_backlog", 65535),
                ("net.ipv4.ip_local_port_range", "1024 65000"),
            ],
        },
    ]
    backend_roles = {i.name for i in interfaces(node, "backend")}
    if any(s.forwarding == "nat" for s in inv.l4_services) or any(
        g.interface in backend_roles for g in inv.vrrp
    ):
        sections.append(
            {
                "why": "The pair is the backends' gateway (NAT, or a backend-side VRRP VIP).",
                "settings": [("net.ipv4.ip_forward", 1)],
            }
        )
    return {"sections": sections}


def notrack_context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    rules = [
        {
            "name": svc.name,
            "family": "ip" if svc.vip.version == 4 else "ip6",
            "vip": str(svc.vip),
            "protocol": svc.protocol,
            "port": svc.port,
        }
        for svc in inv.l4_services
        if svc.forwarding != "nat"  # IPVS NAT needs conntrack
    ]
    return {"rules": rules}


def vips_context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    return {"vips": [str(v.prefix) for v in inv.anycast]}
