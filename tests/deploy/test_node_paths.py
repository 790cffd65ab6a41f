"""The roles, the deploy playbook's vars and the Molecule test spell the node's
paths as ``lbappliance.paths`` does (Ansible cannot import it: they repeat it)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from lbappliance.paths import NODE, NODE_CLI, NODE_VENV, project_dir, target

ROOT = project_dir()
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "defaults/main.yml").is_file())
UNDER_VENV = f"{{{{ lb_base_venv | default('{NODE_VENV}') }}}}"

# Role variable -> the value lbappliance.paths gives it.
EXPECTED = {
    "lb_base": {
        "lb_base_venv": NODE_VENV,
        "lb_base_state_dir": NODE.state_dir,
        "lb_base_etc_dir": NODE.etc_dir,
        "lb_base_run_dir": NODE.run_dir,
    },
    "lb_dataplane": {
        "lb_dataplane_cli": NODE_CLI,
        "lb_dataplane_spec_path": NODE.dataplane_spec,
    },
    "lb_exabgp": {
        "lb_exabgp_venv": UNDER_VENV,
        "lb_exabgp_agent_config_file": target(NODE.agent_config),
    },
    "lb_haproxy": {"lb_haproxy_certs_dir": NODE.haproxy_certs},
    "lb_network": {
        "lb_network_stage_dir": f"{NODE.state_dir}/network-staged",
        "lb_network_backup_dir": f"{NODE.state_dir}/network-backup",
    },
    "lb_nic": {
        "lb_nic_cli": NODE_CLI,
        "lb_nic_config_path": NODE.nic_config,
        "lb_nic_config_src": f"{{{{ lb_render_host_dir }}}}/{target(NODE.nic_config)}",
    },
    "lb_weights": {
        "lb_weights_venv": NODE_VENV,
        "lb_weights_run_dir": NODE.run_dir,
        "lb_weights_config_file": target(NODE.weights_config),
        "lb_weights_haproxy_socket_dir": str(PurePosixPath(NODE.haproxy_socket).parent),
    },
}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _specs(role: str) -> dict:
    specs = _yaml(ROOT / "roles" / role / "meta/argument_specs.yml")["argument_specs"]
    return specs["main"]["options"]


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_role_defaults_are_the_node_paths(role: str) -> None:
    defaults = _yaml(ROOT / "roles" / role / "defaults/main.yml")
    for name, value in EXPECTED[role].items():
        assert defaults[name] == value, f"roles/{role}/defaults/main.yml {name}"


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_document_the_defaults(role: str) -> None:
    defaults = _yaml(ROOT / "roles" / role / "defaults/main.yml")
    for name, spec in _specs(role).items():
        templated = "{{" in str(defaults.get(name))  # its spec says in words what it gives
        if "default" in spec and not templated:
            assert spec["default"] == defaults.get(name), (
                f"roles/{role}/meta/argument_specs.yml {name}: default {spec['default']!r}, "
                f"defaults/main.yml {defaults.get(name)!r}"
            )


def test_deploy_vars_use_the_node_paths() -> None:
    deploy = _yaml(ROOT / "playbooks/vars/deploy.yml")
    assert deploy["lb_deploy_venv"] == UNDER_VENV
    assert deploy["lb_deploy_agent_config_file"] == f"/{target(NODE.agent_config)}"
    assert "lb_deploy_agent_config_file" in deploy["lb_deploy_agent_config"]


def test_no_other_spelling_of_the_venv() -> None:
    """Every ``/opt/lbappliance...`` in roles, playbooks and Molecule is the venv or its CLI."""
    known = {NODE_VENV, NODE_CLI}
    found = {
        (str(path.relative_to(ROOT)), spelled)
        for tree in ("roles", "playbooks", "molecule")
        for path in (ROOT / tree).rglob("*")
        if path.is_file() and path.suffix in {".yml", ".j2", ".py"}
        for spelled in re.findall(r"/opt/lbappliance[\w/.-]*\w", path.read_text())
    }
    assert found, "the roles name the venv somewhere"
    assert {(p, s) for p, s in found if s not in known} == set()
