"""Facts derived from a validated site, shared by every renderer."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .schema import (
    AnycastVip,
    BgpPeer,
    Frontend,
    HttpCheck,
    Interface,
    Inventory,
    L4Service,
    Node,
    Pool,
    WeightController,
)

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class RuntimePaths:
    """Where daemons keep sockets and state on a node.

    Production nodes use the defaults. The namespace lab runs several nodes on
    one filesystem, so it renders with a per-node prefix instead.
    """

    prefix: str = ""

    def _p(self, path: str) -> str:
        return f"{self.prefix}{path}"

    @property
    def haproxy_socket(self) -> str:
        return self._p("/run/haproxy/admin.sock")

    @property
    def haproxy_certs(self) -> str:
        return self._p("/etc/haproxy/certs")

    @property
    def state_dir(self) -> str:
        return self._p("/var/lib/lbappliance")

    @property
    def run_dir(self) -> str:
        return self._p("/run/lbappliance")

    @property
    def etc_dir(self) -> str:
        return self._p("/etc/lbappliance")

    @property
    def maintenance_file(self) -> str:
        return f"{self.state_dir}/maintenance"

    @property
    def vrrp_demote_file(self) -> str:
        return f"{self.state_dir}/vrrp-demote"


def interfaces(node: Node, role: str) -> list[Interface]:
    return [i for i in node.interfaces if i.role == role]


def local_address(node: Node, peer: BgpPeer) -> IPAddr:
    """The node's address on the peer's subnet (validation guarantees one exists)."""
    for iface in interfaces(node, "uplink"):
        for addr in iface.addresses:
            if peer.address in addr.network:
                return addr.ip
    raise LookupError(f"{node.name} has no uplink address toward {peer.address}")


def peers_of_family(inv: Inventory, version: int) -> list[BgpPeer]:
    return [p for p in inv.bgp.peers if p.address.version == version]


def first_address(iface: Interface, version: int) -> IPAddr | None:
    return next((a.ip for a in iface.addresses if a.version == version), None)


def effective_check(inv: Inventory, pool: Pool) -> HttpCheck:
    return pool.policy.health_check or inv.l7.policy.health_check


def effective_controller(inv: Inventory, pool: Pool) -> WeightController:
    return pool.policy.weight_controller or inv.l7.policy.weight_controller


def frontend_vips(fe: Frontend) -> list[IPAddr]:
    return [fe.vip, *fe.extra_vips]


def frontend_pools(fe: Frontend) -> list[str]:
    """Pools a frontend can send to, default first, without repeats."""
    names = [fe.default_pool, *(r.pool for r in fe.routes)]
    return list(dict.fromkeys(names))


def services_on_vip(inv: Inventory, vip: AnycastVip) -> tuple[list[Frontend], list[L4Service]]:
    ip = vip.prefix.ip
    frontends = [fe for fe in inv.l7.frontends if ip in frontend_vips(fe)]
    l4 = [s for s in inv.l4_services if s.vip == ip]
    return frontends, l4


def pool(inv: Inventory, name: str) -> Pool:
    return next(p for p in inv.l7.pools if p.name == name)


def node(inv: Inventory, name: str) -> Node:
    for n in inv.nodes:
        if n.name == name:
            return n
    raise LookupError(f"no node {name!r}; nodes: {', '.join(n.name for n in inv.nodes)}")
