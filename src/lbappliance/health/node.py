"""Node-side helper behind ``lbappliance status``, ``lbappliance maintenance`` and the
deploy playbooks' plan, drain and undrain (playbooks/tasks/plan.yml, drain.yml, undrain.yml).

Run on an LB node (over Ansible) with the node's agent configuration::

    python -m lbappliance.health.node --config /etc/lbappliance/health-agent.json report
    ... maintenance-on --note "kernel upgrade"   # maintenance file + VRRP demote
    ... servers-maint                            # drained: HAProxy servers to MAINT
    ... maintenance-off                          # servers READY (slow start), files cleared
    ... imbalance --sample 5                     # report + load imbalance

Every command prints one JSON report on stdout: the agent's state file (VIPs,
BGP sessions as ExaBGP reported them), HAProxy frontends/backends, VRRP state
(a group is MASTER here when its VIPs are on the interface), the IPVS virtual
servers of ``ipvs`` L4 services with their live real servers, maintenance, and
the verdicts of ``health/drain.py`` on all of it (``serving``,
``serving_unconfirmed``, ``drain_pending``, ``return_pending``, ``unhealthy``): what
``maintenance`` and the playbooks poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lbappliance.haproxy import AdminSocket, HaproxyError
from lbappliance.health.agent import write_json_atomic
from lbappliance.health.config import AgentConfig, ConfigError, config_option, load
from lbappliance.health.drain import verdicts
from lbappliance.health.sensors import _ipvs_endpoint, maintenance_state
from lbappliance.paths import WEIGHTS_CONFIG

TIMEOUT = 2.0
# The agent rewrites its state file every round (at most once a second): a file
# older than a few of its rounds, and than a few seconds, is a stopped agent's.
STALE_ROUNDS = 3
STALE_AFTER = 5.0


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def stale_after(state: dict[str, Any]) -> float:
    """Seconds after its last write that a state file no longer shows a running agent."""
    return max(STALE_AFTER, STALE_ROUNDS * max(float(state.get("interval") or 0), 1.0))


def agent_report(cfg: AgentConfig, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """The agent's state file, ``running`` only while its writer lives and keeps it fresh."""
    try:
        state = json.loads(Path(cfg.state_file).read_text())
    except FileNotFoundError:
        return {"running": False, "error": f"no state file {cfg.state_file} (agent never ran?)"}
    except (OSError, ValueError) as exc:
        return {"running": False, "error": f"unreadable state file {cfg.state_file}: {exc}"}
    age = now() - float(state.get("updated", 0))
    out = {**state, "age": round(age, 1), "running": False}
    if not _pid_alive(state.get("pid")):
        return {**out, "error": f"stale state file: its agent (pid {state.get('pid')}) is gone"}
    if age >= (limit := stale_after(state)):
        why = f"stale state file: last written {age:.0f} s ago, over {limit:g} s"
        return {**out, "error": why}
    return {**out, "running": True}


def gated_backends(cfg: AgentConfig) -> list[str]:
    return list(dict.fromkeys(b for v in cfg.vips if v.haproxy for b in v.haproxy.backends))


def haproxy_report(cfg: AgentConfig) -> dict[str, Any]:
    if not cfg.haproxy_socket:
        return {"error": "no HAProxy on this node"}
    sock = AdminSocket(cfg.haproxy_socket, TIMEOUT)
    try:
        stats = sock.stats()
        sess = sock.command("show sess")
    except HaproxyError as exc:
        return {"error": str(exc)}
    gated = gated_backends(cfg)
    servers: dict[str, list[dict[str, Any]]] = {be: [] for be in gated}
    for s in stats.servers:
        if s.pool in servers:
            servers[s.pool].append(
                {"name": s.server, "status": s.status, "weight": s.weight or 0, "up": s.up}
            )
    return {
        "frontends": {
            f.name: {"status": f.status, "sessions": f.scur} for f in stats.frontends.values()
        },
        "backends": {
            be: {"up": up, "total": total, "servers": servers[be]}
            for be, (up, total) in stats.counted().items()
            if be in servers
        },
        # In-flight client sessions (what a drain waits for).
        "sessions": stats.client_sessions(),
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
    state = {
        "node": cfg.node,
        "site": cfg.site,
        "time": round(time.time(), 3),
        "maintenance": {"file": on, "note": note, "inventory": cfg.maintenance},
        "agent": agent_report(cfg),
        "haproxy": haproxy_report(cfg),
        "vrrp": vrrp_report(cfg),
        "ipvs": ipvs_report(cfg),
    }
    return {**state, **verdicts(state)}


def maintenance_on(cfg: AgentConfig, note: str) -> None:
    path = Path(cfg.maintenance_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(f"{note or 'maintenance'} (since {stamp})\n")
    if cfg.vrrp and cfg.vrrp_demote_file:
        demote = Path(cfg.vrrp_demote_file)
        demote.parent.mkdir(parents=True, exist_ok=True)
        demote.write_text(f"{cfg.vrrp_demote_value}\n")


def servers_maint(cfg: AgentConfig) -> list[str]:
    """Put the VIPs' HAProxy servers in MAINT; remember which, to restore them later.

    Only once the node no longer receives traffic. MAINT -> READY is what starts
    HAProxy's slow start (DRAIN -> READY does not), hence MAINT here.
    """
    sock = AdminSocket(cfg.haproxy_socket, TIMEOUT)
    rows = sock.show_stat()
    path = Path(cfg.servers_file)
    done: list[str] = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        done = json.loads(path.read_text())["servers"]
    targets = [
        (be, r.server)
        for be in gated_backends(cfg)
        for r in rows
        if r.pool == be and not r.status.startswith("MAINT")
    ]
    # Recorded before they change, so a failure half-way still restores them all.
    done += [f"{be}/{name}" for be, name in targets if f"{be}/{name}" not in done]
    write_json_atomic(str(path), {"servers": done})
    for be, name in targets:
        sock.set_state(be, name, "maint")
    return done


def servers_ready(cfg: AgentConfig) -> list[str]:
    """Return the servers ``servers_maint`` took out to READY (HAProxy slow start)."""
    path = Path(cfg.servers_file)
    try:
        names = json.loads(path.read_text())["servers"]
    except FileNotFoundError:
        return []
    sock = AdminSocket(cfg.haproxy_socket, TIMEOUT)
    for key in names:
        sock.set_state(*key.split("/", 1), "ready")
    path.unlink()
    return names


def maintenance_off(cfg: AgentConfig) -> list[str]:
    restored = servers_ready(cfg) if cfg.haproxy_socket and cfg.servers_file else []
    with contextlib.suppress(FileNotFoundError):
        Path(cfg.maintenance_file).unlink()
    if cfg.vrrp and cfg.vrrp_demote_file and Path(cfg.vrrp_demote_file).exists():
        Path(cfg.vrrp_demote_file).write_text("0\n")
    return restored


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Node-side helper: one JSON report of this node on stdout, after an action.",
)
@config_option()
@click.pass_context
def main(ctx: click.Context, config_path: str) -> None:
    ctx.obj = config_path


def _answer(config_path: str, action: str, act: Callable[[AgentConfig], dict[str, Any]]) -> None:
    """Run ``act`` and print the report with what it returned (exit 2: bad config, 1: failed)."""
    try:
        cfg = load(config_path)
    except ConfigError as exc:
        print(json.dumps({"error": f"configuration error in {exc.path}: {'; '.join(exc.errors)}"}))
        sys.exit(2)
    try:
        extra = act(cfg)
    except OSError as exc:  # HaproxyError included
        print(json.dumps({**report(cfg), "error": f"{action}: {exc}"}))
        sys.exit(1)
    print(json.dumps({**report(cfg), **extra}, sort_keys=True))


@main.command("report")
@click.pass_obj
def report_command(config_path: str) -> None:
    _answer(config_path, "report", lambda cfg: {})


@main.command("maintenance-on")
@click.option("--note", default="")
@click.pass_obj
def maintenance_on_command(config_path: str, note: str) -> None:
    _answer(config_path, "maintenance-on", lambda cfg: maintenance_on(cfg, note) or {})


@main.command("servers-maint")
@click.pass_obj
def servers_maint_command(config_path: str) -> None:
    _answer(config_path, "servers-maint", lambda cfg: {"servers_maint": servers_maint(cfg)})


@main.command("maintenance-off")
@click.pass_obj
def maintenance_off_command(config_path: str) -> None:
    _answer(config_path, "maintenance-off", lambda cfg: {"servers_ready": maintenance_off(cfg)})


@main.command("imbalance")
@click.option("--sample", type=float, default=5.0, show_default=True)
@click.pass_obj
def imbalance_command(config_path: str, sample: float) -> None:
    from lbappliance.weights.imbalance import on_node

    weights = Path(config_path).with_name(WEIGHTS_CONFIG)
    _answer(
        config_path,
        "imbalance",
        lambda cfg: {"imbalance": on_node(weights, cfg.haproxy_socket, sample)},
    )


if __name__ == "__main__":
    main(prog_name="python -m lbappliance.health.node")
