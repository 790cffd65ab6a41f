"""A plan: the desired NIC, IRQ, irqbalance and sysctl state of one node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lbappliance.nic.cpulist import cpus_of, format_cpulist, format_mask


@dataclass(frozen=True)
class NicPlan:
    name: str
    driver: str
    numa_node: int | None
    queues: int  # receive queues in use after the plan
    channels: tuple[Literal["combined", "rxtx"], int] | None  # ethtool -L; None: cannot be set
    cpus: tuple[int, ...]  # cpus[i] serves queue i (its IRQ, and first CPU of its RPS group)
    groups: tuple[tuple[int, ...], ...]  # groups[i]: the CPUs doing queue i's packet work
    irq_affinity: dict[int, int]  # IRQ -> CPU
    rps: dict[int, int]  # rx queue -> rps_cpus mask (0 = RPS off)
    xps: dict[int, int]  # tx queue -> xps_cpus mask (empty: leave XPS alone)
    indirection_equal: int | None  # ethtool -X equal N (None: no RSS table)
    flow_hash: dict[str, str]  # proto -> ethtool -N rx-flow-hash fields
    rings: dict[str, int]  # "rx"/"tx" -> ring size (absent: leave)
    features_off: tuple[str, ...]  # ethtool -K names to turn off
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "driver": self.driver,
            "numa_node": self.numa_node,
            "queues": self.queues,
            "channels": None if self.channels is None else {self.channels[0]: self.channels[1]},
            "queue_cpus": list(self.cpus),
            "queue_groups": [format_cpulist(g) for g in self.groups],
            "irq_affinity": {str(irq): cpu for irq, cpu in self.irq_affinity.items()},
            "rps_cpus": {f"rx-{q}": format_mask(m) for q, m in self.rps.items()},
            "xps_cpus": {f"tx-{q}": format_mask(m) for q, m in self.xps.items()},
            "rss_equal": self.indirection_equal,
            "rx_flow_hash": self.flow_hash,
            "rings": self.rings,
            "offloads_off": list(self.features_off),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class IrqbalancePlan:
    mode: Literal["stop", "ban", "leave"]
    installed: bool
    banned_irqs: tuple[int, ...] = ()
    banned_cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Plan:
    node: str
    nics: tuple[NicPlan, ...]
    sysctls: dict[str, int]
    irqbalance: IrqbalancePlan

    def nic(self, name: str) -> NicPlan:
        return next(n for n in self.nics if n.name == name)

    def to_dict(self) -> dict[str, Any]:
        ib = self.irqbalance
        return {
            "node": self.node,
            "nics": [n.to_dict() for n in self.nics],
            "irqbalance": {
                "mode": ib.mode,
                "installed": ib.installed,
                "banned_irqs": list(ib.banned_irqs),
                "banned_cpulist": format_cpulist(ib.banned_cpus),
            },
            "sysctls": self.sysctls,
        }

    def render_text(self) -> str:
        lines = [f"node {self.node}"]
        for n in self.nics:
            numa = "unknown" if n.numa_node is None else str(n.numa_node)
            how = f"{n.channels[0]} channels" if n.channels else "fixed count"
            lines.append(
                f"  {n.name} ({n.driver or 'unknown driver'}, NUMA node {numa}):"
                f" {n.queues} queues ({how})"
            )
            for q, cpu in enumerate(n.cpus):
                irqs = ",".join(str(i) for i, c in n.irq_affinity.items() if c == cpu)
                text = f"    queue {q}: cpu {cpu}"
                if irqs:
                    text += f"  irq {irqs}"
                if n.rps.get(q):
                    text += f"  rps {format_cpulist(cpus_of(n.rps[q]))}"
                lines.append(text)
            lines += [f"    tx-{q} xps {format_cpulist(cpus_of(m))}" for q, m in n.xps.items()]
            if n.indirection_equal is not None:
                lines.append(f"    rss: equal {n.indirection_equal}")
            if n.flow_hash:
                lines.append(
                    f"    rx-flow-hash {','.join(n.flow_hash)}: {next(iter(n.flow_hash.values()))}"
                )
            if n.rings:
                lines.append("    rings: " + " ".join(f"{k} {v}" for k, v in n.rings.items()))
            if n.features_off:
                lines.append("    offloads off: " + ", ".join(n.features_off))
            lines.extend(f"    note: {note}" for note in n.notes)
        ib = self.irqbalance
        text = f"  irqbalance: {ib.mode}"
        if not ib.installed:
            text += " (not installed)"
        elif ib.mode == "ban":
            text += (
                f" (irqs {','.join(map(str, ib.banned_irqs)) or '-'};"
                f" cpus {format_cpulist(ib.banned_cpus) or '-'})"
            )
        lines.append(text)
        lines.extend(f"  sysctl {k} = {v}" for k, v in self.sysctls.items())
        return "\n".join(lines) + "\n"
