"""The roles' node paths, rendered from ``lbappliance.paths``.

A collection's roles must work without lbappliance installed, so their defaults
spell the node's paths literally. They are written from here, not by hand: each
file below holds one block between ``BEGIN`` and ``END`` that this module owns
(values and the comments that document them), and each role's
``meta/argument_specs.yml`` gets the same values as its options' ``default:``.

Regenerate after a change of ``paths.py`` or of the table below, then review
``git diff roles playbooks``::

    python -m lbappliance.render.role_defaults

``tests/deploy/test_node_paths.py`` fails while a committed file differs from
what this writes.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import click
import yaml

from lbappliance.paths import (
    NODE,
    NODE_BPF_DIR,
    NODE_BPF_PINS,
    NODE_CLI,
    NODE_VENV,
    project_dir,
    target,
)

COMMAND = "python -m lbappliance.render.role_defaults"
BEGIN = f"# --- node paths, from lbappliance.paths (`{COMMAND}`; do not edit) ---"
END = "# --- end of node paths ---"
UNDER_VENV = f"{{{{ lb_base_venv | default('{NODE_VENV}') }}}}"


@dataclass(frozen=True)
class Var:
    """One role variable: its default, the comment above it, and its spec's default
    when that differs (a templated default is documented by the value it gives)."""

    name: str
    value: str
    doc: str = ""
    spec: str | None = None


# File (relative to the project) -> the variables its block holds, in order.
BLOCKS: dict[str, tuple[Var, ...]] = {
    "roles/lb_base/defaults/main.yml": (
        Var(
            "lb_base_venv",
            NODE_VENV,
            "The venv the health agent and ExaBGP run from (the rendered exabgp.conf runs\n"
            "`<venv>/bin/python -m lbappliance.health`).",
        ),
        Var(
            "lb_base_state_dir",
            NODE.state_dir,
            "Directories the agent, keepalived (demote file) and the drain use.",
        ),
        Var("lb_base_etc_dir", NODE.etc_dir),
        Var("lb_base_run_dir", NODE.run_dir),
    ),
    "roles/lb_dataplane/defaults/main.yml": (
        Var(
            "lb_dataplane_install_dir",
            NODE_BPF_DIR,
            "Where the sources and the compiled object go on the node\n"
            "(the object path is the CLI's default for --object).",
        ),
        Var(
            "lb_dataplane_spec_path",
            NODE.dataplane_spec,
            "Rendered spec on the controller is\n"
            f"{{{{ lb_render_host_dir }}}}/{target(NODE.dataplane_spec)}; installed here.",
        ),
        Var("lb_dataplane_cli", NODE_CLI, "The lbappliance CLI, installed by lb_base."),
        Var(
            "lb_dataplane_pin_root",
            NODE_BPF_PINS,
            "bpffs directory for the program's pins (gone at reboot: the unit re-applies).",
        ),
    ),
    "roles/lb_exabgp/defaults/main.yml": (
        Var("lb_exabgp_venv", UNDER_VENV, spec=NODE_VENV),
        Var(
            "lb_exabgp_agent_config_file",
            target(NODE.agent_config),
            "The rendered health agent config (relative to lb_render_host_dir and to /).",
        ),
    ),
    "roles/lb_haproxy/defaults/main.yml": (
        Var(
            "lb_haproxy_certs_dir",
            NODE.haproxy_certs,
            "crt-base of the rendered config: certificates are `<dir>/<name>.pem`.",
        ),
    ),
    "roles/lb_network/defaults/main.yml": (
        Var(
            "lb_network_stage_dir",
            f"{NODE.state_dir}/network-staged",
            "Where the files are staged and checked on the node, and the previous ones\n"
            "kept until the change is confirmed.",
        ),
        Var("lb_network_backup_dir", f"{NODE.state_dir}/network-backup"),
    ),
    "roles/lb_nic/defaults/main.yml": (
        Var(
            "lb_nic_config_src",
            f"{{{{ lb_render_host_dir }}}}/{target(NODE.nic_config)}",
            "The rendered config on the controller, and where it goes on the node (byte for byte).",
        ),
        Var("lb_nic_config_path", NODE.nic_config),
        Var("lb_nic_cli", NODE_CLI, "The lbappliance CLI installed by lb_base."),
    ),
    "roles/lb_weights/defaults/main.yml": (
        Var(
            "lb_weights_config_file",
            target(NODE.weights_config),
            "Rendered config (relative to lb_render_host_dir and to /).",
        ),
        Var(
            "lb_weights_venv",
            NODE_VENV,
            "The venv lb_base installs the lbappliance package into.",
        ),
        Var(
            "lb_weights_haproxy_socket_dir",
            str(PurePosixPath(NODE.haproxy_socket).parent),
            "Directory of HAProxy's admin socket (the rendered `haproxy_socket`), and the\n"
            "controller's own runtime directory under /run (its history file for\n"
            "`lbappliance imbalance`; systemd creates it at start). Both are the only paths\n"
            "the sandboxed service may write to.",
        ),
        Var("lb_weights_run_dir", NODE.run_dir),
    ),
    "playbooks/vars/deploy.yml": (
        Var("lb_deploy_venv", UNDER_VENV, "The venv of the node helper (lb_base's)."),
        Var(
            "lb_deploy_agent_config_file",
            f"/{target(NODE.agent_config)}",
            "The health agent's config on the node (the node helper's --config).",
        ),
    ),
}


class RoleFileError(ValueError):
    """A file this module cannot regenerate (missing, or its block or an option is)."""


def scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain unless it would not read back as itself."""
    try:
        plain = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value)


def block(variables: tuple[Var, ...]) -> str:
    lines = [BEGIN]
    for i, v in enumerate(variables):
        if v.doc and i:  # a documented variable starts a paragraph
            lines.append("")
        lines += [f"# {line}" for line in v.doc.splitlines()]
        lines.append(f"{v.name}: {scalar(v.value)}")
    return "\n".join([*lines, END])


def with_block(text: str, path: str, variables: tuple[Var, ...]) -> str:
    """``text`` with its generated block replaced by the one of ``variables``."""
    pattern = re.compile(f"^{re.escape(BEGIN)}$.*?^{re.escape(END)}$", re.M | re.S)
    if len(pattern.findall(text)) != 1:
        raise RoleFileError(f"{path}: needs exactly one block from {BEGIN!r} to {END!r}")
    return pattern.sub(lambda _: block(variables), text)


def with_spec_defaults(text: str, path: str, variables: tuple[Var, ...]) -> str:
    """``text`` (an argument_specs.yml) with each option's ``default:`` set from ``variables``.

    Every entry point that lists the option gets it; an option must be listed once
    at least, with a ``default:`` line.
    """
    for v in variables:
        # The option's line, its deeper-indented lines up to its own `default:`.
        option = re.compile(
            rf"^(?P<head>(?P<indent> +){re.escape(v.name)}:\n(?:(?P=indent) +.*\n)*?"
            r"(?P=indent) +default: ).*\n",
            re.M,
        )
        value = scalar(v.value if v.spec is None else v.spec)
        text, found = option.subn(lambda m, value=value: f"{m['head']}{value}\n", text)
        if not found:
            raise RoleFileError(f"{path}: needs option {v.name} with a default: line")
    return text


def rendered(root: Path) -> dict[Path, str]:
    """Every generated file under ``root``, as it must read."""
    out: dict[Path, str] = {}
    for rel, variables in BLOCKS.items():
        out[root / rel] = with_block(_read(root, rel), rel, variables)
        if rel.startswith("roles/"):
            specs = str(Path(rel).parent.parent / "meta/argument_specs.yml")
            out[root / specs] = with_spec_defaults(_read(root, specs), specs, variables)
    return out


def _read(root: Path, rel: str) -> str:
    try:
        return (root / rel).read_text()
    except OSError as exc:
        raise RoleFileError(f"{rel}: {exc.strerror or exc}") from exc


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=project_dir,
    help="The project to regenerate (default: this lbappliance's).",
)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when a file differs.")
def main(root: Path, check: bool) -> None:
    """Write the roles' node paths (defaults, argument specs) from lbappliance.paths."""
    try:
        files = rendered(root)
    except RoleFileError as exc:
        click.secho(str(exc), fg="red", err=True)
        sys.exit(2)
    changed = [path for path, text in files.items() if path.read_text() != text]
    for path in changed:
        if not check:
            path.write_text(files[path])
        click.echo(f"{'differs' if check else 'wrote'}: {path.relative_to(root)}")
    sys.exit(1 if check and changed else 0)


if __name__ == "__main__":
    main(prog_name=COMMAND)
