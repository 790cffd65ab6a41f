"""What the planner knows about a host: CPU topology, NICs, their queues and IRQs, sysctls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IrqKind = Literal["rxtx", "rx", "tx"]
FLOW_PROTOS = ("tcp4", "udp4", "tcp6", "udp6")
SYSCTLS = (
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.busy_poll",
    "net.core.busy_read",
)


@dataclass(frozen=True)
class Cpu:
    id: int
    core_id: int
    package_id: int
    siblings: frozenset[int]  # thread_siblings_list (online threads of this core, itself included)
    node: int

    @property
    def core(self) -> tuple[int, int]:
        """Physical core identity: core_id is only unique within a package."""
        return (self.package_id, self.core_id)


@dataclass(frozen=True)
class Topology:
    online: frozenset[int]
    offline: frozenset[int]  # present or possible CPUs that are not online
    isolated: frozenset[int]
    cpus: dict[int, Cpu]  # online CPUs only (offline CPUs have no topology in sysfs)
    nodes: dict[int, frozenset[int]]  # NUMA node -> its online CPUs


@dataclass(frozen=True)
class QueueIrq:
    irq: int
    name: str
    queue: int
    kind: IrqKind
    affinity: frozenset[int]  # /proc/irq/N/smp_affinity_list


@dataclass(frozen=True)
class Channels:
    """``ethtool -l``: None where the driver reports n/a."""

    max_combined: int | None = None
    max_rx: int | None = None
    max_tx: int | None = None
    combined: int | None = None
    rx: int | None = None
    tx: int | None = None

    @property
    def mode(self) -> Literal["combined", "rxtx"] | None:
        """How this NIC's queue count is set: ``-L combined N``, ``-L rx N tx N``, or not at all."""
        if self.max_combined:
            return "combined"
        if self.max_rx and self.max_tx:
            return "rxtx"
        return None

    @property
    def maximum(self) -> int | None:
        if self.mode == "combined":
            return self.max_combined
        if self.mode == "rxtx":
            return min(self.max_rx or 0, self.max_tx or 0)
        return None

    @property
    def current(self) -> int | None:
        if self.mode == "combined":
            return self.combined
        if self.mode == "rxtx":
            return min(self.rx or 0, self.tx or 0)
        return None


@dataclass(frozen=True)
class Rings:
    max_rx: int | None = None
    max_tx: int | None = None
    rx: int | None = None
    tx: int | None = None


@dataclass(frozen=True)
class Feature:
    on: bool
    fixed: bool


@dataclass(frozen=True)
class Nic:
    name: str
    driver: str
    bus_info: str
    numa_node: int | None  # None: the kernel does not know (numa_node is -1)
    rx_queues: dict[int, int]  # rx queue -> rps_cpus mask
    tx_queues: dict[int, int | None]  # tx queue -> xps_cpus mask (None: no xps_cpus file)
    irqs: tuple[QueueIrq, ...]  # queue IRQs, sorted by (queue, kind)
    channels: Channels | None  # None: ethtool -l not supported
    rings: Rings | None
    features: dict[str, Feature]  # long names as in ethtool -k
    indirection: tuple[int, ...] | None  # None: no RSS indirection table
    flow_hash: dict[str, str]  # proto -> fields as ethtool -N letters ("sdfn"); only with RSS


@dataclass(frozen=True)
class Irqbalance:
    installed: bool
    active: bool | None = None  # None: unknown (no systemd, or not captured)
    enabled: bool | None = None
    files: dict[str, str] = field(default_factory=dict)  # our drop-in and env file, if present


@dataclass(frozen=True)
class HostFacts:
    topology: Topology
    nics: dict[str, Nic]
    sysctls: dict[str, int]  # only those present (net.core.* is absent outside init_net)
    irqbalance: Irqbalance
