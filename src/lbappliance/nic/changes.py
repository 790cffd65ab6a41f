"""What it takes to get from the host's current facts to a plan: a list of changes."""

from __future__ import annotations

from dataclasses import dataclass

from lbappliance.nic.cpulist import format_cpulist, format_mask
from lbappliance.nic.facts import HostFacts, Nic
from lbappliance.nic.irqbalance import DROPIN, DROPIN_PATH, ENV_PATH, UNIT, env_file
from lbappliance.nic.plan import NicPlan, Plan
from lbappliance.nic.planner import XDP_OFFLOADS

RESETS_DEVICE = 1  # channels, rings, offloads: drivers may rebuild queues and IRQs
STEERING = 2  # everything else, computed again from fresh facts after phase 1


@dataclass(frozen=True)
class Change:
    phase: int  # RESETS_DEVICE or STEERING (0: a failure that is not a change, e.g. no NIC)
    what: str
    before: str
    after: str
    argv: tuple[str, ...] = ()  # a command to run, or
    path: str = ""  # a file to write (absolute, under the applier's root)
    content: str | None = None  # None with a path: remove the file

    def to_dict(self) -> dict[str, str]:
        out = {"what": self.what, "before": self.before, "after": self.after}
        if self.argv:
            out["command"] = " ".join(self.argv)
        elif self.path:
            out["path"] = self.path
        return out


def diff(plan: Plan, facts: HostFacts) -> tuple[list[Change], list[str]]:
    """Changes in the order they must be made, and notes on what could not be compared."""
    changes: list[Change] = []
    notes: list[str] = []
    for nic_plan in plan.nics:
        changes.extend(_nic_device(nic_plan, facts.nics[nic_plan.name]))
    for nic_plan in plan.nics:
        changes.extend(_nic_rss(nic_plan, facts.nics[nic_plan.name]))
    changes.extend(_irqbalance(plan, facts))
    for nic_plan in plan.nics:
        changes.extend(_nic_steering(nic_plan, facts.nics[nic_plan.name]))
    for key, value in plan.sysctls.items():
        current = facts.sysctls.get(key)
        if current is None:
            notes.append(f"sysctl {key} is not present here; left alone")
        elif current != value:
            path = "/proc/sys/" + key.replace(".", "/")
            changes.append(
                Change(
                    STEERING,
                    f"sysctl {key}",
                    str(current),
                    str(value),
                    path=path,
                    content=str(value),
                )
            )
    return changes, notes


def _default_table(size: int, n: int) -> tuple[int, ...]:
    return tuple(i % n for i in range(size))


def _current_channels(nic: Nic) -> int | None:
    return nic.channels.current if nic.channels else None


def _shrink_rxfh(p: NicPlan, nic: Nic) -> bool:
    """Shrinking channels fails while the RSS table points at a queue that goes away."""
    current = _current_channels(nic)
    return bool(
        p.channels
        and current is not None
        and p.queues < current
        and nic.indirection
        and max(nic.indirection) >= p.queues
    )


def _describe_table(table: tuple[int, ...] | None) -> str:
    if not table:
        return "none"
    k = max(table) + 1
    return f"equal {k}" if table == _default_table(len(table), k) else "custom"


def _rxfh_change(p: NicPlan, nic: Nic, phase: int) -> Change:
    n = p.indirection_equal
    return Change(
        phase,
        f"{p.name} RSS indirection",
        _describe_table(nic.indirection),
        f"equal {n}",
        argv=("ethtool", "-X", p.name, "equal", str(n)),
    )


def _nic_device(p: NicPlan, nic: Nic) -> list[Change]:
    changes: list[Change] = []
    ch = nic.channels
    if p.channels and ch:
        mode, n = p.channels
        if mode == "combined" and ch.combined != n:
            if _shrink_rxfh(p, nic):
                changes.append(_rxfh_change(p, nic, RESETS_DEVICE))
            argv = ("ethtool", "-L", p.name, "combined", str(n))
            changes.append(
                Change(RESETS_DEVICE, f"{p.name} combined queues", str(ch.combined), str(n), argv)
            )
        elif mode == "rxtx" and (ch.rx != n or ch.tx != n):
            if _shrink_rxfh(p, nic):
                changes.append(_rxfh_change(p, nic, RESETS_DEVICE))
            argv = ("ethtool", "-L", p.name, "rx", str(n), "tx", str(n))
            changes.append(
                Change(
                    RESETS_DEVICE, f"{p.name} rx/tx queues", f"{ch.rx}/{ch.tx}", f"{n}/{n}", argv
                )
            )
    ring_args: list[str] = []
    before: list[str] = []
    for kind, size in p.rings.items():
        current = getattr(nic.rings, kind) if nic.rings else None
        if current != size:
            ring_args += [kind, str(size)]
            before.append(f"{kind} {current}")
    if ring_args:
        after = " ".join(f"{k} {v}" for k, v in zip(ring_args[::2], ring_args[1::2], strict=True))
        changes.append(
            Change(
                RESETS_DEVICE,
                f"{p.name} rings",
                ", ".join(before),
                after,
                ("ethtool", "-G", p.name, *ring_args),
            )
        )
    long_name = {short: long for long, short in XDP_OFFLOADS}
    turn_off = [f for f in p.features_off if nic.features[long_name[f]].on]
    if turn_off:
        args = [a for f in turn_off for a in (f, "off")]
        changes.append(
            Change(
                RESETS_DEVICE,
                f"{p.name} offloads",
                ", ".join(f"{f} on" for f in turn_off),
                ", ".join(f"{f} off" for f in turn_off),
                ("ethtool", "-K", p.name, *args),
            )
        )
    return changes


def _nic_rss(p: NicPlan, nic: Nic) -> list[Change]:
    changes: list[Change] = []
    if p.indirection_equal is not None and nic.indirection and not _shrink_rxfh(p, nic):
        size = len(nic.indirection)
        current = _current_channels(nic)
        pending = bool(p.channels) and current != p.queues
        # A driver resets a default table when the channel count changes.
        reset_by_driver = pending and current and nic.indirection == _default_table(size, current)
        if not reset_by_driver and nic.indirection != _default_table(size, p.queues):
            changes.append(_rxfh_change(p, nic, STEERING))
    for proto, fields in p.flow_hash.items():
        current_fields = nic.flow_hash.get(proto, "")
        if set(current_fields) != set(fields):
            changes.append(
                Change(
                    STEERING,
                    f"{p.name} rx-flow-hash {proto}",
                    current_fields or "none",
                    fields,
                    ("ethtool", "-N", p.name, "rx-flow-hash", proto, fields),
                )
            )
    return changes


def _irqbalance(plan: Plan, facts: HostFacts) -> list[Change]:
    ib_plan, ib = plan.irqbalance, facts.irqbalance
    wanted: dict[str, str | None] = {DROPIN_PATH: None, ENV_PATH: None}
    if ib_plan.mode == "ban" and ib_plan.installed:
        wanted = {
            DROPIN_PATH: DROPIN,
            ENV_PATH: env_file(ib_plan.banned_irqs, ib_plan.banned_cpus),
        }
    changes: list[Change] = []
    for path, content in wanted.items():
        current = ib.files.get(path)
        if current != content:
            changes.append(
                Change(
                    STEERING,
                    f"irqbalance {'drop-in' if path == DROPIN_PATH else 'environment'}",
                    "absent" if current is None else "other content",
                    "absent" if content is None else "written",
                    path=path,
                    content=content,
                )
            )
    if any(c.path == DROPIN_PATH for c in changes):
        changes.append(
            Change(STEERING, "systemd units", "-", "reloaded", ("systemctl", "daemon-reload"))
        )
    if changes and ib.installed and ib.active is not False and ib_plan.mode != "stop":
        changes.append(
            Change(
                STEERING, "irqbalance", "running", "restarted", ("systemctl", "try-restart", UNIT)
            )
        )
    if ib_plan.mode == "stop" and ib.installed and (ib.active or ib.enabled):
        before = ", ".join(s for s, on in (("active", ib.active), ("enabled", ib.enabled)) if on)
        changes.append(
            Change(
                STEERING,
                "irqbalance",
                before,
                "stopped, disabled",
                ("systemctl", "disable", "--now", UNIT),
            )
        )
    return changes


def _nic_steering(p: NicPlan, nic: Nic) -> list[Change]:
    changes: list[Change] = []
    current_irqs = {irq.irq: irq for irq in nic.irqs}
    for irq, cpu in p.irq_affinity.items():
        current = current_irqs[irq].affinity
        if current != {cpu}:
            changes.append(
                Change(
                    STEERING,
                    f"{p.name} irq {irq} ({current_irqs[irq].name}) affinity",
                    format_cpulist(current),
                    str(cpu),
                    path=f"/proc/irq/{irq}/smp_affinity_list",
                    content=str(cpu),
                )
            )
    for kind, masks, current_masks in (
        ("rps", p.rps, nic.rx_queues),
        ("xps", p.xps, nic.tx_queues),
    ):
        prefix = "rx" if kind == "rps" else "tx"
        for q, mask in masks.items():
            current = current_masks.get(q)
            if current != mask:
                changes.append(
                    Change(
                        STEERING,
                        f"{p.name} {prefix}-{q} {kind}_cpus",
                        "(new queue)" if current is None else format_mask(current),
                        format_mask(mask),
                        path=f"/sys/class/net/{p.name}/queues/{prefix}-{q}/{kind}_cpus",
                        content=format_mask(mask),
                    )
                )
    return changes
