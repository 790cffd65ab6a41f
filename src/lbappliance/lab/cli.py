"""``lbappliance lab``: the container lab from the command line."""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lbappliance.cliopts import inventory_option
from lbappliance.lab import vm as vmlab_module
from lbappliance.lab.interface import MachineLab
from lbappliance.lab.podman import PodmanLab
from lbappliance.lab.podmancli import PodmanError, state_dir
from lbappliance.lab.vm import VmLab, VmLabError
from lbappliance.lab.vmimage import cache_dir

_site = click.option("--site", default="lab", show_default=True, help="Site the lab is built from.")


def _lab_errors(command: Callable[..., None]) -> Callable[..., None]:
    """One located line and exit 1 for what a user can hit (never a traceback)."""

    @functools.wraps(command)
    def run(*args: Any, **kw: Any) -> None:
        try:
            command(*args, **kw)
        except PodmanError as exc:
            click.secho(f"error: lab: {exc}", fg="red", err=True)
            sys.exit(1)
        except subprocess.CalledProcessError as exc:
            cmd = " ".join(map(str, exc.cmd[:3]))
            click.secho(f"error: lab: `{cmd}…` failed with exit status {exc.returncode}; "
                        f"see {state_dir() / 'image.log'} and {state_dir() / 'lab.log'}",
                        fg="red", err=True)  # fmt: skip
            sys.exit(1)
        except subprocess.TimeoutExpired as exc:
            cmd = " ".join(map(str, exc.cmd[:3]))
            click.secho(f"error: lab: `{cmd}…` timed out after {exc.timeout:.0f} s", fg="red",
                        err=True)  # fmt: skip
            sys.exit(1)

    return run


@click.group()
def lab() -> None:
    """The container lab: the lab site as rootful podman containers running systemd.

    \b
    lb1 and lb2 start bare (SSH only); `lbappliance deploy --site lab` provisions
    them over SSH. The router (BIRD), the backends and a client come up ready.
      lbappliance lab up                       image (cached), networks, containers
      eval "$(lbappliance lab env)"            the lab's SSH key for Ansible
      lbappliance deploy --site lab            converge lb1, then lb2
      lbappliance lab status                   containers, addresses, daemons
      lbappliance lab down                     remove everything the lab created

    `lbappliance lab vm ...` is the VM lab: lb1 and lb2 as qemu VMs with their own
    kernel (IPVS, NIC tuning, native XDP).
    """


def _up(the_lab: MachineLab, label: str, env_command: str, site: str) -> None:
    """Bring a lab up with progress, print its hosts and what to run next."""
    t = time.monotonic()
    the_lab.up(progress=click.echo)
    click.echo(f"{label} up in {time.monotonic() - t:.1f} s")
    _print_status(the_lab)
    click.echo(f'next: eval "$(lbappliance {env_command})" && lbappliance deploy --site {site}')


def _down(the_lab: MachineLab, label: str) -> None:
    removed = the_lab.down()
    click.echo(f"{label} down: removed {', '.join(removed) if removed else 'nothing (no lab)'}")


def _lab_command(command: Callable[..., None]) -> click.Command:
    """A `lbappliance lab` subcommand taking --site and --inventory, errors as one line."""
    return lab.command()(_site(inventory_option(_lab_errors(command))))


@_lab_command
def up(site: str, inventory_dir: Path) -> None:
    """Build the lab (or start what is stopped); seconds once the image is cached."""
    _up(PodmanLab.load(site, inventory_dir), "lab", "lab env", site)


@_lab_command
def down(site: str, inventory_dir: Path) -> None:
    """Remove the lab's containers and networks (and what netavark left behind)."""
    _down(PodmanLab.load(site, inventory_dir), "lab")


@_lab_command
def status(site: str, inventory_dir: Path) -> None:
    """Containers, their addresses and daemons; VRRP holder and BGP sessions."""
    podlab = PodmanLab.load(site, inventory_dir)
    _print_status(podlab)
    if podlab.container_state("router") == "running":
        _print_routing(podlab)


@_lab_command
def env(site: str, inventory_dir: Path) -> None:
    """Print the environment `lbappliance deploy --site lab` needs (for eval)."""
    for key, value in PodmanLab.load(site, inventory_dir).deploy_env().items():
        click.echo(f"export {key}={shlex.quote(value)}")


def _print_status(machines: MachineLab) -> None:
    for h in machines.status():
        services = " ".join(f"{k}={v}" for k, v in h.services.items())
        click.echo(f"  {h.name:<9} {h.kind:<8} {h.state:<8} {', '.join(h.addresses)}")
        if services:
            click.echo(f"  {'':<9} {'':<8} {'':<8} {services}")


def _print_routing(machines: MachineLab) -> None:
    """Who holds each VRRP VIP, and the router's BGP/BFD sessions."""
    for g in machines.site.model.vrrp:
        for vip in g.vips:
            holders = machines.vrrp_holders(str(vip.ip))
            click.echo(f"VRRP {g.name} {vip.ip}: {', '.join(holders) or 'nobody'}")
    click.echo(machines.birdc("show", "protocols").rstrip())


# --- `lbappliance lab vm` ----------------------------------------------------------------


def _vm_errors(command: Callable[..., None]) -> Callable[..., None]:
    """One line and exit 1 for what a user can hit (never a traceback)."""

    @functools.wraps(command)
    def run(*args: Any, **kw: Any) -> None:
        try:
            command(*args, **kw)
        except (VmLabError, TimeoutError) as exc:
            click.secho(f"error: lab vm: {exc}", fg="red", err=True)
            sys.exit(1)
        except subprocess.TimeoutExpired as exc:
            cmd = " ".join(map(str, exc.cmd[:3]))
            click.secho(f"error: lab vm: `{cmd}…` timed out after {exc.timeout:.0f} s",
                        fg="red", err=True)  # fmt: skip
            sys.exit(1)
        except subprocess.CalledProcessError as exc:
            cmd = " ".join(map(str, exc.cmd[:3]))
            click.secho(
                f"error: lab vm: `{cmd}…` failed with exit status {exc.returncode}; "
                f"see {vmlab_module.state_dir() / vmlab_module.PREFIX / 'logs'} and "
                f"{cache_dir() / 'build.log'}",
                fg="red",
                err=True,
            )
            sys.exit(1)

    return run


@lab.group()
def vm() -> None:
    """The VM lab: lb1 and lb2 as qemu VMs with their own kernel (IPVS, NIC tuning,
    native XDP), the router, backends and client as network namespaces.

    \b
      lbappliance lab vm up                    image (cached), namespaces, boot the VMs
      eval "$(lbappliance lab vm env)"         SSH to the VMs for Ansible
      lbappliance deploy --site lab            converge lb1, then lb2
      lbappliance lab vm status                VMs, addresses, daemons
      lbappliance lab vm down                  remove everything (the base image stays)
    """


@vm.command("up")
@_site
@inventory_option
@_vm_errors
def vm_up(site: str, inventory_dir: Path) -> None:
    """Build the VM lab (or boot what is stopped); 2-4 min once the image is cached."""
    _up(VmLab.load(site, inventory_dir), "VM lab", "lab vm env", site)


@vm.command("down")
@_site
@inventory_option
@_vm_errors
def vm_down(site: str, inventory_dir: Path) -> None:
    """Remove the VMs, taps, namespaces and overlays (the cached base image stays)."""
    _down(VmLab.load(site, inventory_dir), "VM lab")


@vm.command("status")
@_site
@inventory_option
@_vm_errors
def vm_status(site: str, inventory_dir: Path) -> None:
    """VMs and namespace hosts, their addresses and daemons; VRRP holder, BGP sessions."""
    vmlab = VmLab.load(site, inventory_dir)
    if not vmlab.exists():
        raise VmLabError("no VM lab: `lbappliance lab vm up` builds it")
    _print_status(vmlab)
    _print_routing(vmlab)


@vm.command("env")
@_site
@inventory_option
@_vm_errors
def vm_env(site: str, inventory_dir: Path) -> None:
    """Print the environment `lbappliance deploy --site lab` needs (for eval)."""
    for key, value in VmLab.load(site, inventory_dir).deploy_env().items():
        click.echo(f"export {key}={shlex.quote(value)}")
