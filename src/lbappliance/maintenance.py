"""`lbappliance maintenance enter|exit`: take an LB node out of service and back.

enter: refuses to take the last serving node out (as the deploy's drain does;
       ``--force`` overrides), then over Ansible sets the node's maintenance file
       (the health agent announces every VIP with GRACEFUL_SHUTDOWN for
       ``maintenance_drain``, then withdraws) and demotes it in VRRP. ``--wait``
       returns once no VIP is announced, no VRRP VIP is held and HAProxy's
       in-flight sessions are gone, then puts the VIPs' HAProxy servers in MAINT
       (or reports what is still pending at the timeout).
exit:  returns those servers to READY, which starts HAProxy's slow start, clears
       the maintenance file and the VRRP demotion; the agent re-announces after
       ``rise`` good rounds. ``--wait`` returns once every healthy VIP is
       announced again.

What "serving", "drained" and "returned" mean is decided on the node: the node
helper's report carries the verdicts of ``health/drain.py`` (``serving``,
``drain_pending``, ``return_pending``, ``unhealthy``), which this command polls,
as the deploy playbooks do. The waits' defaults are the deploy's too
(``inventory.derived.drain_wait``, ``return_wait``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lbappliance.cliopts import inventory_option, site_option
from lbappliance.inventory.derived import drain_wait, return_wait
from lbappliance.inventory.derived import node as find_node
from lbappliance.inventory.schema import Inventory
from lbappliance.remote import NodeError, lab_options, load_inventory, runner_for

POLL = 1.0
EXIT_TIMEOUT = 1
EXIT_ERROR = 3
EXIT_REFUSED = 4

Runner = Callable[[str, list[str]], dict[str, Any]]


def verdict(node: str, report: dict[str, Any], name: str) -> list[str]:
    """One of the verdicts the node helper adds to its report (``health/drain.py``)."""
    if name in report:
        return report[name]
    why = report.get("error") or "its node helper is older than this lbappliance (deploy it)"
    raise NodeError(f"{node}: the report has no {name}: {why}")


def last_serving(runner: Runner, inv: Inventory, node: str) -> tuple[list[str], list[str]]:
    """The VIPs ``node`` may serve while no other node serves any, and what the peers'
    stale state files claim (not counted; an unreachable peer does not serve either).

    ``node`` counts with its unconfirmed VIPs: a stopped agent's routes may still be
    announced, so it is drained as if it served them.
    """
    report = runner(node, ["report"])
    here = verdict(node, report, "serving") + report.get("serving_unconfirmed", [])
    if not here:
        return [], []
    stale: list[str] = []
    for peer in (n.name for n in inv.nodes if n.name != node):
        try:
            peer_report = runner(peer, ["report"])
            if verdict(peer, peer_report, "serving"):
                return [], []
        except NodeError:
            continue
        stale += peer_report.get("serving_unconfirmed", [])
    return here, stale


def wait_until(
    runner: Runner,
    node: str,
    pending: str,
    timeout: float,
    echo: Callable[[str], None],
    poll: float = POLL,
) -> tuple[bool, dict[str, Any], list[str]]:
    """Poll the node's report until its ``pending`` verdict is empty; False and what is
    left on timeout."""
    deadline = time.monotonic() + timeout
    last: list[str] | None = None
    while True:
        report = runner(node, ["report"])
        left = verdict(node, report, pending)
        if not left:
            return True, report, []
        if left != last:
            echo(f"  waiting: {'; '.join(left)}")
            last = left
        if time.monotonic() + poll > deadline:
            return False, report, left
        time.sleep(poll)


def enter(
    runner: Runner,
    inv: Inventory,
    node: str,
    note: str,
    wait: bool,
    timeout: float | None,
    echo: Callable[[str], None] = click.echo,
    poll: float = POLL,
    force: bool = False,
) -> int:
    alone, stale = ([], []) if force else last_serving(runner, inv, node)
    if alone:
        echo(
            f"{node}: refusing: it serves {', '.join(alone)} and no other node serves anything"
            + (f" (not counted: {'; '.join(stale)})" if stale else "")
            + "; maintenance would take the site down. Bring a peer back first, or pass --force."
        )
        return EXIT_REFUSED
    drain = float(inv.health_agent.maintenance_drain)
    runner(node, ["maintenance-on", "--note", note])
    echo(
        f"{node}: in maintenance ({note}). The agent announces its VIPs with GRACEFUL_SHUTDOWN "
        f"(65535:0) for {drain:g} s, then withdraws them" + ("; VRRP demoted." if inv.vrrp else ".")
    )
    if not wait:
        return 0
    limit = timeout if timeout is not None else drain_wait(inv)
    started = time.monotonic()
    ok, _report, pending = wait_until(runner, node, "drain_pending", limit, echo, poll)
    if not ok:
        echo(f"{node}: TIMEOUT after {limit:g} s; still pending: {'; '.join(pending)}")
        return EXIT_TIMEOUT
    done = runner(node, ["servers-maint"]).get("servers_maint", [])
    echo(
        f"{node}: drained in {time.monotonic() - started:.1f} s — routes withdrawn, no VRRP VIP, "
        f"no session in flight; HAProxy servers in MAINT: {', '.join(done) or 'none'}"
    )
    return 0


def leave(
    runner: Runner,
    inv: Inventory,
    node: str,
    wait: bool,
    timeout: float | None,
    echo: Callable[[str], None] = click.echo,
    poll: float = POLL,
) -> int:
    if find_node(inv, node).maintenance:
        echo(
            f"{node}: the inventory puts this node in maintenance (nodes[].maintenance: true); "
            "change the inventory and deploy to bring it back."
        )
        return EXIT_ERROR
    report = runner(node, ["maintenance-off"])
    ready = report.get("servers_ready", [])
    agent = inv.health_agent
    echo(
        f"{node}: maintenance over. HAProxy servers back to READY with slow start: "
        f"{', '.join(ready) or 'none'}; VIPs re-announced after {agent.rise} good rounds."
    )
    if not wait:
        return 0
    limit = timeout if timeout is not None else return_wait(inv)
    started = time.monotonic()
    ok, report, pending = wait_until(runner, node, "return_pending", limit, echo, poll)
    if not ok:
        echo(f"{node}: TIMEOUT after {limit:g} s; still pending: {'; '.join(pending)}")
        return EXIT_TIMEOUT
    echo(f"{node}: serving again after {time.monotonic() - started:.1f} s.")
    for line in verdict(node, report, "unhealthy"):
        echo(f"{node}: warning: {line}")
    return 0


node_option = click.option("--node", required=True, help="The LB node (inventory name).")
wait_option = click.option("--wait", is_flag=True, help="Return only when done (or timed out).")
timeout_option = click.option(
    "--timeout", type=float, help="Seconds --wait waits (default from the site's drain times)."
)


@click.group("maintenance")
def maintenance() -> None:
    """Take an LB node out of service (BGP GRACEFUL_SHUTDOWN, withdraw, VRRP demote) and back."""


def _run(action: Callable[..., int], site: str, inventory_dir: Path, node: str, **kw: Any) -> None:
    inv = load_inventory(inventory_dir, site)
    try:
        find_node(inv, node)
    except LookupError as exc:
        raise click.BadParameter(str(exc), param_hint="--node") from None
    node_exec, node_root = kw.pop("node_exec"), kw.pop("node_root")
    with runner_for(inv, node_exec, node_root) as runner:
        try:
            code = action(runner, inv, node, **kw)
        except NodeError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            code = EXIT_ERROR
    sys.exit(code)


@maintenance.command("enter")
@site_option
@inventory_option
@node_option
@wait_option
@timeout_option
@click.option("--note", default="lbappliance maintenance", help="Why (kept in the file).")
@click.option(
    "--force", is_flag=True, help="Go ahead even if no other node serves (takes the site down)."
)
@lab_options
def enter_cmd(site: str, inventory_dir: Path, node: str, **kw: Any) -> None:
    """Drain a node: GRACEFUL_SHUTDOWN, then withdraw; VRRP moves to the peer.

    Refuses when the node serves and no other node does (--force overrides).

    \b
    Exit status: 0 done, 1 --wait timed out (what is pending is printed),
    3 the node could not be reached, 4 refused: it is the last serving node.
    """
    _run(enter, site, inventory_dir, node, **kw)


@maintenance.command("exit")
@site_option
@inventory_option
@node_option
@wait_option
@timeout_option
@lab_options
def exit_cmd(site: str, inventory_dir: Path, node: str, **kw: Any) -> None:
    """Return a node to service: servers READY with slow start, then re-announce."""
    _run(leave, site, inventory_dir, node, **kw)
