"""Read a host's facts from sysfs/procfs under a root directory (``/`` or a captured tree)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lbappliance.nic.cpulist import parse_cpulist, parse_mask
from lbappliance.nic.ethtool import (
    CapturedEthtool,
    EthtoolSource,
    LiveEthtool,
    parse_channels,
    parse_driver,
    parse_features,
    parse_flow_hash,
    parse_indirection,
    parse_rings,
)
from lbappliance.nic.facts import (
    FLOW_PROTOS,
    SYSCTLS,
    Cpu,
    HostFacts,
    Irqbalance,
    IrqKind,
    Nic,
    QueueIrq,
    Topology,
)
from lbappliance.nic.irqbalance import DROPIN_PATH, ENV_PATH, INSTALLED_PATHS, SystemctlSource

# Queue IRQ names by driver family; the NIC's own msi_irqs decide which IRQs are looked at.
QUEUE_IRQ_PATTERNS: tuple[tuple[re.Pattern[str], IrqKind], ...] = (
    (re.compile(r"^mlx5_comp(\d+)@"), "rxtx"),  # mlx5: one completion vector per channel
    (re.compile(r"-(?:TxRx|Tx-Rx|rxtx|fp)-(\d+)$"), "rxtx"),  # ixgbe, i40e, ice, igb, bnxt, ena
    (re.compile(r"-rx-(\d+)$"), "rx"),
    (re.compile(r"-tx-(\d+)$"), "tx"),
    (re.compile(r"^virtio\d+-input\.(\d+)$"), "rx"),
    (re.compile(r"^virtio\d+-output\.(\d+)$"), "tx"),
)


def classify_irq(name: str) -> tuple[int, IrqKind] | None:
    """(queue, kind) for a NIC queue IRQ name, None for control/async IRQs."""
    for pattern, kind in QUEUE_IRQ_PATTERNS:
        m = pattern.search(name)
        if m:
            return int(m.group(1)), kind
    return None


def parse_interrupts(text: str) -> dict[int, str]:
    """IRQ number -> action name from /proc/interrupts (numbered lines only)."""
    names: dict[int, str] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(":")
        if not head.strip().isdigit():
            continue
        tokens = rest.split()
        # counts, then chip, hwirq and handler ("...-edge"); the action name follows the handler.
        cut = max(
            (i for i, t in enumerate(tokens) if t.endswith(("-edge", "-level", "-fasteoi"))),
            default=None,
        )
        names[int(head)] = " ".join(tokens[cut + 1 :]) if cut is not None else tokens[-1]
    return names


class Reader:
    def __init__(self, root: str | Path = "/", ethtool: EthtoolSource | None = None):
        self.root = Path(root)
        self.live = self.root.resolve() == Path("/")
        self.ethtool = ethtool or (LiveEthtool() if self.live else CapturedEthtool(self.root))
        self.systemctl = SystemctlSource(self.root, self.live)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def text(self, absolute: str | Path) -> str | None:
        path = absolute if isinstance(absolute, Path) else self.path(absolute)
        try:
            return path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def topology(self) -> Topology:
        cpu_dir = "/sys/devices/system/cpu"
        online = parse_cpulist(self.text(f"{cpu_dir}/online") or "0")
        isolated = parse_cpulist(self.text(f"{cpu_dir}/isolated") or "")
        offline = parse_cpulist(self.text(f"{cpu_dir}/offline") or "") - online
        nodes: dict[int, frozenset[int]] = {}
        node_dir = self.path("/sys/devices/system/node")
        if node_dir.is_dir():
            for entry in node_dir.iterdir():
                m = re.fullmatch(r"node(\d+)", entry.name)
                if m and (entry / "cpulist").is_file():
                    nodes[int(m.group(1))] = parse_cpulist((entry / "cpulist").read_text())
        if not nodes:
            nodes = {0: online}
        node_of = {cpu: node for node, cpus in nodes.items() for cpu in cpus}
        cpus: dict[int, Cpu] = {}
        for cpu in sorted(online):
            topo = f"{cpu_dir}/cpu{cpu}/topology"
            core = self.text(f"{topo}/core_id")
            package = self.text(f"{topo}/physical_package_id")
            siblings = self.text(f"{topo}/thread_siblings_list")
            cpus[cpu] = Cpu(
                id=cpu,
                core_id=int(core) if core else cpu,
                package_id=int(package) if package else 0,
                siblings=(parse_cpulist(siblings) if siblings else frozenset({cpu})) & online,
                node=node_of.get(cpu, 0),
            )
        return Topology(online, offline, isolated & online, cpus, nodes)

    def interfaces(self) -> list[str]:
        """Interfaces backed by a device (physical or virtio NICs)."""
        net = self.path("/sys/class/net")
        return (
            sorted(e.name for e in net.iterdir() if (e / "device").exists()) if net.is_dir() else []
        )

    def nic(self, name: str, irq_names: dict[int, str]) -> Nic | None:
        base = self.path(f"/sys/class/net/{name}")
        if not base.exists():
            return None
        dev = base / "device"
        # A virtio NIC's device is the virtio device; its IRQs and NUMA node are on the PCI parent.
        pci = dev / ".." if _link_name(dev / "subsystem") == "virtio" else dev
        ethtool = {q: self.ethtool.query(name, q) for q in ("driver", "show-rxfh-indir")}
        driver, bus_info = parse_driver(ethtool["driver"])
        driver = _link_name(dev / "driver") or driver
        numa = self.text(pci / "numa_node")
        numa_node = int(numa) if numa and int(numa) >= 0 else None
        irqs: list[QueueIrq] = []
        msi = pci / "msi_irqs"
        for entry in sorted(msi.iterdir(), key=lambda e: int(e.name)) if msi.is_dir() else ():
            irq = int(entry.name)
            queue = classify_irq(irq_names.get(irq, ""))
            if queue is None:
                continue
            affinity = self.text(f"/proc/irq/{irq}/smp_affinity_list")
            irqs.append(
                QueueIrq(irq, irq_names[irq], queue[0], queue[1], parse_cpulist(affinity or ""))
            )
        irqs.sort(key=lambda q: (q.queue, q.kind, q.irq))
        rx_queues: dict[int, int] = {}
        tx_queues: dict[int, int | None] = {}
        queues = base / "queues"
        for entry in queues.iterdir() if queues.is_dir() else ():
            kind, _, index = entry.name.partition("-")
            if kind == "rx":
                rx_queues[int(index)] = parse_mask(self.text(entry / "rps_cpus") or "0")
            elif kind == "tx":
                xps = self.text(entry / "xps_cpus")
                tx_queues[int(index)] = parse_mask(xps) if xps is not None else None
        indirection = parse_indirection(ethtool["show-rxfh-indir"])
        flow_hash: dict[str, str] = {}
        if indirection is not None:
            for proto in FLOW_PROTOS:
                fields = parse_flow_hash(self.ethtool.query(name, f"rx-flow-hash-{proto}"))
                if fields is not None:
                    flow_hash[proto] = fields
        return Nic(
            name=name,
            driver=driver,
            bus_info=bus_info or (Path(os.path.realpath(pci)).name if dev.exists() else ""),
            numa_node=numa_node,
            rx_queues=dict(sorted(rx_queues.items())),
            tx_queues=dict(sorted(tx_queues.items())),
            irqs=tuple(irqs),
            channels=parse_channels(self.ethtool.query(name, "show-channels")),
            rings=parse_rings(self.ethtool.query(name, "show-ring")),
            features=parse_features(self.ethtool.query(name, "show-features")),
            indirection=indirection,
            flow_hash=flow_hash,
        )

    def sysctls(self) -> dict[str, int]:
        values: dict[str, int] = {}
        for key in SYSCTLS:
            text = self.text("/proc/sys/" + key.replace(".", "/"))
            if text is not None:
                values[key] = int(text.split()[0])
        return values

    def irqbalance(self) -> Irqbalance:
        installed = any(self.path(p).exists() for p in INSTALLED_PATHS)
        active = self.systemctl.state("is-active")
        enabled = self.systemctl.state("is-enabled")
        files = {p: t for p in (DROPIN_PATH, ENV_PATH) if (t := self.text(p)) is not None}
        return Irqbalance(
            installed=installed,
            active=None if active is None else active in ("active", "activating", "reloading"),
            enabled=None if enabled is None else enabled in ("enabled", "enabled-runtime"),
            files=files,
        )

    def facts(self, interfaces: list[str] | tuple[str, ...] | None = None) -> HostFacts:
        irq_names = parse_interrupts(self.text("/proc/interrupts") or "")
        names = list(interfaces) if interfaces is not None else self.interfaces()
        nics = {n: nic for n in names if (nic := self.nic(n, irq_names)) is not None}
        return HostFacts(self.topology(), nics, self.sysctls(), self.irqbalance())


def _link_name(path: Path) -> str:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return ""


def gather_facts(
    root: str | Path = "/",
    interfaces: list[str] | tuple[str, ...] | None = None,
    ethtool: EthtoolSource | None = None,
) -> HostFacts:
    """Facts of the host (or captured tree) at ``root``; missing interfaces are left out."""
    return Reader(root, ethtool).facts(interfaces)
