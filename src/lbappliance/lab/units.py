"""What the container lab writes into its hosts: systemd units and the boot script
that gives each host its lab addresses and routes (``lab-net``)."""

from __future__ import annotations

from lbappliance.inventory import Site
from lbappliance.lab import hostsetup
from lbappliance.lab.topology import LabHost, Topology

BACKEND_CONTROL = "/etc/lab-backend.json"
DECAP_OBJECT = "/usr/local/lib/lab/xdp_decap.o"
# Host settings netavark may change: state-file key -> sysctl, put back by ``down``.

# What an LB node needs from the lab itself; its addresses and routes (but the management
# address podman's IPAM sets) come from the deploy, as on a production node.
LB_MOUNTS = [
    "# Per-namespace kernel settings (net.*) must be writable for the node's sysctls",
    "# (and for systemd-networkd's per-interface settings).",
    "mountpoint -q /proc/sys/net || mount --bind /proc/sys/net /proc/sys/net",
    "mount -o remount,bind,rw /proc/sys/net",
    "# The XDP data plane pins its maps in bpffs.",
    "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
]

LAB_NET_UNIT = """\
[Unit]
Description=lbappliance lab: this host's addresses and routes
DefaultDependencies=no
# Before systemd-sysctl: on LB nodes it makes /proc/sys/net writable first, so the
# deployed sysctl.d settings apply at boot as on a real node.
Before=systemd-sysctl.service network-pre.target network.target network-online.target ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-net

[Install]
WantedBy=multi-user.target network-online.target
"""

BACKEND_UNIT = """\
[Unit]
Description=lbappliance lab backend {name}
After=lab-net.service

[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/lab-backend.py --name {name} {ports} --control {control}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def net_script(host: LabHost, site: Site, topology: Topology) -> str:
    """The host's addresses and routes, applied at every boot by lab-net.service."""
    lines = ["#!/bin/sh", "# Written by lbappliance lab: this host's lab addresses.", "set -e"]
    if host.kind == "lb":  # the deploy's networkd files (role lb_network) do the rest
        return "\n".join([*lines, *LB_MOUNTS]) + "\n"
    for att in host.attachments:
        if att.segment != "mgmt":  # podman's IPAM sets the management address
            for a in att.addresses:  # IPv6: usable at once, no duplicate detection
                nodad = " nodad" if a.version == 6 else ""
                lines.append(f"ip address replace {a} dev {att.ifname}{nodad}")
        lines.append(f"ip link set {att.ifname} up")
    setup = [
        *hostsetup.default_routes(host),
        *hostsetup.decapsulation(host, DECAP_OBJECT),
        *hostsetup.loopback_vips(host),
    ]
    lines += [" ".join(["ip", *args]) for args in setup]
    if host.kind == "router":
        lines += flow_pinning(site, topology)
    return "\n".join(lines) + "\n"


def flow_pinning(site: Site, topology: Topology) -> list[str]:
    """Keep each forwarded flow on the LB it started on (see the module docstring).

    LB node ``n`` (from 1) is conntrack mark ``n`` and routing table ``100 + n``,
    in each address family the site announces anycast VIPs in.
    """
    lbs = list(enumerate(topology.lbs, start=1))
    post, pin, routing = [], [], []
    for version, family in ((4, "ip"), (6, "ip6")):
        prefixes = [str(v.prefix) for v in site.model.anycast if v.prefix.version == version]
        if not prefixes:
            continue
        post.append(f"    ct mark 0 {family} daddr {{ {', '.join(prefixes)} }} jump pin")
        for mark, lb in lbs:
            addr, table = lb.address_on("uplink", version), 100 + mark
            pin.append(f"    rt {family} nexthop {addr} ct mark set {mark}")
            routing += [
                f"ip -{version} rule del fwmark {mark} lookup {table} 2>/dev/null || true",
                f"ip -{version} rule add fwmark {mark} lookup {table}",
                *(f"ip -{version} route replace {p} via {addr} table {table}" for p in prefixes),
            ]
    if not post:
        return []
    rules = [
        "table inet lab_pin",
        "delete table inet lab_pin",
        "table inet lab_pin {",
        "  chain pre {",
        "    type filter hook prerouting priority mangle; policy accept;",
        "    ct mark != 0 meta mark set ct mark",
        "  }",
        "  chain post {",
        "    type filter hook postrouting priority mangle; policy accept;",
        *post,
        "  }",
        "  chain pin {",
        *pin,
        "  }",
        "}",
    ]
    return ["nft -f - <<'EOF'", *rules, "EOF", *routing]
