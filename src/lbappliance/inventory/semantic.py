"""Cross-field checks a schema cannot express (run once the schema is clean)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from lbappliance.inventory.errors import InventoryError, Path_
from lbappliance.inventory.schema import HttpCheck, Inventory, L4Check
from lbappliance.inventory.yamlpos import Positions

RESERVED_ASNS = {0, 23456, 65535, 4294967295}
MIN_BFD_INTERVAL = 0.05  # below this a busy node's BFD flaps (see docs/bfd.md)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


class Checker:
    def __init__(self, inv: Inventory, positions: Positions, site_file_stem: str):
        self.inv = inv
        self.pos = positions
        self.stem = site_file_stem
        self.errors: list[InventoryError] = []

    def err(self, path: Path_, message: str, hint: str = "") -> None:
        self.errors.append(InventoryError(self.pos.of(path), path, message, hint))

    def unique(self, items: Iterable[tuple[Any, Path_]], what: str) -> None:
        """Report every repeat of a value, pointing at the repeat and the first use."""
        seen: dict[Any, Path_] = {}
        for value, path in items:
            if value in seen:
                first = self.pos.of(seen[value])
                where = f"line {first.line}" if first else "earlier"
                self.err(path, f"duplicate {what} {value}", f"already used at {where}")
            else:
                seen[value] = path

    def run(self) -> list[InventoryError]:
        for check in (
            self.site,
            self.nodes,
            self.network,
            self.bgp,
            self.vrrp,
            self.vips,
            self.services,
            self.l7,
            self.ports,
            self.health,
        ):
            check()
        return self.errors

    # --- sections -----------------------------------------------------------------

    def site(self) -> None:
        inv = self.inv
        if inv.site.name != self.stem:
            self.err(
                ("site", "name"),
                f"site name {inv.site.name!r} does not match its file {self.stem}.yml",
                "rename one so they agree",
            )
        if inv.site.asn in RESERVED_ASNS:
            self.err(("site", "asn"), f"AS {inv.site.asn} is reserved", "use a private ASN")
        if not _is_prime(inv.dataplane.table_size):
            self.err(
                ("dataplane", "table_size"),
                f"{inv.dataplane.table_size} is not prime",
                "Maglev needs a prime table size, e.g. 65537",
            )
        dp = inv.dataplane
        if not 1 <= dp.udp_idle_timeout <= 86400:
            self.err(
                ("dataplane", "udp_idle_timeout"),
                f"{dp.udp_idle_timeout}s is outside 1s..24h",
                "give the idle time after which a UDP flow is picked anew, e.g. 30s",
            )
        if dp.previous_table_window > 86400:
            self.err(
                ("dataplane", "previous_table_window"),
                f"{dp.previous_table_window}s is over 24h",
                "keep it to the time flows may move between nodes after a change, e.g. 60s",
            )

    def nodes(self) -> None:
        inv = self.inv
        if not inv.nodes:
            self.err(("nodes",), "a site needs at least one node", "an LB pair has two")
        self.unique(((n.name, ("nodes", i, "name")) for i, n in enumerate(inv.nodes)), "node name")
        # Router configs name each session after its node with '-' made '_'.
        normal: dict[str, str] = {}
        for i, n in enumerate(inv.nodes):
            other = normal.setdefault(n.name.replace("-", "_"), n.name)
            if other != n.name:
                self.err(
                    ("nodes", i, "name"),
                    f"node names {other!r} and {n.name!r} are the same once '-' is '_'",
                    "router configs name each session that way: rename one",
                )
        self.unique(
            ((n.router_id, ("nodes", i, "router_id")) for i, n in enumerate(inv.nodes)),
            "router-id",
        )
        self.unique(
            (
                (n.management_address, ("nodes", i, "management_address"))
                for i, n in enumerate(inv.nodes)
            ),
            "management address",
        )
        self.unique(
            ((n.vrrp_priority, ("nodes", i, "vrrp_priority")) for i, n in enumerate(inv.nodes)),
            "VRRP priority",
        )
        addresses = []
        for i, node in enumerate(inv.nodes):
            self.unique(
                (
                    (iface.name, ("nodes", i, "interfaces", j, "name"))
                    for j, iface in enumerate(node.interfaces)
                ),
                "interface",
            )
            if not any(iface.role == "uplink" for iface in node.interfaces):
                self.err(("nodes", i, "interfaces"), "no interface has role 'uplink'")
            if node.nic_profile not in inv.nic_profiles:
                self.err(
                    ("nodes", i, "nic_profile"),
                    f"unknown NIC profile {node.nic_profile!r}",
                    "defined: " + ", ".join(sorted(inv.nic_profiles)),
                )
            for j, iface in enumerate(node.interfaces):
                for k, addr in enumerate(iface.addresses):
                    addresses.append((addr.ip, ("nodes", i, "interfaces", j, "addresses", k)))
        self.unique(addresses, "node address")

    def network(self) -> None:
        """Each node's rendered network: routers on their subnets, a return path for every
        VIP family, and nothing that cuts the controllers off the node."""
        inv = self.inv
        families = {a.prefix.version for a in inv.anycast}
        for i, node in enumerate(inv.nodes):
            npath = ("nodes", i)
            return_families: set[int] = set()
            for j, iface in enumerate(node.interfaces):
                ipath = (*npath, "interfaces", j)
                nets = [a.network for a in iface.addresses]
                seen: dict[int, int] = {}
                for k, gw in enumerate(iface.gateways):
                    if not any(gw in n for n in nets):
                        self.err(
                            (*ipath, "gateways", k),
                            f"gateway {gw} is on no subnet of {iface.name}",
                            "a router must be reachable on the interface's own subnet",
                        )
                    if gw.version in seen:
                        self.err(
                            (*ipath, "gateways", k),
                            f"second IPv{gw.version} gateway on {iface.name}",
                            "give at most one per IP version",
                        )
                    seen[gw.version] = k
                for k, route in enumerate(iface.routes):
                    via = route.via or next(
                        (g for g in iface.gateways if g.version == route.to.version), None
                    )
                    if via is None:
                        self.err(
                            (*ipath, "routes", k),
                            f"route to {route.to} has no next hop",
                            f"give `via`, or an IPv{route.to.version} gateway on {iface.name}",
                        )
                    elif via.version != route.to.version or not any(via in n for n in nets):
                        self.err(
                            (*ipath, "routes", k, "via"),
                            f"next hop {via} is not on an IPv{route.to.version} subnet of "
                            f"{iface.name}",
                        )
                if iface.role == "uplink":
                    peers = [p.address for p in inv.bgp.peers if any(p.address in n for n in nets)]
                    return_families |= {g.version for g in (iface.gateways or peers)}
            if node.network_managed:
                for version in sorted(families - return_families):
                    self.err(
                        (*npath, "interfaces"),
                        f"node {node.name} has no IPv{version} return path toward clients",
                        f"give an uplink an IPv{version} gateway (or a BGP peer on its subnet)",
                    )
                self._management_kept(i, node)

    def _management_kept(self, i: int, node: Any) -> None:
        """The rendered network must keep the management address and the controllers'
        route: applying it would otherwise lock the controllers out of the node."""
        holder = next(
            (
                iface
                for iface in node.interfaces
                if any(a.ip == node.management_address for a in iface.addresses)
            ),
            None,
        )
        if holder is None:
            self.err(
                ("nodes", i, "management_address"),
                f"{node.management_address} is on no interface of {node.name}: the rendered "
                "network would remove it and cut the controllers off",
                "keep it in the mgmt interface's addresses, or set network_managed: false",
            )
            return
        defaults = not self.inv.network.client_prefixes
        for k, prefix in enumerate(self.inv.network.management_prefixes):
            covered = (
                any(
                    prefix.subnet_of(a.network)
                    for a in holder.addresses
                    if a.version == prefix.version
                )
                or any(
                    r.to.version == prefix.version and prefix.subnet_of(r.to) for r in holder.routes
                )
                or (holder.role == "uplink" and defaults)
            )
            if not covered:
                self.err(
                    ("network", "management_prefixes", k),
                    f"{prefix} would not be reachable through {holder.name} (the interface of "
                    f"{node.name}'s management address): applying the network would cut the "
                    "controllers off",
                    f"add a route to it on {holder.name} (interfaces[].routes)",
                )

    def bgp(self) -> None:
        inv = self.inv
        if not inv.bgp.peers:
            self.err(("bgp", "peers"), "no BGP peer", "anycast needs at least one router")
        self.unique(
            ((p.name, ("bgp", "peers", i, "name")) for i, p in enumerate(inv.bgp.peers)),
            "peer name",
        )
        self.unique(
            ((p.address, ("bgp", "peers", i, "address")) for i, p in enumerate(inv.bgp.peers)),
            "peer address",
        )
        for i, peer in enumerate(inv.bgp.peers):
            path = ("bgp", "peers", i)
            if peer.asn in RESERVED_ASNS:
                self.err((*path, "asn"), f"AS {peer.asn} is reserved")
            if peer.password and bool(peer.password.env) == bool(peer.password.vault):
                self.err((*path, "password"), "give exactly one of 'env' or 'vault'")
            for node in inv.nodes:
                if not any(
                    peer.address in addr.network
                    for iface in node.interfaces
                    if iface.role == "uplink"
                    for addr in iface.addresses
                ):
                    self.err(
                        (*path, "address"),
                        f"peer {peer.address} is on no uplink subnet of node {node.name}",
                        "ExaBGP needs a local address on the peer's subnet",
                    )
        if inv.bgp.bfd.interval < MIN_BFD_INTERVAL:
            self.err(
                ("bgp", "bfd", "interval"),
                f"{inv.bgp.bfd.interval} is below {int(MIN_BFD_INTERVAL * 1000)}ms",
                "shorter intervals flap on a busy node",
            )

    def vrrp(self) -> None:
        inv = self.inv
        segments = []
        for i, group in enumerate(inv.vrrp):
            path = ("vrrp", i)
            nets = []
            for node in inv.nodes:
                iface = next((x for x in node.interfaces if x.name == group.interface), None)
                if iface is None:
                    self.err(
                        (*path, "interface"),
                        f"node {node.name} has no interface {group.interface!r}",
                    )
                    continue
                nets.extend(a.network for a in iface.addresses)
            segments.append(((group.vrid, group.interface), (*path, "vrid")))
            if group.advert_interval < 1 and group.version != 3:
                self.err(
                    (*path, "advert_interval"),
                    f"sub-second advert interval {group.advert_interval} needs VRRP version 3",
                    "set version: 3",
                )
            advert = group.advert_interval
            if group.version == 3 and (advert.ms % 10 or not 0.01 <= advert <= 40.95):
                self.err(
                    (*path, "advert_interval"),
                    f"{advert} is not a VRRPv3 advert interval",
                    "10ms..40950ms in steps of 10ms (centiseconds on the wire)",
                )
            if group.version == 2 and advert >= 1 and (advert.ms % 1000 or advert > 255):
                self.err(
                    (*path, "advert_interval"),
                    f"{advert} is not a VRRPv2 advert interval",
                    "whole seconds, 1s..255s",
                )
            if group.preempt_delay > 1000:
                self.err((*path, "preempt_delay"), "at most 1000s (keepalived's limit)")
            families = {v.version for v in group.vips}
            if len(families) > 1:
                self.err((*path, "vips"), "mixes IPv4 and IPv6", "use one group per family")
        self.unique(segments, "VRID on segment")
        self.unique(((g.name, ("vrrp", i, "name")) for i, g in enumerate(inv.vrrp)), "group name")

    def vips(self) -> None:
        inv = self.inv
        vips = [
            (v.ip, ("vrrp", i, "vips", j))
            for i, g in enumerate(inv.vrrp)
            for j, v in enumerate(g.vips)
        ]
        vips += [(a.prefix.ip, ("anycast", i, "prefix")) for i, a in enumerate(inv.anycast)]
        self.unique(vips, "VIP")
        node_addrs = {
            addr.ip for n in inv.nodes for iface in n.interfaces for addr in iface.addresses
        } | {n.management_address for n in inv.nodes}
        for vip, path in vips:
            if vip in node_addrs:
                self.err(path, f"VIP {vip} is also a node address", "VIPs must float")
        for i, vip in enumerate(inv.anycast):
            if not any(
                vip.prefix.network.subnet_of(p)
                for p in inv.site.announce_prefixes
                if p.version == vip.prefix.version
            ):
                self.err(
                    ("anycast", i, "prefix"),
                    f"{vip.prefix} is outside the site's announce_prefixes",
                    "allowed: " + ", ".join(str(p) for p in inv.site.announce_prefixes),
                )

    def _declared_vips(self) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return {a.prefix.ip for a in self.inv.anycast} | {
            v.ip for g in self.inv.vrrp for v in g.vips
        }

    def _check_timing(self, path: Path_, check: HttpCheck | L4Check) -> None:
        if check.timeout >= check.interval:
            self.err(
                (*path, "timeout"),
                f"timeout {check.timeout} must be below the interval {check.interval}",
                "a check that outlives its interval overlaps the next one",
            )

    def services(self) -> None:
        inv = self.inv
        declared = self._declared_vips()
        listeners: list[tuple[Any, Path_]] = []
        self.unique(
            ((s.name, ("l4_services", i, "name")) for i, s in enumerate(inv.l4_services)),
            "service name",
        )
        for i, svc in enumerate(inv.l4_services):
            path = ("l4_services", i)
            listeners.append(((svc.vip, svc.port, svc.protocol), (*path, "port")))
            if svc.vip not in declared:
                self.err((*path, "vip"), f"{svc.vip} is not an anycast or VRRP VIP of this site")
            for j, be in enumerate(svc.backends):
                if be.address.version != svc.vip.version and svc.forwarding != "nat":
                    self.err(
                        (*path, "backends", j, "address"),
                        f"IPv{be.address.version} backend for an IPv{svc.vip.version} VIP",
                        "DSR encapsulates in the VIP's family: backends must match it",
                    )
                if svc.forwarding == "l2dsr" and svc.dataplane == "xdp" and not be.mac:
                    self.err(
                        (*path, "backends", j, "mac"),
                        "l2dsr forwarding with the XDP data plane needs the backend MAC",
                        "IPVS resolves it by ARP; XDP rewrites it from the spec",
                    )
            self.unique(
                (
                    (b.address, (*path, "backends", j, "address"))
                    for j, b in enumerate(svc.backends)
                ),
                "backend",
            )
            if svc.dataplane == "xdp" and svc.forwarding == "nat":
                self.err(
                    (*path, "forwarding"),
                    "the XDP data plane does DSR only",
                    "use ipip or l2dsr, or dataplane: ipvs",
                )
            if svc.dataplane == "xdp" and svc.scheduler != "maglev":
                self.err((*path, "scheduler"), "the XDP data plane schedules with maglev only")
            if not any(b.weight for b in svc.backends):
                self.err((*path, "backends"), "no backend has a weight above 0")
            self._check_timing((*path, "health_check"), svc.health_check)
        for i, fe in enumerate(inv.l7.frontends):
            for k, vip in enumerate([fe.vip, *fe.extra_vips]):
                vpath = ("l7", "frontends", i, "vip" if k == 0 else "extra_vips")
                vpath = vpath if k == 0 else (*vpath, k - 1)
                listeners.append(((vip, fe.port, "tcp"), vpath))
                if vip not in declared:
                    self.err(vpath, f"{vip} is not an anycast or VRRP VIP of this site")
        self.unique(listeners, "listener (VIP, port, protocol)")

    def l7(self) -> None:
        l7 = self.inv.l7
        pools = {p.name for p in l7.pools}
        self.unique(((p.name, ("l7", "pools", i, "name")) for i, p in enumerate(l7.pools)), "pool")
        self.unique(
            ((f.name, ("l7", "frontends", i, "name")) for i, f in enumerate(l7.frontends)),
            "frontend",
        )
        for i, fe in enumerate(l7.frontends):
            path = ("l7", "frontends", i)
            refs = [(fe.default_pool, (*path, "default_pool"))]
            refs += [(r.pool, (*path, "routes", j, "pool")) for j, r in enumerate(fe.routes)]
            for name, rpath in refs:
                if name not in pools:
                    self.err(
                        rpath, f"unknown pool {name!r}", "defined: " + ", ".join(sorted(pools))
                    )
            for j, route in enumerate(fe.routes):
                if route.host is None and route.path_prefix is None:
                    self.err((*path, "routes", j), "a route needs a host or a path_prefix")
        for i, pool in enumerate(l7.pools):
            path = ("l7", "pools", i)
            self.unique(
                ((s.name, (*path, "servers", j, "name")) for j, s in enumerate(pool.servers)),
                "server",
            )
            if pool.policy.health_check:
                self._check_timing((*path, "policy", "health_check"), pool.policy.health_check)
            if not pool.servers:
                self.err((*path, "servers"), "a pool needs at least one server")
            elif not any(srv.weight for srv in pool.servers):
                self.err((*path, "servers"), "no server has a weight above 0")
            self.unique(
                (
                    ((srv.address, srv.port), (*path, "servers", j, "port"))
                    for j, srv in enumerate(pool.servers)
                ),
                "server address:port",
            )
            check = pool.policy.health_check or l7.policy.health_check
            if l7.policy.outlier.ejection_time.ms < check.rise:
                self.err(
                    ("l7", "policy", "outlier", "ejection_time"),
                    f"ejection_time {l7.policy.outlier.ejection_time} is shorter than 1ms per "
                    f"rise ({check.rise}) of pool {pool.name}",
                    "ejected servers are re-checked every ejection_time / rise",
                )
        policy = l7.policy
        self._check_timing(("l7", "policy", "health_check"), policy.health_check)
        if policy.drain_timeout.ms % 1000:
            self.err(
                ("l7", "policy", "drain_timeout"),
                f"{policy.drain_timeout} is not whole seconds",
                "the deploy waits in whole seconds, e.g. 30s",
            )
        t, tp = policy.timeouts, ("l7", "policy", "timeouts")
        if not t.client_deadline > t.server > t.backend_deadline:
            self.err(
                (*tp, "server"),
                f"timeouts must descend client_deadline ({t.client_deadline}) > server "
                f"({t.server}) > backend_deadline ({t.backend_deadline})",
                "the innermost layer must give up first",
            )
        if t.connect >= t.server:
            self.err((*tp, "connect"), f"connect ({t.connect}) must be below server ({t.server})")
        if t.http_request >= t.client_deadline:
            self.err(
                (*tp, "http_request"),
                f"http_request ({t.http_request}) must be below client_deadline "
                f"({t.client_deadline})",
            )
        controllers = [(("l7", "policy", "weight_controller"), policy.weight_controller)]
        controllers += [
            (("l7", "pools", i, "policy", "weight_controller"), pool.policy.weight_controller)
            for i, pool in enumerate(l7.pools)
            if pool.policy.weight_controller
        ]
        for wpath, wc in controllers:
            if wc.target_latency >= t.server:
                self.err(
                    (*wpath, "target_latency"),
                    f"target latency ({wc.target_latency}) must be below the server timeout "
                    f"({t.server})",
                )
            if wc.canary_weight_percent > wc.min_weight_percent:
                self.err(
                    (*wpath, "canary_weight_percent"),
                    f"the outliers' floor ({wc.canary_weight_percent}) must not exceed "
                    f"min_weight_percent ({wc.min_weight_percent})",
                    "an outlier must not be kept above a healthy server's floor",
                )

    def ports(self) -> None:
        """Ports the node's own daemons listen on must not collide."""
        from lbappliance.render.haproxy import STATS_PORT
        from lbappliance.render.weights import METRICS_PORT

        agent = self.inv.health_agent
        taken = {STATS_PORT: "the HAProxy stats page", METRICS_PORT: "the weight controller"}
        taken[179] = "BGP"
        taken.update({n.ssh_port: f"SSH on node {n.name}" for n in self.inv.nodes})
        if agent.metrics_port in taken:
            self.err(
                ("health_agent", "metrics_port"),
                f"port {agent.metrics_port} is already used by {taken[agent.metrics_port]}",
                "pick a free port, e.g. 9171",
            )

    def health(self) -> None:
        agent = self.inv.health_agent
        if not agent.timeout < agent.fast_interval <= agent.interval:
            self.err(
                ("health_agent", "timeout"),
                f"need timeout ({agent.timeout}) < fast_interval ({agent.fast_interval}) "
                f"<= interval ({agent.interval})",
                "a signal must answer before the next round starts",
            )


def check(inv: Inventory, positions: Positions, site_file_stem: str) -> list[InventoryError]:
    return Checker(inv, positions, site_file_stem).run()
