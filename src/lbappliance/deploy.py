"""`lbappliance deploy`: validate, render, then converge a site's LB pair node by node.

The rendered directory (``build/<site>`` by default) holds the inventory and
``site.yml``, which imports ``playbooks/site.yml``: a ``serial: 1`` roll that
drains, converges, verifies and undrains one node at a time and stops at the
first failure (the failed node stays drained, its peer keeps serving).

``ansible-playbook`` runs with its default output, which is kept whole in
``<out>/deploy.log``; the terminal gets one line per task and host as results
arrive, the failures in full, and a summary per host from the play recap.
Works without a terminal (CI): no colour, line-buffered.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

from lbappliance.cliopts import (
    EXIT_FAILED,
    ansible_or_exit,
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

_PLAY = re.compile(r"^PLAY \[(?P<name>.*)\] \*+")
_TASK = re.compile(r"^(?P<kind>TASK|RUNNING HANDLER) \[(?P<name>.*)\] \*+")
_RESULT = re.compile(
    r"^(?P<status>ok|changed|skipping|failed|fatal): \[(?P<host>[^\]\s]+)(?: -> [^\]]+)?\]"
    r"(?:: (?P<what>FAILED|UNREACHABLE)!)?(?: (?:=> )?\(item=(?P<item>.*?)\))?"
)
_RETRY = re.compile(r"^FAILED - RETRYING: \[(?P<host>[^\]]+)\]: .* \((?P<left>\d+) retries left\)")
_RECAP = re.compile(r"^(?P<host>\S+)\s+: (?P<counts>(?:\w+=\d+\s*)+)$")


@dataclass
class HostRecap:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def success(self) -> bool:
        return not (self.failed or self.unreachable)


@dataclass
class Progress:
    """Reads ansible-playbook's default output line by line; yields what to show."""

    show_diffs: bool = False
    task: str = ""
    recap: dict[str, HostRecap] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _in_recap: bool = False
    _failure: list[str] | None = None
    _in_diff: bool = False

    def feed(self, line: str) -> Iterator[str]:
        line = line.rstrip("\n")
        if self._failure is not None:  # a failure's details: indented lines
            if line.startswith((" ", "\t")) or not line:
                self._failure.append(line)
                return
            self.failures.append("\n".join(self._failure).rstrip())
            self._failure = None
        if self.show_diffs and (self._in_diff or line.startswith("--- before")):
            self._in_diff = bool(line) and not _TASK.match(line) and not _RESULT.match(line)
            if self._in_diff:
                yield f"      {line}"
                return
        if line.startswith("PLAY RECAP"):
            self._in_recap = True
            return
        if self._in_recap:
            if m := _RECAP.match(line):
                counts = dict(kv.split("=") for kv in m["counts"].split())
                self.recap[m["host"]] = HostRecap(
                    **{k: int(v) for k, v in counts.items() if k in HostRecap.__annotations__}
                )
            return
        if m := _PLAY.match(line):
            yield f"== {m['name']}"
        elif m := _TASK.match(line):
            self.task = m["name"] + (" (handler)" if m["kind"] == "RUNNING HANDLER" else "")
        elif m := _RESULT.match(line):
            status = m["status"]
            if status == "skipping":
                return
            if m["what"] == "UNREACHABLE":
                status = "unreachable"
            elif status == "fatal":
                status = "failed"
            item = f" ({m['item']})" if m["item"] else ""
            yield f"  {m['host']:<12} {status:<11} {self.task}{item}"
            if status in ("failed", "unreachable") and "...ignoring" not in line:
                self._failure = [f"{m['host']}: {self.task}{item}: {status}", line]
        elif m := _RETRY.match(line):
            left = int(m["left"])
            if left % 10 == 0:  # waits can retry for a while: show that they are alive
                yield f"  {m['host']:<12} {'waiting':<11} {self.task} ({left} tries left)"

    def close(self) -> None:
        if self._failure is not None:
            self.failures.append("\n".join(self._failure).rstrip())
            self._failure = None


def playbook_command(
    out: Path,
    check: bool,
    diff: bool,
    limit: str | None,
    tags: str | None,
    skip_tags: str | None,
    extra_vars: Iterable[str],
    vault_file: Path | None,
    vault_password_file: Path | None,
) -> list[str]:
    cmd = ["ansible-playbook", str(out / "site.yml")]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if limit:
        cmd += ["--limit", limit]
    if tags:
        cmd += ["--tags", tags]
    if skip_tags:
        cmd += ["--skip-tags", skip_tags]
    for ev in extra_vars:
        cmd += ["--extra-vars", ev]
    if vault_file and vault_file.is_file():
        # Vault variables (e.g. lb_haproxy_certificates_pem) for the roles.
        cmd += ["--extra-vars", f"@{vault_file}"]
        if vault_password_file:
            cmd += ["--vault-password-file", str(vault_password_file)]
    return cmd


def run_playbook(
    cmd: list[str], out: Path, echo: bool, show_diffs: bool = False
) -> tuple[int, Progress]:
    """Run ansible-playbook from the rendered directory, streaming its progress."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(out / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    }
    progress = Progress(show_diffs=show_diffs)
    log = out / "deploy.log"
    with (
        open(log, "w") as logf,
        subprocess.Popen(
            cmd,
            cwd=out,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            if echo:
                click.echo(line, nl=False)
            else:
                for shown in progress.feed(line):
                    click.echo(shown)
        rc = proc.wait()
    if echo:  # still collect the recap for the summary
        progress.show_diffs = False
        for line in log.read_text().splitlines():
            for _ in progress.feed(line):
                pass
    progress.close()
    return rc, progress


def summary_lines(recap: dict[str, HostRecap]) -> list[str]:
    lines = [f"  {'host':<12} {'ok':>4} {'changed':>8} {'failed':>7} {'unreachable':>12}  result"]
    for host, r in sorted(recap.items()):
        result = "ok" if r.success else ("UNREACHABLE" if r.unreachable else "FAILED")
        lines.append(
            f"  {host:<12} {r.ok:>4} {r.changed:>8} {r.failed:>7} {r.unreachable:>12}  {result}"
        )
    return lines


@click.command()
@site_option
@inventory_option
@out_option
@click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing.")
@click.option("--diff", is_flag=True, help="Show the changes to files (secrets stay hidden).")
@click.option("--limit", metavar="NODE", help="Only these nodes (Ansible --limit pattern).")
@click.option(
    "--tags", metavar="TAGS", help="Only these parts: base,haproxy,keepalived,exabgp,bfd,…"
)
@click.option("--skip-tags", metavar="TAGS", help="Skip these parts.")
@click.option(
    "-e",
    "--extra-vars",
    multiple=True,
    metavar="VARS",
    help="Extra Ansible variables, e.g. lb_deploy_drain=always (repeatable).",
)
@click.option("--verbose", is_flag=True, help="Show ansible-playbook's own output.")
@vault_option
def deploy(
    site: str,
    inventory_dir: Path,
    out: Path | None,
    check: bool,
    diff: bool,
    limit: str | None,
    tags: str | None,
    skip_tags: str | None,
    extra_vars: tuple[str, ...],
    verbose: bool,
    vault_password_file: Path | None,
) -> None:
    """Validate and render a site, then converge its LB nodes one at a time.

    \b
    Per node: plan (is anything different: configs, build, packages, units?);
    a node with nothing different is left alone. Otherwise drain (routes
    withdrawn, VRRP demoted, in-flight connections finish) when something
    changes, converge the roles, verify (daemons up, configs valid, BGP
    established, VIPs answer locally), undrain. The first failure stops the
    run; that node stays drained and the other keeps serving. Exit status 1 on
    failure, 2 when the site does not validate or render.
    """
    started = time.monotonic()
    ansible_or_exit("ansible-playbook")
    out = out_or_exit(out, site, inventory_dir)
    loaded = load_or_exit(inventory_dir, site)
    rendered = render_or_exit(loaded, vault_password_file)
    check_or_exit(rendered, strict=False)
    report = write_or_exit(rendered, out)
    click.echo(
        f"deploy {site}: rendered {len(rendered.files)} files to {out} "
        f"({len(report.written)} changed since the last render); "
        f"nodes {', '.join(n.name for n in loaded.model.nodes)}, one at a time"
        + (" [check mode]" if check else "")
    )
    vault_file = loaded.inventory_dir / "sites" / f"{site}.vault.yml"
    cmd = playbook_command(
        out.resolve(), check, diff, limit, tags, skip_tags, extra_vars,
        vault_file, vault_password_file,
    )  # fmt: skip
    rc, progress = run_playbook(cmd, out.resolve(), echo=verbose, show_diffs=diff)
    for failure in progress.failures:
        click.secho(failure, fg="red", err=True)
    click.echo("summary:")
    for line in summary_lines(progress.recap):
        click.echo(line)
    changed = sum(r.changed for r in progress.recap.values())
    elapsed = time.monotonic() - started
    ok = rc == 0 and progress.recap and all(r.success for r in progress.recap.values())
    verdict = "ok" if ok else "FAILED"
    click.echo(
        f"deploy {site}: {verdict} ({changed} changed) in {elapsed:.1f} s; "
        f"full log: {out / 'deploy.log'}"
    )
    if not ok:
        sys.exit(EXIT_FAILED)
