#!/usr/bin/python3
"""Apply the rendered systemd-networkd files so that a lost node rolls itself back.

Usage: network_apply.py COMMAND [options]; runs on the node with only the standard library.

  check    --staged DIR   the staged files are well formed and name existing interfaces
  plan     --staged DIR   print JSON: which of the appliance's files would change
  apply    --staged DIR --timeout S   back up the installed files, arm the rollback,
                          install the staged files, reload networkd and reconfigure the
                          changed links; addresses and routes dropped from a file are removed
  confirm                 the controller reached the node over the new network: disarm
  rollback                put the backed-up files back and reconfigure (run by the timer)

The rollback is armed before anything changes (the idea of ``netplan try``): a
transient systemd timer (``systemd-run --on-active``) runs ``rollback`` unless
``confirm`` stops it within the timeout. ``--arm none`` skips the timer (tests that
call ``rollback`` themselves). Only files named ``PREFIX*.network`` are touched.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PREFIX = "10-lbappliance-"
SECTIONS = {
    "Match": {"Name"},
    "Link": {"MTUBytes"},
    "Network": {
        "Description", "ConfigureWithoutCarrier", "KeepConfiguration", "LinkLocalAddressing",
        "IPv6AcceptRA", "IPv6DuplicateAddressDetection",
    },
    "Address": {"Address", "DuplicateAddressDetection"},
    "Route": {"Destination", "Gateway", "Metric"},
}  # fmt: skip
TIMER_UNIT = "lbappliance-network-rollback"


def parse(text: str, name: str) -> list[tuple[str, dict[str, str]]]:
    """``[(section, {key: value})]`` of a .network file; raises ValueError when malformed."""
    sections: list[tuple[str, dict[str, str]]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            if line[1:-1] not in SECTIONS:
                raise ValueError(f"{name}:{n}: unknown section {line}")
            sections.append((line[1:-1], {}))
            continue
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise ValueError(f"{name}:{n}: expected KEY=VALUE inside a section: {line!r}")
        section, values = sections[-1]
        if key not in SECTIONS[section]:
            raise ValueError(f"{name}:{n}: unknown key {key} in [{section}]")
        values[key] = value
    return sections


def facts(path: Path) -> tuple[str, set[str], set[tuple[str, str, str]]]:
    """(interface, addresses, routes as (destination, gateway, metric)) of one file."""
    parsed = parse(path.read_text(), path.name)
    name = next(v["Name"] for s, v in parsed if s == "Match")
    addresses = {v["Address"] for s, v in parsed if s == "Address"}
    routes = {
        (v.get("Destination", ""), v.get("Gateway", ""), v.get("Metric", ""))
        for s, v in parsed
        if s == "Route"
    }
    return name, addresses, routes


def ours(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(directory.glob(f"{PREFIX}*.network"))}


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def cmd_check(args: argparse.Namespace) -> None:
    present = set(os.listdir("/sys/class/net"))
    problems = []
    for path in ours(args.staged).values():
        try:
            name, _, _ = facts(path)
        except (ValueError, StopIteration) as exc:
            problems.append(str(exc) or f"{path.name}: no [Match] Name=")
            continue
        if name not in present:
            problems.append(f"{path.name}: interface {name} does not exist on this node")
    if problems:
        sys.exit("; ".join(problems))


def changes(staged: Path, installed: Path) -> dict[str, list[str]]:
    new, old = ours(staged), ours(installed)
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(
            n for n in set(new) & set(old) if new[n].read_bytes() != old[n].read_bytes()
        ),
    }


def cmd_plan(args: argparse.Namespace) -> None:
    print(json.dumps(changes(args.staged, args.installed)))


def _replace(source: Path, target: Path) -> None:
    """Make ``target``'s appliance files exactly ``source``'s (atomic per file)."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = ours(source)
    for name, path in ours(target).items():
        if name not in wanted:
            path.unlink()
    for name, path in wanted.items():
        tmp = target / f".{name}.tmp"
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o644)
        tmp.replace(target / name)


def _facts_by_link(directory: Path) -> dict[str, tuple[set[str], set[tuple[str, str, str]]]]:
    out = {}
    for path in ours(directory).values():
        name, addresses, routes = facts(path)
        out[name] = (addresses, routes)
    return out


def _switch(source: Path, installed: Path) -> list[str]:
    """Install ``source``'s files, reload networkd, reconfigure the links whose files
    changed and remove what the old files had and the new ones do not (networkd keeps
    foreign static configuration, ``KeepConfiguration=static``). Returns the links."""
    before = _facts_by_link(installed)
    _replace(source, installed)
    after = _facts_by_link(installed)
    links = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    run("networkctl", "reload")
    present = set(os.listdir("/sys/class/net"))
    if links:
        run("networkctl", "reconfigure", *(n for n in links if n in present))
    for link in links:
        if link not in present:
            continue
        old_addr, old_routes = before.get(link, (set(), set()))
        new_addr, new_routes = after.get(link, (set(), set()))
        for address in sorted(old_addr - new_addr):
            run("ip", "address", "del", address, "dev", link, check=False)
        for dst, gw, metric in sorted(old_routes - new_routes):
            family = ipaddress.ip_address(gw).version if gw else 4
            to = dst or ("default" if gw else "")
            argv = ["ip", f"-{family}", "route", "del", to, "dev", link]
            argv += ["via", gw] if gw else []
            argv += ["metric", metric] if metric else []
            run(*argv, check=False)
    return links


def cmd_apply(args: argparse.Namespace) -> None:
    backup: Path = args.backup
    shutil.rmtree(backup, ignore_errors=True)
    backup.mkdir(parents=True)
    _replace(args.installed, backup)
    (backup / "installed").write_text(str(args.installed))
    if args.arm == "systemd":
        run("systemctl", "stop", f"{TIMER_UNIT}.timer", check=False)
        run("systemctl", "reset-failed", f"{TIMER_UNIT}.service", check=False)
        run(
            "systemd-run", f"--unit={TIMER_UNIT}", f"--on-active={int(args.timeout)}s",
            "--timer-property=AccuracySec=100ms",
            "--description=lbappliance: restore the previous network unless the deploy confirms",
            sys.executable, os.path.abspath(__file__), "rollback", "--backup", str(backup),
        )  # fmt: skip
    links = _switch(args.staged, args.installed)
    print(json.dumps({"reconfigured": links, "rollback_in": args.timeout}))


def cmd_confirm(args: argparse.Namespace) -> None:
    run("systemctl", "stop", f"{TIMER_UNIT}.timer", check=False)
    shutil.rmtree(args.backup, ignore_errors=True)


def cmd_rollback(args: argparse.Namespace) -> None:
    backup: Path = args.backup
    if not (backup / "installed").is_file():
        sys.exit(f"no backup in {backup}: nothing to roll back")
    installed = Path((backup / "installed").read_text())
    links = _switch(backup, installed)
    shutil.rmtree(backup, ignore_errors=True)
    print(json.dumps({"rolled_back": links}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "plan", "apply", "confirm", "rollback"):
        p = sub.add_parser(name)
        p.add_argument("--installed", type=Path, default=Path("/etc/systemd/network"))
        p.add_argument("--backup", type=Path, default=Path("/var/lib/lbappliance/network-backup"))
        if name in ("check", "plan", "apply"):
            p.add_argument("--staged", type=Path, required=True)
        if name == "apply":
            p.add_argument("--timeout", type=float, default=60)
            p.add_argument("--arm", choices=("systemd", "none"), default="systemd")
    args = parser.parse_args()
    {"check": cmd_check, "plan": cmd_plan, "apply": cmd_apply, "confirm": cmd_confirm,
     "rollback": cmd_rollback}[args.command](args)  # fmt: skip


if __name__ == "__main__":
    main()
