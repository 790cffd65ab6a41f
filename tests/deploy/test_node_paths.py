"""The roles, the deploy playbook's vars and the Molecule test spell the node's
paths as ``lbappliance.paths`` does: Ansible cannot import it, so
``lbappliance.render.role_defaults`` writes them into the files, and these tests
fail while a committed file is not what it writes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lbappliance.paths import NODE, NODE_CLI, NODE_VENV, project_dir, target
from lbappliance.render.role_defaults import BLOCKS, COMMAND, UNDER_VENV, main

ROOT = project_dir()
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "defaults/main.yml").is_file())


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _specs(role: str) -> dict:
    specs = _yaml(ROOT / "roles" / role / "meta/argument_specs.yml")["argument_specs"]
    return specs["main"]["options"]


def _copy(tmp_path: Path) -> Path:
    for tree in ("roles", "playbooks"):
        shutil.copytree(ROOT / tree, tmp_path / tree)
    return tmp_path


def _committed(copy: Path) -> dict[str, bool]:
    """Each generated file and its specs: is the copy byte-identical to the committed one?"""
    files = [Path(rel) for rel in BLOCKS]
    files += [f.parent.parent / "meta/argument_specs.yml" for f in files if f.parts[0] == "roles"]
    return {str(f): (copy / f).read_bytes() == (ROOT / f).read_bytes() for f in files}


def test_committed_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    result = CliRunner().invoke(main, ["--root", str(copy)])
    assert result.exit_code == 0, result.output
    stale = [f for f, same in _committed(copy).items() if not same]
    assert stale == [], f"run `{COMMAND}` and review the diff: {stale} differ"


def test_the_generator_restores_a_drifted_value(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    defaults = copy / "roles/lb_nic/defaults/main.yml"
    specs = copy / "roles/lb_nic/meta/argument_specs.yml"
    defaults.write_text(defaults.read_text().replace(NODE_CLI, "/usr/bin/lbappliance"))
    specs.write_text(specs.read_text().replace(NODE.nic_config, "/etc/nic.json"))
    check = CliRunner().invoke(main, ["--root", str(copy), "--check"])
    assert check.exit_code == 1
    assert check.output.split() == ["differs:", "roles/lb_nic/defaults/main.yml",
                                    "differs:", "roles/lb_nic/meta/argument_specs.yml"]  # fmt: skip
    assert CliRunner().invoke(main, ["--root", str(copy)]).exit_code == 0
    assert all(_committed(copy).values())


def test_a_file_without_its_block_is_an_error(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    defaults = copy / "roles/lb_haproxy/defaults/main.yml"
    defaults.write_text(defaults.read_text().replace("# --- end of node paths ---\n", ""))
    result = CliRunner().invoke(main, ["--root", str(copy)])
    assert result.exit_code == 2
    assert "roles/lb_haproxy/defaults/main.yml: needs exactly one block" in result.output


@pytest.mark.parametrize("rel", sorted(BLOCKS))
def test_generated_values_read_back_as_the_node_paths(rel: str) -> None:
    """What Ansible reads is what lbappliance.paths gives (the quoting holds)."""
    read = _yaml(ROOT / rel)
    specs = ROOT / Path(rel).parent.parent / "meta/argument_specs.yml"
    options = _yaml(specs)["argument_specs"]["main"]["options"] if "roles/" in rel else {}
    for v in BLOCKS[rel]:
        assert read[v.name] == v.value, f"{rel} {v.name}"
        if options:
            assert options[v.name]["default"] == (v.spec or v.value), f"{specs} {v.name}"


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
    assert (
        deploy["lb_deploy_venv"] == UNDER_VENV == f"{{{{ lb_base_venv | default('{NODE_VENV}') }}}}"
    )
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
