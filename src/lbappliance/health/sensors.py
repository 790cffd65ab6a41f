"""Reading the real signals, each bounded by the configured timeout.

One round reads each source once, whatever the number of VIPs using it:
HAProxy's ``show stat``, the XDP attachment of each interface (netlink), the
IPVS table (``/proc/net/ip_vs``), the links, addresses and main routing table
(netlink, for the return path), every distinct probe, the maintenance file.
They run in parallel; a source that has not answered by the deadline counts
as failed for this round.

Probes: at most ``PROBES_PER_ROUND`` a round. A node with more distinct probes
than that (a site of thousands of services: 20,000 at 10,000) cannot run them all
within one round's timeout, nor within a quarter of a core (50-140 us of CPU each,
most of it the kernel's connect and close and the thread pool's hand-off). It then
probes in rotation: every probe that failed, or whose result changed, within the
last ``max(rise, fall)`` rounds runs every round (so each bad or good round the
state machine counts is a fresh result, as with every probe run each round); the
others, all passing, share the remaining slots in turn and keep their last result
in between. What it costs: a passing probe that starts failing is seen up to
``ceil(probes / PROBES_PER_ROUND)`` rounds later instead of at the next round
(``ProbeRotation.rotation_rounds``; docs/health-agent.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbappliance.haproxy import AdminSocket, HaproxyError, Stats
from lbappliance.health.config import AgentConfig, Probe, canonical_service
from lbappliance.health.signals import (
    HaproxyView,
    LinkView,
    NetworkView,
    Observation,
    ProbeResult,
    RouteView,
    Servers,
)
from lbappliance.health.statview import stat_view

# ~0.11 s of CPU a round (thread pool included) measured on a busy 2-core machine; up to
# this many, every probe runs every round, as the README's withdraw times were measured.
PROBES_PER_ROUND = 1000


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def haproxy_view(stats: Stats) -> HaproxyView:
    """What the agent judges: frontend status and sessions, servers up per backend."""
    frontends = stats.frontends.values()
    return HaproxyView(
        {f.name: f.status for f in frontends},
        {f.name: f.scur for f in frontends},
        {name: Servers(up, total) for name, (up, total) in stats.counted().items()},
    )


def read_haproxy(path: str, timeout: float) -> HaproxyView:
    """``haproxy_view`` of a fresh ``show stat``, parsed in one pass (25,000 rows a round
    at 10,000 services): ``statview.stat_view``, tested equal to ``haproxy_view``."""
    return stat_view(AdminSocket(path, timeout).command("show stat"))


def run_probe(probe: Probe, timeout: float) -> ProbeResult:
    """One TCP connect or HTTP(S) request, all of it within ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    family = socket.AF_INET6 if ":" in probe.address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(left())
            raw.connect((probe.address, probe.port))
            if probe.kind == "tcp":
                return ProbeResult(True, f"connected in {_ms(time.monotonic() - start)}")
            sock: socket.socket = raw
            if probe.kind == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # the node's own VIP; liveness, not identity
                sock = ctx.wrap_socket(raw, server_hostname=probe.host or None)
            host = probe.host or probe.address
            request = (
                f"GET {probe.path} HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: lbappliance-health\r\nConnection: close\r\n\r\n"
            )
            sock.settimeout(left())
            sock.sendall(request.encode())
            head = b""
            while b"\r\n" not in head:
                sock.settimeout(left())
                data = sock.recv(1024)
                if not data:
                    return ProbeResult(False, "connection closed before a status line")
                head += data
            parts = head.split(b"\r\n", 1)[0].split()
            status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
            took = _ms(time.monotonic() - start)
            if status != probe.expect_status:
                return ProbeResult(False, f"status {status} (want {probe.expect_status}) in {took}")
            return ProbeResult(True, f"{status} in {took}")
    except TimeoutError:
        return ProbeResult(False, f"timeout after {_ms(timeout)}")
    except ssl.SSLError as exc:
        return ProbeResult(False, f"TLS error: {exc.reason or exc}")
    except OSError as exc:
        return ProbeResult(False, (exc.strerror or str(exc)).lower())


def read_xdp(interface: str) -> str | None:
    """The XDP program attached to ``interface`` ("xdpgeneric id 42"), or None."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link("get", ifname=interface)
        xdp = links[0].get_attr("IFLA_XDP") if links else None
        mode = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp is not None else None
        if not mode:
            return None
        return f"{mode} id {xdp.get_attr('IFLA_XDP_PROG_ID')}"


IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
RTNH_F_DEAD, RTNH_F_LINKDOWN = 0x1, 0x10
MAIN_TABLE, RTN_UNICAST = 254, 1


def read_network() -> NetworkView:
    """Links (up with carrier, usable addresses) and the main table's unicast routes."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names, up = {}, {}
        for link in ipr.get_links():
            names[link["index"]] = link.get_attr("IFLA_IFNAME")
            flags = link["flags"]
            up[link["index"]] = bool(flags & IFF_UP and flags & IFF_LOWER_UP)
        addresses: dict[int, set[str]] = {i: set() for i in names}
        for addr in ipr.get_addr():
            flags = addr.get_attr("IFA_FLAGS") or addr["flags"]
            if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                continue
            local = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
            addresses.setdefault(addr["index"], set()).add(f"{local}/{addr['prefixlen']}")
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=family, table=MAIN_TABLE):
                if r["type"] != RTN_UNICAST or r.get_attr("RTA_TABLE", MAIN_TABLE) != MAIN_TABLE:
                    continue
                hops = r.get_attr("RTA_MULTIPATH") or [r]
                devices = tuple(
                    names.get(h.get_attr("RTA_OIF") if h is r else h["oif"], "?")
                    for h in hops
                    if not (h["flags"] if h is not r else r["flags"])
                    & (RTNH_F_DEAD | RTNH_F_LINKDOWN)
                )
                if not devices:
                    continue
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                routes.append(
                    RouteView(f"{dst}/{r['dst_len']}", r.get_attr("RTA_PRIORITY") or 0, devices)
                )
    links = {
        names[i]: LinkView(up[i], frozenset(str(ipaddress.ip_interface(a)) for a in addresses[i]))
        for i in names
    }
    return NetworkView(links, tuple(routes))


def _ipvs_endpoint(text: str) -> str:
    """``C6336414:1F90`` or ``[2001:0db8::0014]:1F90`` -> ``198.51.100.20:8080``."""
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        addr = ipaddress.ip_address(host.strip("[]"))
    else:
        addr = ipaddress.ip_address(int(host, 16))
    return f"{addr}:{int(port, 16)}"


def parse_ipvs(text: str) -> dict[str, int]:
    """``/proc/net/ip_vs`` -> {"vip:port/proto": real servers with weight > 0}."""
    services: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] in ("TCP", "UDP", "SCTP") and len(words) >= 2:
            current = f"{_ipvs_endpoint(words[1])}/{words[0].lower()}"
            services[current] = 0
        elif words[0] == "->" and current and len(words) >= 4 and words[3].isdigit():
            services[current] += int(words[3]) > 0
    return services


def maintenance_state(path: str) -> tuple[bool, str]:
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return False, ""
    except OSError as exc:
        # Unreadable but present: be conservative, it is someone's maintenance.
        return True, f"maintenance file {path} present (unreadable: {exc.strerror})"
    note = f": {text.splitlines()[0][:120]}" if text else ""
    return True, f"maintenance file {path} present{note}"


class Sensors:
    """Reads everything one round needs, in parallel, within the timeout."""

    def __init__(
        self, cfg: AgentConfig, workers: int = 16, probes_per_round: int = PROBES_PER_ROUND
    ):
        self.cfg = cfg
        self.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="signal")
        self.probes = list(
            dict.fromkeys(
                p for v in cfg.vips for p in (*v.probes, *(t for pl in v.pools for t in pl.targets))
            )
        )
        self.rotation = ProbeRotation(self.probes, max(cfg.rise, cfg.fall), probes_per_round)
        self.xdp_interfaces = sorted(
            {
                v.dataplane.xdp_interface
                for v in cfg.vips
                if v.dataplane and v.dataplane.xdp_interface
            }
        )
        self.need_haproxy = any(v.haproxy for v in cfg.vips)
        self.need_ipvs = any(v.dataplane and v.dataplane.ipvs_services for v in cfg.vips)
        self.need_network = any(v.return_path for v in cfg.vips)

    def observe(self) -> Observation:
        cfg = self.cfg
        timeout = cfg.timeout
        jobs: dict[cf.Future, tuple[str, Any]] = {}

        def submit(kind: str, key: Any, fn: Callable, *args: Any) -> None:
            jobs[self.pool.submit(fn, *args)] = (kind, key)

        if self.need_haproxy:
            submit("haproxy", None, read_haproxy, cfg.haproxy_socket, timeout)
        for iface in self.xdp_interfaces:
            submit("xdp", iface, read_xdp, iface)
        if self.need_ipvs:
            submit("ipvs", None, lambda: parse_ipvs(Path(cfg.ipvs_table).read_text()))
        if self.need_network:
            submit("network", None, read_network)
        for probe in self.rotation.due():
            submit("probe", probe, run_probe, probe, timeout)
        obs = Observation()
        obs.maintenance, obs.maintenance_reason = maintenance_state(cfg.maintenance_file)
        done, late = cf.wait(jobs, timeout=timeout + 0.05)
        for fut in late:
            kind, key = jobs[fut]
            self._fail(obs, kind, key, f"no answer within {_ms(timeout)}")
        for fut in done:
            kind, key = jobs[fut]
            exc = fut.exception()
            if exc is not None:
                msg = str(exc) if isinstance(exc, HaproxyError) else f"{type(exc).__name__}: {exc}"
                self._fail(obs, kind, key, msg)
                continue
            value = fut.result()
            if kind == "haproxy":
                obs.haproxy, obs.haproxy_error = value, ""
            elif kind == "xdp":
                obs.xdp[key] = value
            elif kind == "ipvs":
                obs.ipvs, obs.ipvs_error = {canonical_service(k): n for k, n in value.items()}, ""
            elif kind == "network":
                obs.network, obs.network_error = value, ""
            else:
                obs.probes[key] = value
        obs.probes = self.rotation.results(obs.probes)
        return obs

    @staticmethod
    def _fail(obs: Observation, kind: str, key: Any, msg: str) -> None:
        if kind == "haproxy":
            obs.haproxy_error = msg
        elif kind == "xdp":
            obs.xdp[key] = None
            obs.xdp_errors[key] = msg
        elif kind == "ipvs":
            obs.ipvs_error = msg
        elif kind == "network":
            obs.network_error = msg
        else:
            obs.probes[key] = ProbeResult(False, msg)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProbeRotation:
    """Which probes run this round, and every probe's latest result (see the module)."""

    def __init__(self, probes: list[Probe], hot_rounds: int, per_round: int = PROBES_PER_ROUND):
        self.probes = probes
        self.hot_rounds = hot_rounds  # rounds a probe runs every round after a failure or change
        self.per_round = per_round
        self.last: dict[Probe, ProbeResult] = {}
        self.hot: dict[Probe, int] = {}  # probe -> rounds it still runs every round (a first
        # result counts as a change: a VIP rises on fresh results only)
        self._next = 0  # where the passing probes' turn goes on

    @property
    def rotation_rounds(self) -> int:
        """Rounds between two runs of a passing probe, with none failing (1: every round)."""
        return max(1, -(-len(self.probes) // self.per_round))

    def due(self) -> list[Probe]:
        """The probes to run this round."""
        if len(self.probes) <= self.per_round:
            return self.probes
        hot = list(self.hot)
        n = len(self.probes)
        turn = min(max(self.per_round - len(hot), 0), n - len(hot))
        picked: list[Probe] = []
        while len(picked) < turn:  # the others (passing, or not run yet), in turn
            p = self.probes[self._next]
            self._next = (self._next + 1) % n
            if p not in self.hot:
                picked.append(p)
        return hot + picked

    def results(self, fresh: dict[Probe, ProbeResult]) -> dict[Probe, ProbeResult]:
        """This round's results over the latest ones; note which probes run every round."""
        if len(self.probes) <= self.per_round:
            return fresh
        for p, result in fresh.items():
            old = self.last.get(p)
            if not result.ok or old is None or old.ok != result.ok:
                self.hot[p] = self.hot_rounds
            elif p in self.hot:
                self.hot[p] -= 1
                if self.hot[p] <= 0:
                    del self.hot[p]
            self.last[p] = result
        return dict(self.last)
