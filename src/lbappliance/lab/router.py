"""The lab router: every rendered router config in one BIRD, and its FIB read back.

``render`` writes one router config per BGP peer (``routers/<peer>/bird.conf``).
The lab has a single router host holding every peer address (the lab site: an
IPv4 and an IPv6 one), and it must run a single BIRD: two BIRDs on one host
both bind the BFD port (UDP 3784) and the kernel hands each packet to only one
of them, so the other's sessions never come up.

The combined config is the first peer's config whole, then from each other
peer's config what it adds: its kernel protocol and import filter (unless one
of that name is already there) and its BGP sessions, renamed
``<session>_<peer>``; those use the first config's BFD protocol. Anything
else in a later config (its router id, device and BFD protocols) is dropped.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable

from lbappliance.inventory import Site

_HEAD = re.compile(r"\s*(?:(protocol)\s+(\w+)(?:\s+(\w+))?|(filter)\s+(\w+)|(router)\s+id\b)")


def _statements(text: str) -> list[str]:
    """Top-level statements of a BIRD config, comments removed."""
    out: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = comment = False
    for ch in text:
        if comment:
            comment = ch != "\n"
            if comment:
                continue
        elif ch == "#" and not quoted:
            comment = True
            continue
        current.append(ch)
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append("".join(current).strip())
                current = []
        elif ch == ";" and depth == 0:
            out.append("".join(current).strip())
            current = []
    if "".join(current).strip() or depth:
        raise ValueError(f"unterminated BIRD statement: {''.join(current).strip()[:60]!r}")
    return out


def _name(statement: str) -> tuple[str, str | None]:
    """(kind, name) of a top-level statement: ("protocol bgp", "lb1"), ("router id", None)."""
    m = _HEAD.match(statement)
    if not m:
        raise ValueError(f"unexpected BIRD statement: {statement[:60]!r}")
    if m[1]:
        return f"protocol {m[2]}", m[3]
    if m[4]:
        return "filter", m[5]
    return "router id", None


def session_name(session: str, peer: str) -> str:
    """The combined config's name for a later peer's BGP session."""
    return f"{session}_{re.sub(r'[^A-Za-z0-9_]', '_', peer)}"


def combine(configs: list[tuple[str, str]]) -> str:
    """One BIRD config from ``(peer name, rendered bird.conf)`` pairs, first peer first."""
    (_, first), *rest = configs
    parts = [first.rstrip()]
    defined = {_name(s) for s in _statements(first)}
    for peer, text in rest:
        parts.append(f"\n# From the rendered config of {peer}:")
        for statement in _statements(text):
            kind, name = _name(statement)
            if kind == "protocol bgp" and name:
                renamed = session_name(name, peer)
                statement = re.sub(rf"^protocol\s+bgp\s+{name}\b", f"protocol bgp {renamed}",
                                   statement)  # fmt: skip
                name = renamed
            elif kind not in ("protocol kernel", "filter") or (kind, name) in defined:
                continue
            defined.add((kind, name))
            lines = statement.splitlines()  # without the lines that held only comments
            parts.append("\n" + "\n".join(line.rstrip() for line in lines if line.strip()))
    return "\n".join(parts) + "\n"


def router_bird_conf(site: Site, rendered: Callable[[str], str]) -> str:
    """The lab router's BIRD config; ``rendered(path)`` reads a file of the site's render."""
    peers = site.model.bgp.peers
    return combine([(p.name, rendered(f"routers/{p.name}/bird.conf")) for p in peers])


def router_sessions(site: Site, node: str) -> list[str]:
    """BIRD's names for ``node``'s sessions in the combined config (one per peer)."""
    base = node.replace("-", "_")  # as the router renderer names them
    peers = site.model.bgp.peers
    return [base] + [session_name(base, p.name) for p in peers[1:]]


def route_show(prefix: str) -> list[str]:
    """``ip`` arguments listing the routes to ``prefix`` (of its address family) as JSON."""
    return ["ip", "-j", f"-{ipaddress.ip_network(prefix).version}", "route", "show", prefix]


def nexthops(routes: str, prefix: str) -> list[str]:
    """Sorted gateways of ``prefix`` in ``route_show`` output (ECMP gives several)."""
    hops = []
    for route in json.loads(routes or "[]"):
        if route.get("dst") not in (prefix, prefix.split("/")[0]):
            continue
        hops += [h["gateway"] for h in route.get("nexthops", [])]
        if "gateway" in route:
            hops.append(route["gateway"])
    return sorted(hops)
