"""Next-hop MACs of IPIP backends, from the kernel's routing and neighbour tables.

The XDP program sends encapsulated packets straight back out of the interface
it received them on (XDP_TX), so it has to write the Ethernet destination
itself. The control plane asks the kernel (pyroute2, netlink) which next hop
the outer packet would take — the backend itself if on-link, else the route's
gateway — and that next hop's MAC, provoking an ARP/ND resolution with one UDP
datagram to the discard port when the entry is missing. A backend whose route
leaves by another interface, or whose next hop does not answer, gets no MAC and
is left out of the table (reported as a warning).

MACs are read at apply time only: if a next hop's MAC changes, run ``apply``
again (it rewrites just the affected backend entries).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT


def resolve(
    addresses: Iterable[str], interface: str, timeout: float = 3.0
) -> tuple[dict[str, str | None], list[str]]:
    """MAC of each address's next hop on ``interface``, and any warnings."""
    macs: dict[str, str | None] = {}
    warnings: list[str] = []
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=interface)
        if not found:
            raise LookupError(f"no interface {interface!r}")
        ifindex = found[0]
        hops: dict[str, str] = {}
        for addr in addresses:
            try:
                routes = list(ipr.route("get", dst=addr))
            except NetlinkError as e:
                warnings.append(f"{addr}: no route ({e})")
                macs[addr] = None
                continue
            if not routes or routes[0].get("RTA_OIF") != ifindex:
                warnings.append(f"{addr}: not routed via {interface}, XDP_TX cannot reach it")
                macs[addr] = None
                continue
            hops[addr] = routes[0].get("RTA_GATEWAY") or addr
        pending = set(hops.values())
        deadline = time.monotonic() + timeout
        poked = False
        known: dict[str, str] = {}
        while pending:
            for hop in list(pending):
                mac = _lookup(ipr, ifindex, hop)
                if mac:
                    known[hop] = mac
                    pending.discard(hop)
            if not pending or time.monotonic() > deadline:
                break
            if not poked:
                for hop in pending:
                    _poke(hop, ifindex)
                poked = True
            time.sleep(0.02)
        for addr, hop in hops.items():
            macs[addr] = known.get(hop)
            if macs[addr] is None:
                warnings.append(f"{addr}: next hop {hop} did not resolve on {interface}")
    return macs, warnings


def _lookup(ipr: IPRoute, ifindex: int, hop: str) -> str | None:
    for n in ipr.neigh("dump", ifindex=ifindex, dst=hop):
        if n["state"] & _NUD_USABLE and n.get("NDA_LLADDR"):
            return n.get("NDA_LLADDR")
    return None


def _poke(hop: str, ifindex: int) -> None:
    """Make the kernel resolve ``hop``: any datagram to it needs its MAC."""
    if ":" in hop:  # IPv6 gateways are often link-local: give the scope
        family, dest = socket.AF_INET6, (hop, 9, 0, ifindex)
    else:
        family, dest = socket.AF_INET, (hop, 9)
    with socket.socket(family, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.sendto(b"", dest)
