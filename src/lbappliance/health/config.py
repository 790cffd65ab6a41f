"""The agent's configuration (``health-agent.json``, rendered by ``render/agent.py``).

Loaded once at start. Every problem is collected and reported together, with its
JSON path, so a bad file gives one clear error and the agent announces nothing.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click

SIGNALS = ("haproxy", "dataplane", "probe", "return_path", "maintenance")
DEGRADED_ACTIONS = ("med", "prepend", "none")
PROBE_KINDS = ("http", "https", "tcp")


class ConfigError(Exception):
    """The configuration is unusable; ``errors`` lists every problem found."""

    def __init__(self, path: str, errors: list[str]):
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: " + "; ".join(errors))


@dataclass(frozen=True)
class Probe:
    """One end-to-end check: a TCP connect, or an HTTP(S) request with an expected status."""

    kind: Literal["http", "https", "tcp"]
    address: str
    port: int
    path: str = "/"
    host: str | None = None
    expect_status: int = 200

    def __str__(self) -> str:
        where = f"[{self.address}]" if ":" in self.address else self.address
        suffix = self.path if self.kind != "tcp" else ""
        return f"{self.kind}://{where}:{self.port}{suffix}"


@dataclass(frozen=True)
class PoolProbe:
    """An L4 service's backends: enough of them must pass their probe."""

    name: str
    targets: tuple[Probe, ...]
    min_up: int
    min_ratio: float


@dataclass(frozen=True)
class HaproxyGate:
    frontends: tuple[str, ...]
    backends: tuple[str, ...]
    min_servers_up: int
    min_servers_ratio: float


@dataclass(frozen=True)
class DataplaneGate:
    xdp_interface: str | None
    xdp_services: tuple[str, ...]
    ipvs_services: tuple[str, ...]  # "vip:port/proto"


@dataclass(frozen=True)
class Uplink:
    """An uplink carrying a BGP session, with the addresses (of the VIP's family) it needs."""

    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ReturnPath:
    """Can the node answer this VIP's clients? One of ``uplinks`` is up with its
    addresses, and the route toward each destination leaves through one of ``all_uplinks``
    (all of it: the VIP's address family only)."""

    uplinks: tuple[Uplink, ...]
    all_uplinks: tuple[str, ...]
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class VipConfig:
    prefix: str
    communities: tuple[str, ...]
    signals: tuple[str, ...]
    haproxy: HaproxyGate | None = None
    dataplane: DataplaneGate | None = None
    probes: tuple[Probe, ...] = ()
    pools: tuple[PoolProbe, ...] = ()
    return_path: ReturnPath | None = None


@dataclass(frozen=True)
class Degraded:
    action: Literal["med", "prepend", "none"] = "med"
    med: int = 100
    prepend: int = 3


@dataclass(frozen=True)
class Dampening:
    """RFC 2439-style flap dampening of a VIP's announcement.

    Each fall from announced to withdrawn adds ``penalty``; the penalty halves
    every ``half_life`` seconds. At ``suppress`` or more the VIP stays withdrawn
    until the penalty decays below ``reuse`` (never longer than ``max_suppress``).
    """

    penalty: float = 1000.0
    suppress: float = 2500.0
    reuse: float = 800.0
    half_life: float = 30.0
    max_suppress: float = 300.0


@dataclass(frozen=True)
class VrrpGroup:
    name: str
    interface: str
    vips: tuple[str, ...]


@dataclass(frozen=True)
class AgentConfig:
    node: str
    site: str
    local_asn: int
    interval: float
    fast_interval: float
    timeout: float
    rise: int
    fall: int
    degraded: Degraded
    maintenance_file: str
    maintenance_drain: float
    haproxy_socket: str
    state_file: str
    metrics_address: str
    metrics_port: int
    vips: tuple[VipConfig, ...]
    maintenance: bool = False  # the inventory's `nodes[].maintenance`
    dampening: Dampening = field(default_factory=Dampening)
    ipvs_table: str = "/proc/net/ip_vs"
    servers_file: str = ""  # HAProxy servers the maintenance command drained
    vrrp_demote_file: str = ""
    vrrp_demote_value: int = 254
    vrrp: tuple[VrrpGroup, ...] = ()


class _Reader:
    """Typed access to a JSON object that records errors instead of raising."""

    def __init__(self, errors: list[str]):
        self.errors = errors

    def get(
        self,
        obj: dict[str, Any],
        where: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        if not isinstance(obj, dict):
            self.errors.append(f"{where}: expected an object")
            return None if default is ... else default
        if key not in obj or (obj[key] is None and default is not ...):
            if default is ...:
                self.errors.append(f"{where}.{key}: missing")
                return None
            return default
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            self.errors.append(f"{where}.{key}: expected {names}, got {value!r}")
            return None if default is ... else default
        return value

    def check(self, cond: bool, message: str) -> None:
        if not cond:
            self.errors.append(message)


def canonical_service(spec: str) -> str:
    """``vip:port/proto`` with the address normalised (IPv6 may be bracketed)."""
    addr_port, _, proto = spec.partition("/")
    addr, _, port = addr_port.rpartition(":")
    return f"{ipaddress.ip_address(addr.strip('[]'))}:{int(port)}/{proto or 'tcp'}"


def _probe(r: _Reader, obj: Any, where: str) -> Probe | None:
    kind = r.get(obj, where, "kind", str)
    address = r.get(obj, where, "address", str)
    port = r.get(obj, where, "port", int)
    if None in (kind, address, port):
        return None
    if kind == "http" and obj.get("tls"):
        kind = "https"
    r.check(kind in PROBE_KINDS, f"{where}.kind: {kind!r} is not one of {', '.join(PROBE_KINDS)}")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        r.errors.append(f"{where}.address: {address!r} is not an IP address")
    r.check(0 < port < 65536, f"{where}.port: {port} is not a port")
    status = r.get(obj, where, "expect_status", int, 200)
    r.check(100 <= status <= 599, f"{where}.expect_status: {status} is not an HTTP status")
    return Probe(
        kind=kind,
        address=address,
        port=port,
        path=r.get(obj, where, "path", str, "/"),
        host=r.get(obj, where, "host", str, None),
        expect_status=status,
    )


def _return_path(r: _Reader, obj: Any, version: int) -> ReturnPath | None:
    """The node's ``return_path`` narrowed to one address family."""
    where = "$.return_path"
    if not isinstance(obj, dict):
        r.errors.append(f"{where}: needed by the 'return_path' signal")
        return None

    def family(text: str) -> int | None:
        try:
            return ipaddress.ip_interface(text).version
        except ValueError:
            r.errors.append(f"{where}: {text!r} is not an address or prefix")
            return None

    uplinks = []
    for i, u in enumerate(r.get(obj, where, "uplinks", list, [])):
        addresses = r.get(u, f"{where}.uplinks[{i}]", "addresses", list, [])
        uplinks.append(
            Uplink(
                name=r.get(u, f"{where}.uplinks[{i}]", "name", str, ""),
                addresses=tuple(a for a in addresses if family(str(a)) == version),
            )
        )
    destinations = [str(d) for d in r.get(obj, where, "destinations", list, [])]
    return ReturnPath(
        uplinks=tuple(u for u in uplinks if u.addresses),
        all_uplinks=tuple(r.get(obj, where, "all_uplinks", list, [u.name for u in uplinks])),
        destinations=tuple(d for d in destinations if family(d) == version),
    )


def _vip(r: _Reader, obj: Any, where: str, return_path: Any = None) -> VipConfig | None:
    prefix = r.get(obj, where, "prefix", str)
    if prefix is None:
        return None
    net = None
    try:
        net = ipaddress.ip_network(prefix)
        r.check(
            net.prefixlen == net.max_prefixlen,
            f"{where}.prefix: {prefix} is not a host route (/32 or /128)",
        )
    except ValueError:
        r.errors.append(f"{where}.prefix: {prefix!r} is not an IP prefix")
    communities = tuple(r.get(obj, where, "communities", list, []))
    for c in communities:
        parts = str(c).split(":")
        r.check(
            len(parts) in (2, 3) and all(p.isdigit() for p in parts),
            f"{where}.communities: {c!r} is not a community 'A:B' or large community 'A:B:C'",
        )
    signals = tuple(r.get(obj, where, "signals", list, []))
    for s in signals:
        r.check(s in SIGNALS, f"{where}.signals: {s!r} is not one of {', '.join(SIGNALS)}")
    haproxy = dataplane = None
    if "haproxy" in signals:
        h = r.get(obj, where, "haproxy", dict)
        if h is not None:
            hw = f"{where}.haproxy"
            haproxy = HaproxyGate(
                frontends=tuple(r.get(h, hw, "frontends", list, [])),
                backends=tuple(r.get(h, hw, "backends", list, [])),
                min_servers_up=r.get(h, hw, "min_servers_up", int, 1),
                min_servers_ratio=r.get(h, hw, "min_servers_ratio", float, 0.0),
            )
            r.check(
                bool(haproxy.frontends or haproxy.backends),
                f"{hw}: names no frontend and no backend to check",
            )
    if "dataplane" in signals:
        d = r.get(obj, where, "dataplane", dict)
        if d is not None:
            dw = f"{where}.dataplane"
            ipvs = []
            for spec in r.get(d, dw, "ipvs_services", list, []):
                try:
                    ipvs.append(canonical_service(str(spec)))
                except ValueError:
                    r.errors.append(f"{dw}.ipvs_services: {spec!r} is not 'address:port/proto'")
            dataplane = DataplaneGate(
                xdp_interface=r.get(d, dw, "xdp_interface", str, None),
                xdp_services=tuple(r.get(d, dw, "xdp_services", list, [])),
                ipvs_services=tuple(ipvs),
            )
            r.check(
                bool(dataplane.xdp_interface or dataplane.ipvs_services),
                f"{dw}: names neither an XDP interface nor an IPVS service",
            )
    probes: list[Probe] = []
    pools: list[PoolProbe] = []
    if "probe" in signals:
        for i, p in enumerate(r.get(obj, where, "probes", list, [])):
            probe = _probe(r, p, f"{where}.probes[{i}]")
            if probe:
                probes.append(probe)
        for i, p in enumerate(r.get(obj, where, "pools", list, [])):
            pw = f"{where}.pools[{i}]"
            targets = [
                _probe(r, t, f"{pw}.targets[{j}]")
                for j, t in enumerate(r.get(p, pw, "targets", list, []))
            ]
            pools.append(
                PoolProbe(
                    name=r.get(p, pw, "name", str, f"pool{i}"),
                    targets=tuple(t for t in targets if t),
                    min_up=r.get(p, pw, "min_up", int, 1),
                    min_ratio=r.get(p, pw, "min_ratio", float, 0.0),
                )
            )
        r.check(bool(probes or pools), f"{where}: signal 'probe' is on but no probe is configured")
    path = None
    if "return_path" in signals and net is not None:
        path = _return_path(r, return_path, net.version)
    return VipConfig(
        prefix=prefix,
        communities=communities,
        signals=signals,
        haproxy=haproxy,
        dataplane=dataplane,
        probes=tuple(probes),
        pools=tuple(pools),
        return_path=path,
    )


def parse(data: Any, path: str = "<config>") -> AgentConfig:
    """Validate a decoded configuration; raise ``ConfigError`` listing every problem."""
    errors: list[str] = []
    r = _Reader(errors)
    if not isinstance(data, dict):
        raise ConfigError(path, ["the file must hold a JSON object"])
    num = (int, float)
    interval = r.get(data, "$", "interval", num)
    fast = r.get(data, "$", "fast_interval", num)
    timeout = r.get(data, "$", "timeout", num)
    rise = r.get(data, "$", "rise", int)
    fall = r.get(data, "$", "fall", int)
    if None not in (interval, fast, timeout):
        r.check(timeout > 0, f"$.timeout: {timeout} must be positive")
        r.check(
            timeout < fast <= interval,
            f"$: need timeout < fast_interval <= interval, got {timeout} / {fast} / {interval}",
        )
    for name, value in (("rise", rise), ("fall", fall)):
        r.check(value is None or value >= 1, f"$.{name}: {value} must be at least 1")
    deg = r.get(data, "$", "degraded", dict, {})
    degraded = Degraded(
        action=r.get(deg, "$.degraded", "action", str, "med"),
        med=r.get(deg, "$.degraded", "med", int, 100),
        prepend=r.get(deg, "$.degraded", "prepend", int, 3),
    )
    r.check(
        degraded.action in DEGRADED_ACTIONS,
        f"$.degraded.action: {degraded.action!r} is not one of {', '.join(DEGRADED_ACTIONS)}",
    )
    metrics = r.get(data, "$", "metrics", dict, {})
    damp = r.get(data, "$", "dampening", dict, {})
    dampening = Dampening(
        **{k: float(r.get(damp, "$.dampening", k, num, v)) for k, v in vars(Dampening()).items()}
    )
    r.check(
        0 < dampening.reuse < dampening.suppress,
        "$.dampening: need 0 < reuse < suppress",
    )
    vips = []
    raw_vips = r.get(data, "$", "vips", list)
    for i, v in enumerate(raw_vips or []):
        vip = _vip(r, v, f"$.vips[{i}]", data.get("return_path"))
        if vip:
            vips.append(vip)
    r.check(raw_vips is None or bool(raw_vips), "$.vips: no VIP to announce")
    prefixes = [v.prefix for v in vips]
    r.check(len(prefixes) == len(set(prefixes)), "$.vips: a prefix appears twice")
    vrrp = [
        VrrpGroup(
            name=r.get(g, f"$.vrrp[{i}]", "name", str, f"vrrp{i}"),
            interface=r.get(g, f"$.vrrp[{i}]", "interface", str, ""),
            vips=tuple(r.get(g, f"$.vrrp[{i}]", "vips", list, [])),
        )
        for i, g in enumerate(r.get(data, "$", "vrrp", list, []))
    ]
    cfg = AgentConfig(
        node=r.get(data, "$", "node", str),
        site=r.get(data, "$", "site", str),
        local_asn=r.get(data, "$", "local_asn", int),
        interval=interval,
        fast_interval=fast,
        timeout=timeout,
        rise=rise,
        fall=fall,
        degraded=degraded,
        maintenance_file=r.get(data, "$", "maintenance_file", str),
        maintenance_drain=r.get(data, "$", "maintenance_drain", num),
        haproxy_socket=r.get(data, "$", "haproxy_socket", str, ""),
        state_file=r.get(data, "$", "state_file", str),
        metrics_address=r.get(metrics, "$.metrics", "address", str, "127.0.0.1"),
        metrics_port=r.get(metrics, "$.metrics", "port", int, 0),
        vips=tuple(vips),
        maintenance=r.get(data, "$", "maintenance", bool, False),
        dampening=dampening,
        ipvs_table=r.get(data, "$", "ipvs_table", str, "/proc/net/ip_vs"),
        servers_file=r.get(data, "$", "servers_file", str, ""),
        vrrp_demote_file=r.get(data, "$", "vrrp_demote_file", str, ""),
        vrrp_demote_value=r.get(data, "$", "vrrp_demote_value", int, 254),
        vrrp=tuple(vrrp),
    )
    if any(v.haproxy for v in cfg.vips):
        r.check(bool(cfg.haproxy_socket), "$.haproxy_socket: needed by the 'haproxy' signal")
    if errors:
        raise ConfigError(path, errors)
    return cfg


def load(path: str | Path) -> AgentConfig:
    """Read and validate the configuration file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(path), [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
        ) from None
    return parse(data, str(path))


def config_option() -> Any:
    """``--config``: the agent's configuration (the agent and the node helper)."""
    return click.option(
        "--config", "config_path", required=True, help="health-agent.json rendered for this node"
    )
