"""`lbappliance status`: per node — BGP sessions, VIPs announced or withdrawn and why,
VRRP state, HAProxy backends up/total, IPVS real servers in service, maintenance.
Read on the nodes over Ansible (``python -m lbappliance.health.node report``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from lbappliance.cliopts import inventory_option, site_option
from lbappliance.remote import NodeError, lab_options, load_inventory, runner_for


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "?"
    seconds = max(0.0, now - ts)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_node(name: str, r: dict[str, Any]) -> list[str]:
    """A node's report as lines for people."""
    if "report_error" in r:
        return [f"{name}  UNREACHABLE  {r['report_error']}"]
    now = r.get("time") or time.time()
    agent = r.get("agent", {})
    maint = r.get("maintenance", {})
    if maint.get("file") or maint.get("inventory"):
        why = maint.get("note") or "the inventory says so"
        m = f"maintenance: YES ({why})"
    else:
        m = "maintenance: no"
    if agent.get("running"):
        head = f"agent running (pid {agent.get('pid')}, state {agent.get('age')} s old)"
    elif agent.get("error"):
        head = f"agent NOT RUNNING ({agent['error']})"
    else:
        head = f"agent NOT RUNNING (state file last written {_ago(agent.get('updated'), now)} ago)"
    lines = [f"{name}  {head}  {m}"]
    neighbors = agent.get("neighbors") or {}
    bgp = ", ".join(
        f"{addr} {n['state']} for {_ago(n.get('since'), now)}"
        + (f" ({n['reason']})" if n.get("reason") else "")
        for addr, n in neighbors.items()
    )
    lines.append(f"  BGP      {bgp or 'no session reported by ExaBGP yet'}")
    vrrp = r.get("vrrp") or []
    if vrrp:
        lines.append(
            "  VRRP     "
            + ", ".join(
                f"{g['name']} {g['state']}" + (" (demoted)" if g.get("demoted") else "")
                for g in vrrp
            )
        )
    h = r.get("haproxy", {})
    if "error" in h:
        lines.append(f"  HAProxy  {h['error']}")
    else:
        backends = ", ".join(f"{b} {s['up']}/{s['total']} UP" for b, s in h["backends"].items())
        lines.append(f"  HAProxy  {backends or 'no backend'}; {h['sessions']} sessions in flight")
    ipvs = r.get("ipvs") or {}
    if "error" in ipvs:
        lines.append(f"  IPVS     {ipvs['error']}")
    for service, vs in (ipvs.get("services") or {}).items():
        if vs.get("missing"):
            lines.append(f"  IPVS     {service} NOT IN THE KERNEL TABLE (keepalived not running?)")
            continue
        servers = (
            ", ".join(f"{rs['address']} w{rs['weight']}" for rs in vs["real_servers"])
            or "no real server (every check failing)"
        )
        lines.append(f"  IPVS     {service} {vs['scheduler']}: {servers}")
    for prefix, v in (agent.get("vips") or {}).items():
        announced = "announced" if v.get("announced") else "withdrawn"
        lines.append(
            f"  VIP {prefix:<20} {v['state']:<9} {announced:<9} "
            f"for {_ago(v.get('since'), now)}: {v['reason']}"
        )
    return lines


def format_imbalance(r: dict[str, Any]) -> list[str]:
    """A node's imbalance table (``lbappliance imbalance``'s), or why it is missing."""
    if "imbalance" not in r:
        return [f"  imbalance not measured: {r.get('error', 'no answer')}"]
    table = r["imbalance"]["table"].rstrip().splitlines()
    return ["  imbalance:", *(f"  {line}" for line in table)]


def collect(
    runner: Any, nodes: list[str], imbalance_sample: float | None = None
) -> dict[str, dict[str, Any]]:
    """Each node's report (with its load imbalance when ``imbalance_sample`` is given)."""
    action = ["report"]
    if imbalance_sample is not None:
        action = ["imbalance", "--sample", f"{imbalance_sample:g}"]
    reports: dict[str, dict[str, Any]] = {}
    for node, result in runner.many(nodes, action).items():
        reports[node] = {"report_error": str(result)} if isinstance(result, NodeError) else result
    return reports


@click.command("status")
@site_option
@inventory_option
@click.option("--node", "only", multiple=True, help="Only this node (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document for machines.")
@click.option(
    "--imbalance",
    is_flag=True,
    help="Also per pool and server: CV of load over 5/15/60 min and the capacity margin.",
)
@click.option(
    "--sample",
    type=click.FloatRange(1, 60),
    default=5.0,
    show_default=True,
    help="With --imbalance: seconds to sample HAProxy where the controller kept no history.",
)
@lab_options
def status(
    site: str,
    inventory_dir: Path,
    only: tuple[str, ...],
    as_json: bool,
    imbalance: bool,
    sample: float,
    node_exec: str | None,
    node_root: str | None,
) -> None:
    """Per node: BGP sessions, VIPs announced or withdrawn and why, VRRP, HAProxy backends.

    \b
    Read on each node over Ansible (SSH to the inventory's management address):
    the health agent's state file, HAProxy's admin socket, the VRRP addresses.
    With --imbalance, also each node's load imbalance: CV > 0.3 in
    every window is structural; a capacity margin under 0.2 is critical.
    Exit status 1 when a node could not be read, or (--imbalance) a pool is
    structurally imbalanced or a server critical.
    """
    inv = load_inventory(inventory_dir, site)
    names = [n.name for n in inv.nodes]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise click.BadParameter(f"no node {unknown[0]!r}; nodes: {', '.join(names)}")
    nodes = list(only) or names
    with runner_for(inv, node_exec, node_root) as runner:
        reports = collect(runner, nodes, sample if imbalance else None)
    if as_json:
        click.echo(json.dumps({"site": inv.site.name, "nodes": reports}, indent=1, sort_keys=True))
    else:
        click.echo(
            f"site {inv.site.name}" + (f": {inv.site.description}" if inv.site.description else "")
        )
        for node in nodes:
            click.echo("")
            for line in format_node(node, reports[node]):
                click.echo(line)
            if imbalance and "report_error" not in reports[node]:
                for line in format_imbalance(reports[node]):
                    click.echo(line)
    if any("report_error" in r for r in reports.values()):
        sys.exit(1)
    if imbalance and any(r.get("imbalance", {"alarm": True})["alarm"] for r in reports.values()):
        sys.exit(1)
