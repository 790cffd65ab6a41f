"""Running the node-side helper (``health/node.py``) on LB nodes over Ansible ad-hoc:
the controller side of ``lbappliance status`` and ``maintenance``, with the options
they share.

``lbappliance status`` and ``maintenance`` call ``NodeRunner(node, [action, ...])``
and get the helper's JSON report back. The inventory is written from the site
model (the same host variables ``render`` writes; no secrets are needed), and
``ansible NODE -m ansible.builtin.command`` runs the helper with the node's
Python. Labs whose nodes are network namespaces on this host pass a command
prefix (``ip netns exec <ns>``) and connect locally instead of over SSH.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from lbappliance.cliopts import ansible_or_exit, load_or_exit
from lbappliance.inventory.schema import Inventory
from lbappliance.paths import NODE_PYTHON, RuntimePaths
from lbappliance.render.ansible import Dumper, host_vars, inert


class NodeError(Exception):
    """The helper could not be run on a node, or its answer is unusable."""


def agent_config_path(paths: RuntimePaths) -> str:
    return paths.agent_config


def write_inventory(inv: Inventory, directory: Path) -> Path:
    hosts = {n.name: host_vars(inv, n) for n in inv.nodes}
    path = directory / "hosts.yml"
    data = {"all": {"hosts": hosts, "vars": {"lb_site": inert(inv.site.name)}}}
    path.write_text(yaml.dump(data, Dumper=Dumper))  # inventory values stay !unsafe
    return path


_HEADER = r"^(?P<node>{nodes}) \| (?P<status>[A-Z!]+)(?: \| rc=(?P<rc>-?\d+))? (?P<sep>>>|=>)"


def _one(node: str, status: str, rc: str | None, sep: str, body: str) -> dict[str, Any]:
    if sep == "=>":  # UNREACHABLE! / FAILED! (the module itself failed)
        try:
            data = json.loads(body)
            msg = data.get("msg", body.strip())
            if data.get("module_stderr"):
                msg = f"{msg} ({data['module_stderr'].strip().splitlines()[0]})"
        except ValueError:
            msg = body.strip()
        raise NodeError(f"{node}: {status.rstrip('!').lower()}: {str(msg).strip()[:300]}")
    for line in reversed(body.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise NodeError(f"{node}: helper exited rc={rc} without a report: {body.strip()[-300:]}")


def parse_adhoc(nodes: list[str], output: str) -> dict[str, dict[str, Any] | NodeError]:
    """Each node's helper JSON (or the error) from ``ansible`` ad-hoc output."""
    pattern = _HEADER.format(nodes="|".join(re.escape(n) for n in nodes))
    matches = list(re.finditer(pattern, output, re.M))
    results: dict[str, dict[str, Any] | NodeError] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(output)
        try:
            results[m["node"]] = _one(
                m["node"], m["status"], m["rc"], m["sep"], output[m.end() : end]
            )
        except NodeError as exc:
            results[m["node"]] = exc
    for node in nodes:
        if node not in results:
            results[node] = NodeError(
                f"{node}: no result in ansible output: {output.strip()[-300:]!r}"
            )
    return results


@dataclass
class NodeRunner:
    """Runs ``python -m lbappliance.health.node --config ... ACTION`` on a node."""

    inv: Inventory
    python: str = NODE_PYTHON
    paths: Callable[[str], RuntimePaths] = lambda node: RuntimePaths()
    prefix: Callable[[str], list[str]] = lambda node: []
    connection: str | None = None  # e.g. "local" for namespace labs
    timeout: float = 60.0
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="lbappliance-ansible-")
        self.inventory = write_inventory(self.inv, Path(self._dir.name))

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> NodeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def helper(self, node: str, action: list[str]) -> list[str]:
        """The helper's command line on ``node``."""
        config = agent_config_path(self.paths(node))
        module = ["-m", "lbappliance.health.node", "--config", config]
        return [*self.prefix(node), self.python, *module, *action]

    def command(self, pattern: str, helper: list[str]) -> list[str]:
        cmd = ["ansible", pattern, "-i", str(self.inventory), "-m", "ansible.builtin.command"]
        cmd += ["-a", shlex.join(helper)]
        if self.connection:
            cmd += ["-c", self.connection]
        if self.connection == "local":
            # This host's own interpreter (discovery can pick an unusable one).
            cmd += ["-e", f"ansible_python_interpreter={sys.executable}"]
        return cmd

    def __call__(self, node: str, action: list[str]) -> dict[str, Any]:
        """The helper's report from one node; raises ``NodeError``."""
        result = self.many([node], action)[node]
        if isinstance(result, NodeError):
            raise result
        return result

    def many(self, nodes: list[str], action: list[str]) -> dict[str, dict[str, Any] | NodeError]:
        """Run on several nodes in parallel (Ansible forks); errors are returned per node."""
        helpers = {n: self.helper(n, action) for n in nodes}
        if len({shlex.join(h) for h in helpers.values()}) > 1:
            # Per-node command lines (namespace labs): one ansible run per node, in parallel.
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                parts = pool.map(lambda n: self._run([n], self.command(n, helpers[n])), nodes)
            return {k: v for part in parts for k, v in part.items()}
        return self._run(nodes, self.command(":".join(nodes), helpers[nodes[0]]))

    def _run(self, nodes: list[str], cmd: list[str]) -> dict[str, dict[str, Any] | NodeError]:
        env = {
            **os.environ,
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0",  # ad-hoc output stays `minimal`
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
        }
        self.calls += 1
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout, env=env
            )
        except FileNotFoundError:
            return {n: NodeError("the `ansible` command is not installed") for n in nodes}
        except subprocess.TimeoutExpired:
            return {n: NodeError(f"{n}: no answer within {self.timeout:g} s") for n in nodes}
        return parse_adhoc(nodes, proc.stdout + proc.stderr)


# --- the options `status` and `maintenance` share ---------------------------------------


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
    ansible_or_exit("ansible")
    if not node_exec:
        return NodeRunner(inv)
    return NodeRunner(
        inv,
        python=sys.executable,
        paths=lambda n: RuntimePaths(node_root.format(node=n)) if node_root else RuntimePaths(),
        prefix=lambda n: node_exec.format(node=n).split(),
        connection="local",
    )
