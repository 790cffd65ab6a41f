"""The lab's topology, described once and derived from the `lab` site inventory.

Both labs come from this: the namespace lab (``netns.py``: one network
namespace per host, a bridge per segment) and the podman container lab (one
systemd container per host, a podman network per segment).

Hosts:
- the LB nodes, exactly as the inventory gives them (interfaces, addresses),
  with the first BGP peer of each address family as that family's default
  gateway (replies to clients) and the anycast VIPs on lo (as
  `lbappliance-vips.service` does on real nodes);
- ``router``: BIRD, peering with every node; it holds each BGP peer address of
  the inventory (IPv4 and IPv6), the first address of every VRRP VIP subnet on
  the uplink segment, the first address of each backend subnet (the backends'
  gateway for DSR replies) and the client subnets' gateways;
- the backends: every L7 server and L4 backend address, named after its L7
  server (else ``backend-<last octet>``), serving HTTP on every port used, with
  the L4 VIPs on their loopback for DSR (IPIP decapsulation);
- ``client``: on its own segment behind the router, with an address of each
  family the site peers in (``CLIENT_SUBNETS``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property

from lbappliance.inventory import Site
from lbappliance.inventory.schema import Inventory

CLIENT_SUBNETS = (ipaddress.ip_network("10.40.0.0/24"), ipaddress.ip_network("2001:db8:40::/64"))
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Attachment:
    """One interface of a host on a segment."""

    segment: str
    ifname: str
    addresses: tuple[IPIface, ...]


@dataclass(frozen=True)
class LabHost:
    name: str
    kind: str  # "lb" | "router" | "backend" | "client"
    attachments: tuple[Attachment, ...]
    gateways: tuple[IPAddr, ...] = ()  # default routes, at most one per IP version
    loopback_vips: tuple[IPAddr, ...] = ()  # VIPs owned on lo (LB: anycast; backend: DSR)
    http_ports: tuple[int, ...] = ()  # backends: ports the lab HTTP server listens on

    def address_on(self, segment: str, version: int | None = None) -> IPAddr:
        """The host's first address on ``segment`` (of IP ``version`` if given)."""
        att = next(a for a in self.attachments if a.segment == segment)
        return next(a.ip for a in att.addresses if version in (None, a.version))

    def ifname_on(self, segment: str) -> str:
        return next(a.ifname for a in self.attachments if a.segment == segment)


@dataclass(frozen=True)
class Segment:
    name: str  # mgmt | uplink | backend | client
    subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True)
class Topology:
    site: Site
    segments: tuple[Segment, ...]
    hosts: tuple[LabHost, ...] = field(default=())

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def of_kind(self, kind: str) -> list[LabHost]:
        return [h for h in self.hosts if h.kind == kind]

    @cached_property
    def lbs(self) -> list[LabHost]:
        return self.of_kind("lb")

    @cached_property
    def backends(self) -> list[LabHost]:
        return self.of_kind("backend")

    @property
    def router(self) -> LabHost:
        return self.of_kind("router")[0]

    @property
    def client(self) -> LabHost:
        return self.of_kind("client")[0]


def _segment_of_role(inv: Inventory, role: str) -> tuple:
    nets: dict = {}
    for node in inv.nodes:
        for iface in node.interfaces:
            if iface.role == role:
                for addr in iface.addresses:
                    nets[addr.network] = None
    return tuple(nets)


def lab_topology(site: Site) -> Topology:
    """Derive the lab hosts and segments from a site (the `lab` site in practice)."""
    inv = site.model
    mgmt, uplink, backend = (_segment_of_role(inv, r) for r in ("mgmt", "uplink", "backend"))
    uplink_ifnames = {i.name for n in inv.nodes for i in n.interfaces if i.role == "uplink"}
    vrrp_nets = tuple(
        dict.fromkeys(v.network for g in inv.vrrp if g.interface in uplink_ifnames for v in g.vips)
    )
    versions = sorted({p.address.version for p in inv.bgp.peers})
    client = tuple(n for n in CLIENT_SUBNETS if n.version in versions)
    segments = (
        Segment("mgmt", mgmt),
        Segment("uplink", uplink + vrrp_nets),
        Segment("backend", backend),
        Segment("client", client),
    )
    # The first BGP peer of each family routes the LB nodes' replies.
    peer_gateways = tuple(
        next(p.address for p in inv.bgp.peers if p.address.version == v) for v in versions
    )
    hosts: list[LabHost] = []
    for node in inv.nodes:
        hosts.append(
            LabHost(
                name=node.name,
                kind="lb",
                attachments=tuple(
                    Attachment(i.role, i.name, tuple(i.addresses)) for i in node.interfaces
                ),
                gateways=peer_gateways,
                loopback_vips=tuple(v.prefix.ip for v in inv.anycast),
            )
        )
    router_uplink = [
        ipaddress.ip_interface(f"{p.address}/{net.prefixlen}")
        for p in inv.bgp.peers
        for net in uplink
        if p.address in net
    ]
    router_uplink += [ipaddress.ip_interface(f"{next(n.hosts())}/{n.prefixlen}") for n in vrrp_nets]
    backend_gw = [ipaddress.ip_interface(f"{next(n.hosts())}/{n.prefixlen}") for n in backend]
    client_gw = tuple(ipaddress.ip_interface(f"{next(n.hosts())}/{n.prefixlen}") for n in client)
    hosts.append(
        LabHost(
            name="router",
            kind="router",
            attachments=(
                Attachment("uplink", "eth1", tuple(router_uplink)),
                Attachment("backend", "eth2", tuple(backend_gw)),
                Attachment("client", "eth3", client_gw),
            ),
        )
    )
    names: dict[IPAddr, str] = {}
    ports: dict[IPAddr, set[int]] = {}
    vips: dict[IPAddr, set[IPAddr]] = {}
    for pool in inv.l7.pools:
        for s in pool.servers:
            names.setdefault(s.address, s.name)
            ports.setdefault(s.address, set()).add(s.port)
    for svc in inv.l4_services:
        for b in svc.backends:
            names.setdefault(b.address, f"backend-{str(b.address).split('.')[-1]}")
            ports.setdefault(b.address, set()).add(svc.health_check.port or svc.port)
            vips.setdefault(b.address, set()).add(svc.vip)
    for addr in sorted(names, key=lambda a: (a.version, a)):
        net = next(n for n in backend if addr in n)
        hosts.append(
            LabHost(
                name=names[addr],
                kind="backend",
                attachments=(
                    Attachment(
                        "backend", "eth1", (ipaddress.ip_interface(f"{addr}/{net.prefixlen}"),)
                    ),
                ),
                gateways=(backend_gw[backend.index(net)].ip,),
                loopback_vips=tuple(sorted(vips.get(addr, ()))),
                http_ports=tuple(sorted(ports[addr])),
            )
        )
    client_addrs = tuple(ipaddress.ip_interface(f"{n[2]}/{n.prefixlen}") for n in client)
    hosts.append(
        LabHost(
            name="client",
            kind="client",
            attachments=(Attachment("client", "eth1", client_addrs),),
            gateways=tuple(gw.ip for gw in client_gw),
        )
    )
    return Topology(site=site, segments=segments, hosts=tuple(hosts))
