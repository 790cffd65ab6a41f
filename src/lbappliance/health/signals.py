"""From one round's observations to a verdict per VIP (pure: no I/O here).

The sensors (``sensors.py``) fill an ``Observation`` once per round; each VIP
is then judged on the signals its configuration names. A signal is OK,
DEGRADED (still serving, less preferred) or FAIL; the VIP's health is the worst
of them. Maintenance is not a health problem: it is carried beside it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum

from lbappliance.health.config import AgentConfig, Probe, VipConfig


class Health(IntEnum):
    OK = 0
    DEGRADED = 1
    FAIL = 2


@dataclass(frozen=True)
class Check:
    signal: str
    health: Health
    reason: str


@dataclass(frozen=True)
class Servers:
    up: int
    total: int


@dataclass(frozen=True)
class HaproxyView:
    """What ``show stat`` says: frontend status and sessions, servers UP per backend."""

    frontends: dict[str, str]  # name -> status ("OPEN", "STOP", ...)
    sessions: dict[str, int]  # frontend name -> current sessions (scur)
    backends: dict[str, Servers]


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "200 in 3 ms", "timeout after 150 ms", "connection refused"


@dataclass(frozen=True)
class LinkView:
    up: bool  # administratively up with carrier
    addresses: frozenset[str]  # usable ones ("10.10.0.11/24"; not tentative, not DAD-failed)


@dataclass(frozen=True)
class RouteView:
    destination: str  # "0.0.0.0/0", "10.40.0.0/24"
    metric: int
    devices: tuple[str, ...]  # every next hop's device (one unless ECMP)


@dataclass(frozen=True)
class NetworkView:
    """The node's links and main routing table, as the kernel has them."""

    links: dict[str, LinkView]
    routes: tuple[RouteView, ...]

    def route_toward(self, destination: str) -> RouteView | None:
        """The route the kernel picks for ``destination``: the longest prefix covering it,
        then the lowest metric, over next hops on links that are up."""
        dst = ipaddress.ip_network(destination)
        best: tuple[int, int, RouteView] | None = None
        for route in self.routes:
            net = ipaddress.ip_network(route.destination)
            if net.version != dst.version or not dst.subnet_of(net):  # type: ignore[arg-type]
                continue
            if not any(self.links.get(d, _DOWN).up for d in route.devices):
                continue
            key = (-net.prefixlen, route.metric, route)
            if best is None or key[:2] < best[:2]:
                best = key
        return best[2] if best else None


_DOWN = LinkView(False, frozenset())


@dataclass
class Observation:
    haproxy: HaproxyView | None = None
    haproxy_error: str = "not read"
    xdp: dict[str, str | None] = field(default_factory=dict)  # interface -> program or None
    xdp_errors: dict[str, str] = field(default_factory=dict)
    ipvs: dict[str, int] | None = None  # "vip:port/proto" -> real servers with weight > 0
    ipvs_error: str = "not read"
    probes: dict[Probe, ProbeResult] = field(default_factory=dict)
    maintenance: bool = False
    maintenance_reason: str = ""
    network: NetworkView | None = None
    network_error: str = "not read"


@dataclass(frozen=True)
class Verdict:
    health: Health
    maintenance: bool
    reason: str
    checks: tuple[Check, ...] = ()
    maintenance_reason: str = ""


def _haproxy(vip: VipConfig, obs: Observation) -> Check:
    gate = vip.haproxy
    assert gate is not None
    view = obs.haproxy
    if view is None:
        return Check("haproxy", Health.FAIL, f"haproxy: {obs.haproxy_error}")
    problems: list[tuple[Health, str]] = []
    summary = []
    for fe in gate.frontends:
        status = view.frontends.get(fe)
        if status != "OPEN":
            problems.append((Health.FAIL, f"frontend {fe} is {status or 'missing'}"))
    for be in gate.backends:
        servers = view.backends.get(be)
        if servers is None:
            problems.append((Health.FAIL, f"backend {be} is missing"))
            continue
        counts = f"{servers.up}/{servers.total} servers UP"
        summary.append(f"{be} {counts}")
        if servers.up < gate.min_servers_up:
            problems.append((Health.FAIL, f"backend {be}: {counts} (need {gate.min_servers_up})"))
        elif servers.total and servers.up / servers.total < gate.min_servers_ratio:
            problems.append(
                (
                    Health.DEGRADED,
                    f"backend {be}: {counts} (below {gate.min_servers_ratio:.0%})",
                )
            )
    if not problems:
        return Check("haproxy", Health.OK, "haproxy: " + (", ".join(summary) or "frontends open"))
    worst = max(h for h, _ in problems)
    return Check("haproxy", worst, "haproxy: " + "; ".join(r for _, r in problems))


def _dataplane(vip: VipConfig, obs: Observation) -> Check:
    gate = vip.dataplane
    assert gate is not None
    problems, summary = [], []
    if gate.xdp_interface:
        prog = obs.xdp.get(gate.xdp_interface)
        if prog is None:
            error = obs.xdp_errors.get(gate.xdp_interface)
            problems.append(
                f"no XDP program attached to {gate.xdp_interface}"
                + (f" ({error})" if error else "")
            )
        else:
            serving = f" for {', '.join(gate.xdp_services)}" if gate.xdp_services else ""
            summary.append(f"XDP {prog} on {gate.xdp_interface}{serving}")
    for svc in gate.ipvs_services:
        if obs.ipvs is None:
            problems.append(f"IPVS table unreadable ({obs.ipvs_error})")
            break
        reals = obs.ipvs.get(svc)
        if reals is None:
            problems.append(f"IPVS service {svc} missing")
        elif reals == 0:
            problems.append(f"IPVS service {svc} has no real server with weight > 0")
        else:
            summary.append(f"IPVS {svc} ({reals} real servers)")
    if problems:
        return Check("dataplane", Health.FAIL, "dataplane: " + "; ".join(problems))
    return Check("dataplane", Health.OK, "dataplane: " + ", ".join(summary))


def _probe(vip: VipConfig, obs: Observation) -> Check:
    problems: list[tuple[Health, str]] = []
    summary = []
    for probe in vip.probes:
        result = obs.probes.get(probe)
        if result is None or not result.ok:
            detail = result.detail if result else "not run"
            problems.append((Health.FAIL, f"{probe} {detail}"))
        else:
            summary.append(f"{probe} {result.detail}")
    for pool in vip.pools:
        results = [obs.probes.get(t) for t in pool.targets]
        up = sum(1 for r in results if r and r.ok)
        total = len(pool.targets)
        counts = f"pool {pool.name} {up}/{total} backends answer"
        if up < pool.min_up:
            failed = [
                f"{t} {r.detail if r else 'not run'}"
                for t, r in zip(pool.targets, results, strict=True)
                if not (r and r.ok)
            ]
            problems.append((Health.FAIL, f"{counts} (need {pool.min_up}): " + ", ".join(failed)))
        elif total and up / total < pool.min_ratio:
            problems.append((Health.DEGRADED, f"{counts} (below {pool.min_ratio:.0%})"))
        else:
            summary.append(counts)
    if not problems:
        return Check("probe", Health.OK, "probe: " + ", ".join(summary))
    worst = max(h for h, _ in problems)
    return Check("probe", worst, "probe: " + "; ".join(r for _, r in problems))


def _return_path(vip: VipConfig, obs: Observation) -> Check:
    """Can the node answer this VIP's clients (the probes run on the node itself, so they
    cannot see a broken way back)?"""
    path = vip.return_path
    assert path is not None
    view = obs.network
    if view is None:
        return Check(
            "return_path", Health.FAIL, f"return_path: network unreadable ({obs.network_error})"
        )
    problems, summary = [], []
    if not path.uplinks:
        problems.append("no uplink has an address of this VIP's family")
    carrying = []
    for uplink in path.uplinks:
        link = view.links.get(uplink.name)
        if link is None:
            problems.append(f"uplink {uplink.name} is missing")
            continue
        lost = [a for a in uplink.addresses if a not in link.addresses]
        if not link.up:
            problems.append(f"uplink {uplink.name} is down")
        elif lost:
            problems.append(f"uplink {uplink.name} lost {', '.join(lost)}")
        else:
            carrying.append(uplink.name)
    if carrying:
        problems = []  # one uplink carrying BGP with its addresses is enough
        summary.append(
            f"{', '.join(carrying)} up with {'its' if len(carrying) == 1 else 'their'} addresses"
        )
    for destination in path.destinations:
        route = view.route_toward(destination)
        if route is None:
            problems.append(f"no route toward {destination}")
        elif not set(route.devices) <= set(path.all_uplinks):
            problems.append(
                f"route toward {destination} leaves through {', '.join(route.devices)}, "
                "not an uplink"
            )
        else:
            summary.append(f"{destination} via {', '.join(route.devices)}")
    if problems:
        return Check("return_path", Health.FAIL, "return_path: " + "; ".join(problems))
    return Check("return_path", Health.OK, "return_path: " + ", ".join(summary))


CHECKS = {
    "haproxy": _haproxy,
    "dataplane": _dataplane,
    "probe": _probe,
    "return_path": _return_path,
}


def evaluate(cfg: AgentConfig, vip: VipConfig, obs: Observation) -> Verdict:
    """Judge one VIP on the signals it names."""
    checks = tuple(CHECKS[s](vip, obs) for s in vip.signals if s in CHECKS)
    health = max((c.health for c in checks), default=Health.OK)
    maintenance = "maintenance" in vip.signals and (obs.maintenance or cfg.maintenance)
    why = (
        obs.maintenance_reason if obs.maintenance else "the inventory puts the node in maintenance"
    )
    if health is Health.OK:
        reason = "; ".join(c.reason for c in checks) or "no health signal applies"
    else:
        reason = "; ".join(c.reason for c in checks if c.health is not Health.OK)
    return Verdict(health, maintenance, reason, checks, why if maintenance else "")
