"""Reading the namespace lab for the health tests and benchmarks.

The lab itself is ``lbappliance.lab.netns`` (the lead's); this only looks at it:
the agent's PID under ExaBGP, BIRD's per-session route counters, the node
addresses the router sees as next hops, HAProxy's admin socket, a client's
request, and the CLI's lab hooks.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from lbappliance.haproxy import AdminSocket
from lbappliance.lab.netns import NetnsLab

WEB = "198.51.100.10/32"
L4 = "198.51.100.20/32"
WEB6 = "2001:db8:100::10/128"  # the `web` frontend's IPv6 VIP, anycast over the IPv6 peer


def uplink(lab: NetnsLab, node: str) -> str:
    return str(lab.topology.host(node).address_on("uplink"))


def get(lab: NetnsLab, vip: str = "198.51.100.10", port: int = 80) -> tuple[int, str]:
    """One GET / from the client (``vip`` IPv4 or IPv6): status and body."""
    with lab.inside("client"):
        conn = http.client.HTTPConnection(vip, port, timeout=3)
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            return r.status, r.read().decode().strip()
        finally:
            conn.close()


def frontend_sessions(lab: NetnsLab, node: str, frontend: str) -> int:
    """Sessions ``node``'s HAProxy has taken on ``frontend`` so far (``stot``)."""
    sock = str(lab.node_root(node) / "run/haproxy/admin.sock")
    text = AdminSocket(sock).command("show stat").lstrip("# ")
    for row in csv.DictReader(io.StringIO(text)):
        if row["pxname"] == frontend and row["svname"] == "FRONTEND":
            return int(row["stot"])
    raise LookupError(f"no frontend {frontend!r} on {node}")


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def agent_pid(lab: NetnsLab, node: str) -> int | None:
    """The health agent ExaBGP runs on ``node`` (None while it is being respawned)."""
    exabgp = lab.daemons[(node, "exabgp")].proc.pid
    for pid in children(exabgp):
        try:
            if b"lbappliance.health" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


def bgp_counters(lab: NetnsLab, node: str) -> tuple[int, int]:
    """(import updates, import withdraws) BIRD received from ``node``'s session."""
    text = lab.birdc("show", "protocols", "all", node)
    upd = re.search(r"Import updates:\s+(\d+)", text)
    wd = re.search(r"Import withdraws:\s+(\d+)", text)
    return (int(upd[1]) if upd else 0, int(wd[1]) if wd else 0)


def lab_hooks(lab: NetnsLab) -> list[str]:
    """CLI options that make status/maintenance reach the lab's namespaces."""
    return [
        "--node-exec",
        f"ip netns exec {lab.name}-{{node}}",
        "--node-root",
        f"{lab.workdir}/render/hosts/{{node}}",
    ]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("lbappliance") or sys.executable
    cmd = [exe, *args] if exe != sys.executable else [exe, "-m", "lbappliance.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def agent_log(lab: NetnsLab, node: str) -> list[dict[str, Any]]:
    """The agent's JSON log lines (they go to ExaBGP's log)."""
    out = []
    for line in lab.daemons[(node, "exabgp")].log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "lbappliance-health" in line:
            out.append(json.loads(line))
    return out


def nft(lab: NetnsLab, node: str, ruleset: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", lab.ns(node), "nft", "-f", "-"],
        input=ruleset,
        text=True,
        check=True,
        capture_output=True,
    )


def cut_backends(lab: NetnsLab, node: str, cut: bool = True) -> None:
    """Every backend dies as far as ``node`` can tell: its packets to them are dropped."""
    nets = sorted({str(s.address) for p in lab.site.model.l7.pools for s in p.servers})
    if cut:
        nft(
            lab,
            node,
            "table inet h4cut {\n  chain out {\n    type filter hook output priority 0;\n"
            f"    ip daddr {{ {', '.join(nets)} }} drop\n  }}\n}}\n",
        )
    else:
        nft(lab, node, "delete table inet h4cut\n")


def drop_probes(lab: NetnsLab, node: str, vip: str, port: int, rule: str) -> None:
    """Lose a share of the node's own probes: drop SYNs it sends to its VIP.

    Only locally generated packets to ``vip:port`` match (the OUTPUT hook), i.e.
    the agent's probe connections; client traffic arrives, it is not sent.
    """
    nft(
        lab,
        node,
        "table inet h4loss {\n"
        "  chain out {\n"
        "    type filter hook output priority 0;\n"
        f"    ip daddr {vip} tcp dport {port} tcp flags & (syn | ack) == syn {rule} counter drop\n"
        "  }\n"
        "}\n",
    )


def dropped(lab: NetnsLab, node: str) -> int:
    out = lab.run(node, ["nft", "-j", "list", "table", "inet", "h4loss"]).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    return 0
