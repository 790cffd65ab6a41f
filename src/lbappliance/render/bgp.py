"""ExaBGP: one session per router, routes driven only by the health agent."""

from __future__ import annotations

from typing import Any

from lbappliance.inventory.derived import local_address
from lbappliance.inventory.schema import Inventory, Node
from lbappliance.paths import RuntimePaths
from lbappliance.secrets import Secrets

TARGET = "etc/exabgp/exabgp.conf"


def agent_command(paths: RuntimePaths, python: str) -> str:
    return f"{python} -m lbappliance.health --config {paths.agent_config}"


def context(
    inv: Inventory, node: Node, paths: RuntimePaths, secrets: Secrets, python: str
) -> dict[str, Any]:
    neighbors = []
    for i, peer in enumerate(inv.bgp.peers):
        password = (
            secrets.resolve(peer.password, ("bgp", "peers", i, "password"))
            if peer.password
            else None
        )
        neighbors.append(
            {
                "name": peer.name,
                "address": str(peer.address),
                "asn": peer.asn,
                "local_address": str(local_address(node, peer)),
                "password": password,
                "family": "ipv4" if peer.address.version == 4 else "ipv6",
            }
        )
    return {
        "neighbors": neighbors,
        "hold_time": inv.bgp.hold_time,
        "agent_command": agent_command(paths, python),
    }
