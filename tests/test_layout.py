"""The node-side entry points import nothing of the controller side (inventory,
renderer, Ansible runners): a node runs them from the files rendered for it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONTROLLER = (
    "lbappliance.render",
    "lbappliance.cliopts",
    "lbappliance.remote",
    "lbappliance.deploy",
)


@pytest.mark.parametrize(
    "module",
    ["lbappliance.health.__main__", "lbappliance.health.node", "lbappliance.weights.__main__",
     "lbappliance.weights.imbalance"],
)  # fmt: skip
def test_node_side_imports_no_controller_code(module: str) -> None:
    code = f"import {module}, json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if m.startswith(CONTROLLER)] == []
    assert "lbappliance.inventory" not in loaded


def test_nic_command_loads_without_the_controllers_libraries() -> None:
    """`python -m lbappliance.nic apply` runs on a node (and in the role tests' bare
    containers) with no YAML or Jinja: only `nic plan --site` reads an inventory."""
    code = "import lbappliance.nic.cli, json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    heavy = ("yaml", "jinja2", "lbappliance.inventory", "lbappliance.render")
    assert [m for m in loaded if m.split(".")[0] in heavy or m.startswith(heavy)] == []
