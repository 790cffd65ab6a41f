"""What `lbappliance status` and `lbappliance maintenance` share: node runner, lab hooks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lbappliance.cliopts import load_or_exit
from lbappliance.health.remote import NodeRunner
from lbappliance.inventory.schema import Inventory
from lbappliance.paths import RuntimePaths


def load_inventory(inventory_dir: Path, site: str) -> Inventory:
    """The site's model; invalid sites print every error and exit 2 (as `validate`)."""
    return load_or_exit(inventory_dir, site).model


def lab_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Hidden hooks for namespace labs, where each node is a network namespace on this host."""
    f = click.option(
        "--node-root",
        hidden=True,
        help="The node's runtime prefix (RuntimePaths), e.g. '/tmp/lab/render/hosts/{node}'.",
    )(f)
    f = click.option(
        "--node-exec",
        hidden=True,
        help="Run the helper on this host under a prefix, e.g. 'ip netns exec lab-{node}'.",
    )(f)
    return f


def runner_for(inv: Inventory, node_exec: str | None, node_root: str | None) -> NodeRunner:
    """Over SSH with the inventory's addresses, or locally under the lab's prefix."""
    if not node_exec:
        return NodeRunner(inv)
    return NodeRunner(
        inv,
        python=sys.executable,
        paths=lambda n: RuntimePaths(node_root.format(node=n)) if node_root else RuntimePaths(),
        prefix=lambda n: node_exec.format(node=n).split(),
        connection="local",
    )
