"""Render a validated site into everything a deploy needs.

Every config file comes from one template in ``templates/`` fed by one context
builder; ``render`` writes exactly the bytes the roles install. Output is
deterministic: same inventory (and secrets), same bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from lbappliance.inventory import Site
from lbappliance.inventory.schema import Inventory, Node
from lbappliance.inventory.yamlpos import paused_gc
from lbappliance.paths import NODE_PYTHON, RuntimePaths, templates_dir
from lbappliance.render import (
    agent,
    ansible,
    bgp,
    haproxy,
    jsonfmt,
    keepalived,
    network,
    routers,
    specs,
    system,
    weights,
)
from lbappliance.secrets import Secrets

HEADER = "Rendered by lbappliance from the site inventory. Do not edit: change the inventory."


@dataclass(frozen=True)
class RenderedFile:
    path: str  # relative to the output directory
    content: bytes
    secret: bool = False  # holds a resolved secret: mode 0600, never shown
    checker: str | None = None  # "haproxy" | "keepalived" | "exabgp"
    node: str | None = None

    @property
    def mode(self) -> int:
        return 0o600 if self.secret else 0o644


@dataclass
class Render:
    site: Site
    files: list[RenderedFile] = field(default_factory=list)
    # Every resolved secret, so that checker output can be scrubbed of them.
    secrets: set[str] = field(default_factory=set, repr=False)

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``<secret>``."""
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "<secret>")
        return text

    def by_path(self) -> dict[str, RenderedFile]:
        return {f.path: f for f in self.files}


def _nice_yaml(data: Any) -> str:
    return yaml.dump(
        data, Dumper=ansible.Dumper, default_flow_style=False, sort_keys=True, width=100
    )


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["to_nice_yaml"] = _nice_yaml
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    env.policies["json.dumps_function"] = jsonfmt.dumps  # json.dumps's bytes, faster
    return env


# (template, target under hosts/<node>/, context builder, checker)
NodeContext = Callable[[Inventory, Node, RuntimePaths], dict[str, Any]]
NODE_FILES: list[tuple[str, str, NodeContext, str | None]] = [
    ("haproxy/haproxy.cfg.j2", haproxy.TARGET, haproxy.context, "haproxy"),
    ("keepalived/keepalived.conf.j2", keepalived.TARGET, keepalived.context, "keepalived"),
    ("system/sysctl.conf.j2", system.SYSCTL_TARGET, system.sysctl_context, None),
    ("system/notrack.nft.j2", system.NOTRACK_TARGET, system.notrack_context, None),
    ("system/lbappliance-vips.service.j2", system.VIPS_TARGET, system.vips_context, None),
    ("bird/bfd.conf.j2", routers.BFD_TARGET, routers.node_bfd_context, "bird"),
    ("lbappliance/json.j2", agent.TARGET, lambda i, n, p: {"data": agent.config(i, n, p)}, None),
    (
        "lbappliance/json.j2",
        specs.DATAPLANE_TARGET,
        lambda i, n, p: {"data": specs.dataplane(i, n, p)},
        None,
    ),
    ("lbappliance/json.j2", specs.NIC_TARGET, lambda i, n, p: {"data": specs.nic(i, n, p)}, None),
    ("lbappliance/json.j2", weights.TARGET, weights.context, None),
]


def render_site(
    site: Site,
    secrets: Secrets,
    paths: RuntimePaths | None = None,
    node_python: str = NODE_PYTHON,
) -> Render:
    """Render every file of ``site`` in memory (nothing is written here)."""
    with paused_gc():  # tens of MB of acyclic strings and contexts at 10,000 services
        return _render_site(site, secrets, paths or RuntimePaths(), node_python)


def _render_site(site: Site, secrets: Secrets, paths: RuntimePaths, node_python: str) -> Render:
    inv = site.model
    env = environment()
    result = Render(site)
    base = {"header": HEADER, "site": inv.site, "paths": paths}

    def emit(template: str, target: str, ctx: dict[str, Any], **kw: Any) -> None:
        text = env.get_template(template).render({**base, **ctx})
        result.files.append(RenderedFile(path=target, content=text.encode(), **kw))

    for node in inv.nodes:
        prefix = f"hosts/{node.name}/"
        for template, target, builder, checker in NODE_FILES:
            ctx = {"node": node, **builder(inv, node, paths)}
            emit(template, prefix + target, ctx, checker=checker, node=node.name)
        for target, ctx in network.files(inv, node, paths):  # one file per interface
            emit("systemd/network.j2", prefix + target, {"node": node, **ctx}, node=node.name)
        bgp_ctx = bgp.context(inv, node, paths, secrets, node_python)
        result.secrets.update(n["password"] for n in bgp_ctx["neighbors"] if n["password"])
        emit(
            "exabgp/exabgp.conf.j2",
            prefix + bgp.TARGET,
            {"node": node, **bgp_ctx},
            checker="exabgp",
            node=node.name,
            secret=any(p.password for p in inv.bgp.peers),
        )
        emit(
            "ansible/yaml.j2",
            f"inventory/host_vars/{node.name}.yml",
            {"data": ansible.host_vars(inv, node)},
        )
    for i, peer in enumerate(inv.bgp.peers):
        ctx = routers.peer_context(inv, i, peer, secrets)
        result.secrets.update(n["password"] for n in ctx["neighbors"] if n["password"])
        secret = peer.password is not None
        for platform, checker in (("bird", "bird"), ("frr", "vtysh")):
            emit(
                f"routers/{platform}.conf.j2",
                f"routers/{peer.name}/{platform}.conf",
                ctx,
                checker=checker,
                secret=secret,
            )
    emit("ansible/yaml.j2", "inventory/hosts.yml", {"data": ansible.hosts(inv)})
    emit("ansible/yaml.j2", "inventory/group_vars/all.yml", {"data": ansible.site_vars(inv, paths)})
    play = ansible.playbook_context(inv)
    emit("ansible/site.yml.j2", "site.yml", play)
    emit("ansible/ansible.cfg.j2", "ansible.cfg", play)
    result.files.sort(key=lambda f: f.path)
    return result


@dataclass
class WriteReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


# Written into every render: ``write_render`` replaces only directories holding it.
MARKER = ".lbappliance-render"


class OutputRefused(Exception):
    """The output directory is not one ``render`` may replace."""


def check_output_dir(out: Path, above: list[Path] = (), inside: list[Path] = ()) -> None:
    """Refuse an output directory whose replacement would destroy something.

    ``out`` must not be, or lie above, any of ``above`` (the project, the
    inventory, the working directory), nor lie inside any of ``inside`` (the
    inventories); an existing ``out`` must be empty or an earlier render.
    """
    target = out.resolve()
    for path in map(Path.resolve, above):
        if target == path or path.is_relative_to(target):
            raise OutputRefused(f"{out} is, or holds, {path}; give a directory of its own")
    for path in map(Path.resolve, inside):
        if target.is_relative_to(path):
            raise OutputRefused(f"{out} is inside the inventory {path}")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputRefused(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not _earlier_render(out):
        raise OutputRefused(
            f"{out} exists and was not written by `lbappliance render` (no {MARKER} in it); "
            "give a new or empty directory, or remove this one yourself"
        )


def _earlier_render(out: Path) -> bool:
    """``out`` holds the marker, or is a render from before there was one."""
    if (out / MARKER).is_file():
        return True
    cfg = out / "ansible.cfg"
    try:
        return cfg.is_file() and cfg.read_text().startswith(f"# {HEADER}\n")
    except (OSError, UnicodeDecodeError):
        return False


def write_render(render: Render, out: Path) -> WriteReport:
    """Replace ``out`` with the render in one step: a reader never sees half a tree."""
    check_output_dir(out)
    report = WriteReport()
    old = {
        str(p.relative_to(out)): p.read_bytes()
        for p in (out.rglob("*") if out.is_dir() else [])
        if p.is_file() and p.name != MARKER
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for f in render.files:
            target = staging / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)
            os.chmod(target, f.mode)
            (report.unchanged if old.get(f.path) == f.content else report.written).append(f.path)
        (staging / MARKER).write_text(f"site {render.site.name}\n")
        os.chmod(staging, 0o755)
        report.removed = sorted(set(old) - {f.path for f in render.files})
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(trash / out.name)
            staging.rename(out)
            shutil.rmtree(trash)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report
