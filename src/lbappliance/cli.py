"""`lbappliance`: validate, render, deploy and operate LB sites from their inventory."""

from __future__ import annotations

from pathlib import Path

import click

from lbappliance.cliopts import (
    check_or_exit,
    inventory_option,
    load_or_exit,
    out_option,
    out_or_exit,
    render_or_exit,
    site_option,
    vault_option,
    write_or_exit,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lbappliance")
def main() -> None:
    """Build and run edge load-balancer pairs from one site inventory.

    \b
    A site (inventory/sites/<site>.yml) describes the LB pair, VIPs, BGP peers,
    L4 and L7 services, backend pools, health and tuning policy. Typical flow:
      lbappliance validate --site tokyo     check the inventory, all errors at once
      lbappliance render   --site tokyo     write configs + Ansible inventory to build/tokyo
      lbappliance deploy   --site tokyo     render, then converge the pair node by node
      lbappliance status   --site tokyo     BGP, VIPs, VRRP and backends per node
    """


@main.command()
@site_option
@inventory_option
def validate(site: str, inventory_dir: Path) -> None:
    """Check a site inventory: schema and cross-field rules.

    Every problem is reported with file:line:column, the field path, the bad
    value and what is expected. Exit status 2 when anything is wrong.
    """
    loaded = load_or_exit(inventory_dir, site)
    inv = loaded.model
    click.echo(
        f"site {inv.site.name}: valid — {len(inv.nodes)} nodes, {len(inv.anycast)} anycast VIPs, "
        f"{len(inv.l4_services)} L4 and {len(inv.l7.frontends)} L7 services, "
        f"{len(inv.bgp.peers)} BGP peers"
    )


@main.command()
@site_option
@inventory_option
@out_option
@click.option("--strict", is_flag=True, help="A missing config checker is an error.")
@click.option("--no-check", is_flag=True, help="Do not run the daemons' config checkers.")
@vault_option
def render(
    site: str,
    inventory_dir: Path,
    out: Path | None,
    strict: bool,
    no_check: bool,
    vault_password_file: Path | None,
) -> None:
    """Render a site: configs per node, Ansible inventory, the site playbook.

    \b
    Output (default build/<site>/):
      hosts/<node>/etc/...          every file the node runs, byte for byte what deploy installs
      inventory/                    hosts.yml, group_vars/, host_vars/
      site.yml, ansible.cfg         run `ansible-playbook site.yml` from that directory
    Rendered configs are checked by haproxy -c, keepalived -t and exabgp validate.
    Secrets (BGP passwords) are resolved here, written mode 0600, and never printed.
    """
    out = out_or_exit(out, site, inventory_dir)
    loaded = load_or_exit(inventory_dir, site)
    rendered = render_or_exit(loaded, vault_password_file)
    if not no_check:
        check_or_exit(rendered, strict)
    report = write_or_exit(rendered, out)
    nodes = [n.name for n in loaded.model.nodes]
    click.echo(
        f"rendered site {site} to {out}: {len(rendered.files)} files "
        f"({len(report.written)} changed, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed) for nodes {', '.join(nodes)}"
    )
    for path in report.written:
        secret = " (secret, 0600)" if rendered.by_path()[path].secret else ""
        click.echo(f"  changed  {path}{secret}")
    for path in report.removed:
        click.echo(f"  removed  {path}")


@main.command()
def reference() -> None:
    """Print the inventory reference (every field, its default, its meaning) as Markdown."""
    from lbappliance.inventory.reference import reference_markdown

    click.echo(reference_markdown(), nl=False)


from lbappliance.imbalance import imbalance  # noqa: E402

main.add_command(imbalance)

from lbappliance.maintenance import maintenance  # noqa: E402
from lbappliance.status import status  # noqa: E402

main.add_command(maintenance)
main.add_command(status)

from lbappliance.nic.cli import nic  # noqa: E402

main.add_command(nic)

from lbappliance.dataplane.cli import dataplane  # noqa: E402

main.add_command(dataplane)

from lbappliance.deploy import deploy  # noqa: E402
from lbappliance.lab.cli import lab  # noqa: E402

main.add_command(deploy)
main.add_command(lab)
