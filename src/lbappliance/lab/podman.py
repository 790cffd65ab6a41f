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
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbappliance.dataplane.loader import bpf_source_dir, compile_object
from lbappliance.inventory import Site, load_site
from lbappliance.lab import hostsetup, units
from lbappliance.lab.hostsetup import tcp_open
from lbappliance.lab.image import ensure_image
from lbappliance.lab.interface import HostStatus
from lbappliance.lab.podmancli import (
    CAPS,
    HOST_SYSCTLS,
    LABEL,
    PREFIX,
    Podman,
    PodmanError,
    read_sysctl,
    remove_netavark_chains,
    state_dir,
    wait,
    write_sysctl,
)
from lbappliance.lab.router import nexthops, route_show, router_bird_conf
from lbappliance.lab.setns import entered
from lbappliance.lab.topology import LabHost, Topology, lab_topology
from lbappliance.paths import project_dir
from lbappliance.render import render_site
from lbappliance.secrets import Secrets


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
        state = {"image": image, **{k: read_sysctl(s) for k, s in HOST_SYSCTLS.items()}}
        self.state_file.write_text(json.dumps(state, indent=2))
        hostsetup.new_ssh_key(self.key, "lbappliance-lab")
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
        return hostsetup.sysctls(host, deployed=True)

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
        self.write(host.name, "/etc/systemd/system/lab-net.service", units.LAB_NET_UNIT)
        services = ["lab-net.service"]
        if host.kind == "lb":
            pub = self.key.with_suffix(".pub").read_text()
            self.write(host.name, "/root/.ssh/authorized_keys", pub, "0600")
        if host.kind == "router":
            self.write(host.name, "/etc/bird/bird.conf", self.bird_conf(), "0640")
            self.exec(host.name, "chown", "root:bird", "/etc/bird/bird.conf")
            services.append("bird.service")
        if host.kind == "backend" and host.loopback_vips:
            self.podman.run("cp", str(self.decap_object()), f"{self.container(host.name)}:/tmp/")
            self.exec(
                host.name, "install", "-D", "-m", "0644", "/tmp/xdp_decap.o", units.DECAP_OBJECT
            )
        if host.kind == "backend":
            backend = Path(__file__).with_name("backend.py").read_text()
            self.write(host.name, "/usr/local/lib/lab-backend.py", backend)
            self.write(host.name, units.BACKEND_CONTROL, "{}\n")
            ports = " ".join(f"--port {p}" for p in host.http_ports)
            self.write(
                host.name,
                "/etc/systemd/system/lab-backend.service",
                units.BACKEND_UNIT.format(
                    name=host.name, ports=ports, control=units.BACKEND_CONTROL
                ),
            )
            services.append("lab-backend.service")
        self.exec(host.name, "systemctl", "daemon-reload")
        self.exec(host.name, "systemctl", "enable", "--now", *services)

    def net_script(self, host: LabHost) -> str:
        """The host's addresses and routes, applied at every boot by lab-net.service."""
        return units.net_script(host, self.site, self.topology)

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
            wait(lambda a=addr: tcp_open(a, 22), timeout, f"SSH on {lb.name} ({addr})")

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
            removed += remove_netavark_chains()
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
            if before is not None and read_sysctl(HOST_SYSCTLS[key]) != before:
                write_sysctl(HOST_SYSCTLS[key], before)
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
        return hostsetup.global_addresses(out)

    def vrrp_holders(self, vip: str) -> list[str]:
        """LB nodes that hold ``vip`` now (exactly one when VRRP is healthy)."""

        def ip_addresses(node: str) -> str | None:
            if self.container_state(node) != "running":
                return None
            return self.exec(node, "ip", "-j", "address", "show", check=False).stdout

        return hostsetup.vrrp_holders(vip, self.topology.lbs, ip_addresses)

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

    def cut_links(self, host: str) -> float:
        """Pull every cable of ``host`` at the switch side, the uplink's first (see
        ``interface.Lab.cut_links``). Returns the monotonic time just before the first."""
        from pyroute2 import IPRoute

        veths = self.host_veths(host)
        order = sorted(veths, key=lambda name: name != _uplink(self.topology.host(host)))
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
            wait(lambda: tcp_open(addr, 22), 60, f"SSH on {host} ({addr})")

    def set_backend(self, backend: str, **values: Any) -> None:
        """Change a running backend: latency_ms, error_rate, health_status (see backend.py)."""
        self.write(backend, units.BACKEND_CONTROL, json.dumps(values))

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


def _uplink(host: LabHost) -> str | None:
    """The host's interface on the uplink segment, if it has one."""
    return next((a.ifname for a in host.attachments if a.segment == "uplink"), None)
