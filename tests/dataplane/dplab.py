"""A network-namespace lab for the forwarder (used by the e2e test and bench).

    client 10.77.0.1 ─┐
    lb     10.77.0.2 ─┼─ br0 (namespace "sw")
    b1..b3 10.77.0.11-13 ─┘   VIP 198.51.100.20 on lo, XDP decap on eth0

The client routes the VIP's /24 via the LB; the LB's XDP program encapsulates
to a backend and sends it back out of the same port (XDP_TX); the backend
strips the outer header (bpf/xdp_decap.c: this kernel has no ipip driver) and
answers the client directly from the VIP. All namespaces are named
``lbdp-<tag>-<role>``; ``close`` removes them and stops every process started
here (by PID).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VIP = "198.51.100.20"
CLIENT = "10.77.0.1"
LB = "10.77.0.2"
BACKENDS = {"b1": "10.77.0.11", "b2": "10.77.0.12", "b3": "10.77.0.13"}
UNDERLAY_MTU = 1600  # room for the 20-byte outer header of a 1500-byte packet

_SERVER = textwrap.dedent(
    """
    import socket, sys, threading
    name, vip = sys.argv[1], sys.argv[2]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((vip, 53))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((vip, 80))
    t.listen(16)
    def tcp():
        while True:
            c, _ = t.accept()
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            c.sendall(name.encode() + b" " + data)
            c.close()
    threading.Thread(target=tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(name.encode(), peer)
    """
)

_UDP_PROBE = textwrap.dedent(
    """
    import json, socket, sys
    src, vip, ports, tries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    out = {}
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, port))
        s.settimeout(0.3)
        answers = []
        for _ in range(tries):
            for attempt in range(3):
                s.sendto(b"q", (vip, 53))
                try:
                    answers.append(s.recv(100).decode())
                    break
                except socket.timeout:
                    continue
            else:
                answers.append(None)
        s.close()
        out[port] = answers
    print(json.dumps(out))
    """
)

_TCP_PROBE = textwrap.dedent(
    """
    import socket, sys
    c = socket.create_connection((sys.argv[1], 80), timeout=3)
    c.sendall(b"hello " * 400)  # > 1 segment of payload
    c.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    print(data.split(b" ")[0].decode(), len(data))
    """
)


def sh(*cmd: str, check: bool = True) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


class Lab:
    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.ns = {r: f"lbdp-{self.tag}-{r}" for r in ("sw", "cl", "lb", *BACKENDS)}
        self.procs: list[subprocess.Popen] = []
        self.macs: dict[str, str] = {}

    # -- building ----------------------------------------------------------------

    def ip(self, role: str, *args: str) -> str:
        return sh("ip", "-n", self.ns[role], *args)

    def exec(self, role: str, *cmd: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[role], *cmd, check=check)

    def sysctl(self, role: str, **kv: str | int) -> None:
        for k, v in kv.items():
            self.exec(role, "sysctl", "-qw", f"{k.replace('__', '.')}={v}")

    def up(self, decap_object: Path) -> None:
        for name in self.ns.values():
            sh("ip", "netns", "add", name)
        self.ip("sw", "link", "add", "br0", "type", "bridge")
        self.ip("sw", "link", "set", "br0", "up")
        hosts = {"cl": CLIENT, "lb": LB, **BACKENDS}
        for i, (role, addr) in enumerate(hosts.items()):
            mtu = "1500" if role == "cl" else str(UNDERLAY_MTU)
            port = f"p-{role}"
            mac = f"02:77:00:00:00:{i + 1:02x}"
            sh("ip", "link", "add", "eth0", "netns", self.ns[role], "address", mac,
               "mtu", mtu, "type", "veth", "peer", "name", port, "netns", self.ns["sw"],
               "mtu", mtu)  # fmt: skip
            self.ip("sw", "link", "set", port, "master", "br0", "up")
            self.ip(role, "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ip(role, "link", "set", "eth0", "up")
            self.ip(role, "link", "set", "lo", "up")
            self.macs[role] = mac
        self.ip("cl", "route", "add", "198.51.100.0/24", "via", LB)
        # veth leaves checksums to "hardware" (CHECKSUM_PARTIAL); native XDP
        # turns the skb into a bare frame and the backend would then find the
        # checksum never filled in. A real client's NIC fills it: so do we.
        self.exec("cl", "ethtool", "-K", "eth0", "tx", "off")
        self.sysctl("lb", net__ipv4__conf__all__send_redirects=0,
                    net__ipv4__conf__eth0__send_redirects=0)  # fmt: skip
        for role in BACKENDS:
            self.ip(role, "addr", "add", f"{VIP}/32", "dev", "lo")
            self.sysctl(role, net__ipv4__conf__all__arp_ignore=1,
                        net__ipv4__conf__all__arp_announce=2)  # fmt: skip
            self.ip(role, "link", "set", "dev", "eth0", "xdpgeneric", "obj", str(decap_object),
                    "sec", "xdp")  # fmt: skip

    def start_servers(self) -> None:
        for role in BACKENDS:
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[role], sys.executable, "-c", _SERVER, role, VIP],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()
        for name in self.ns.values():
            sh("ip", "netns", "del", name, check=False)

    # -- the LB's control plane, run inside its namespace ------------------------

    def dataplane(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns["lb"], sys.executable, "-m", "lbappliance.dataplane",
             *args],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if check and p.returncode:
            raise RuntimeError(f"dataplane {' '.join(args)}: {p.stderr or p.stdout}")
        return p

    def write_spec(
        self, path: Path, mode: str = "generic", backends: list[str] | None = None
    ) -> Path:
        spec = {
            "node": "lb1",
            "interface": "eth0",
            "xdp_mode": mode,
            "table_size": 65537,
            "tunnel_source_v4": LB,
            "tunnel_source_v6": None,
            "services": [
                {
                    "name": name,
                    "vip": VIP,
                    "port": port,
                    "protocol": proto,
                    "forwarding": "ipip",
                    "backends": [
                        {"address": BACKENDS[b], "weight": 1, "mac": None}
                        for b in (backends or list(BACKENDS))
                    ],
                }
                for name, port, proto in (("dns", 53, "udp"), ("web", 80, "tcp"))
            ],
        }
        path.write_text(json.dumps(spec))
        return path

    # -- traffic -------------------------------------------------------------------

    def udp_probe(self, ports: list[int], tries: int = 1) -> dict[int, list[str | None]]:
        out = self.exec("cl", sys.executable, "-c", _UDP_PROBE, CLIENT, VIP, json.dumps(ports),
                        str(tries))  # fmt: skip
        return {int(k): v for k, v in json.loads(out).items()}

    def tcp_probe(self) -> tuple[str, int]:
        name, n = self.exec("cl", sys.executable, "-c", _TCP_PROBE, VIP).split()
        return name, int(n)

    def rx_packets(self, role: str, dev: str = "eth0") -> int:
        return int(self.exec(role, "cat", f"/sys/class/net/{dev}/statistics/rx_packets"))


def wait_for(predicate, timeout: float = 5.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
