"""The namespace wiring the namespace lab and the VM lab share.

A "switch" namespace holds one bridge per segment; a host that is a namespace
gets one veth per attachment, its far end on the segment's bridge, then its
addresses, kernel settings, default routes and loopback VIPs (``hostsetup``).
The VM lab adds taps for its VMs to the same bridges.

``ip`` is the lab's own runner of ``ip`` (each lab raises its own error).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable

from lbappliance.lab import hostsetup
from lbappliance.lab.topology import LabHost, Segment

Ip = Callable[..., object]


def bridge(segment: str) -> str:
    return f"br-{segment}"


def veth_peer(index: int, ifname: str) -> str:
    """The switch end of host ``index``'s interface (15 characters at most, as Linux wants)."""
    return f"h{index}-{ifname}"[:15]


def sysctl(ns: str, *settings: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings],
        check=True,
        capture_output=True,
    )


def add_bridges(ip: Ip, switch: str, segments: Iterable[Segment]) -> None:
    for seg in segments:
        ip("-n", switch, "link", "add", bridge(seg.name), "type", "bridge")
        ip("-n", switch, "link", "set", bridge(seg.name), "up")


def wire_host(ip: Ip, host: LabHost, index: int, ns: str, switch: str, l4_hash: bool) -> None:
    """Connect namespace host ``index`` to its segments and set it up (``hostsetup``)."""
    for att in host.attachments:
        peer = veth_peer(index, att.ifname)
        ip("link", "add", att.ifname, "netns", ns, "type", "veth",
           "peer", "name", peer, "netns", switch)  # fmt: skip
        ip("-n", switch, "link", "set", peer, "master", bridge(att.segment), "up")
        for addr in att.addresses:  # IPv6: usable at once, no duplicate detection
            nodad = ["nodad"] if addr.version == 6 else []
            ip("-n", ns, "addr", "add", str(addr), "dev", att.ifname, *nodad)
        ip("-n", ns, "link", "set", att.ifname, "up")
    sysctl(ns, *hostsetup.sysctls(host, deployed=False, l4_hash=l4_hash))
    for args in [*hostsetup.default_routes(host), *hostsetup.loopback_vips(host)]:
        ip("-n", ns, *args)
