"""Facts derived from a validated site, shared by every renderer."""

from __future__ import annotations

import ipaddress
import weakref
from dataclasses import dataclass, field

from lbappliance.inventory.schema import (
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


def interfaces(node: Node, role: str) -> list[Interface]:
    return [i for i in node.interfaces if i.role == role]


def local_address(node: Node, peer: BgpPeer) -> IPAddr:
    """The node's address on the peer's subnet (validation guarantees one exists)."""
    for iface in interfaces(node, "uplink"):
        for addr in iface.addresses:
            if peer.address in addr.network:
                return addr.ip
    raise LookupError(f"{node.name} has no uplink address toward {peer.address}")


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


@dataclass
class ModelIndex:
    """Lookups by VIP and by name, built in one pass over the model.

    Renderers ask these per VIP and per frontend; scanning every service for
    each one made rendering quadratic in the number of services.
    """

    frontends: dict[IPAddr, list[Frontend]] = field(default_factory=dict)
    l4: dict[IPAddr, list[L4Service]] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)

    @classmethod
    def build(cls, inv: Inventory) -> ModelIndex:
        index = cls()
        for fe in inv.l7.frontends:
            for ip in dict.fromkeys(frontend_vips(fe)):
                index.frontends.setdefault(ip, []).append(fe)
        for svc in inv.l4_services:
            index.l4.setdefault(svc.vip, []).append(svc)
        for p in inv.l7.pools:
            index.pools.setdefault(p.name, p)
        return index


_INDEXES: dict[int, ModelIndex] = {}


def model_index(inv: Inventory) -> ModelIndex:
    """The index of ``inv``, built on first use and dropped with the model."""
    index = _INDEXES.get(id(inv))
    if index is None:
        index = _INDEXES[id(inv)] = ModelIndex.build(inv)
        weakref.finalize(inv, _INDEXES.pop, id(inv), None)
    return index


def services_on_vip(inv: Inventory, vip: AnycastVip) -> tuple[list[Frontend], list[L4Service]]:
    index, ip = model_index(inv), vip.prefix.ip
    return list(index.frontends.get(ip, ())), list(index.l4.get(ip, ()))


def pool(inv: Inventory, name: str) -> Pool:
    found = model_index(inv).pools.get(name)
    if found is None:  # validation guarantees every referenced pool exists
        raise LookupError(f"no pool {name!r}")
    return found


def node(inv: Inventory, name: str) -> Node:
    for n in inv.nodes:
        if n.name == name:
            return n
    raise LookupError(f"no node {name!r}; nodes: {', '.join(n.name for n in inv.nodes)}")


# What a drain or a return may take beyond the site's own times: the node helper's
# round trips (an Ansible run each, seconds on a busy controller) and, after a
# deploy's converge, restarted daemons coming up and the health agent starting over.
WAIT_SLACK = 60.0


def drain_wait(inv: Inventory) -> float:
    """How long a drain may take (``maintenance enter --wait`` and the deploy's drain):
    GRACEFUL_SHUTDOWN for ``maintenance_drain``, the withdrawal, then the in-flight
    sessions for up to the L7 ``drain_timeout``, plus ``WAIT_SLACK``."""
    drain = float(inv.health_agent.maintenance_drain)
    return drain + float(inv.l7.policy.drain_timeout) + WAIT_SLACK


def return_wait(inv: Inventory) -> float:
    """How long a return to service may take (``maintenance exit --wait`` and the
    deploy's undrain): ``rise`` good rounds of the agent, plus ``WAIT_SLACK``."""
    agent = inv.health_agent
    return agent.rise * float(agent.interval) + WAIT_SLACK
