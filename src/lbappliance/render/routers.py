"""The routers' side of the peering, and the LB nodes' BFD responder.

Per BGP peer: ``routers/<peer>/bird.conf`` (BIRD 2, what the labs run) and
``routers/<peer>/frr.conf`` (FRR), both from one context. Per LB node:
``etc/bird/bird.conf``, BIRD running only static BFD sessions toward the peers
(ExaBGP has no BFD). BIRD was chosen over FRR's bfdd for the nodes because it
is one small daemon with one config file and is already the lab's router.
"""

from __future__ import annotations

from typing import Any

from lbappliance.inventory.derived import local_address
from lbappliance.inventory.schema import BgpPeer, Inventory, Node
from lbappliance.paths import RuntimePaths
from lbappliance.secrets import Secrets

BFD_TARGET = "etc/bird/bird.conf"


def _bfd(inv: Inventory) -> dict[str, int] | None:
    bfd = inv.bgp.bfd
    if not bfd.enabled:
        return None
    return {
        "interval_ms": bfd.interval.ms,
        "multiplier": bfd.multiplier,
        "detect_ms": bfd.interval.ms * bfd.multiplier,
    }


def node_bfd_context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    bfd = _bfd(inv) or {"interval_ms": 0, "multiplier": 0, "detect_ms": 0}
    neighbors = [
        {"name": p.name, "address": str(p.address), "local": str(local_address(node, p))}
        for p in inv.bgp.peers
    ]
    return {**bfd, "neighbors": neighbors if inv.bgp.bfd.enabled else []}


def peer_context(inv: Inventory, index: int, peer: BgpPeer, secrets: Secrets) -> dict[str, Any]:
    version = peer.address.version
    password = (
        secrets.resolve(peer.password, ("bgp", "peers", index, "password"))
        if peer.password
        else None
    )
    neighbors = [
        {
            "name": node.name.replace("-", "_"),
            "description": f"{inv.site.name} {node.name}",
            "address": str(local_address(node, peer)),
            "password": password,
        }
        for node in inv.nodes
    ]
    accept = [str(v.prefix.network) for v in inv.anycast if v.prefix.version == version]
    return {
        "peer": peer,
        "router_id": str(peer.address) if version == 4 else "0.0.0.1",
        "family": f"ipv{version}",
        "accept_prefixes": accept or ["0.0.0.0/32" if version == 4 else "::/128"],
        "neighbors": neighbors,
        "hold_time": inv.bgp.hold_time,
        "bfd": _bfd(inv),
    }
