"""The per-node data-plane spec (/etc/lbappliance/dataplane.json).

Rendered by the site renderer; read by ``lbappliance dataplane apply``. Shape::

    {"node": "lb1", "interface": "eth1", "xdp_mode": "native" | "generic",
     "table_size": 65537, "flow_table_size": 1048576,
     "udp_idle_timeout": 30, "previous_table_window": 60,
     "tunnel_source_v4": "10.10.0.11" | null, "tunnel_source_v6": null,
     "services": [{"name": "dns", "vip": "198.51.100.20", "port": 53,
                   "protocol": "udp" | "tcp", "forwarding": "ipip" | "l2dsr",
                   "backends": [{"address": "10.30.0.21", "weight": 100,
                                 "mac": null, "mtu": 1500}]}]}

Every key is required (``mac`` may be null) and unknown keys are errors, so a
renderer/loader mismatch shows up at once. ``mac``: the backend's MAC for
``l2dsr`` (required); for ``ipip`` an optional static next-hop MAC that skips
neighbour resolution. Weight 0 leaves a backend out of the table: new flows
no longer reach it, flows with an entry keep it (draining) until it leaves
the spec. ``mtu``: the path MTU toward the backend (``ipip``: a packet that
no longer fits once encapsulated is answered with ICMP "too big").
``flow_table_size``: flow-table entries (IPv4 and IPv6 each), shared out over
the CPUs; ``udp_idle_timeout`` (s): a UDP flow idle that long is re-picked;
``previous_table_window`` (s): after a table change, a TCP packet without SYN
of a flow this node has no entry for goes by the previous table (0: never).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbappliance.dataplane import maglev

MAX_SERVICES = 1024  # bpf/lb_maps.h LB_MAX_SERVICES
MAX_BACKENDS = 4096  # bpf/lb_maps.h LB_MAX_BACKENDS
MAX_WEIGHT = 65535
MIN_MTU, MAX_MTU = 1280, 65535  # the IPv6 minimum; struct backend.mtu is 16 bits
MIN_FLOWS, MAX_FLOWS = 1024, 1 << 27

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


class SpecError(ValueError):
    """The spec is malformed; the message names the offending field."""


@dataclass(frozen=True)
class Backend:
    address: str  # canonical (compressed) form
    weight: int
    mac: str | None  # lower case, colon separated
    mtu: int  # path MTU toward the backend

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class Service:
    name: str
    vip: str
    port: int
    protocol: str  # "tcp" | "udp"
    forwarding: str  # "ipip" | "l2dsr"
    backends: tuple[Backend, ...]

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.vip).version

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.vip, self.port, self.protocol)

    def weights(self) -> dict[str, int]:
        return {b.address: b.weight for b in self.backends}


@dataclass(frozen=True)
class DataplaneSpec:
    node: str
    interface: str
    xdp_mode: str  # "native" | "generic"
    table_size: int
    flow_table_size: int
    udp_idle_timeout: float  # seconds
    previous_table_window: float  # seconds
    tunnel_source_v4: str | None
    tunnel_source_v6: str | None
    services: tuple[Service, ...]

    def service_for(self, vip: str, port: int, protocol: str) -> Service | None:
        for s in self.services:
            if s.key == (vip, port, protocol):
                return s
        return None


def load(path: str | Path) -> DataplaneSpec:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise SpecError(f"{p}: no such file") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{p}: not JSON: {e}") from None
    return parse(raw)


def parse(raw: Any) -> DataplaneSpec:
    top = _obj(
        raw,
        "spec",
        {
            "node",
            "interface",
            "xdp_mode",
            "table_size",
            "flow_table_size",
            "udp_idle_timeout",
            "previous_table_window",
            "tunnel_source_v4",
            "tunnel_source_v6",
            "services",
        },
    )
    interface = _str(top["interface"], "interface")
    if not _IFNAME.match(interface):
        raise SpecError(f"interface: {interface!r} is not an interface name")
    xdp_mode = _choice(top["xdp_mode"], "xdp_mode", ("native", "generic"))
    table_size = _int(top["table_size"], "table_size", 3, 1 << 24)
    if not maglev.is_prime(table_size):
        raise SpecError(f"table_size: {table_size} is not prime (Maglev needs a prime)")
    src4 = _addr_or_none(top["tunnel_source_v4"], "tunnel_source_v4", 4)
    src6 = _addr_or_none(top["tunnel_source_v6"], "tunnel_source_v6", 6)
    if not isinstance(top["services"], list):
        raise SpecError("services: expected a list")
    if len(top["services"]) > MAX_SERVICES:
        raise SpecError(f"services: {len(top['services'])} > {MAX_SERVICES} (LB_MAX_SERVICES)")
    services = tuple(
        _service(s, f"services[{i}]", table_size, src4, src6) for i, s in enumerate(top["services"])
    )
    seen: dict[tuple[str, int, str], str] = {}
    for s in services:
        if s.key in seen:
            raise SpecError(
                f"services: {s.name!r} and {seen[s.key]!r} share {s.vip} {s.port}/{s.protocol}"
            )
        seen[s.key] = s.name
    distinct = {(b.address, b.mac, s.forwarding) for s in services for b in s.backends}
    if len(distinct) > MAX_BACKENDS:
        raise SpecError(f"services: {len(distinct)} distinct backends > {MAX_BACKENDS}")
    return DataplaneSpec(
        node=_str(top["node"], "node"),
        interface=interface,
        xdp_mode=xdp_mode,
        table_size=table_size,
        flow_table_size=_int(top["flow_table_size"], "flow_table_size", MIN_FLOWS, MAX_FLOWS),
        udp_idle_timeout=_seconds(top["udp_idle_timeout"], "udp_idle_timeout", 1, 86400),
        previous_table_window=_seconds(
            top["previous_table_window"], "previous_table_window", 0, 86400
        ),
        tunnel_source_v4=src4,
        tunnel_source_v6=src6,
        services=services,
    )


def _service(raw: Any, where: str, table_size: int, src4: str | None, src6: str | None) -> Service:
    d = _obj(raw, where, {"name", "vip", "port", "protocol", "forwarding", "backends"})
    vip = _addr(d["vip"], f"{where}.vip")
    forwarding = _choice(d["forwarding"], f"{where}.forwarding", ("ipip", "l2dsr"))
    if not isinstance(d["backends"], list):
        raise SpecError(f"{where}.backends: expected a list")
    backends = tuple(
        _backend(b, f"{where}.backends[{i}]", forwarding, src4, src6)
        for i, b in enumerate(d["backends"])
    )
    seen: set[str] = set()
    dup = {b.address for b in backends if b.address in seen or seen.add(b.address)}
    if dup:
        raise SpecError(f"{where}.backends: duplicate address {sorted(dup)[0]}")
    if len(backends) > table_size:
        raise SpecError(f"{where}.backends: {len(backends)} do not fit {table_size} slots")
    return Service(
        name=_str(d["name"], f"{where}.name"),
        vip=vip,
        port=_int(d["port"], f"{where}.port", 1, 65535),
        protocol=_choice(d["protocol"], f"{where}.protocol", ("tcp", "udp")),
        forwarding=forwarding,
        backends=backends,
    )


def _backend(raw: Any, where: str, forwarding: str, src4: str | None, src6: str | None) -> Backend:
    d = _obj(raw, where, {"address", "weight", "mac", "mtu"})
    address = _addr(d["address"], f"{where}.address")
    mac = d["mac"]
    if mac is not None:
        if not isinstance(mac, str) or not _MAC.match(mac.lower()):
            raise SpecError(f"{where}.mac: {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        mac = mac.lower()
    elif forwarding == "l2dsr":
        raise SpecError(f"{where}.mac: required for l2dsr forwarding")
    if forwarding == "ipip":
        family = _ip(address)[1]
        if family == 4 and src4 is None:
            raise SpecError(f"{where}.address: IPv4 backend needs tunnel_source_v4")
        if family == 6 and src6 is None:
            raise SpecError(f"{where}.address: IPv6 backend needs tunnel_source_v6")
    return Backend(
        address=address,
        weight=_int(d["weight"], f"{where}.weight", 0, MAX_WEIGHT),
        mac=mac,
        mtu=_int(d["mtu"], f"{where}.mtu", MIN_MTU, MAX_MTU),
    )


def _obj(raw: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected an object")
    missing = keys - raw.keys()
    if missing:
        raise SpecError(f"{where}: missing {', '.join(sorted(missing))}")
    extra = raw.keys() - keys
    if extra:
        raise SpecError(f"{where}: unknown {', '.join(sorted(extra))}")
    return raw


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{where}: expected a non-empty string")
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SpecError(f"{where}: expected an integer in {lo}..{hi}, got {v!r}")
    return v


def _seconds(v: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise SpecError(f"{where}: expected seconds in {lo}..{hi}, got {v!r}")
    return float(v)


def _choice(v: Any, where: str, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise SpecError(f"{where}: expected one of {', '.join(choices)}, got {v!r}")
    return v


@functools.lru_cache(maxsize=1 << 16)
def _ip(text: str) -> tuple[str, int]:
    """(compressed form, version): a node's spec names each backend once per
    service that uses it, tens of thousands of times at 1,000 services."""
    ip = ipaddress.ip_address(text)
    return ip.compressed, ip.version


def _addr(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise SpecError(f"{where}: expected an IP address string")
    try:
        return _ip(v)[0]
    except ValueError:
        raise SpecError(f"{where}: {v!r} is not an IP address") from None


def _addr_or_none(v: Any, where: str, family: int) -> str | None:
    if v is None:
        return None
    a = _addr(v, where)
    if ipaddress.ip_address(a).version != family:
        raise SpecError(f"{where}: {a} is not an IPv{family} address")
    return a
