"""The routers' side of the peering, rendered from the same site model.

One file per BGP peer: ``routers/<peer>/bird.conf`` (BIRD 2, what the labs run).
"""

from __future__ import annotations

from typing import Any

from ..inventory.derived import local_address
from ..inventory.schema import BgpPeer, Inventory
from ..secrets import Secrets


def bird_context(inv: Inventory, index: int, peer: BgpPeer, secrets: Secrets) -> dict[str, Any]:
    version = peer.address.version
    password = (
        secrets.resolve(peer.password, f"bgp.peers[{index}].password") if peer.password else None
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
    }
