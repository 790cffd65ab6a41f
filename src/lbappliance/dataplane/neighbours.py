"""Where each backend's packets leave: egress interface and MACs, from the kernel.

The XDP program writes the Ethernet header itself and sends the packet out of
one interface: back out of the one it came in on (XDP_TX) or another one
(bpf_redirect) — on a real LB node the uplink faces the routers and another
interface faces the servers. The control plane asks the kernel (pyroute2,
netlink) for the route to each backend: its output interface is the egress
interface, that interface's own MAC the Ethernet source, and the next hop —
the backend itself if on-link, else the route's gateway — gives the Ethernet
destination, read from the neighbour table (one UDP datagram to the discard
port provokes an ARP/ND resolution when the entry is missing). A static MAC in
the spec (always there for L2 DSR) replaces the neighbour lookup, not the route
lookup. A backend without a route, routed through an interface without an
Ethernet address (a tunnel, lo), or whose next hop does not answer, gets no
next hop and is left out of the table (reported as a warning).

Next hops are read at apply time only: if a route or a MAC changes, run
``apply`` again (it rewrites just the affected backend entries).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT
_ARPHRD_ETHER = 1


@dataclass(frozen=True)
class NextHop:
    """How the program reaches one backend."""

    ifindex: int  # egress interface
    ifname: str
    src_mac: str  # the egress interface's own MAC
    mac: str  # next hop (IPIP) or backend (L2 DSR) MAC


Wanted = tuple[str, str | None]  # (backend address, static MAC from the spec or None)


def resolve(
    wanted: Iterable[Wanted], timeout: float = 3.0
) -> tuple[dict[Wanted, NextHop | None], list[str]]:
    """The next hop of each (address, static MAC), and any warnings."""
    out: dict[Wanted, NextHop | None] = {}
    warnings: list[str] = []
    with IPRoute() as ipr:
        links: dict[int, tuple[str, str] | None] = {}
        routed: dict[Wanted, tuple[int, str, str, str]] = {}  # ifindex, name, MAC, hop
        for addr, mac in wanted:
            try:
                routes = list(ipr.route("get", dst=addr))
            except NetlinkError as e:
                warnings.append(f"{addr}: no route ({e})")
                out[(addr, mac)] = None
                continue
            oif = routes[0].get("RTA_OIF") if routes else None
            if oif and oif not in links:
                links[oif] = _link(ipr, oif)
            link = links.get(oif) if oif else None
            if link is None:
                warnings.append(f"{addr}: not routed via an Ethernet interface")
                out[(addr, mac)] = None
                continue
            routed[(addr, mac)] = (oif, *link, routes[0].get("RTA_GATEWAY") or addr)
        unknown = {(oif, hop) for (_, mac), (oif, _, _, hop) in routed.items() if mac is None}
        known = _neighbours(ipr, unknown, timeout)
        for (addr, mac), (oif, ifname, src_mac, hop) in routed.items():
            dst_mac = mac or known.get((oif, hop))
            if dst_mac is None:
                warnings.append(f"{addr}: next hop {hop} did not resolve on {ifname}")
                out[(addr, mac)] = None
                continue
            out[(addr, mac)] = NextHop(oif, ifname, src_mac, dst_mac)
    return out, warnings


def _link(ipr: IPRoute, ifindex: int) -> tuple[str, str] | None:
    """(name, MAC) of an Ethernet interface; None for anything else."""
    link = ipr.get_links(ifindex)[0]
    mac = link.get("IFLA_ADDRESS")
    if link["ifi_type"] != _ARPHRD_ETHER or not mac:
        return None
    return link.get("IFLA_IFNAME"), mac


def _neighbours(
    ipr: IPRoute, hops: set[tuple[int, str]], timeout: float
) -> dict[tuple[int, str], str]:
    """MAC of each (ifindex, address), resolving missing entries for up to ``timeout`` s."""
    pending = set(hops)
    known: dict[tuple[int, str], str] = {}
    deadline = time.monotonic() + timeout
    poked = False
    while pending:
        for ifindex, hop in list(pending):
            mac = _lookup(ipr, ifindex, hop)
            if mac:
                known[(ifindex, hop)] = mac
                pending.discard((ifindex, hop))
        if not pending or time.monotonic() > deadline:
            break
        if not poked:
            for ifindex, hop in pending:
                _poke(hop, ifindex)
            poked = True
        time.sleep(0.02)
    return known


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
