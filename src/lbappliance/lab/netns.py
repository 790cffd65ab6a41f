"""The fast namespace lab: the lab topology as network namespaces on this host.

One namespace per lab host (``<name>-lb1``, ``<name>-router``, ...) and one
"switch" namespace holding a bridge per segment; every host interface is a veth
whose peer sits on that bridge. Nothing touches the host's own namespace, and
``close()`` (or leaving the ``with`` block) removes every namespace and stops
every daemon, even after a failure.

Daemons run with the configs ``render`` produces for the lab site, except that
each LB node renders with its own runtime prefix (sockets, state, agent config
under ``<workdir>/render/hosts/<node>/``) because all namespaces share one
filesystem. They are children of the calling process, each in its own process
group, and the calling process becomes a child subreaper so nothing is left as
an unreaped orphan. The router runs one BIRD for every BGP peer of the site
(IPv4 and IPv6): their rendered configs combined (``router.py``).

Dual stack: IPv6 addresses are added without duplicate address detection (usable
at once) and, like IPv4 ones, survive their link going down (``cut_links``).

The L4 data plane: backends that own L4 VIPs on lo (DSR) strip the LB's IPIP
header with bpf/xdp_decap.c in generic XDP mode (this kernel has no ipip
driver), attached when the lab is built. Native mode on a node needs
``peer_xdp(node)`` first (veth's own rule). ``start_dataplane`` loads the XDP
forwarder on a node from its rendered spec — a oneshot ``python -m
lbappliance.dataplane apply``, like the role's unit — with that node's pins on
the lab's own bpf filesystem (``<workdir>/bpffs/<node>``: the namespaces share
one filesystem); ``close()`` detaches it and unmounts that filesystem. BPF
objects are compiled once per lab into ``<workdir>/bpf/``.

Usage::

    with NetnsLab.create() as lab:               # namespaces, links, addresses (~1 s)
        lab.start_all()                          # backends, BIRD, HAProxy, keepalived,
                                                 # XDP forwarder, BFD, ExaBGP
        lab.wait_ecmp("2001:db8:100::10/128")    # router FIB: ECMP over every LB node
        with lab.inside("client"):               # sockets made here live in that namespace
            http.client.HTTPConnection("2001:db8:100::10", 80).request("GET", "/")
        lab.cut_links("lb1")                     # a dead node: its cables pulled
        lab.set_backend("backend1", latency_ms=900)

Each lab gets a unique name by default, so labs of parallel test runs do not
collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from lbappliance.dataplane.loader import bpf_source_dir, compile_object
from lbappliance.inventory import Site, load_site
from lbappliance.lab import hostsetup, wiring
from lbappliance.lab.backend import set_control
from lbappliance.lab.poll import wait
from lbappliance.lab.router import nexthops, route_show, router_bird_conf, router_sessions
from lbappliance.lab.setns import entered, libc
from lbappliance.lab.topology import LabHost, Topology, lab_topology
from lbappliance.paths import RuntimePaths, project_dir
from lbappliance.render import render_site
from lbappliance.render.specs import DATAPLANE_TARGET
from lbappliance.secrets import Secrets

PR_SET_CHILD_SUBREAPER = 36
# What start_all() starts, in dependency order ("dataplane" is a oneshot apply).
ALL_DAEMONS = ("backend", "bird", "haproxy", "keepalived", "dataplane", "bfd", "exabgp")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class Daemon:
    host: str
    kind: str
    proc: subprocess.Popen
    log: Path


class NetnsLab:
    def __init__(self, site: Site, name: str | None = None, workdir: Path | None = None):
        self.site = site
        self.topology: Topology = lab_topology(site)
        self.name = name or f"lba{uuid.uuid4().hex[:5]}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.daemons: dict[tuple[str, str], Daemon] = {}
        self._namespaces: list[str] = []
        self._bpffs: Path | None = None
        self._dataplanes: set[str] = set()  # nodes with a forwarder applied

    # --- construction ------------------------------------------------------------

    @classmethod
    def create(cls, site: str = "lab", inventory: Path | None = None, **kw: Any) -> NetnsLab:
        """Load the site, then build the lab; tear down what was built on failure."""
        loaded = load_site(inventory or project_dir() / "inventory", site)
        lab = cls(loaded, **kw)
        try:
            lab.build()
        except BaseException:
            lab.close()
            raise
        return lab

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, host: str) -> str:
        return f"{self.name}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.name}-sw"

    def build(self) -> None:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        for ns in [self.switch, *(self.ns(h.name) for h in self.topology.hosts)]:
            _ip("netns", "add", ns)
            self._namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        wiring.add_bridges(_ip, self.switch, self.topology.segments)
        for i, host in enumerate(self.topology.hosts):
            wiring.wire_host(_ip, host, i, self.ns(host.name), self.switch, l4_hash=False)
        self._decapsulate()
        self.render()

    peer_ifname = staticmethod(wiring.veth_peer)

    def peer_xdp(self, node: str, on: bool = True) -> None:
        """Native XDP's veth rule, kept here (a NIC does not have it): a frame
        a node's native program sends out of a veth (XDP_TX, redirect) is
        delivered only if the veth's peer, on the switch, has an XDP program.
        ``on`` attaches bpf/xdp_pass.c to the peers of every veth of ``node``
        (natively), otherwise detaches it."""
        index = next(i for i, h in enumerate(self.topology.hosts) if h.name == node)
        for att in self.topology.host(node).attachments:
            peer = self.peer_ifname(index, att.ifname)
            what = ["obj", str(self.bpf_object("xdp_pass")), "sec", "xdp"] if on else ["off"]
            _ip("-n", self.switch, "link", "set", "dev", peer, "xdpdrv", *what)

    def _decapsulate(self) -> None:
        """DSR backends (L4 VIPs on lo) strip the LB's outer header in XDP."""
        for host in self.topology.backends:
            for args in hostsetup.decapsulation(host, self.bpf_object("xdp_decap")):
                _ip("-n", self.ns(host.name), *args)

    def bpf_object(self, name: str) -> Path:
        """``bpf/<name>.c`` compiled (once per lab, the project's clang flags)."""
        out = self.workdir / "bpf" / f"{name}.o"
        if not out.exists():
            compile_object(bpf_source_dir() / f"{name}.c", out)
        return out

    # --- rendering ---------------------------------------------------------------

    def node_root(self, node: str) -> Path:
        return self.workdir / "render" / "hosts" / node

    def node_paths(self, node: str) -> RuntimePaths:
        return RuntimePaths(prefix=str(self.node_root(node)))

    def render(self) -> None:
        """Render the site once per node, each with that node's runtime prefix."""
        secrets = Secrets(None, None)
        out = self.workdir / "render"
        for node in self.site.model.nodes:
            rendered = render_site(
                self.site, secrets, self.node_paths(node.name), node_python=sys.executable
            )
            for f in rendered.files:
                if f.node not in (None, node.name) or (
                    f.node is None and out.joinpath(f.path).exists()
                ):
                    continue
                target = out / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.content)
            root = self.node_root(node.name)
            subprocess.run(  # the node's rendered kernel settings, in its namespace
                ["ip", "netns", "exec", self.ns(node.name), "sysctl", "-q", "-e", "-p",
                 str(root / "etc/sysctl.d/90-lbappliance.conf")],
                check=True,
                capture_output=True,
            )  # fmt: skip
            for d in ("run/haproxy", "run/lbappliance", "var/lib/lbappliance", "etc/haproxy/certs"):
                (root / d).mkdir(parents=True, exist_ok=True)

    def rendered(self, path: str) -> str:
        """A file of the site-wide render, e.g. ``rendered("routers/router/bird.conf")``."""
        return (self.workdir / "render" / path).read_text()

    def config(self, node: str, path: str) -> Path:
        """A rendered file of a node, e.g. ``config("lb1", "etc/haproxy/haproxy.cfg")``."""
        return self.node_root(node) / path

    # --- processes ---------------------------------------------------------------

    def popen(
        self, host: str, kind: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> Daemon:
        """Start ``cmd`` in ``host``'s namespace as a supervised daemon."""
        log = self.workdir / "logs" / f"{host}-{kind}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        daemon = Daemon(host, kind, proc, log)
        self.daemons[(host, kind)] = daemon
        return daemon

    def stop(self, host: str, kind: str, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
        daemon = self.daemons.pop((host, kind), None)
        if not daemon:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.proc.pid, sig)
        try:
            daemon.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(5)

    def run(
        self, host: str, cmd: list[str], check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        return self.exec(host, *cmd, check=check, timeout=timeout)

    def exec(
        self,
        host: str,
        *cmd: str,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        """Run a command in a lab host's namespace (``ip netns exec``)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *cmd],
            capture_output=True,
            text=True,
            check=check,
            input=stdin,
            timeout=timeout,
        )

    def start_backend(self, host: LabHost) -> Daemon:
        cmd = [sys.executable, "-m", "lbappliance.lab.backend", "--name", host.name]
        cmd += [a for p in host.http_ports for a in ("--port", str(p))]
        cmd += ["--control", str(self.control_file(host.name))]
        return self.popen(host.name, "backend", cmd)

    def start_bird(self) -> Daemon:
        """The router's BIRD: the rendered config of every BGP peer, combined (``router.py``)."""
        run = self.workdir / "router"
        run.mkdir(exist_ok=True)
        conf = run / "bird.conf"
        conf.touch(mode=0o600)  # may hold the BGP MD5 passwords
        conf.write_text(router_bird_conf(self.site, self.rendered))
        cmd = ["bird", "-f", "-c", str(conf), "-s", str(self.bird_socket)]
        return self.popen("router", "bird", [*cmd, "-P", str(run / "bird.pid")])

    @property
    def bird_socket(self) -> Path:
        return self.workdir / "router" / "bird.ctl"

    def start_haproxy(self, node: str) -> Daemon:
        cfg = self.config(node, "etc/haproxy/haproxy.cfg")
        pid = self.node_root(node) / "run" / "haproxy.pid"
        return self.popen(node, "haproxy", ["haproxy", "-W", "-db", "-f", str(cfg), "-p", str(pid)])

    def start_keepalived(self, node: str) -> Daemon:
        cfg = self.config(node, "etc/keepalived/keepalived.conf")
        run = self.node_root(node) / "run"
        return self.popen(
            node, "keepalived",
            ["keepalived", "-P", "-n", "-l", "-f", str(cfg), "-p", str(run / "keepalived.pid"),
             "-r", str(run / "vrrp.pid"), "-c", str(run / "checkers.pid")],
        )  # fmt: skip

    def start_bfd(self, node: str) -> Daemon:
        """The node's BFD responder: BIRD with the rendered etc/bird/bird.conf."""
        cfg = self.config(node, "etc/bird/bird.conf")
        run = self.node_root(node) / "run"
        cmd = ["bird", "-f", "-c", str(cfg), "-s", str(run / "bird.ctl")]
        return self.popen(node, "bfd", [*cmd, "-P", str(run / "bird.pid")])

    def exabgp_env(self, node: str) -> dict[str, str]:
        run = self.node_root(node) / "run"
        return {
            "exabgp.daemon.user": "root",
            "exabgp.daemon.daemonize": "false",
            "exabgp.daemon.pid": str(run / "exabgp.pid"),
            "exabgp.api.pipename": f"{self.name}-{node}",
            "exabgp.log.destination": "stdout",
        }

    def start_exabgp(self, node: str) -> Daemon:
        cfg = self.config(node, "etc/exabgp/exabgp.conf")
        return self.popen(node, "exabgp", ["exabgp", "server", str(cfg)], env=self.exabgp_env(node))

    @property
    def bpffs(self) -> Path:
        """The lab's own bpf filesystem (mounted on first use, unmounted by close())."""
        if self._bpffs is None:
            path = self.workdir / "bpffs"
            path.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], check=True)
            self._bpffs = path
        return self._bpffs

    def pin_root(self, node: str) -> Path:
        return self.bpffs / node

    def dataplane(
        self, node: str, command: str, *args: str, spec: Path | None = None
    ) -> subprocess.CompletedProcess:
        """``python -m lbappliance.dataplane COMMAND`` in ``node``'s namespace, on its
        rendered spec (or ``spec``), its pins and the lab's compiled forwarder."""
        opts = ["--spec", str(spec or self.config(node, DATAPLANE_TARGET))]
        opts += ["--pin-root", str(self.pin_root(node))]
        if command == "apply":
            opts += ["--object", str(self.bpf_object("xdp_lb"))]
            opts += ["--pass-object", str(self.bpf_object("xdp_pass"))]
            self._dataplanes.add(node)
        cmd = [sys.executable, "-m", "lbappliance.dataplane", command, *opts, *args]
        out = self.run(node, cmd, check=False, timeout=60)
        if out.returncode:
            raise RuntimeError(f"dataplane {command} on {node}: {out.stderr or out.stdout}")
        return out

    def start_dataplane(self, node: str) -> subprocess.CompletedProcess:
        """The node's XDP forwarder from its rendered spec: a oneshot, not a daemon."""
        return self.dataplane(node, "apply")

    def start_all(self, daemons: tuple[str, ...] = ALL_DAEMONS) -> None:
        """Start the requested daemons everywhere they belong, in dependency order."""
        if "backend" in daemons:
            # Before HAProxy: a server failing its very first check starts DOWN.
            for host in self.topology.backends:
                self.start_backend(host)
            for host in self.topology.backends:
                for port in host.http_ports:
                    self.wait_tcp(host.name, str(host.address_on("backend")), port)
        if "bird" in daemons:
            self.start_bird()
        for kind in ("haproxy", "keepalived", "dataplane", "bfd", "exabgp"):
            if kind in daemons:
                for lb in self.topology.lbs:
                    getattr(self, f"start_{kind}")(lb.name)

    # --- observing and breaking --------------------------------------------------

    def inside(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Run the block with this thread in ``host``'s network namespace."""
        return entered(f"/run/netns/{self.ns(host)}")

    def wait_tcp(self, host: str, address: str, port: int, timeout: float = 10) -> None:
        def ready() -> bool:
            with self.inside(host):
                return hostsetup.tcp_open(address, port)

        self.wait(ready, timeout, f"{address}:{port} listening (seen from {host})")

    wait = staticmethod(wait)

    def time_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> float:
        """Seconds until ``predicate`` holds, polled every 5 ms (for failover timings)."""
        start = time.monotonic()
        self.wait(predicate, timeout, what, interval=0.005)
        return time.monotonic() - start

    def fib_nexthops(self, prefix: str, host: str = "router") -> list[str]:
        """Next hops of ``prefix`` (IPv4 or IPv6) in a host's kernel FIB (ECMP gives several)."""
        return nexthops(self.run(host, route_show(prefix)).stdout, prefix)

    def via(self, prefix: str, *nodes: str) -> list[str]:
        """What ``fib_nexthops(prefix)`` is while ``nodes`` (default: every LB node)
        announce ``prefix``: their uplink addresses of its family, sorted."""
        version = ip_network(prefix).version
        hosts = [self.topology.host(n) for n in nodes] or self.topology.lbs
        return sorted(str(h.address_on("uplink", version)) for h in hosts)

    def wait_ecmp(self, prefix: str, timeout: float = 20) -> None:
        """Wait until the router's FIB spreads ``prefix`` over every LB node."""
        self.wait(lambda: self.fib_nexthops(prefix) == self.via(prefix), timeout, f"ECMP {prefix}")

    def wait_settled(self, timeout: float = 60, quiet: float = 2.0) -> None:
        """Wait until every anycast VIP is spread over every LB node and the router has
        heard nothing new for ``quiet`` seconds: a test counting routing events opens its
        window only then, not while a later VIP (the XDP one, IPv6) is still arriving."""
        deadline = time.monotonic() + timeout
        for vip in self.site.model.anycast:
            self.wait_ecmp(str(vip.prefix), max(deadline - time.monotonic(), 1))

        def imports() -> list[str]:
            return re.findall(
                r"Import (?:updates|withdraws):.*", self.birdc("show", "protocols", "all")
            )

        last, since = imports(), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the router's BGP imports still changing after {timeout:g} s")
            time.sleep(0.25)
            now = imports()
            if now != last:
                last, since = now, time.monotonic()

    def birdc(self, *args: str) -> str:
        return self.run("router", ["birdc", "-s", str(self.bird_socket), *args]).stdout

    def bird_route(self, prefix: str) -> str:
        """``show route all`` for a prefix: next hops, communities, local preference."""
        return self.birdc("show", "route", "all", prefix)

    def cut_links(self, host: str) -> float:
        """Pull every cable of ``host`` at the switch side, the uplink's first (see
        ``interface.Lab.cut_links``). Returns the monotonic time just before the first."""
        index = next(i for i, h in enumerate(self.topology.hosts) if h.name == host)
        order = sorted(self.topology.host(host).attachments, key=lambda a: a.segment != "uplink")
        t0 = time.monotonic()
        for att in order:
            _ip("-n", self.switch, "link", "set", self.peer_ifname(index, att.ifname), "down")
        return t0

    def restore_links(self, host: str) -> None:
        """Cables back in; the default routes the kernel dropped with the links come back
        as a node's networkd would put them back (the return_path signal needs them)."""
        index = next(i for i, h in enumerate(self.topology.hosts) if h.name == host)
        lab_host = self.topology.host(host)
        for att in lab_host.attachments:
            _ip("-n", self.switch, "link", "set", self.peer_ifname(index, att.ifname), "up")
        for args in hostsetup.default_routes(lab_host) if lab_host.kind == "lb" else ():
            _ip("-n", self.ns(host), *args)

    def bfd_sessions_up(self) -> int:
        return self.birdc("show", "bfd", "sessions").count(" Up ")

    def route_loss_time(self, node: str, prefix: str, bfd: bool, timeout: float = 15) -> float:
        """Pull ``node``'s cables; seconds until the router's FIB drops it for ``prefix``.

        Heals afterwards (links up, BGP restarted at once rather than after BIRD's
        growing error wait) and waits for ECMP over every node again, so trials repeat.
        """
        survivors = self.via(prefix, *(lb.name for lb in self.topology.lbs if lb.name != node))
        if bfd:  # one session per node and BGP peer
            sessions = len(self.topology.lbs) * len(self.site.model.bgp.peers)
            self.wait(lambda: self.bfd_sessions_up() == sessions, 10, "BFD sessions up")
        self.wait_ecmp(prefix, 30)
        self.cut_links(node)
        elapsed = self.time_until(
            lambda: self.fib_nexthops(prefix) == survivors, timeout, f"{prefix} leaving {node}"
        )
        self.restore_links(node)
        for session in router_sessions(self.site, node):
            self.birdc("restart", session)
        self.wait_ecmp(prefix, 30)
        return elapsed

    def control_file(self, backend: str) -> Path:
        return self.workdir / f"{backend}.control.json"

    def set_backend(self, backend: str, **values: Any) -> None:
        """Change a running backend (see ``backend.DEFAULTS`` for the knobs)."""
        set_control(self.control_file(backend), **values)

    def vrrp_holders(self, vip: str) -> list[str]:
        """LB nodes that hold ``vip`` now (exactly one when VRRP is healthy)."""

        def ip_addresses(node: str) -> str:
            return self.run(node, ["ip", "-j", "addr", "show"]).stdout

        return hostsetup.vrrp_holders(vip, self.topology.lbs, ip_addresses)

    # --- teardown ----------------------------------------------------------------

    def close(self) -> None:
        for host, kind in list(self.daemons):
            self.stop(host, kind)
        for node in sorted(self._dataplanes):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.dataplane(node, "detach")
        self._dataplanes.clear()
        for ns in reversed(self._namespaces):
            # Anything still running in the namespace (e.g. a daemon's stray child) goes too.
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()
        if self._bpffs is not None:
            subprocess.run(["umount", "-l", str(self._bpffs)], check=False, capture_output=True)
            self._bpffs = None
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
            shutil.rmtree(self.workdir, ignore_errors=True)
