"""``lbappliance dataplane apply|status|drain|detach`` (mount ``dataplane`` on the main group)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lbappliance.dataplane import loader
from lbappliance.dataplane import spec as specmod

_pin_root = click.option(
    "--pin-root",
    type=click.Path(path_type=Path),
    default=loader.DEFAULT_PIN_ROOT,
    show_default=True,
    help="Directory on a bpf filesystem for the program's pins.",
)
_spec = click.option(
    "--spec",
    "spec_path",
    type=click.Path(path_type=Path),
    default=loader.DEFAULT_SPEC,
    show_default=True,
    help="Data-plane spec rendered for this node.",
)


@click.group()
def dataplane() -> None:
    """The XDP L4 forwarder on this node."""


@dataplane.command()
@_spec
@click.option(
    "--object",
    "obj",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=loader.DEFAULT_OBJECT,
    show_default=True,
    help="Compiled bpf/xdp_lb.c.",
)
@click.option(
    "--pass-object",
    type=click.Path(dir_okay=False, path_type=Path),
    default=loader.DEFAULT_PASS_OBJECT,
    show_default=True,
    help="Compiled bpf/xdp_pass.c, for the egress interfaces in native mode.",
)
@_pin_root
@click.option(
    "--down",
    multiple=True,
    metavar="ADDRESS",
    help="Backend that failed: only its slots move to the others (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def apply(
    spec_path: Path,
    obj: Path,
    pass_object: Path,
    pin_root: Path,
    down: tuple[str, ...],
    as_json: bool,
) -> None:
    """Load/attach the forwarder if needed and make its maps match the spec."""
    try:
        spec = specmod.load(spec_path)
        report = loader.apply(spec, obj, pin_root, down=down, pass_object=pass_object)
    except (specmod.SpecError, loader.LoaderError, OSError, LookupError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        s = report.sync
        click.echo(
            json.dumps(
                {
                    "interface": report.interface,
                    "mode": report.mode,
                    "reloaded": report.reloaded,
                    "prog_id": report.prog_id,
                    "egress_programs": [
                        {"interface": c.interface, "action": c.action, "prog_id": c.prog_id}
                        for c in report.egress
                    ],
                    "tables_written": s.tables_written,
                    "vips_removed": s.vips_removed,
                    "backends_added": s.backends_added,
                    "backends_freed": s.backends_freed,
                    "states_changed": s.states_changed,
                    "warnings": s.warnings,
                },
                indent=2,
            )
        )
    else:
        for line in report.lines():
            click.echo(line)


def _interface(spec_path: Path, interface: str | None) -> tuple[str, specmod.DataplaneSpec | None]:
    spec = None
    if spec_path.exists():
        try:
            spec = specmod.load(spec_path)
        except specmod.SpecError as e:
            if interface is None:
                raise click.ClickException(str(e)) from e
    if interface is None:
        if spec is None:
            raise click.ClickException(f"{spec_path} not found: give --interface")
        interface = spec.interface
    return interface, spec


@dataplane.command()
@_spec
@click.option("--interface", help="Interface (default: the spec's).")
@_pin_root
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(spec_path: Path, interface: str | None, pin_root: Path, as_json: bool) -> None:
    """Attachment, VIPs, table shares and packet/byte counters."""
    ifname, spec = _interface(spec_path, interface)
    try:
        st = loader.status(ifname, pin_root, spec)
    except (loader.LoaderError, OSError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    att = st["attached"]
    click.echo(
        f"{ifname}: XDP {att['mode'] or 'not attached'}"
        + (f" prog {att['prog_id']}" if att["prog_id"] else "")
        + (f", pinned prog {st['pinned_prog_id']}" if st["pinned_prog_id"] else ", nothing pinned")
    )
    for e in st["egress_programs"]:
        on = e["attached"]
        ours = on["prog_id"] is not None and on["prog_id"] == e["pinned_prog_id"]
        click.echo(
            f"egress {e['interface']}: XDP_PASS prog {e['pinned_prog_id']} pinned, "
            + (f"attached ({on['mode']})" if ours else f"not attached (there: {on['mode']})")
        )
    for s in st["services"]:
        click.echo(
            f"{s['name'] or '-'} {s['vip']} {s['port']}/{s['protocol']}: "
            f"{s['packets']} pkts {s['bytes']} bytes, table {s['table_size']}"
        )
        for b in s["backends"]:
            click.echo(
                f"  {b['address']:<39} {b['forwarding']:<5} via {b['egress']} to {b['mac']} "
                f"mtu {b['mtu']} {b['state']}, {b['slots']:>6} slots {b['flow_entries']} flows "
                f"{b['packets']} pkts {b['bytes']} bytes"
            )
    if "flows" in st:
        f = st["flows"]
        click.echo(
            f"flow table: {f['entries']} of {f['table_size']} entries; hit {f['hit']}, "
            f"miss {f['miss']}, previous table {f['previous_table']}, rehash {f['rehash']}, "
            f"UDP expired {f['udp_expired']}"
        )
    drops = {k: v for k, v in st.get("drops", {}).items() if v}
    if drops:
        click.echo("drops: " + ", ".join(f"{k} {v}" for k, v in drops.items()))


@dataplane.command()
@_spec
@click.option("--interface", help="Interface (default: the spec's).")
@_pin_root
@click.argument("address")
@click.option(
    "--idle",
    type=click.FloatRange(0.1),
    default=5.0,
    show_default=True,
    help="Seconds without a packet to the backend after which it counts as drained.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=300.0,
    show_default=True,
    help="Give up after this many seconds.",
)
def drain(
    spec_path: Path,
    interface: str | None,
    pin_root: Path,
    address: str,
    idle: float,
    timeout: float,
) -> None:
    """Wait until backend ADDRESS gets no more packets (its flows have ended).

    Drain a backend by giving it weight 0 and applying (new flows avoid it,
    flows with an entry keep it), wait here, then remove it from the spec and
    apply. Exit 0 once drained, 1 at the timeout with packets still flowing.
    """
    ifname, _ = _interface(spec_path, interface)
    try:
        rep = loader.drain_wait(ifname, address, idle, timeout, pin_root)
    except (loader.LoaderError, OSError) as e:
        raise click.ClickException(str(e)) from e
    if rep.drained:
        click.echo(f"{address}: drained after {rep.waited:.1f}s (no packet for {idle:g}s)")
        return
    click.echo(f"{address}: still receiving packets after {rep.waited:.1f}s", err=True)
    raise SystemExit(1)


@dataplane.command()
@_spec
@click.option("--interface", help="Interface (default: the spec's).")
@_pin_root
def detach(spec_path: Path, interface: str | None, pin_root: Path) -> None:
    """Detach the forwarder and remove its pins (traffic goes to the kernel)."""
    ifname, _ = _interface(spec_path, interface)
    try:
        for line in loader.detach(ifname, pin_root):
            click.echo(line)
    except (loader.LoaderError, OSError) as e:
        raise click.ClickException(str(e)) from e
