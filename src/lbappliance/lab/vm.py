"""The VM lab: the lab topology with the LB nodes as qemu VMs running their own kernel.

Built from ``topology.py`` like the other two labs. The LB nodes are VMs
(``vmimage.py``: Debian bookworm, kernel 6.1, booted with ``-kernel``/``-initrd``
from qcow2 overlays on one cached base image), so what the host kernel cannot run
runs there: IPVS, NIC tuning on multi-queue virtio NICs, native XDP. Everything
else is a network namespace, the cheapest host: the router (BIRD, with BFD, the
rendered router config as in the other labs), the backends (the lab HTTP
backend, DSR decapsulation in XDP) and the client.

Wiring, all inside namespaces the lab creates (``<name>-sw``, ``<name>-router``,
...; nothing in the host's own namespace): the switch namespace holds a bridge
per segment, a veth per namespace host interface and a multi-queue tap per VM
interface; qemu runs in the switch namespace so that its taps live there. The
management bridge carries the controller's address (the subnet's first); the
controller reaches a VM's SSH through ``ip netns exec <name>-sw socat`` as the
ProxyCommand (``deploy_env()``), so no lab address is ever routed on the host.

qemu: TCG (the host's KVM is unusable: it is itself a guest), ``-cpu qemu64``
(``max`` makes every Ansible task 4-5x slower, see ``CPU_MODEL``),
``tb-size=256`` (≈ 0.7 GB resident per VM), 2 vCPUs, virtio-net with
``vhost=off`` (no /dev/vhost-net here) and 4 queue pairs on every interface but
management. A VM's identity (hostname, management address, root's SSH key) is on
its kernel command line. Boot to SSH takes 60-120 s.

``up`` leaves the lab running after the command ends (daemons and qemu are
recorded in ``lab.json``); ``down`` kills every process in the lab's namespaces,
deletes them (taps and bridges go with the switch namespace) and removes the
overlays, logs and SSH key; the cached base image stays.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbappliance.dataplane.loader import bpf_source_dir, compile_object
from lbappliance.inventory import Site, load_site
from lbappliance.lab import hostsetup, poll, wiring
from lbappliance.lab.backend import set_control
from lbappliance.lab.interface import HostStatus
from lbappliance.lab.router import nexthops, route_show, router_bird_conf
from lbappliance.lab.setns import entered
from lbappliance.lab.topology import LabHost, Topology, lab_topology
from lbappliance.lab.vmimage import VmImage, ensure_vm_image
from lbappliance.paths import project_dir
from lbappliance.render import render_site
from lbappliance.secrets import Secrets

PREFIX = "lbavm"
VCPUS = 2
MEMORY_MB = 1024
# Not `max`: with it glibc picks AVX2 code paths that TCG emulates slowly (measured here:
# an Ansible ping took 10.7 s against 2.3 s with qemu64, the x86-64 baseline).
CPU_MODEL = "qemu64"
QUEUES = 4  # per non-management NIC: native XDP on virtio needs spare queue pairs
BOOT_TIMEOUT = 300.0
MAX_VMS = 2  # machine-wide: ~0.7 GB and a good share of a core each under TCG
QEMU = "qemu-system-x86_64"
INSTALL_HINT = "run ./scripts/install-deps.sh as root"


def state_dir() -> Path:
    """Where the VM lab keeps overlays, logs, its SSH key and state (per checkout)."""
    env = os.environ.get("LBAPPLIANCE_VM_LAB_DIR")
    return Path(env) if env else project_dir() / ".lab" / "vm"


class VmLabError(RuntimeError):
    """A VM lab operation failed; the message says what to do (the CLI prints it, exit 1)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode:
        raise VmLabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


class VmLab:
    """The lab site with VM LB nodes. ``up()`` is idempotent; ``down()`` leaves nothing."""

    def __init__(self, site: Site, name: str = PREFIX, state: Path | None = None):
        self.site = site
        self.topology: Topology = lab_topology(site)
        self.name = name
        self.state = (state or state_dir()) / name
        self._procs: dict[str, subprocess.Popen] = {}  # children of this process, by key

    @classmethod
    def load(cls, site: str = "lab", inventory: Path | None = None, **kw: Any) -> VmLab:
        return cls(load_site(inventory or project_dir() / "inventory", site), **kw)

    # --- names -------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.name}-{host}"

    @property
    def switch(self) -> str:
        return self.ns("sw")

    @property
    def hosts(self) -> tuple[LabHost, ...]:
        return self.topology.hosts

    @property
    def key(self) -> Path:
        return self.state / "ssh" / "id_ed25519"

    @property
    def control_dir(self) -> Path:
        """SSH control sockets (ours and Ansible's): short, as socket paths must be."""
        return Path("/run/lbappliance-vm") / self.name

    @property
    def state_file(self) -> Path:
        return self.state / "lab.json"

    def tap(self, host: LabHost, ifname: str) -> str:
        return f"t{self.hosts.index(host)}-{ifname}"[:15]

    def veth(self, host: LabHost, ifname: str) -> str:
        return wiring.veth_peer(self.hosts.index(host), ifname)

    def mac(self, host: LabHost, segment: str) -> str:
        h = self.hosts.index(host)
        s = [seg.name for seg in self.topology.segments].index(segment)
        return f"02:4c:56:00:{h:02x}:{s:02x}"

    def overlay(self, host: str) -> Path:
        return self.state / f"{host}.qcow2"

    def console(self, host: str) -> Path:
        return self.state / f"{host}.console.log"

    @property
    def controller_address(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The controller's address on the management bridge: the subnet's first."""
        net = next(s for s in self.topology.segments if s.name == "mgmt").subnets[0]
        return ipaddress.ip_interface(f"{next(net.hosts())}/{net.prefixlen}")

    # --- up ----------------------------------------------------------------------

    def _namespaces(self) -> list[str]:
        out = _ip("-j", "netns", "list", check=False).stdout
        names = [n["name"] for n in json.loads(out or "[]")]
        return [n for n in names if n.startswith(f"{self.name}-")]

    def exists(self) -> bool:
        return self.state_file.is_file() and self.switch in self._namespaces()

    def preflight(self) -> None:
        """Refuse early, with what to do, on a host that cannot run the lab."""
        if os.geteuid() != 0:
            raise VmLabError("the VM lab creates namespaces and taps: run it as root")
        for tool in (QEMU, "qemu-img", "mkfs.ext4", "socat", "debootstrap", "zstd", "clang"):
            if shutil.which(tool) is None:
                raise VmLabError(f"{tool} is not installed: {INSTALL_HINT}")
        if not Path("/dev/net/tun").exists():
            raise VmLabError("/dev/net/tun is missing: the VMs' taps need the tun driver")

    def up(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, float]:
        """Build what is missing (image, namespaces, VMs); returns step timings."""
        self.preflight()
        timings: dict[str, float] = {}
        t = time.monotonic()
        img, how = ensure_vm_image(progress)
        timings[f"image ({how})"] = time.monotonic() - t
        progress(f"VM image {img.root.name}: {how} in {timings[f'image ({how})']:.1f} s")
        if self.exists() and self._record().get("image") == str(img.root):
            self.start_stopped(progress)
            progress("VM lab already up")
            return timings
        if self.down():
            progress("removed a stale VM lab (an older image's or a crashed run's)")
        self.state.mkdir(parents=True, exist_ok=True)
        self._save({"image": str(img.root), "pids": {}})
        try:
            t = time.monotonic()
            self._ssh_key()
            self._build_network()
            self._start_hosts()
            timings["namespaces"] = time.monotonic() - t
            progress(f"router, backends, client: namespaces up in {timings['namespaces']:.1f} s")
            t = time.monotonic()
            for lb in self.topology.lbs:
                self._boot(lb, img)
            progress(f"booting {', '.join(lb.name for lb in self.topology.lbs)} (TCG: 1-2 min)")
            for lb in self.topology.lbs:
                self.wait_ssh(lb.name)
                progress(f"{lb.name}: SSH answers {time.monotonic() - t:.0f} s after boot")
            timings["boot to SSH"] = time.monotonic() - t
        except BaseException:
            if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
                self.down()
            raise
        return timings

    def _record(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}

    def _save(self, record: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(record, indent=2))

    def _remember(self, key: str, pid: int) -> None:
        record = self._record()
        record.setdefault("pids", {})[key] = pid
        self._save(record)

    def _ssh_key(self) -> None:
        self.control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        hostsetup.new_ssh_key(self.key, "lbappliance-vm-lab")

    def _build_network(self) -> None:
        others = [h for h in self.hosts if h.kind != "lb"]
        for ns in [self.switch, *(self.ns(h.name) for h in others)]:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            wiring.sysctl(ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
            wiring.sysctl(ns, "net.ipv6.conf.all.keep_addr_on_down=1")
        # The switch forwards nothing itself; its bridges do not answer IPv6 autoconf.
        wiring.sysctl(self.switch, "net.ipv6.conf.default.accept_ra=0")
        wiring.add_bridges(_ip, self.switch, self.topology.segments)
        addr = self.controller_address
        _ip("-n", self.switch, "addr", "add", str(addr), "dev", wiring.bridge("mgmt"))
        for index, host in enumerate(self.hosts):
            if host.kind == "lb":
                self._taps(host)
                continue
            ns = self.ns(host.name)
            wiring.wire_host(_ip, host, index, ns, self.switch, l4_hash=True)
            for args in hostsetup.decapsulation(host, self.decap_object()):
                _ip("-n", ns, *args)

    def _taps(self, host: LabHost) -> None:
        for att in host.attachments:
            tap = self.tap(host, att.ifname)
            mq = [] if att.segment == "mgmt" else ["multi_queue"]  # as qemu opens it
            _ip("-n", self.switch, "tuntap", "add", "dev", tap, "mode", "tap", *mq)
            _ip("-n", self.switch, "link", "set", tap, "master", wiring.bridge(att.segment), "up")

    def decap_object(self) -> Path:
        out = self.state / "bpf" / "xdp_decap.o"
        if not out.is_file():
            compile_object(bpf_source_dir() / "xdp_decap.c", out)
        return out

    def _popen(self, key: str, ns: str, cmd: list[str]) -> subprocess.Popen:
        """Start ``cmd`` in namespace ``ns``, in its own session, logged, recorded."""
        log = self.state / "logs" / f"{key}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[key] = proc
        self._remember(key, proc.pid)
        return proc

    def _start_hosts(self) -> None:
        for host in self.topology.backends:
            control = self.control_file(host.name)
            control.write_text("{}\n")
            cmd = [sys.executable, "-m", "lbappliance.lab.backend", "--name", host.name]
            cmd += [a for p in host.http_ports for a in ("--port", str(p))]
            self._popen(
                f"backend-{host.name}", self.ns(host.name), [*cmd, "--control", str(control)]
            )
        router = self.state / "router"
        router.mkdir(exist_ok=True)
        conf = router / "bird.conf"
        conf.touch(mode=0o600)  # may hold the BGP MD5 passwords
        files = render_site(self.site, Secrets(None, None)).by_path()
        conf.write_text(router_bird_conf(self.site, lambda p: files[p].content.decode()))
        cmd = [
            "bird",
            "-f",
            "-c",
            str(conf),
            "-s",
            str(self.bird_socket),
            "-P",
            str(router / "pid"),
        ]
        self._popen("bird", self.ns("router"), cmd)
        for host in self.topology.backends:
            for port in host.http_ports:
                addr = str(host.address_on("backend"))
                wait(lambda a=addr, p=port, h=host.name: self._tcp_open(h, a, p), 20,
                     f"{host.name} listening on {addr}:{port}")  # fmt: skip

    @property
    def bird_socket(self) -> Path:
        return self.state / "router" / "bird.ctl"

    def control_file(self, backend: str) -> Path:
        return self.state / f"{backend}.control.json"

    def qemu_command(self, host: LabHost, img: VmImage) -> list[str]:
        """qemu for one LB node: TCG, virtio disk (overlay) and one virtio NIC per interface."""
        mgmt = next(a for a in host.attachments if a.segment == "mgmt")
        pub = self.key.with_suffix(".pub").read_text().split()
        append = [
            "root=/dev/vda", "rw", "console=ttyS0", "loglevel=4", "net.ifnames=0",
            f"systemd.hostname={host.name}", f"lbavm.addr={mgmt.ifname},{mgmt.addresses[0]}",
            f"lbavm.key={pub[0]}:{pub[1]}",
        ]  # fmt: skip
        cmd = [
            QEMU, "-name", host.name, "-nodefaults", "-display", "none",
            "-accel", "tcg,thread=multi,tb-size=256", "-cpu", CPU_MODEL,
            "-smp", str(VCPUS), "-m", str(MEMORY_MB),
            "-kernel", str(img.kernel), "-initrd", str(img.initrd), "-append", " ".join(append),
            "-drive", f"file={self.overlay(host.name)},if=none,id=disk,format=qcow2",
            "-device", "virtio-blk-pci,drive=disk,addr=0x10",
            "-serial", f"file:{self.console(host.name)}", "-monitor", "none",
        ]  # fmt: skip
        # eth0, eth1, ... in PCI slot order (net.ifnames=0): slots follow the interface names.
        for slot, att in enumerate(sorted(host.attachments, key=lambda a: a.ifname), start=3):
            queues = 1 if att.segment == "mgmt" else QUEUES
            netdev = f"tap,id=n{slot},ifname={self.tap(host, att.ifname)},script=no,"
            netdev += f"downscript=no,vhost=off,queues={queues}"
            device = (
                f"virtio-net-pci,netdev=n{slot},mac={self.mac(host, att.segment)},addr={slot:#x}"
            )
            if queues > 1:
                device += f",mq=on,vectors={2 * queues + 2}"
            cmd += ["-netdev", netdev, "-device", device]
        return cmd

    def _boot(self, host: LabHost, img: VmImage) -> None:
        running = _qemu_processes()
        if len(running) >= MAX_VMS:
            raise VmLabError(
                f"{len(running)} qemu VMs already run on this machine (pids "
                f"{', '.join(map(str, running))}): at most {MAX_VMS} at once; stop the other "
                "VM lab first (`lbappliance lab vm down` in its checkout)"
            )
        overlay = self.overlay(host.name)
        if not overlay.is_file():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(img.base), "-F", "raw",
                 str(overlay)],
                check=True,
            )  # fmt: skip
        self.console(host.name).unlink(missing_ok=True)
        self._popen(f"vm-{host.name}", self.switch, self.qemu_command(host, img))

    def start_stopped(self, progress: Callable[[str], None] = lambda _: None) -> None:
        for lb in self.topology.lbs:
            if not self.vm_running(lb.name):
                progress(f"{lb.name}: booting again")
                self.start(lb.name)

    # --- processes -----------------------------------------------------------------

    def _pid(self, key: str) -> int | None:
        pid = self._record().get("pids", {}).get(key)
        return pid if pid and _alive(pid) else None

    def vm_running(self, host: str) -> bool:
        return self._pid(f"vm-{host}") is not None

    def _reap(self, key: str, timeout: float = 10) -> None:
        proc = self._procs.pop(key, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)

    # --- reaching hosts --------------------------------------------------------------

    def _tcp_open(self, host: str, address: str, port: int) -> bool:
        ns = self.switch if self.topology.host(host).kind == "lb" else self.ns(host)
        with entered(f"/run/netns/{ns}"), socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex((address, port)) == 0

    def wait_ssh(self, host: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until ``host``'s sshd accepts the lab's key (its qemu must stay alive)."""
        addr = str(self.topology.host(host).address_on("mgmt"))

        def ready() -> bool:
            if not self.vm_running(host):
                raise VmLabError(
                    f"{host}'s qemu died while booting; see {self.state / 'logs'}/vm-{host}.log "
                    f"and {self.console(host)} (LBAPPLIANCE_KEEP_LAB=1 keeps them)"
                )
            if not self._tcp_open(host, addr, 22):
                return False
            proc = self.exec(host, "true", check=False, timeout=60)
            last[0] = proc.stderr.strip()
            return proc.returncode == 0

        last = ["port 22 closed"]
        try:
            wait(ready, timeout, f"SSH on {host} ({addr})", interval=2)
        except TimeoutError:
            raise VmLabError(
                f"no SSH on {host} ({addr}) after {timeout:.0f} s: {last[0]}; "
                f"see {self.console(host)}"
            ) from None

    def ssh_command(self, host: str) -> list[str]:
        addr = self.topology.host(host).address_on("mgmt")
        return [
            "ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=60",
            *self._ssh_options(), "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
            "-o", f"ControlPath={self.control_dir}/exec-%C", f"root@{addr}",
        ]  # fmt: skip

    def _ssh_options(self) -> list[str]:
        proxy = f"ProxyCommand=ip netns exec {self.switch} socat STDIO TCP:%h:%p"
        return [
            "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "LogLevel=ERROR", "-o", proxy,
        ]  # fmt: skip

    def exec(
        self,
        host: str,
        *cmd: str,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        """Run a command on a lab host: over SSH on a VM, ``ip netns exec`` elsewhere."""
        if self.topology.host(host).kind == "lb":
            args = [*self.ssh_command(host), "--", shlex.join(cmd)]
        else:
            args = ["ip", "netns", "exec", self.ns(host), *cmd]
        proc = subprocess.run(
            args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode:
            raise VmLabError(f"{host}: `{shlex.join(cmd)[:60]}` failed: {proc.stderr.strip()}")
        return proc

    def inside(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Run the block with this thread in a namespace host's network namespace."""
        if self.topology.host(host).kind == "lb":
            raise ValueError(f"{host} is a VM: use exec()")
        return entered(f"/run/netns/{self.ns(host)}")

    def deploy_env(self) -> dict[str, str]:
        """What ``lbappliance deploy --site lab`` needs to reach the VMs over SSH."""
        return {
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir / "cp"),
            "ANSIBLE_SSH_COMMON_ARGS": shlex.join(self._ssh_options()),
            "ANSIBLE_TIMEOUT": "60",
        }

    # --- status and operations -------------------------------------------------------

    def addresses(self, host: str) -> list[str]:
        out = self.exec(host, "ip", "-j", "address", "show", check=False).stdout
        return hostsetup.global_addresses(out)

    def host_state(self, host: LabHost) -> str:
        if host.kind == "lb":
            return "running" if self.vm_running(host.name) else "stopped"
        return "running" if self.ns(host.name) in self._namespaces() else "absent"

    def status(self) -> list[HostStatus]:
        result = []
        for host in self.hosts:
            state = self.host_state(host)
            addresses: list[str] = []
            services: dict[str, str] = {}
            if state == "running":
                addresses = self.addresses(host.name)
            if state == "running" and host.kind == "lb":
                units = ["ssh", "haproxy", "keepalived", "exabgp", "bird"]
                out = self.exec(host.name, "systemctl", "is-active", *units, check=False)
                services = dict(zip(units, out.stdout.split(), strict=False))
            elif host.kind in ("router", "backend"):
                key = "bird" if host.kind == "router" else f"backend-{host.name}"
                services = {key.split("-")[0]: "active" if self._pid(key) else "dead"}
            result.append(HostStatus(host.name, host.kind, state, addresses, services))
        return result

    def vrrp_holders(self, vip: str) -> list[str]:
        """LB nodes that hold ``vip`` now (exactly one when VRRP is healthy)."""
        holders = []
        for lb in self.topology.lbs:
            if not self.vm_running(lb.name):
                continue
            out = self.exec(lb.name, "ip", "-j", "address", "show", check=False, timeout=30).stdout
            local = {a["local"] for link in json.loads(out or "[]") for a in link["addr_info"]}
            if vip in local:
                holders.append(lb.name)
        return holders

    def fib_nexthops(self, prefix: str) -> list[str]:
        """Next hops of ``prefix`` in the router's kernel FIB (ECMP gives several)."""
        return nexthops(self.exec("router", *route_show(prefix), check=False).stdout, prefix)

    def birdc(self, *args: str) -> str:
        return self.exec("router", "birdc", "-s", str(self.bird_socket), *args, check=False).stdout

    def set_backend(self, backend: str, **values: Any) -> None:
        """Change a running backend: latency_ms, error_rate, health_status (see backend.py)."""
        set_control(self.control_file(backend), **values)

    def cut_links(self, host: str) -> float:
        """Pull every cable of ``host`` at the switch side, the uplink's first (see
        ``interface.Lab.cut_links``): a VM's taps, a namespace's veth ends at the switch.
        Returns the monotonic time just before the first went down."""
        lab_host = self.topology.host(host)
        end = self.tap if lab_host.kind == "lb" else self.veth
        order = sorted(lab_host.attachments, key=lambda a: a.segment != "uplink")
        t0 = time.monotonic()
        for att in order:
            _ip("-n", self.switch, "link", "set", end(lab_host, att.ifname), "down")
        return t0

    def kill(self, host: str) -> float:
        """Kill a VM's qemu outright (SIGKILL: the node dies with no goodbye).

        Returns the monotonic time just before the signal.
        """
        pid = self._pid(f"vm-{host}")
        t0 = time.monotonic()
        if pid:
            os.kill(pid, signal.SIGKILL)
        wait(lambda: not self.vm_running(host), 30, f"{host}'s qemu gone", interval=0.05)
        self._reap(f"vm-{host}")
        self._close_ssh_masters()
        return t0

    def start(self, host: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot a stopped VM again from its overlay (it keeps what was deployed)."""
        if not self.vm_running(host):
            img = VmImage(Path(self._record()["image"]))
            self._boot(self.topology.host(host), img)
        self.wait_ssh(host, timeout)

    def reboot(self, host: str, timeout: float = BOOT_TIMEOUT) -> None:
        """A clean reboot from inside (``systemctl reboot``); qemu restarts it."""
        self.exec(host, "systemctl", "poweroff", check=False, timeout=30)
        wait(lambda: not self.vm_running(host), 120, f"{host} powered off", interval=0.5)
        self._reap(f"vm-{host}")
        self._close_ssh_masters()
        self.start(host, timeout)

    def _close_ssh_masters(self) -> None:
        """End persistent SSH connections: one to a dead VM would hang the next command."""
        ssh = self.control_dir
        socks = [*ssh.glob("exec-*"), *((ssh / "cp").iterdir() if (ssh / "cp").is_dir() else [])]
        for sock in socks:
            subprocess.run(
                ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab"],
                capture_output=True,
                check=False,
                timeout=10,
            )
            sock.unlink(missing_ok=True)

    # --- down ------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Kill every lab process, delete the namespaces (taps, bridges), remove the
        overlays, logs and SSH key. The cached base image stays."""
        removed: list[str] = []
        namespaces = self._namespaces()
        pids = {
            int(p)
            for ns in namespaces
            for p in _ip("netns", "pids", ns, check=False).stdout.split()
        }
        pids |= {p for p in self._record().get("pids", {}).values() if _alive(p)}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for key in list(self._procs):
            self._reap(key)
        with contextlib.suppress(TimeoutError):
            wait(lambda: not any(_alive(p) for p in pids), 30, "lab processes gone", interval=0.1)
        if pids:
            removed.append(f"{len(pids)} processes")
        for ns in namespaces:
            _ip("netns", "del", ns, check=False)
        if namespaces:
            taps = " (taps, bridges)" if self.switch in namespaces else ""
            removed.append(f"{len(namespaces)} namespaces{taps}")
        if self.control_dir.is_dir():
            self._close_ssh_masters()
            shutil.rmtree(self.control_dir, ignore_errors=True)
        if self.state.is_dir():
            overlays = list(self.state.glob("*.qcow2"))
            if overlays:
                removed.append(f"{len(overlays)} overlays")
            shutil.rmtree(self.state)
        return removed


def _qemu_processes() -> list[int]:
    """Live qemu system emulators on this machine, any lab's."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().startswith("qemu-system") and _alive(int(proc.name)):
                    pids.append(int(proc.name))
    return sorted(pids)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (PID 1 here may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# VM probes go over SSH: poll less often than namespace ones.
wait = functools.partial(poll.wait, interval=0.2)
