"""``lbappliance nic``: plan, apply and capture NIC RSS/IRQ tuning."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from lbappliance.cliopts import EXIT_FAILED, inventory_option
from lbappliance.nic.applier import Applier
from lbappliance.nic.capture import capture as capture_tree
from lbappliance.nic.changes import diff
from lbappliance.nic.errors import PlanError
from lbappliance.nic.planner import make_plan
from lbappliance.nic.profile import NicConfig, NicProfile
from lbappliance.nic.reader import gather_facts
from lbappliance.paths import NODE

DEFAULT_CONFIG = NODE.nic_config
EXIT_PLAN_ERROR = 2


def render_plan(
    node: str,
    profile: NicProfile,
    interfaces: Sequence[str],
    facts_root: str = "/",
    fmt: str = "text",
) -> str:
    """The plan for ``node`` from the facts under ``facts_root``, as text or JSON."""
    facts = gather_facts(facts_root, interfaces)
    plan = make_plan(node, profile, interfaces, facts)
    changes, notes = diff(plan, facts)
    if fmt == "json":
        data = {**plan.to_dict(), "changes": [c.to_dict() for c in changes], "notes": notes}
        return json.dumps(data, indent=2) + "\n"
    lines = [f"  {c.what}: {c.before} -> {c.after}" for c in changes]
    lines += [f"  note: {n}" for n in notes]
    header = f"changes against the facts read ({len(changes)}):"
    return plan.render_text() + "\n".join([header, *lines]) + "\n"


def _fail_plan(error: PlanError) -> None:
    for problem in error.problems:
        click.echo(f"error: {problem}", err=True)
    sys.exit(EXIT_PLAN_ERROR)


@click.group("nic")
def nic() -> None:
    """NIC RSS/IRQ tuning: queues, IRQ affinity, RPS/XPS, irqbalance, sysctls."""


def _site_config(inventory_dir: Path, site: str, node: str | None) -> NicConfig:
    """The node's nic.json exactly as `render` writes it, from the site inventory."""
    from lbappliance.cliopts import load_or_exit
    from lbappliance.inventory.derived import node as find_node
    from lbappliance.paths import RuntimePaths
    from lbappliance.render.specs import nic as nic_spec

    if not node:
        raise click.UsageError("--site needs --node")
    loaded = load_or_exit(inventory_dir, site)
    try:
        spec = nic_spec(loaded.model, find_node(loaded.model, node), RuntimePaths())
    except LookupError as e:
        raise click.UsageError(str(e)) from e
    return NicConfig.from_json(json.dumps(spec), f"site {site}")


@nic.command("plan")
@click.option("--site", help="Plan from the site inventory (with --node).")
@inventory_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="nic.json.")
@click.option(
    "--profile-json",
    type=click.Path(exists=True, dir_okay=False),
    help="A profile object alone (needs --node and --interface).",
)
@click.option("--node", help="Node name (with --profile-json).")
@click.option("--interface", "interfaces", multiple=True, help="Interface (repeat).")
@click.option(
    "--facts-root",
    default="/",
    show_default=True,
    type=click.Path(exists=True, file_okay=False),
    help="Root of a captured sysfs/procfs tree.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(
    site: str | None,
    inventory_dir: Path,
    config_path: str | None,
    profile_json: str | None,
    node: str | None,
    interfaces: tuple[str, ...],
    facts_root: str,
    as_json: bool,
) -> None:
    """Print the plan for a node (default: /etc/lbappliance/nic.json against this host).

    \b
    From the inventory, against a tree captured on the node (`nic capture`):
      lbappliance nic plan --site tokyo --node tyo-lb1 --facts-root ./tyo-lb1-facts
    """
    try:
        if site:
            config = _site_config(inventory_dir, site, node)
            node, profile = config.node, config.profile
            interfaces = interfaces or config.interfaces
        elif profile_json:
            if not node or not interfaces:
                raise click.UsageError("--profile-json needs --node and --interface")
            with open(profile_json, encoding="utf-8") as f:
                profile = NicProfile.from_dict(json.load(f), node)
        else:
            config = NicConfig.load(config_path or DEFAULT_CONFIG)
            node = node or config.node
            profile = config.profile
            interfaces = interfaces or config.interfaces
        fmt = "json" if as_json else "text"
        click.echo(render_plan(node, profile, interfaces, facts_root, fmt), nl=False)
    except PlanError as e:
        _fail_plan(e)
    except OSError as e:
        raise click.ClickException(f"{e.filename}: {e.strerror}") from e


@nic.command("apply")
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="nic.json, or - to read it from stdin.",
)
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
@click.option("--root", default="/", show_default=True, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def apply_cmd(config_path: str, dry_run: bool, root: str, as_json: bool) -> None:
    """Apply nic.json on this node. Prints what changed; with --json
    {"changed": ..., "changes": [...], "failed": [...]}.

    Exit 0: applied (or nothing to do); 1: some change failed; 2: the plan is refused.
    """
    try:
        if config_path == "-":
            config = NicConfig.from_json(sys.stdin.read(), "stdin")
        else:
            config = NicConfig.load(config_path)
        result = Applier(root).apply(
            config.node, config.profile, config.interfaces, dry_run=dry_run
        )
    except PlanError as e:
        _fail_plan(e)
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.render_text(), nl=False)
    if result.failed:
        sys.exit(EXIT_FAILED)


@nic.command("capture")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New directory.")
@click.option("--interface", "interfaces", multiple=True, help="Interface (default: all NICs).")
def capture_cmd(out: str, interfaces: tuple[str, ...]) -> None:
    """Capture this host's CPU/NIC/IRQ facts into a tree for `nic plan --facts-root`."""
    names = capture_tree(out, interfaces or None)
    click.echo(f"captured {', '.join(names) or 'no interfaces'} into {out}")
