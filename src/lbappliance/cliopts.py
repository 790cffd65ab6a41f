"""Options and helpers every `lbappliance` command shares.

Kept apart from cli.py, which imports the command modules: they import these
without a circular import. The inventory and render modules are imported where
used: node-side commands (`nic apply`) take options from here and run on a node
whose Python need not load the controller's side (YAML, Jinja).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lbappliance.paths import project_dir

if TYPE_CHECKING:
    from lbappliance.inventory import Site
    from lbappliance.render import Render, WriteReport
    from lbappliance.secrets import Secrets

EXIT_INVALID = 2
EXIT_FAILED = 1


def ansible_or_exit(tool: str) -> None:
    """deploy, status and maintenance drive Ansible, which LB nodes do not install:
    a controller without it is told what to install before anything runs."""
    if shutil.which(tool) is None:
        click.secho(
            f"error: {tool} is not on PATH; the controller needs Ansible: "
            "pip install 'lbappliance[controller]' (or run from its virtualenv)",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_FAILED)


def default_inventory() -> Path:
    local = Path("inventory")
    return local if (local / "sites").is_dir() else project_dir() / "inventory"


inventory_option = click.option(
    "--inventory",
    "inventory_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_inventory,
    show_default="./inventory, else the bundled one",
    help="Inventory directory holding sites/<site>.yml (and defaults.yml).",
)


def _site_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A site is named, never a path: ``--site ../x`` or ``--site /tmp/x`` is refused."""
    from lbappliance.inventory import SITE_NAME

    if value is not None and not SITE_NAME.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a site name (lower-case letters, digits, - and _, "
            "starting with a letter; the file is inventory/sites/<name>.yml)"
        )
    return value


site_option = click.option(
    "--site", required=True, callback=_site_name, help="Site name: inventory/sites/<site>.yml."
)
out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Rendered directory (default: build/<site>). Replaced as a whole: it must be new, "
    "empty or an earlier render, and not inside the inventory.",
)
vault_option = click.option(
    "--vault-password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="ANSIBLE_VAULT_PASSWORD_FILE",
    help="Password for the site's vault file (secrets referenced with `vault:`).",
)


def out_or_exit(out: Path | None, site: str, inventory_dir: Path) -> Path:
    """The output directory, once it is known that replacing it destroys nothing."""
    from lbappliance.render import OutputRefused, check_output_dir

    out = out or Path("build") / site
    try:
        check_output_dir(
            out,
            above=[inventory_dir, project_dir(), Path.cwd(), Path.home()],
            inside=[inventory_dir, project_dir() / "inventory"],
        )
    except OutputRefused as exc:
        click.secho(f"error: --out: {exc}", fg="red", err=True)
        sys.exit(EXIT_INVALID)
    return out


def write_or_exit(rendered: Render, out: Path) -> WriteReport:
    """Write the render; a directory that cannot be written is an error, not a traceback."""
    from lbappliance.render import OutputRefused, write_render

    try:
        return write_render(rendered, out)
    except (OutputRefused, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        click.secho(f"error: --out: cannot write {out}: {reason}", fg="red", err=True)
        sys.exit(EXIT_INVALID)


def load_or_exit(inventory_dir: Path, site: str) -> Site:
    """Load a site; on errors print every one (file:line:col) and exit 2."""
    from lbappliance.inventory import InventoryInvalid, load_site

    try:
        return load_site(inventory_dir, site)
    except InventoryInvalid as exc:
        for error in exc.errors:
            click.secho(f"error: {error}", fg="red", err=True)
        n = len(exc.errors)
        click.echo(f"{n} error{'s' if n != 1 else ''} in site {site!r}.", err=True)
        sys.exit(EXIT_INVALID)


def secrets_for(site: Site, vault_password_file: Path | None) -> Secrets:
    from lbappliance.secrets import Secrets

    return Secrets(site.inventory_dir / "sites" / f"{site.name}.vault.yml", vault_password_file)


def render_or_exit(loaded: Site, vault_password_file: Path | None):
    from lbappliance.inventory import InventoryError
    from lbappliance.render import render_site
    from lbappliance.secrets import SecretUnavailable

    try:
        return render_site(loaded, secrets_for(loaded, vault_password_file))
    except SecretUnavailable as exc:
        error = InventoryError(loaded.positions.of(exc.path), exc.path, exc.message, exc.hint)
        click.secho(f"error: {error}", fg="red", err=True)
        sys.exit(EXIT_INVALID)


def check_or_exit(rendered, strict: bool) -> None:
    from lbappliance.render.checks import check_render

    failed = False
    for result in check_render(rendered, strict=strict):
        if result.status == "ok":
            continue
        color = "red" if result.status == "failed" else "yellow"
        label = "error" if result.status == "failed" else "warning"
        click.secho(f"{label}: {result.checker} {result.path}: {result.detail}", fg=color, err=True)
        failed |= result.status == "failed"
    if failed:
        click.echo("rendered configs failed their checks; nothing was written.", err=True)
        sys.exit(EXIT_INVALID)
