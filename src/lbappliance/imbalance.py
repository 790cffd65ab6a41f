"""``lbappliance imbalance``: structural load imbalance of a node's pools (the
analysis: ``weights/imbalance.py``), run on the node; pools, weights and targets
from the node's weights.json or the site inventory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lbappliance.cliopts import inventory_option, load_or_exit
from lbappliance.haproxy import AdminSocket, HaproxyError
from lbappliance.inventory.derived import effective_controller
from lbappliance.paths import RuntimePaths
from lbappliance.weights.config import config_option
from lbappliance.weights.imbalance import (
    DEFAULT_HISTORY,
    PoolMeta,
    alarming,
    format_table,
    measure,
    metas_from_config,
    to_json,
)


def _metas_from_site(inventory_dir: Path, site: str) -> tuple[dict[str, PoolMeta], str]:
    inv = load_or_exit(inventory_dir, site).model
    metas = {
        p.name: PoolMeta(
            {s.name: s.weight for s in p.servers if not s.backup},
            float(effective_controller(inv, p).target_latency),
        )
        for p in inv.l7.pools
    }
    return metas, RuntimePaths().haproxy_socket


@click.command("imbalance")
@click.option("--site", help="Site name: take pools, weights and targets from the inventory.")
@inventory_option
@config_option("Without --site: the node's rendered controller config.")
@click.option("--socket", "socket_path", help="HAProxy admin socket (default: the node's).")
@click.option(
    "--history",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(DEFAULT_HISTORY),
    show_default=True,
    help="History the weight controller records.",
)
@click.option(
    "--sample",
    type=click.FloatRange(1, 600),
    default=5.0,
    show_default=True,
    help="Seconds to sample HAProxy when there is no recent history.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def imbalance(
    site: str | None,
    inventory_dir: Path,
    config_path: Path,
    socket_path: str | None,
    history: Path,
    sample: float,
    as_json: bool,
) -> None:
    """Load imbalance per pool: CV over 5/15/60 min windows, capacity margin per server.

    Run it on an LB node: it reads HAProxy's admin socket and the history the
    weight controller keeps (from a workstation: `lbappliance status --site S
    --imbalance` runs it on every node). Inventory weights and target latencies come from
    the site (--site) or the node's weights.json; pools found in neither use
    HAProxy's current weights and a 100 ms target. CV > 0.3 in every window is
    a structural imbalance; a CMI under 0.2 is critical. Exit status 1 when
    either is found, 2 when HAProxy cannot be read.
    """
    if site:
        metas, default_socket = _metas_from_site(inventory_dir, site)
    else:
        metas, node_socket, _ = metas_from_config(config_path)
        default_socket = node_socket or RuntimePaths().haproxy_socket
    try:
        reports = measure(metas, AdminSocket(socket_path or default_socket), history, sample)
    except HaproxyError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo(to_json(reports) if as_json else format_table(reports))
    sys.exit(1 if alarming(reports) else 0)
