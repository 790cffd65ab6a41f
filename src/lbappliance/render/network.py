"""The node's own network: one systemd-networkd ``.network`` file per interface.

Every interface of a node whose network the appliance manages (``network_managed``,
the default) gets its addresses, MTU and routes from the inventory: the return path
toward clients through the uplinks' routers (a default route per IP version, or the
site's ``network.client_prefixes``), and each interface's own ``routes`` (the
management route). The same plan feeds the health agent's ``return_path`` signal
and, for a node that opts out, deploy's check of its live addresses and routes.

Carrier semantics: ``ConfigureWithoutCarrier=yes`` keeps networkd's hold on the
link while it is down, so when an uplink comes back (carrier flap, ``ip link set
down/up``) networkd puts its addresses and routes back at once (the kernel drops
IPv6 addresses and the routes of a link that goes down). Static IPv6 addresses
skip duplicate address detection unless ``ipv6_dad`` is set: a tentative address
cannot carry a BGP session. ``KeepConfiguration=static``: networkd never drops a
static address or route it finds (keepalived's VRRP VIPs, the management path), not
when it starts, reloads or restarts; the ``lb_network`` role removes what a change
takes out of a file.

No ``.link`` files: udev applies those only when a device appears, so they cannot
change a running node; the MTU is set from the ``.network`` file's ``[Link]``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lbappliance.inventory.derived import IPAddr, interfaces
from lbappliance.inventory.schema import Interface, Inventory, Node
from lbappliance.paths import RuntimePaths

TARGET_DIR = "etc/systemd/network"
FILE_PREFIX = "10-lbappliance-"
UPLINK_METRIC = 100  # uplink k's return routes have metric 100 + k: one path per family
DEFAULTS = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


def target(iface: Interface) -> str:
    return f"{TARGET_DIR}/{FILE_PREFIX}{iface.name}.network"


def gateways(inv: Inventory, iface: Interface) -> dict[int, IPAddr]:
    """The interface's router per IP version: its own ``gateways``, or (uplinks) the
    first BGP peer on each of its subnets."""
    found: dict[int, IPAddr] = {}
    candidates = list(iface.gateways)
    if not candidates and iface.role == "uplink":
        candidates = [
            p.address for p in inv.bgp.peers if any(p.address in a.network for a in iface.addresses)
        ]
    for gw in candidates:
        found.setdefault(gw.version, gw)
    return found


def client_destinations(inv: Inventory) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Where the return path leads, per IP version: the listed client prefixes of that
    version, or the default route when none is listed."""
    out = []
    for version, default in DEFAULTS.items():
        listed = [p for p in inv.network.client_prefixes if p.version == version]
        out += listed or [default]
    return out


def routes(inv: Inventory, node: Node, iface: Interface) -> list[dict[str, Any]]:
    """The interface's routes: ``{"to", "via", "metric"}`` (``to`` None: default route)."""
    gws = gateways(inv, iface)
    out: list[dict[str, Any]] = []
    uplinks = interfaces(node, "uplink")
    if iface.role == "uplink":
        metric = UPLINK_METRIC + uplinks.index(iface)
        for dst in client_destinations(inv):
            if dst.version in gws:
                to = None if dst.prefixlen == 0 else str(dst)
                out.append({"to": to, "via": str(gws[dst.version]), "metric": metric})
    for route in iface.routes:
        via = route.via or gws.get(route.to.version)
        out.append({"to": str(route.to), "via": str(via) if via else None, "metric": None})
    return out


def context(inv: Inventory, node: Node, iface: Interface) -> dict[str, Any]:
    v6 = any(a.version == 6 for a in iface.addresses)
    return {
        "iface": iface,
        "addresses": [str(a) for a in iface.addresses],
        "no_dad": v6 and not iface.ipv6_dad,
        "routes": routes(inv, node, iface),
    }


def files(inv: Inventory, node: Node, paths: RuntimePaths) -> list[tuple[str, dict[str, Any]]]:
    """(target, template context) of each file; none when the node opts out."""
    if not node.network_managed:
        return []
    return [(target(i), context(inv, node, i)) for i in node.interfaces]


def expected(inv: Inventory, node: Node) -> dict[str, Any]:
    """What the node's network must look like (host_vars ``lb_network_expected``)."""
    return {
        "addresses": [
            {"interface": i.name, "address": str(a)} for i in node.interfaces for a in i.addresses
        ],
        "routes": [
            {
                "interface": i.name,
                "to": r["to"] or str(DEFAULTS[_family(r["via"])]),
                "via": r["via"],
            }
            for i in node.interfaces
            for r in routes(inv, node, i)
            if r["via"]
        ],
    }


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def return_path(inv: Inventory, node: Node) -> dict[str, Any]:
    """The agent's ``return_path`` config: the uplinks carrying BGP sessions (with the
    addresses they must hold) and the destinations whose route must leave through an
    uplink."""
    carrying = [
        i
        for i in interfaces(node, "uplink")
        if any(p.address in a.network for p in inv.bgp.peers for a in i.addresses)
    ]
    return {
        "uplinks": [{"name": i.name, "addresses": [str(a) for a in i.addresses]} for i in carrying],
        "all_uplinks": [i.name for i in interfaces(node, "uplink")],
        "destinations": [str(d) for d in client_destinations(inv)],
    }
