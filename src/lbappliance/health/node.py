"""Node-side helper behind ``lbappliance status`` and ``lbappliance maintenance``.

Run on an LB node (over Ansible) with the node's agent configuration::

    python -m lbappliance.health.node --config /etc/lbappliance/health-agent.json report
    ... maintenance-on --note "kernel upgrade"   # maintenance file + VRRP demote
    ... servers-maint                            # drained: HAProxy servers to MAINT
    ... maintenance-off                          # servers READY (slow start), files cleared
    ... imbalance --sample 5                     # report + load imbalance

Every command prints one JSON report on stdout: the agent's state file (VIPs,
BGP sessions as ExaBGP reported them), HAProxy frontends/backends, VRRP state
(a group is MASTER here when its VIPs are on the interface), the IPVS virtual
servers of ``ipvs`` L4 services with their live real servers, and maintenance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .agent import write_json_atomic
from .config import AgentConfig, ConfigError, load
from .haproxy import HaproxyError, command, parse_stat, view
from .sensors import _ipvs_endpoint, maintenance_state

TIMEOUT = 2.0
STALE_AFTER = 5.0  # the agent rewrites its state file at least every second


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def agent_report(cfg: AgentConfig) -> dict[str, Any]:
    try:
        state = json.loads(Path(cfg.state_file).read_text())
    except FileNotFoundError:
        return {"running": False, "error": f"no state file {cfg.state_file} (agent never ran?)"}
    except (OSError, ValueError) as exc:
        return {"running": False, "error": f"unreadable state file {cfg.state_file}: {exc}"}
    age = time.time() - float(state.get("updated", 0))
    running = _pid_alive(state.get("pid")) and age < STALE_AFTER
    return {**state, "age": round(age, 1), "running": running}


def gated_backends(cfg: AgentConfig) -> list[str]:
    return list(dict.fromkeys(b for v in cfg.vips if v.haproxy for b in v.haproxy.backends))


def gated_frontends(cfg: AgentConfig) -> list[str]:
    return list(dict.fromkeys(f for v in cfg.vips if v.haproxy for f in v.haproxy.frontends))


def haproxy_report(cfg: AgentConfig) -> dict[str, Any]:
    if not cfg.haproxy_socket:
        return {"error": "no HAProxy on this node"}
    try:
        rows = parse_stat(command(cfg.haproxy_socket, "show stat", TIMEOUT))
        sess = command(cfg.haproxy_socket, "show sess", TIMEOUT)
    except HaproxyError as exc:
        return {"error": str(exc)}
    v = view(rows)
    servers = {
        be: [
            {"name": r.name, "status": r.status, "weight": r.weight}
            for r in rows
            if r.proxy == be and r.is_server
        ]
        for be in gated_backends(cfg)
    }
    gated = gated_frontends(cfg)
    return {
        "frontends": {
            fe: {"status": v.frontends[fe], "sessions": v.sessions.get(fe, 0)} for fe in v.frontends
        },
        "backends": {
            be: {"up": s.up, "total": s.total, "servers": servers.get(be, [])}
            for be, s in v.backends.items()
            if be in servers
        },
        # In-flight client sessions on the frontends the VIPs use.
        "sessions": sum(v.sessions.get(fe, 0) for fe in gated),
        # Every stream HAProxy holds, minus this CLI connection itself.
        "streams": max(0, sum(1 for line in sess.splitlines() if line.startswith("0x")) - 1),
    }


def vrrp_report(cfg: AgentConfig) -> list[dict[str, Any]]:
    if not cfg.vrrp:
        return []
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        held = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()}
    demote = ""
    with contextlib.suppress(OSError):
        demote = Path(cfg.vrrp_demote_file).read_text().strip()
    return [
        {
            "name": g.name,
            "interface": g.interface,
            "state": "MASTER" if any(v in held for v in g.vips) else "BACKUP",
            "vips": list(g.vips),
            "demoted": demote not in ("", "0"),
        }
        for g in cfg.vrrp
    ]


def parse_ipvs_servers(text: str) -> dict[str, dict[str, Any]]:
    """``/proc/net/ip_vs`` -> {"vip:port/proto": {scheduler, real_servers: [...]}}, each
    real server {address, forward, weight, active, inactive}."""
    services: dict[str, dict[str, Any]] = {}
    current: list[dict[str, Any]] | None = None
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in ("TCP", "UDP", "SCTP"):
            current = []
            key = f"{_ipvs_endpoint(words[1])}/{words[0].lower()}"
            services[key] = {"scheduler": words[2], "real_servers": current}
        elif current is not None and len(words) >= 6 and words[0] == "->":
            address, forward, weight, active, inactive = words[1:6]
            current.append(
                {
                    "address": _ipvs_endpoint(address),
                    "forward": forward,
                    "weight": int(weight),
                    "active": int(active),
                    "inactive": int(inactive),
                }
            )
    return services


def ipvs_report(cfg: AgentConfig) -> dict[str, Any]:
    """The IPVS virtual servers this node's L4 services use (keepalived keeps them: a
    real server failing its check leaves the table). Empty without IPVS services."""
    wanted = [s for v in cfg.vips if v.dataplane for s in v.dataplane.ipvs_services]
    if not wanted:
        return {}
    try:
        table = parse_ipvs_servers(Path(cfg.ipvs_table).read_text())
    except OSError as exc:
        return {"error": f"cannot read {cfg.ipvs_table}: {exc.strerror or exc}"}
    missing = {"scheduler": None, "real_servers": [], "missing": True}
    return {"services": {s: table.get(s, missing) for s in dict.fromkeys(wanted)}}


def report(cfg: AgentConfig) -> dict[str, Any]:
    on, note = maintenance_state(cfg.maintenance_file)
    return {
        "node": cfg.node,
        "site": cfg.site,
        "time": round(time.time(), 3),
        "maintenance": {"file": on, "note": note, "inventory": cfg.maintenance},
        "agent": agent_report(cfg),
        "haproxy": haproxy_report(cfg),
        "vrrp": vrrp_report(cfg),
        "ipvs": ipvs_report(cfg),
    }


def maintenance_on(cfg: AgentConfig, note: str) -> None:
    path = Path(cfg.maintenance_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(f"{note or 'maintenance'} (since {stamp})\n")
    if cfg.vrrp and cfg.vrrp_demote_file:
        demote = Path(cfg.vrrp_demote_file)
        demote.parent.mkdir(parents=True, exist_ok=True)
        demote.write_text(f"{cfg.vrrp_demote_value}\n")


def _set_state(cfg: AgentConfig, backend: str, server: str, state: str) -> None:
    answer = command(cfg.haproxy_socket, f"set server {backend}/{server} state {state}", TIMEOUT)
    if answer.strip():
        raise HaproxyError(f"set server {backend}/{server} state {state}: {answer.strip()}")


def servers_maint(cfg: AgentConfig) -> list[str]:
    """Put the VIPs' HAProxy servers in MAINT; remember which, to restore them later.

    Only once the node no longer receives traffic. MAINT -> READY is what starts
    HAProxy's slow start (DRAIN -> READY does not), hence MAINT here.
    """
    rows = parse_stat(command(cfg.haproxy_socket, "show stat", TIMEOUT))
    path = Path(cfg.servers_file)
    done: list[str] = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        done = json.loads(path.read_text())["servers"]
    targets = [
        (be, r.name)
        for be in gated_backends(cfg)
        for r in rows
        if r.proxy == be and r.is_server and not r.status.startswith("MAINT")
    ]
    # Recorded before they change, so a failure half-way still restores them all.
    done += [f"{be}/{name}" for be, name in targets if f"{be}/{name}" not in done]
    write_json_atomic(str(path), {"servers": done})
    for be, name in targets:
        _set_state(cfg, be, name, "maint")
    return done


def servers_ready(cfg: AgentConfig) -> list[str]:
    """Return the servers ``servers_maint`` took out to READY (HAProxy slow start)."""
    path = Path(cfg.servers_file)
    try:
        names = json.loads(path.read_text())["servers"]
    except FileNotFoundError:
        return []
    for key in names:
        backend, server = key.split("/", 1)
        _set_state(cfg, backend, server, "ready")
    path.unlink()
    return names


def maintenance_off(cfg: AgentConfig) -> list[str]:
    restored = servers_ready(cfg) if cfg.haproxy_socket and cfg.servers_file else []
    with contextlib.suppress(FileNotFoundError):
        Path(cfg.maintenance_file).unlink()
    if cfg.vrrp and cfg.vrrp_demote_file and Path(cfg.vrrp_demote_file).exists():
        Path(cfg.vrrp_demote_file).write_text("0\n")
    return restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lbappliance.health.node")
    parser.add_argument("--config", required=True)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("report")
    on = sub.add_parser("maintenance-on")
    on.add_argument("--note", default="")
    sub.add_parser("servers-maint")
    sub.add_parser("maintenance-off")
    imbalance = sub.add_parser("imbalance")
    imbalance.add_argument("--sample", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(json.dumps({"error": f"configuration error in {exc.path}: {'; '.join(exc.errors)}"}))
        return 2
    extra: dict[str, Any] = {}
    try:
        if args.action == "maintenance-on":
            maintenance_on(cfg, args.note)
        elif args.action == "servers-maint":
            extra["servers_maint"] = servers_maint(cfg)
        elif args.action == "maintenance-off":
            extra["servers_ready"] = maintenance_off(cfg)
        elif args.action == "imbalance":
            from ..imbalance import on_node
            from ..render.weights import TARGET as WEIGHTS

            weights = Path(args.config).with_name(Path(WEIGHTS).name)
            extra["imbalance"] = on_node(weights, cfg.haproxy_socket, args.sample)
    except (HaproxyError, OSError) as exc:
        print(json.dumps({**report(cfg), "error": f"{args.action}: {exc}"}))
        return 1
    print(json.dumps({**report(cfg), **extra}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
