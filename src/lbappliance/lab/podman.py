"""The container lab: the lab topology as rootful podman containers running systemd.

Built from ``topology.py`` (the same hosts, segments and addresses as the
namespace lab): one podman network per segment, one systemd container per host
(``lbalab-lb1``, ``lbalab-router``, ...). The LB nodes are bare: ``lbappliance
deploy --site lab`` provisions them over SSH like production nodes (the lab's
SSH key is generated on every ``up``; ``lbappliance lab env`` prints what the
deploy needs). The router runs BIRD with the rendered ``routers/<peer>/bird.conf``,
the backends run the lab HTTP backend, the client is a plain host behind the router.

Host fixes (README, "Machine facts"): podman reads the lab's own ``containers.conf``
(runc, ulimits) through ``CONTAINERS_CONF``; nothing in ``/etc/containers``
changes. Every network is ``--internal`` (no NAT, no route off the machine); the
management segment carries the host's address for SSH, the others have no host
address (IPAM ``none``) and each container sets its own addresses at boot
(``lab-net.service``), so a restarted container comes back as it was. LB nodes are
the exception: like production nodes, they get every address and route but the
management one from the deploy (systemd-networkd files, role ``lb_network``); their
``lab-net`` only makes ``/proc/sys/net`` writable and mounts bpffs. Segments
with IPv6 subnets are created ``--ipv6``. The host must never route lab IPv6: its
own IPv6 default route leaves the machine. It has no IPv6 address on IPAM
``none`` segments (podman refuses subnets there), and since netavark turns on
the host's IPv6 forwarding for an IPv6 network with host IPAM, the lab turns it
back off whenever containers start. ``down`` removes containers and networks
(labelled, so leftovers of a crashed run go too) and puts back
``net.ipv4.ip_forward`` and ``net.ipv6.conf.all.forwarding`` if netavark
changed them.

The router pins every forwarded flow (IPv4 and IPv6) to the next hop it started on
(conntrack mark + policy routing): established connections stay on a draining node after
its route is withdrawn, as on edge routers with flow-sticky ECMP. New flows
follow BGP, spread by an L4 hash (``fib_multipath_hash_policy=1``).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..dataplane.loader import bpf_source_dir, compile_object
from ..inventory import Site, load_site
from ..paths import project_dir
from ..render import render_site
from ..secrets import Secrets
from . import poll
from .image import ensure_image
from .netns import DSR_ADVMSS
from .router import nexthops, route_show, router_bird_conf
from .setns import entered
from .topology import LabHost, Topology, lab_topology

PREFIX = "lbalab"
LABEL = "lbappliance.lab"
CAPS = "SYS_ADMIN,NET_ADMIN,NET_RAW,NET_BROADCAST"  # BIRD keeps NET_BROADCAST
BACKEND_CONTROL = "/etc/lab-backend.json"
DECAP_OBJECT = "/usr/local/lib/lab/xdp_decap.o"
# Host settings netavark may change: state-file key -> sysctl, put back by ``down``.
HOST_SYSCTLS = {
    "ip_forward": "net.ipv4.ip_forward",
    "ipv6_forwarding": "net.ipv6.conf.all.forwarding",
}
CONTAINERS_CONF = """\
# Written by lbappliance for its container lab (rootful podman on this host kind).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"

[network]
# Debian's podman 4.3 defaults to CNI, whose --internal networks give the bridge no
# host address (the lab reaches its nodes over SSH through that address). Pinned here,
# not in /etc, so a machine whose podman first ran with CNI works too.
network_backend = "netavark"
"""
NETAVARK = Path("/usr/lib/podman/netavark")
INSTALL_HINT = "run ./scripts/install-deps.sh as root"


def state_dir() -> Path:
    """Where the lab keeps its containers.conf, image cache, SSH key and state."""
    env = os.environ.get("LBAPPLIANCE_LAB_DIR")
    return Path(env) if env else project_dir() / ".lab" / "podman"


class PodmanError(RuntimeError):
    """A lab operation failed; the message says what to do (the CLI prints it, exit 1)."""


class Podman:
    """Runs rootful podman with the lab's own containers.conf (never /etc/containers)."""

    def __init__(self, state: Path):
        self.conf = state / "containers.conf"
        state.mkdir(parents=True, exist_ok=True)
        if not self.conf.is_file() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, **kw: Any
    ) -> subprocess.CompletedProcess:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.run(
            ["podman", *args], env=self.env, text=True, timeout=timeout, check=False, **kw
        )
        if check and proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:3])}…: {(proc.stderr or '').strip()}")
        return proc

    def ok(self, *args: str) -> bool:
        return self.run(*args, check=False).returncode == 0

    def preflight(self) -> None:
        """Refuse early, with what to do, on a host that cannot run the lab."""
        if shutil.which("podman") is None:
            raise PodmanError(f"podman is not installed: {INSTALL_HINT}")
        if os.geteuid() != 0:
            raise PodmanError("the container lab runs rootful podman: run it as root")
        if not NETAVARK.is_file():
            raise PodmanError(
                f"podman's netavark network backend is missing ({NETAVARK}): {INSTALL_HINT} "
                "(it installs netavark and aardvark-dns)"
            )
        info = self.run("info", "--format", "{{.Host.NetworkBackend}}", check=False)
        backend = info.stdout.strip()
        if info.returncode != 0 or backend != "netavark":
            detail = (info.stderr or "").strip().splitlines()[-1:] or [f"backend {backend!r}"]
            raise PodmanError(
                f"podman does not use netavark with the lab's {self.conf} ({detail[0]}); "
                f"{INSTALL_HINT}, then `lbappliance lab down` and `lbappliance lab up`"
            )


@dataclass
class HostStatus:
    name: str
    kind: str
    state: str
    addresses: list[str]
    services: dict[str, str]


class PodmanLab:
    """The lab site as containers. ``up()`` is idempotent; ``down()`` leaves nothing."""

    def __init__(self, site: Site, state: Path | None = None):
        self.site = site
        self.topology: Topology = lab_topology(site)
        self.state = state or state_dir()
        self.podman = Podman(self.state)

    @classmethod
    def load(cls, site: str = "lab", inventory: Path | None = None, **kw: Any) -> PodmanLab:
        return cls(load_site(inventory or project_dir() / "inventory", site), **kw)

    # --- names -------------------------------------------------------------------

    def container(self, host: str) -> str:
        return f"{PREFIX}-{host}"

    def network(self, segment: str) -> str:
        return f"{PREFIX}-{segment}"

    @property
    def key(self) -> Path:
        return self.state / "ssh" / "id_ed25519"

    @property
    def state_file(self) -> Path:
        return self.state / "lab.json"

    @property
    def log(self) -> Path:
        return self.state / "lab.log"

    # --- up ----------------------------------------------------------------------

    def exists(self) -> bool:
        return all(
            self.podman.ok("container", "exists", self.container(h.name)) for h in self.hosts
        )

    @property
    def hosts(self) -> tuple[LabHost, ...]:
        return self.topology.hosts

    def up(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, float]:
        """Build what is missing (image, networks, containers); returns step timings."""
        self.podman.preflight()
        timings: dict[str, float] = {}
        t = time.monotonic()
        image, how = ensure_image(self.podman, self.state / "images", self.state / "image.log")
        timings[f"image ({how})"] = time.monotonic() - t
        progress(f"image {image}: {how} in {timings[f'image ({how})']:.1f} s")
        if self.exists() and self._made_here(image):
            self.start_stopped()
            self.wait_ready()
            progress("lab already up")
            return timings
        if self.down():
            progress("removed a stale lab (another checkout's, an older image's, a crashed run's)")
        t = time.monotonic()
        state = {"image": image, **{k: _read_sysctl(s) for k, s in HOST_SYSCTLS.items()}}
        self.state_file.write_text(json.dumps(state, indent=2))
        self._ssh_key()
        shutil.rmtree(self.state / "bpf", ignore_errors=True)  # compiled afresh per lab
        try:
            for seg in self.topology.segments:
                self._create_network(seg.name, seg.subnets)
            for host in self.hosts:
                self._run_container(host, image)
            self._restore_host_sysctls(("ipv6_forwarding",))  # the host never routes lab IPv6
            for host in self.hosts:
                self._provision(host)
            self.wait_ready()
        except BaseException:
            if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
                self.down()
            raise
        timings["containers"] = time.monotonic() - t
        progress(f"{len(self.hosts)} containers up in {timings['containers']:.1f} s")
        return timings

    def _made_here(self, image: str) -> bool:
        """The running lab is this checkout's, from the current image, with its SSH key."""
        if not (self.state_file.is_file() and self.key.is_file()):
            return False
        return json.loads(self.state_file.read_text()).get("image") == image

    def _ssh_key(self) -> None:
        self.key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (self.key, self.key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lbappliance-lab",
             "-f", str(self.key)],
            check=True,
        )  # fmt: skip

    def _create_network(self, segment: str, subnets: tuple) -> None:
        args = ["network", "create", "--internal", "--disable-dns", "--label", f"{LABEL}={PREFIX}"]
        if any(net.version == 6 for net in subnets):
            args.append("--ipv6")
        if segment == "mgmt":  # the host's address for SSH: the first of the subnet
            for net in subnets:  # explicit: internal networks without DNS get none
                args += ["--subnet", str(net), "--gateway", str(next(net.hosts()))]
        else:  # the router owns the first addresses here; the host stays out
            args += ["--ipam-driver", "none"]
        self.podman.run(*args, self.network(segment))

    def _run_container(self, host: LabHost, image: str) -> None:
        args = [
            "run", "-d", "--name", self.container(host.name), "--hostname", host.name,
            "--label", f"{LABEL}={PREFIX}", "--systemd=always", "--cap-add", CAPS,
            "--stop-timeout", "5",
        ]  # fmt: skip
        for setting in self.sysctls(host):
            args += ["--sysctl", setting]
        for att in sorted(host.attachments, key=lambda a: a.ifname):
            # A fixed MAC per interface: a rebooted host keeps its neighbours' ARP entries valid.
            opts = [f"interface_name={att.ifname}", f"mac={self.mac(host, att.segment)}"]
            if att.segment == "mgmt":
                opts += [f"ip={a.ip}" for a in att.addresses]
            args += ["--network", f"{self.network(att.segment)}:{','.join(opts)}"]
        self.podman.run(*args, image)

    def mac(self, host: LabHost, segment: str) -> str:
        h = self.topology.hosts.index(host)
        s = [seg.name for seg in self.topology.segments].index(segment)
        return f"02:4c:42:00:{h:02x}:{s:02x}"

    @staticmethod
    def sysctls(host: LabHost) -> list[str]:
        """Kernel settings of lab hosts (LB nodes get theirs from the deploy)."""
        if host.kind == "lb":
            return []
        settings = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
        if host.kind == "router":
            settings += ["net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"]
            settings += ["net.ipv6.conf.all.forwarding=1", "net.ipv6.fib_multipath_hash_policy=1"]
        if host.loopback_vips:  # DSR: own the VIPs on lo without answering ARP for them
            settings += ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]
        return settings

    def exec(
        self, host: str, *cmd: str, check: bool = True, stdin: str | None = None, timeout=60
    ) -> subprocess.CompletedProcess:
        """Run a command in a lab host (``podman exec``)."""
        args = ["exec", *(["-i"] if stdin is not None else []), self.container(host), *cmd]
        return self.podman.run(*args, check=check, input=stdin, timeout=timeout)

    def write(self, host: str, path: str, content: str, mode: str = "0644") -> None:
        script = f"mkdir -p {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)}"
        self.exec(host, "sh", "-c", f"{script} && chmod {mode} {shlex.quote(path)}", stdin=content)

    def _provision(self, host: LabHost) -> None:
        self._wait_systemd(host.name)
        self.write(host.name, "/usr/local/sbin/lab-net", self.net_script(host), "0755")
        self.write(host.name, "/etc/systemd/system/lab-net.service", LAB_NET_UNIT)
        units = ["lab-net.service"]
        if host.kind == "lb":
            pub = self.key.with_suffix(".pub").read_text()
            self.write(host.name, "/root/.ssh/authorized_keys", pub, "0600")
        if host.kind == "router":
            self.write(host.name, "/etc/bird/bird.conf", self.bird_conf(), "0640")
            self.exec(host.name, "chown", "root:bird", "/etc/bird/bird.conf")
            units.append("bird.service")
        if host.kind == "backend" and host.loopback_vips:
            self.podman.run("cp", str(self.decap_object()), f"{self.container(host.name)}:/tmp/")
            self.exec(host.name, "install", "-D", "-m", "0644", "/tmp/xdp_decap.o", DECAP_OBJECT)
        if host.kind == "backend":
            backend = Path(__file__).with_name("backend.py").read_text()
            self.write(host.name, "/usr/local/lib/lab-backend.py", backend)
            self.write(host.name, BACKEND_CONTROL, "{}\n")
            ports = " ".join(f"--port {p}" for p in host.http_ports)
            self.write(
                host.name,
                "/etc/systemd/system/lab-backend.service",
                BACKEND_UNIT.format(name=host.name, ports=ports, control=BACKEND_CONTROL),
            )
            units.append("lab-backend.service")
        self.exec(host.name, "systemctl", "daemon-reload")
        self.exec(host.name, "systemctl", "enable", "--now", *units)

    def net_script(self, host: LabHost) -> str:
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
        dsr = host.kind == "backend" and bool(host.loopback_vips)
        for gw in host.gateways:
            # DSR backends: leave room in the MSS for the LB's IPIP header (IPv4's).
            mss = f" advmss {DSR_ADVMSS}" if dsr and gw.version == 4 else ""
            family = "" if gw.version == 4 else " -6"
            lines.append(f"ip{family} route replace default via {gw}{mss}")
        if dsr:  # strip the LB's IPIP header (this kernel has no ipip driver)
            dev = host.ifname_on("backend")
            lines.append(f"ip link set dev {dev} xdpgeneric off")
            lines.append(f"ip link set dev {dev} xdpgeneric obj {DECAP_OBJECT} sec xdp")
        if host.loopback_vips:
            lines += [
                f"ip address replace {v}/{v.max_prefixlen} dev lo" for v in host.loopback_vips
            ]
        if host.kind == "router":
            lines += self._flow_pinning()
        return "\n".join(lines) + "\n"

    def _flow_pinning(self) -> list[str]:
        """Keep each forwarded flow on the LB it started on (see the module docstring).

        LB node ``n`` (from 1) is conntrack mark ``n`` and routing table ``100 + n``,
        in each address family the site announces anycast VIPs in.
        """
        lbs = list(enumerate(self.topology.lbs, start=1))
        post, pin, routing = [], [], []
        for version, family in ((4, "ip"), (6, "ip6")):
            prefixes = [
                str(v.prefix) for v in self.site.model.anycast if v.prefix.version == version
            ]
            if not prefixes:
                continue
            post.append(f"    ct mark 0 {family} daddr {{ {', '.join(prefixes)} }} jump pin")
            for mark, lb in lbs:
                addr, table = lb.address_on("uplink", version), 100 + mark
                pin.append(f"    rt {family} nexthop {addr} ct mark set {mark}")
                routing += [
                    f"ip -{version} rule del fwmark {mark} lookup {table} 2>/dev/null || true",
                    f"ip -{version} rule add fwmark {mark} lookup {table}",
                    *(
                        f"ip -{version} route replace {p} via {addr} table {table}"
                        for p in prefixes
                    ),
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

    def decap_object(self) -> Path:
        """bpf/xdp_decap.c compiled once per lab (the project's clang flags)."""
        out = self.state / "bpf" / "xdp_decap.o"
        if not out.is_file():
            compile_object(bpf_source_dir() / "xdp_decap.c", out)
        return out

    def bird_conf(self) -> str:
        """The router's BIRD: the rendered config of every BGP peer, combined (``router.py``)."""
        files = render_site(self.site, Secrets(None, None)).by_path()
        return router_bird_conf(self.site, lambda path: files[path].content.decode())

    def _wait_systemd(self, host: str, timeout: float = 60) -> None:
        def booted() -> bool:
            out = self.exec(host, "systemctl", "is-system-running", check=False).stdout.strip()
            return out in ("running", "degraded")

        wait(booted, timeout, f"systemd in {host}")

    def start_stopped(self) -> None:
        for host in self.hosts:
            if self.container_state(host.name) != "running":
                self.start(host.name)

    def wait_ready(self, timeout: float = 60) -> None:
        """systemd up everywhere, SSH answering on every LB node's management address."""
        for host in self.hosts:
            self._wait_systemd(host.name, timeout)
        for lb in self.topology.lbs:
            addr = str(lb.address_on("mgmt"))
            self.assert_lab_route(addr)
            wait(lambda a=addr: _tcp_open(a, 22), timeout, f"SSH on {lb.name} ({addr})")

    def assert_lab_route(self, address: str) -> None:
        """Refuse to send anything unless ``address`` (IPv4 or IPv6) is reached over the
        lab's own bridge.

        Without this, a lab address missing from the host would be routed to
        the machine's real uplink (the host has a default route of each family there).
        """
        out = self.podman.run("network", "inspect", self.network("mgmt")).stdout
        bridge = json.loads(out)[0]["network_interface"]
        family = f"-{ipaddress.ip_address(address).version}"
        route = subprocess.run(
            ["ip", "-j", family, "route", "get", address], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        dev = json.loads(route.stdout)[0].get("dev")
        if dev != bridge:
            raise PodmanError(
                f"refusing to connect: {address} would leave through {dev}, not the lab bridge "
                f"{bridge} (the lab's management network has no host address); "
                "`lbappliance lab down`, then `lbappliance lab up`"
            )

    # --- down ----------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove every lab container and network (by label); restore IP forwarding."""
        self.podman.preflight()
        removed = []
        ids = self.podman.run(
            "ps", "-a", "-q", "--filter", f"label={LABEL}={PREFIX}", check=False
        ).stdout.split()
        if ids:
            self.podman.run("rm", "-f", "-t", "0", *ids, check=False)
            removed += [f"{len(ids)} containers"]
        nets = self.podman.run(
            "network", "ls", "-q", "--filter", f"label={LABEL}={PREFIX}", check=False
        ).stdout.split()
        if nets:
            self.podman.run("network", "rm", "-f", *nets, check=False)
            removed += [f"{len(nets)} networks"]
        if nets and self._podman_idle():
            removed += _remove_netavark_chains()
        removed += self._restore_host_sysctls(tuple(HOST_SYSCTLS))
        self.state_file.unlink(missing_ok=True)
        if self.key.parent.is_dir():
            self._close_ssh_masters()
            shutil.rmtree(self.key.parent)
        return removed

    def _restore_host_sysctls(self, keys: tuple[str, ...]) -> list[str]:
        """Put back the host settings (``HOST_SYSCTLS`` keys) netavark changed since ``up``."""
        if not self.state_file.is_file():
            return []
        state = json.loads(self.state_file.read_text())
        restored = []
        for key in keys:
            before = state.get(key)
            if before is not None and _read_sysctl(HOST_SYSCTLS[key]) != before:
                _write_sysctl(HOST_SYSCTLS[key], before)
                restored.append(f"{key} restored to {before}")
        return restored

    def _podman_idle(self) -> bool:
        """No container runs and only podman's default network is left."""
        containers = self.podman.run("ps", "-q", check=False).stdout.split()
        networks = self.podman.run("network", "ls", "--format", "{{.Name}}", check=False)
        return not containers and networks.stdout.split() == ["podman"]

    # --- status and operations -----------------------------------------------------

    def container_state(self, host: str) -> str:
        proc = self.podman.run(
            "inspect", "-f", "{{.State.Status}}", self.container(host), check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else "absent"

    def status(self) -> list[HostStatus]:
        result = []
        for host in self.hosts:
            state = self.container_state(host.name)
            addresses: list[str] = []
            services: dict[str, str] = {}
            if state == "running":
                addresses = self.addresses(host.name)
                units = {
                    "lb": ["ssh", "haproxy", "keepalived", "exabgp"],
                    "router": ["bird"],
                    "backend": ["lab-backend"],
                }.get(host.kind, [])
                if units:
                    out = self.exec(host.name, "systemctl", "is-active", *units, check=False)
                    services = dict(zip(units, out.stdout.split(), strict=False))
            result.append(HostStatus(host.name, host.kind, state, addresses, services))
        return result

    def addresses(self, host: str) -> list[str]:
        out = self.exec(host, "ip", "-j", "address", "show", check=False).stdout
        return sorted(
            f"{link['ifname']} {a['local']}/{a['prefixlen']}"
            for link in json.loads(out or "[]")
            for a in link.get("addr_info", [])
            if a.get("scope") == "global"
        )

    def vrrp_holders(self, vip: str) -> list[str]:
        """LB nodes that hold ``vip`` now (exactly one when VRRP is healthy)."""
        holders = []
        for lb in self.topology.lbs:
            if self.container_state(lb.name) != "running":
                continue
            out = self.exec(lb.name, "ip", "-j", "address", "show", check=False).stdout
            local = {a["local"] for link in json.loads(out or "[]") for a in link["addr_info"]}
            if vip in local:
                holders.append(lb.name)
        return holders

    def fib_nexthops(self, prefix: str) -> list[str]:
        """Next hops of ``prefix`` in the router's kernel FIB (ECMP gives several)."""
        return nexthops(self.exec("router", *route_show(prefix), check=False).stdout, prefix)

    def birdc(self, *args: str) -> str:
        return self.exec("router", "birdc", *args, check=False).stdout

    def pid(self, host: str) -> int:
        out = self.podman.run("inspect", "-f", "{{.State.Pid}}", self.container(host)).stdout
        return int(out.strip())

    def inside(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Run the block with this thread in ``host``'s network namespace."""
        return entered(f"/proc/{self.pid(host)}/ns/net")

    def host_veths(self, host: str) -> dict[str, int]:
        """Host-side interface index of each of ``host``'s links (the far ends of its cables)."""
        out = self.exec(host, "sh", "-c", "for i in /sys/class/net/eth*; do "
                        'echo "${i##*/} $(cat $i/iflink)"; done').stdout  # fmt: skip
        return {name: int(index) for name, index in (line.split() for line in out.splitlines())}

    def cut_links(self, host: str, first: str = "eth1") -> float:
        """Pull every cable of ``host`` at the switch side, ``first`` first.

        Returns the monotonic time just before the first one went down.
        """
        from pyroute2 import IPRoute

        veths = self.host_veths(host)
        order = sorted(veths, key=lambda name: name != first)
        with IPRoute() as ipr:
            t0 = time.monotonic()
            for name in order:
                ipr.link("set", index=veths[name], state="down")
        return t0

    def kill(self, host: str) -> None:
        """Kill a host outright (SIGKILL to its init: every process dies)."""
        self.podman.run("kill", "--signal", "KILL", self.container(host), check=False)
        wait(lambda: self.container_state(host) != "running", 30, f"{host} dead")
        self._close_ssh_masters()

    def _close_ssh_masters(self) -> None:
        """End Ansible's persistent SSH connections: one to a dead host would hang."""
        cp = self.key.parent / "cp"
        for sock in cp.iterdir() if cp.is_dir() else []:
            subprocess.run(
                ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab"],
                capture_output=True,
                check=False,
                timeout=10,
            )
            sock.unlink(missing_ok=True)

    def start(self, host: str) -> None:
        """Boot a stopped host again; lab-net.service (LB nodes: networkd) restores its
        addresses."""
        self.podman.run("start", self.container(host))
        self._restore_host_sysctls(("ipv6_forwarding",))
        self._wait_systemd(host)
        lab_host = self.topology.host(host)
        if lab_host.kind == "lb":
            addr = str(lab_host.address_on("mgmt"))
            wait(lambda: _tcp_open(addr, 22), 60, f"SSH on {host} ({addr})")

    def set_backend(self, backend: str, **values: Any) -> None:
        """Change a running backend: latency_ms, error_rate, health_status (see backend.py)."""
        self.write(backend, BACKEND_CONTROL, json.dumps(values))

    def deploy_env(self) -> dict[str, str]:
        """What ``lbappliance deploy --site lab`` needs to reach the nodes over SSH."""
        return {
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.key.parent / "cp"),
            "ANSIBLE_SSH_COMMON_ARGS": "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
            " -o LogLevel=ERROR",
        }

    def instance_config(self, connection: str = "ssh") -> list[dict[str, str | int]]:
        """Molecule's view of the LB nodes: over SSH (the production path, with the
        lab's key) or the podman connection (the address is then the container)."""
        if connection == "podman":
            return [
                {
                    "instance": lb.name,
                    "address": self.container(lb.name),
                    "connection": "containers.podman.podman",
                }
                for lb in self.topology.lbs
            ]
        return [
            {
                "instance": lb.name,
                "address": str(lb.address_on("mgmt")),
                "user": "root",
                "port": 22,
                "identity_file": str(self.key),
                "connection": "ssh",
            }
            for lb in self.topology.lbs
        ]


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


def scratch_container(name: str, state: Path | None = None, interfaces: Sequence[str] = ()) -> str:
    """A lone systemd container from the lab image, without network (role tests).

    ``interfaces`` become two-queue veths inside it (their peers stay inside too), and
    the container then gets what an LB node needs from the lab (``LB_MOUNTS``: writable
    per-namespace sysctls, bpffs). Returns its name (``lbamol-<name>``); removed by
    ``remove_scratch_container``.
    """
    podman = Podman(state or state_dir())
    podman.preflight()
    image, _ = ensure_image(podman, podman.conf.parent / "images", podman.conf.parent / "image.log")
    container = f"lbamol-{name}"
    podman.run("rm", "-f", "-t", "0", container, check=False)
    podman.run(
        "run", "-d", "--name", container, "--hostname", name, "--label", f"{LABEL}=scratch",
        "--systemd=always", "--cap-add", CAPS, "--network", "none", image,
    )  # fmt: skip

    def booted() -> bool:
        out = podman.run("exec", container, "systemctl", "is-system-running", check=False)
        return out.stdout.strip() in ("running", "degraded")

    wait(booted, 60, f"systemd in {container}")
    if interfaces:
        links = [
            f"ip link add {i} numrxqueues 2 numtxqueues 2 type veth peer name {i}-peer"
            f" numrxqueues 2 numtxqueues 2 && ip link set {i}-peer up"
            for i in interfaces
        ]
        script = "\n".join(["set -e", *LB_MOUNTS, *links])
        podman.run("exec", container, "sh", "-c", script)
    return container


def remove_scratch_container(name: str, state: Path | None = None) -> None:
    Podman(state or state_dir()).run("rm", "-f", "-t", "0", f"lbamol-{name}", check=False)


def _remove_netavark_chains() -> list[str]:
    """Delete the NETAVARK* iptables chains netavark leaves after its last network goes."""
    removed = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            rules = subprocess.run(
                [tool, "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N NETAVARK")]
            if not chains:
                continue
            for rule in rules:  # jumps into the chains from the built-in ones
                words = shlex.split(rule)
                if words[0] == "-A" and not words[1].startswith("NETAVARK") and "NETAVARK" in rule:
                    subprocess.run([tool, "-t", table, "-D", *words[1:]], check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-F", chain], check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-X", chain], check=False)
            removed.append(f"{tool} {table}: {', '.join(chains)}")
    if removed:  # iptables-nft leaves its tables behind, empty: drop those
        for family in ("ip", "ip6"):
            for table in ("filter", "nat"):
                out = subprocess.run(
                    ["nft", "-j", "list", "table", family, table],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                items = json.loads(out.stdout or "{}").get("nftables", [])
                if out.returncode == 0 and not any("rule" in item for item in items):
                    subprocess.run(["nft", "delete", "table", family, table], check=False)
    return removed


def _tcp_open(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


def _read_sysctl(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


def _write_sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


# Container probes (podman exec) are heavier than namespace ones: poll less often.
wait = functools.partial(poll.wait, interval=0.2)


# --- `lbappliance lab` ---------------------------------------------------------------

_site = click.option("--site", default="lab", show_default=True, help="Site the lab is built from.")
_inventory = click.option(
    "--inventory",
    "inventory_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Inventory directory (default: the project's).",
)


def _lab_errors(command: Callable[..., None]) -> Callable[..., None]:
    """One located line and exit 1 for what a user can hit (never a traceback)."""

    @functools.wraps(command)
    def run(*args: Any, **kw: Any) -> None:
        try:
            command(*args, **kw)
        except PodmanError as exc:
            click.secho(f"error: lab: {exc}", fg="red", err=True)
            sys.exit(1)
        except subprocess.CalledProcessError as exc:
            cmd = " ".join(map(str, exc.cmd[:3]))
            click.secho(f"error: lab: `{cmd}…` failed with exit status {exc.returncode}; "
                        f"see {state_dir() / 'image.log'} and {state_dir() / 'lab.log'}",
                        fg="red", err=True)  # fmt: skip
            sys.exit(1)
        except subprocess.TimeoutExpired as exc:
            cmd = " ".join(map(str, exc.cmd[:3]))
            click.secho(f"error: lab: `{cmd}…` timed out after {exc.timeout:.0f} s", fg="red",
                        err=True)  # fmt: skip
            sys.exit(1)

    return run


@click.group()
def lab() -> None:
    """The container lab: the lab site as rootful podman containers running systemd.

    \b
    lb1 and lb2 start bare (SSH only); `lbappliance deploy --site lab` provisions
    them over SSH. The router (BIRD), the backends and a client come up ready.
      lbappliance lab up                       image (cached), networks, containers
      eval "$(lbappliance lab env)"            the lab's SSH key for Ansible
      lbappliance deploy --site lab            converge lb1, then lb2
      lbappliance lab status                   containers, addresses, daemons
      lbappliance lab down                     remove everything the lab created
    """


@lab.command()
@_site
@_inventory
@_lab_errors
def up(site: str, inventory_dir: Path | None) -> None:
    """Build the lab (or start what is stopped); seconds once the image is cached."""
    podlab = PodmanLab.load(site, inventory_dir)
    t = time.monotonic()
    podlab.up(progress=click.echo)
    click.echo(f"lab up in {time.monotonic() - t:.1f} s")
    _print_status(podlab)
    click.echo('next: eval "$(lbappliance lab env)" && lbappliance deploy --site ' + site)


@lab.command()
@_site
@_inventory
@_lab_errors
def down(site: str, inventory_dir: Path | None) -> None:
    """Remove the lab's containers and networks (and what netavark left behind)."""
    removed = PodmanLab.load(site, inventory_dir).down()
    click.echo(f"lab down: removed {', '.join(removed) if removed else 'nothing (no lab)'}")


@lab.command()
@_site
@_inventory
@_lab_errors
def status(site: str, inventory_dir: Path | None) -> None:
    """Containers, their addresses and daemons; VRRP holder and BGP sessions."""
    podlab = PodmanLab.load(site, inventory_dir)
    _print_status(podlab)
    if podlab.container_state("router") == "running":
        for g in podlab.site.model.vrrp:
            for vip in g.vips:
                holders = podlab.vrrp_holders(str(vip.ip))
                click.echo(f"VRRP {g.name} {vip.ip}: {', '.join(holders) or 'nobody'}")
        click.echo(podlab.birdc("show", "protocols").rstrip())


@lab.command()
@_site
@_inventory
@_lab_errors
def env(site: str, inventory_dir: Path | None) -> None:
    """Print the environment `lbappliance deploy --site lab` needs (for eval)."""
    for key, value in PodmanLab.load(site, inventory_dir).deploy_env().items():
        click.echo(f"export {key}={shlex.quote(value)}")


def _print_status(podlab: PodmanLab) -> None:
    for h in podlab.status():
        services = " ".join(f"{k}={v}" for k, v in h.services.items())
        click.echo(f"  {h.name:<9} {h.kind:<8} {h.state:<8} {', '.join(h.addresses)}")
        if services:
            click.echo(f"  {'':<9} {'':<8} {'':<8} {services}")
