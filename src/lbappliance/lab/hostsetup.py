"""The host setup every lab applies the same way, from the lab topology.

Each function says what a lab host needs as data (sysctl settings, ``ip``
arguments); the namespace lab runs them with ``ip -n``, the container lab writes
them into the host's boot script, a VM lab into its own.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from lbappliance.lab.topology import LabHost

# TCP MSS the DSR backends advertise: a 1500-byte segment less the TCP and IP
# headers and the 20 bytes of the LB's outer IPv4 header, so that a full-size
# client segment still fits the backend segment's MTU once encapsulated.
DSR_ADVMSS = 1500 - 20 - 20 - 20


def sysctls(host: LabHost, deployed: bool, l4_hash: bool = True) -> list[str]:
    """Kernel settings of a lab host; none for LB nodes a deploy provisions (``deployed``:
    role lb_base sets theirs, as on a production node).

    ``l4_hash``: the router spreads new flows over its ECMP next hops by an L4 hash, as
    edge routers do. The namespace lab turns it off: there, with it on, the router's
    BFD sessions to both LB nodes dropped together within a minute in 3 of 7 trials at
    load 12 on 2 cores (0 of 9 without it); why is not understood yet.
    """
    if host.kind == "lb" and deployed:
        return []
    settings = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
    # A link taken down keeps its IPv6 addresses, as IPv4 ones stay.
    settings.append("net.ipv6.conf.all.keep_addr_on_down=1")
    if host.kind == "router":
        settings += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        if l4_hash:
            settings += [
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
            ]
    if host.loopback_vips:  # DSR: own the VIPs on lo without answering ARP for them
        settings += ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]
    return settings


def dsr(host: LabHost) -> bool:
    """A backend that owns L4 VIPs on lo: the LB forwards to it by IPIP (DSR)."""
    return host.kind == "backend" and bool(host.loopback_vips)


def default_routes(host: LabHost) -> list[list[str]]:
    """``ip`` arguments of the host's default routes; DSR backends leave room in the
    MSS for the LB's outer IPv4 header."""
    return [
        ([] if gw.version == 4 else ["-6"])
        + ["route", "replace", "default", "via", str(gw)]
        + (["advmss", str(DSR_ADVMSS)] if dsr(host) and gw.version == 4 else [])
        for gw in host.gateways
    ]


def loopback_vips(host: LabHost) -> list[list[str]]:
    """``ip`` arguments that put the host's loopback VIPs on lo."""
    return [
        ["address", "replace", f"{vip}/{vip.max_prefixlen}", "dev", "lo"]
        for vip in host.loopback_vips
    ]


def decapsulation(host: LabHost, bpf_object: str | Path) -> list[list[str]]:
    """``ip`` arguments that make a DSR backend strip the LB's IPIP header in generic XDP
    (this kernel has no ipip driver): bpf/xdp_decap.c, compiled to ``bpf_object``."""
    if not dsr(host):
        return []
    dev = host.ifname_on("backend")
    return [
        ["link", "set", "dev", dev, "xdpgeneric", "off"],
        ["link", "set", "dev", dev, "xdpgeneric", "obj", str(bpf_object), "sec", "xdp"],
    ]


def tcp_open(address: str, port: int) -> bool:
    """Something accepts TCP on ``address:port`` (from the calling thread's namespace)."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


def vrrp_holders(
    vip: str, lbs: Iterable[LabHost], ip_addresses: Callable[[str], str | None]
) -> list[str]:
    """LB nodes that hold ``vip`` now (exactly one when VRRP is healthy).

    ``ip_addresses(node)`` is the node's ``ip -j address show``, ``None`` if it is down.
    """
    holders = []
    for lb in lbs:
        out = ip_addresses(lb.name)
        local = {a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])}
        if vip in local:
            holders.append(lb.name)
    return holders


def new_ssh_key(key: Path, comment: str) -> None:
    """A fresh passphrase-less ed25519 key pair at ``key`` (+ ``.pub``) for the lab's SSH."""
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (key, key.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True
    )


def global_addresses(ip_json: str) -> list[str]:
    """``ifname address/prefix`` of each global address in ``ip -j address show`` output."""
    return sorted(
        f"{link['ifname']} {a['local']}/{a['prefixlen']}"
        for link in json.loads(ip_json or "[]")
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    )
