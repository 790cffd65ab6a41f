"""Apply a node's NIC plan idempotently and report exactly what changed.

Changes that can make a driver rebuild its queues and IRQs (channels, rings, offloads) go
first; then the facts are read again and the steering (RSS, IRQ affinity, RPS/XPS,
irqbalance, sysctls) is planned from what the host now looks like. A last read checks that
every change took effect.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbappliance.nic.changes import RESETS_DEVICE, Change, diff
from lbappliance.nic.ethtool import EthtoolSource
from lbappliance.nic.facts import HostFacts
from lbappliance.nic.plan import Plan
from lbappliance.nic.planner import make_plan
from lbappliance.nic.profile import NicProfile
from lbappliance.nic.reader import gather_facts

Runner = Callable[[Sequence[str]], tuple[int, str]]


def refuse_command(argv: Sequence[str]) -> tuple[int, str]:
    return 126, "not run: commands only run against the live host (root /)"


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return res.returncode, (res.stderr or res.stdout).strip()


@dataclass
class ApplyResult:
    node: str
    dry_run: bool
    plan: Plan
    changes: list[Change] = field(default_factory=list)  # made (or, dry run, to be made)
    failed: list[tuple[Change, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "changes": [c.to_dict() for c in self.changes],
            "failed": [{**c.to_dict(), "error": err} for c, err in self.failed],
            "notes": self.notes,
        }

    def render_text(self) -> str:
        verb = "would change" if self.dry_run else "changed"
        lines = [f"node {self.node}: {len(self.changes)} {verb}, {len(self.failed)} failed"]
        lines += [f"  {c.what}: {c.before} -> {c.after}" for c in self.changes]
        lines += [f"  FAILED {c.what}: {err}" for c, err in self.failed]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _stops_irqbalance(change: Change) -> bool:
    return change.argv[:3] == ("systemctl", "disable", "--now")


class Applier:
    def __init__(
        self,
        root: str | Path = "/",
        runner: Runner | None = None,
        ethtool: EthtoolSource | None = None,
    ):
        self.root = Path(root)
        live = self.root.resolve() == Path("/")
        self.runner = runner or (run_command if live else refuse_command)
        self.ethtool = ethtool

    def facts(self, interfaces: Sequence[str]) -> HostFacts:
        return gather_facts(self.root, interfaces, self.ethtool)

    def _why(self, argv: Sequence[str]) -> str:
        """What a refused queue change means when an XDP program holds the NIC."""
        if tuple(argv[:2]) != ("ethtool", "-L") or self.runner is refuse_command:
            return ""
        rc, out = self.runner(("ip", "-j", "link", "show", "dev", argv[2]))
        if rc != 0 or '"xdp"' not in out:
            return ""
        return (
            f"; an XDP program is attached to {argv[2]} and its driver refuses queue changes "
            "while one is (virtio-net does): `lbappliance dataplane detach`, tune the NIC, "
            "then `lbappliance dataplane apply`"
        )

    def execute(self, change: Change) -> str | None:
        """Make one change; the error text if it failed."""
        if change.argv:
            rc, out = self.runner(change.argv)
            if rc == 0:
                return None
            return f"exit {rc}: {out}" + self._why(change.argv)
        path = self.root / change.path.lstrip("/")
        try:
            if change.content is None:
                path.unlink(missing_ok=True)
            else:
                if not change.path.startswith(("/sys/", "/proc/")):
                    path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "w") as f:
                    f.write(change.content)
        except OSError as e:
            return f"{type(e).__name__}: {e.strerror or e}"
        return None

    def apply(
        self,
        node: str,
        profile: NicProfile,
        interfaces: Sequence[str],
        dry_run: bool = False,
    ) -> ApplyResult:
        """Plan from the host's facts and apply; PlanError before anything is touched.

        An interface that is not there (a dead card at boot) is reported as failed and the
        others are still tuned; the udev rule applies again when it appears.
        """
        facts = self.facts(interfaces)
        missing = [name for name in interfaces if name not in facts.nics]
        interfaces = [name for name in interfaces if name in facts.nics]
        plan = make_plan(node, profile, interfaces, facts)
        changes, notes = diff(plan, facts)
        result = ApplyResult(node, dry_run, plan, notes=list(notes))
        for name in missing:
            result.failed.append((Change(0, name, "absent", "tuned"), "no such interface"))
        if dry_run:
            result.changes = changes
            if any(c.phase == RESETS_DEVICE for c in changes):
                result.notes.append("queues and IRQs are read again after the device changes")
            return result
        # Also first: stopping irqbalance. Running, it may move an IRQ between the read
        # of the IRQ facts below and the verify (seen on virtio-net in the VM lab).
        first = [c for c in changes if c.phase == RESETS_DEVICE or _stops_irqbalance(c)]
        if first:
            self._run(first, result)
            facts = self.facts(interfaces)
            plan = make_plan(node, profile, interfaces, facts)
            changes, _ = diff(plan, facts)
        self._run([c for c in changes if c.phase != RESETS_DEVICE], result)
        result.plan = plan
        self._verify(node, profile, interfaces, result)
        return result

    def _run(self, changes: list[Change], result: ApplyResult) -> None:
        for change in changes:
            error = self.execute(change)
            if error is None:
                result.changes.append(change)
            else:
                result.failed.append((change, error))

    def _verify(
        self, node: str, profile: NicProfile, interfaces: Sequence[str], result: ApplyResult
    ) -> None:
        """Anything still different after applying did not take effect: report it."""
        if any(change.phase for change, _ in result.failed):
            return
        facts = self.facts(interfaces)
        left, _ = diff(make_plan(node, profile, interfaces, facts), facts)
        for change in left:
            if change.argv and change.argv[0] == "systemctl":
                continue
            result.failed.append((change, "did not take effect"))


def apply_nic_config(
    node: str,
    profile: NicProfile,
    interfaces: Sequence[str],
    root: str | Path = "/",
    dry_run: bool = False,
) -> ApplyResult:
    """Apply ``profile`` to ``interfaces`` of the host at ``root`` (plain-argument entry point)."""
    return Applier(root).apply(node, profile, interfaces, dry_run=dry_run)
