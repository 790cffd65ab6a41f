"""Builds the captured sysfs/procfs trees in tests/nic/fixtures/ from hardware descriptions.

The trees have the layout `lbappliance nic capture` writes on a real host: sysfs paths with
their relative symlinks, /proc/interrupts, /proc/irq/N/*, /proc/sys/net/core/*, and the
text of ethtool 6.1 (-i -l -g -k -x -n) under ethtool/<ifname>/. Regenerate with
`python tests/nic/nicfixtures.py`; test_fixtures_are_current checks they match.

The render_* functions are also used by FakeEthtool, which plays a driver for apply tests.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lbappliance.nic.cpulist import format_cpulist

FIXTURES = Path(__file__).parent / "fixtures"

# --- ethtool 6.1 text -------------------------------------------------------------------------


def _na(value: int | None) -> str:
    return "n/a" if not value else str(value)


def render_channels(ifname: str, maximum: dict[str, int], current: dict[str, int]) -> str:
    lines = [f"Channel parameters for {ifname}:", "Pre-set maximums:"]
    for section in (maximum, current):
        lines += [
            f"RX:\t\t{_na(section.get('rx'))}",
            f"TX:\t\t{_na(section.get('tx'))}",
            f"Other:\t\t{_na(section.get('other'))}",
            f"Combined:\t{_na(section.get('combined'))}",
        ]
        if section is maximum:
            lines.append("Current hardware settings:")
    return "\n".join(lines) + "\n"


def render_ring(ifname: str, max_rx: int, max_tx: int, rx: int, tx: int) -> str:
    return (
        f"Ring parameters for {ifname}:\nPre-set maximums:\n"
        f"RX:\t\t{max_rx}\nRX Mini:\tn/a\nRX Jumbo:\tn/a\nTX:\t\t{max_tx}\n"
        f"Current hardware settings:\n"
        f"RX:\t\t{rx}\nRX Mini:\tn/a\nRX Jumbo:\tn/a\nTX:\t\t{tx}\n"
        "RX Buf Len:\t\tn/a\nCQE Size:\t\tn/a\nTX Push:\toff\nTCP data split:\tn/a\n"
    )


# (name, indented under the previous top-level feature)
FEATURE_NAMES: tuple[tuple[str, bool], ...] = tuple(
    (name.strip(), name.startswith("\t"))
    for name in """rx-checksumming
tx-checksumming
\ttx-checksum-ipv4
\ttx-checksum-ip-generic
\ttx-checksum-ipv6
\ttx-checksum-fcoe-crc
\ttx-checksum-sctp
scatter-gather
\ttx-scatter-gather
\ttx-scatter-gather-fraglist
tcp-segmentation-offload
\ttx-tcp-segmentation
\ttx-tcp-ecn-segmentation
\ttx-tcp-mangleid-segmentation
\ttx-tcp6-segmentation
generic-segmentation-offload
generic-receive-offload
large-receive-offload
rx-vlan-offload
tx-vlan-offload
ntuple-filters
receive-hashing
highdma
rx-vlan-filter
vlan-challenged
tx-gso-robust
tx-fcoe-segmentation
tx-gre-segmentation
tx-gre-csum-segmentation
tx-ipxip4-segmentation
tx-ipxip6-segmentation
tx-udp_tnl-segmentation
tx-udp_tnl-csum-segmentation
tx-gso-partial
tx-tunnel-remcsum-segmentation
tx-sctp-segmentation
tx-esp-segmentation
tx-udp-segmentation
tx-gso-list
rx-nocache-copy
loopback
rx-fcs
rx-all
tx-vlan-stag-hw-insert
rx-vlan-stag-hw-parse
rx-vlan-stag-filter
l2-fwd-offload
hw-tc-offload
esp-hw-offload
esp-tx-csum-hw-offload
rx-udp_tunnel-port-offload
tls-hw-tx-offload
tls-hw-rx-offload
rx-gro-hw
tls-hw-record
rx-gro-list
macsec-hw-offload
rx-udp-gro-forwarding
hsr-tag-ins-offload
hsr-tag-rm-offload
hsr-fwd-offload
hsr-dup-offload""".splitlines()
)

# Features a typical server NIC has on and settable; everything else is "off [fixed]".
COMMON_ON = [
    "rx-checksumming",
    "tx-checksumming",
    "tx-checksum-ip-generic",
    "scatter-gather",
    "tx-scatter-gather",
    "tcp-segmentation-offload",
    "tx-tcp-segmentation",
    "tx-tcp6-segmentation",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "rx-vlan-offload",
    "tx-vlan-offload",
    "receive-hashing",
    "highdma",
    "rx-vlan-filter",
]
COMMON_SETTABLE_OFF = [
    "tx-tcp-mangleid-segmentation",
    "ntuple-filters",
    "large-receive-offload",
    "rx-gro-list",
    "rx-udp-gro-forwarding",
    "rx-nocache-copy",
    "loopback",
    "rx-fcs",
    "rx-all",
    "hw-tc-offload",
]


def render_features(ifname: str, features: dict[str, tuple[bool, bool]]) -> str:
    """features: name -> (on, fixed); names not given are "off [fixed]"."""
    lines = [f"Features for {ifname}:"]
    for name, indented in FEATURE_NAMES:
        on, fixed = features.get(name, (False, True))
        text = f"{name}: {'on' if on else 'off'}{' [fixed]' if fixed else ''}"
        lines.append(("\t" if indented else "") + text)
    return "\n".join(lines) + "\n"


def default_features(on: Sequence[str] = (), off: Sequence[str] = (), fixed_on: Sequence[str] = ()):
    features = {name: (True, False) for name in COMMON_ON}
    features.update({name: (False, False) for name in COMMON_SETTABLE_OFF})
    features.update({name: (True, False) for name in on})
    features.update({name: (False, False) for name in off})
    features.update({name: (True, True) for name in fixed_on})
    return features


RSS_KEY = (
    "6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:"
    "ae:7b:30:b4:77:cb:2d:a3:80:30:f2:0c:6a:42:b7:3b:be:ac:01:fa"
)


def render_rxfh(ifname: str, rings: int, table: Sequence[int] | None) -> str:
    out = f"RX flow hash indirection table for {ifname} with {rings} RX ring(s):\n"
    if table is None:
        return (
            out + "Operation not supported\nRSS hash key:\nOperation not supported\n"
            "RSS hash function:\n    toeplitz: on\n    xor: off\n    crc32: off\n"
        )
    for i, entry in enumerate(table):
        if i % 8 == 0:
            out += f"{i:5d}: "
        out += f" {entry:5d}"
        if i % 8 == 7 or i == len(table) - 1:
            out += "\n"
    return out + (
        f"RSS hash key:\n{RSS_KEY}\nRSS hash function:\n    toeplitz: on\n    xor: off\n"
        "    crc32: off\n"
    )


FLOW_TITLES = {
    "tcp4": "TCP over IPV4 flows",
    "udp4": "UDP over IPV4 flows",
    "tcp6": "TCP over IPV6 flows",
    "udp6": "UDP over IPV6 flows",
}
FLOW_LINES = {
    "m": "L2DA",
    "v": "VLAN tag",
    "t": "L3 proto",
    "s": "IP SA",
    "d": "IP DA",
    "f": "L4 bytes 0 & 1 [TCP/UDP src port]",
    "n": "L4 bytes 2 & 3 [TCP/UDP dst port]",
}


def render_flow_hash(proto: str, fields: str) -> str:
    lines = [FLOW_LINES[ch] for ch in "mvtsdfn" if ch in fields] or ["None"]
    return (
        f"{FLOW_TITLES[proto]} use these fields for computing Hash flow key:\n"
        + "\n".join(lines)
        + "\n\n"
    )


def render_driver(driver: str, version: str, firmware: str, bus_info: str) -> str:
    return (
        f"driver: {driver}\nversion: {version}\nfirmware-version: {firmware}\n"
        f"expansion-rom-version: \nbus-info: {bus_info}\nsupports-statistics: yes\n"
        "supports-test: yes\nsupports-eeprom-access: no\nsupports-register-dump: no\n"
        "supports-priv-flags: yes\n"
    )


# --- host descriptions -------------------------------------------------------------------------


def kernel_mask(cpus: Sequence[int] | set[int], nbits: int) -> str:
    """A cpumask as sysfs prints it for nr_cpu_ids = nbits."""
    mask = sum(1 << c for c in set(cpus))
    digits = f"{mask:0{(nbits + 3) // 4}x}"
    groups = []
    while len(digits) > 8:
        groups.insert(0, digits[-8:])
        digits = digits[:-8]
    groups.insert(0, digits)
    return ",".join(groups)


@dataclass
class CpuSpec:
    package: int
    core_id: int
    node: int
    siblings: tuple[int, ...]


@dataclass
class NicSpec:
    name: str
    driver: str  # kernel driver (sysfs driver link)
    pci_path: str  # under /sys/devices, e.g. "pci0000:ae/0000:ae:00.0/0000:af:00.0"
    numa_node: int  # -1 = unknown
    vendor: str
    device: str
    version: str
    firmware: str
    queues: int  # current queue count (rx = tx)
    max_combined: int | None  # None: rx/tx channels or none
    other_channels: int = 0
    irq_names: Callable[[NicSpec], list[tuple[str, int | None]]] | None = None
    irq_affinity: Callable[[int | None, list[int]], list[int]] | None = None
    rings: tuple[int, int, int, int] | None = None  # max_rx, max_tx, rx, tx
    features: dict[str, tuple[bool, bool]] = field(default_factory=default_features)
    rss_table_size: int | None = None  # None: no RSS indirection table
    flow_hash: dict[str, str] = field(default_factory=dict)
    virtio_index: int | None = None  # set for virtio-net

    @property
    def pci_address(self) -> str:
        return self.pci_path.rsplit("/", 1)[-1]


@dataclass
class HostSpec:
    name: str
    description: str
    possible: int
    online: list[int]
    cpus: dict[int, CpuSpec]  # every possible CPU
    smt_control: str
    isolated: list[int] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    irq_base: int = 40
    irqbalance: tuple[str, str] | None = ("active", "enabled")  # None: not installed
    sysctls: dict[str, int] = field(
        default_factory=lambda: {
            "netdev_max_backlog": 1000,
            "netdev_budget": 300,
            "busy_poll": 0,
            "busy_read": 0,
        }
    )


def intel_2s(threads: int, cores_per_socket: int, core_ids: list[int]) -> dict[int, CpuSpec]:
    """Linux numbering on a 2-socket Intel box: socket 0 cores, socket 1 cores, then the
    second threads in the same order."""
    per_thread = 2 * cores_per_socket
    cpus = {}
    for cpu in range(per_thread * threads):
        slot = cpu % per_thread
        package = slot // cores_per_socket
        core = core_ids[slot % cores_per_socket]
        siblings = tuple(slot + t * per_thread for t in range(threads))
        cpus[cpu] = CpuSpec(package, core, package, siblings)
    return cpus


def one_socket(cores: int, threads: int, core_ids: list[int] | None = None) -> dict[int, CpuSpec]:
    ids = core_ids or list(range(cores))
    return {
        cpu: CpuSpec(0, ids[cpu % cores], 0, tuple(cpu % cores + t * cores for t in range(threads)))
        for cpu in range(cores * threads)
    }


def mlx5_irqs(nic: NicSpec) -> list[tuple[str, int | None]]:
    at = f"@pci:{nic.pci_address}"
    return [(f"mlx5_async0{at}", None)] + [
        (f"mlx5_comp{i}{at}", i) for i in range(nic.max_combined or 0)
    ]


def txrx_irqs(nic: NicSpec) -> list[tuple[str, int | None]]:
    """ixgbe/igb: one IRQ per queue pair, then the link/other IRQ named after the netdev."""
    return [(f"{nic.name}-TxRx-{i}", i) for i in range(nic.queues)] + [(nic.name, None)]


def virtio_irqs(nic: NicSpec) -> list[tuple[str, int | None]]:
    v = f"virtio{nic.virtio_index}"
    names: list[tuple[str, int | None]] = [(f"{v}-config", None)]
    for i in range(nic.max_combined or 1):
        names += [(f"{v}-input.{i}", i), (f"{v}-output.{i}", i)]
    return names


def all_cpus(queue: int | None, online: list[int]) -> list[int]:
    return online


def local_spread(node_cpus: list[int]) -> Callable[[int | None, list[int]], list[int]]:
    """Driver affinity hints: queue i on the i-th CPU of the NIC's node (mlx5, virtio)."""

    def pick(queue: int | None, online: list[int]) -> list[int]:
        return online if queue is None else [node_cpus[queue % len(node_cpus)]]

    return pick


XEON_6242_CORE_IDS = [0, 1, 2, 3, 4, 8, 9, 10, 11, 16, 17, 18, 19, 20, 24, 25]


def mlx5_port(name: str, function: int, irqs_spread_on: list[int] | None) -> NicSpec:
    return NicSpec(
        name=name,
        driver="mlx5_core",
        pci_path=f"pci0000:ae/0000:ae:00.0/0000:af:00.{function}",
        numa_node=1,
        vendor="0x15b3",
        device="0x1017",  # ConnectX-5
        version="6.1.0-18-amd64",
        firmware="16.35.2000 (MT_0000000012)",
        queues=32,
        max_combined=32,
        irq_names=mlx5_irqs,
        irq_affinity=local_spread(irqs_spread_on) if irqs_spread_on else all_cpus,
        rings=(8192, 8192, 1024, 1024),
        features=default_features(on=["ntuple-filters", "hw-tc-offload"], off=["rx-gro-hw"]),
        rss_table_size=256,
        flow_hash={p: "sdfn" for p in ("tcp4", "udp4", "tcp6", "udp6")},
    )


def eno_igb() -> NicSpec:
    return NicSpec(
        name="eno1",
        driver="igb",
        pci_path="pci0000:00/0000:00:1c.0/0000:01:00.0",
        numa_node=0,
        vendor="0x8086",
        device="0x1521",  # I350
        version="6.1.0-18-amd64",
        firmware="1.63, 0x80000fa3",
        queues=8,
        max_combined=8,
        other_channels=1,
        irq_names=txrx_irqs,
        irq_affinity=all_cpus,
        rings=(4096, 4096, 256, 256),
        rss_table_size=128,
        flow_hash={"tcp4": "sdfn", "udp4": "sd", "tcp6": "sdfn", "udp6": "sd"},
    )


def ixgbe(queues: int) -> NicSpec:
    return NicSpec(
        name="enp1s0f0",
        driver="ixgbe",
        pci_path="pci0000:00/0000:00:01.0/0000:01:00.0",
        numa_node=-1,
        vendor="0x8086",
        device="0x10fb",  # 82599ES (X520)
        version="6.1.0-18-amd64",
        firmware="0x800006f1",
        queues=queues,
        max_combined=queues,
        other_channels=1,
        irq_names=txrx_irqs,
        irq_affinity=all_cpus,
        rings=(8192, 8192, 512, 512),
        features=default_features(on=["large-receive-offload", "ntuple-filters"]),
        rss_table_size=128,
        flow_hash={"tcp4": "sdfn", "udp4": "sd", "tcp6": "sdfn", "udp6": "sd"},
    )


def virtio(queues: int, online: list[int]) -> NicSpec:
    return NicSpec(
        name="enp1s0",
        driver="virtio_net",
        pci_path="pci0000:00/0000:00:02.0/0000:01:00.0",
        numa_node=-1,
        vendor="0x1af4",
        device="0x1041",
        version="1.0.0",
        firmware="",
        queues=queues,
        max_combined=queues,
        irq_names=virtio_irqs,
        irq_affinity=local_spread(online),
        rings=(256, 256, 256, 256),
        features=default_features(on=["rx-gro-hw"], off=["rx-vlan-offload", "tx-vlan-offload"])
        | {"receive-hashing": (False, True), "large-receive-offload": (False, True)},
        rss_table_size=None,
        virtio_index=1,
    )


def layouts() -> list[HostSpec]:
    mlx5_cpus = intel_2s(threads=2, cores_per_socket=16, core_ids=XEON_6242_CORE_IDS)
    socket1_first_threads = list(range(16, 32))
    smt16 = one_socket(cores=8, threads=2)
    return [
        HostSpec(
            name="mlx5-2socket",
            description="2x Xeon Gold 6242 (16 cores, SMT on), ConnectX-5 (mlx5, 32 queues)"
            " on socket 1, onboard I350 on socket 0",
            possible=64,
            online=list(range(64)),
            cpus=mlx5_cpus,
            smt_control="on",
            nics=[
                eno_igb(),
                mlx5_port("enp175s0f0np0", 0, None),
                mlx5_port("enp175s0f1np1", 1, socket1_first_threads),
            ],
            irq_base=60,
        ),
        HostSpec(
            name="mlx5-2socket-isolated",
            description="mlx5-2socket booted with isolcpus=20-31,52-63",
            possible=64,
            online=list(range(64)),
            cpus=mlx5_cpus,
            smt_control="on",
            isolated=[*range(20, 32), *range(52, 64)],
            nics=[mlx5_port("enp175s0f0np0", 0, None)],
            irq_base=60,
        ),
        HostSpec(
            name="ixgbe-1socket",
            description="Xeon E-2288G (8 cores, SMT off in firmware), 82599ES (ixgbe, 8 queues)",
            possible=8,
            online=list(range(8)),
            cpus=one_socket(cores=8, threads=1),
            smt_control="notsupported",
            nics=[ixgbe(8)],
        ),
        HostSpec(
            name="ixgbe-1socket-smt",
            description="Xeon E-2288G (8 cores, SMT on: 16 threads), 82599ES (ixgbe, 16 queues)",
            possible=16,
            online=list(range(16)),
            cpus=smt16,
            smt_control="on",
            nics=[ixgbe(16)],
        ),
        HostSpec(
            name="ixgbe-1socket-nosmt",
            description="ixgbe-1socket-smt booted with nosmt: threads 8-15 offline",
            possible=16,
            online=list(range(8)),
            cpus=smt16,
            smt_control="off",
            nics=[ixgbe(8)],
        ),
        HostSpec(
            name="virtio-4q",
            description="KVM guest, 4 vCPUs (1 socket, 4 cores), virtio-net with 4 queue pairs",
            possible=4,
            online=list(range(4)),
            cpus=one_socket(cores=4, threads=1),
            smt_control="notsupported",
            nics=[virtio(4, list(range(4)))],
            irqbalance=None,
        ),
        HostSpec(
            name="virtio-2q-8cpu",
            description="KVM guest, 8 vCPUs, virtio-net with 2 queue pairs (fewer queues than"
            " cores: RPS/XPS)",
            possible=8,
            online=list(range(8)),
            cpus=one_socket(cores=8, threads=1),
            smt_control="notsupported",
            nics=[virtio(2, list(range(8)))],
            irqbalance=None,
        ),
    ]


# --- writing a tree ----------------------------------------------------------------------------


class Tree:
    def __init__(self, root: Path):
        self.root = root

    def write(self, absolute: str, text: str) -> None:
        path = self.root / absolute.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(self, absolute: str, target: str) -> None:
        path = self.root / absolute.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(absolute)), path)


def _interrupt_line(irq: int, online: list[int], counts: dict[int, int], chip: str, name: str):
    cols = "".join(f" {counts.get(c, 0):10d}" for c in online)
    return f"{irq:4d}:{cols}  {chip}  {name}"


def build(spec: HostSpec, root: Path) -> None:
    """Write spec's tree to root (which must not exist)."""
    t = Tree(root)
    cpu = "/sys/devices/system/cpu"
    online = spec.online
    offline = sorted(set(range(spec.possible)) - set(online))
    t.write(f"{cpu}/online", format_cpulist(online) + "\n")
    t.write(f"{cpu}/offline", (format_cpulist(offline) if offline else "") + "\n")
    t.write(f"{cpu}/possible", f"0-{spec.possible - 1}\n")
    t.write(f"{cpu}/present", f"0-{spec.possible - 1}\n")
    t.write(f"{cpu}/isolated", format_cpulist(spec.isolated) + "\n")
    t.write(f"{cpu}/kernel_max", "8191\n")
    t.write(f"{cpu}/smt/control", spec.smt_control + "\n")
    nodes: dict[int, list[int]] = {}
    for c in range(spec.possible):
        cs = spec.cpus[c]
        if c != 0:
            t.write(f"{cpu}/cpu{c}/online", ("1" if c in online else "0") + "\n")
        if c not in online:
            continue  # the kernel removes topology/ of an offline CPU
        nodes.setdefault(cs.node, []).append(c)
        siblings = [s for s in cs.siblings if s in online]
        package_cpus = [x for x in online if spec.cpus[x].package == cs.package]
        topo = f"{cpu}/cpu{c}/topology"
        t.write(f"{topo}/core_id", f"{cs.core_id}\n")
        t.write(f"{topo}/physical_package_id", f"{cs.package}\n")
        t.write(f"{topo}/thread_siblings_list", format_cpulist(siblings) + "\n")
        t.write(f"{topo}/core_siblings_list", format_cpulist(package_cpus) + "\n")
    for node, cpus in sorted(nodes.items()):
        t.write(f"/sys/devices/system/node/node{node}/cpulist", format_cpulist(cpus) + "\n")

    interrupts: list[str] = []
    irq = spec.irq_base
    for nic in spec.nics:
        irq = _build_nic(t, spec, nic, irq, interrupts)
    header = " " * 4 + "".join(f"{'CPU' + str(c):>11s}" for c in online)
    # A few of the IRQs every x86 host has, for a realistic parse.
    legacy = [
        _interrupt_line(0, online, {0: 44}, "IR-IO-APIC    2-edge     ", "timer"),
        _interrupt_line(8, online, {}, "IR-IO-APIC    8-edge     ", "rtc0"),
        _interrupt_line(9, online, {0: 12}, "IR-IO-APIC    9-fasteoi  ", "acpi"),
    ]
    tail = [
        "NMI:" + "".join(f" {3:10d}" for _ in online) + "   Non-maskable interrupts",
        "LOC:" + "".join(f" {900000 + c:10d}" for c in online) + "   Local timer interrupts",
        "ERR:          0",
        "MIS:          0",
    ]
    t.write("/proc/interrupts", "\n".join([header, *legacy, *interrupts, *tail]) + "\n")
    for key, value in spec.sysctls.items():
        t.write(f"/proc/sys/net/core/{key}", f"{value}\n")
    if spec.irqbalance:
        active, enabled = spec.irqbalance
        t.write("/usr/sbin/irqbalance", "")
        t.write("/systemctl/irqbalance.service.is-active.txt", active + "\n")
        t.write("/systemctl/irqbalance.service.is-enabled.txt", enabled + "\n")


def _build_nic(t: Tree, spec: HostSpec, nic: NicSpec, irq: int, interrupts: list[str]) -> int:
    pci = f"/sys/devices/{nic.pci_path}"
    if nic.virtio_index is not None:
        dev = f"{pci}/virtio{nic.virtio_index}"
        t.link(f"{dev}/driver", "/sys/bus/virtio/drivers/virtio_net")
        t.link(f"{dev}/subsystem", "/sys/bus/virtio")
        t.link(f"{pci}/driver", "/sys/bus/pci/drivers/virtio-pci")
    else:
        dev = pci
        t.link(f"{dev}/driver", f"/sys/bus/pci/drivers/{nic.driver}")
    t.link(f"{pci}/subsystem", "/sys/bus/pci")
    t.write(f"{pci}/numa_node", f"{nic.numa_node}\n")
    node_cpus = [c for c in spec.online if spec.cpus[c].node == nic.numa_node]
    t.write(f"{pci}/local_cpulist", format_cpulist(node_cpus or spec.online) + "\n")
    t.write(f"{pci}/vendor", nic.vendor + "\n")
    t.write(f"{pci}/device", nic.device + "\n")
    net = f"{dev}/net/{nic.name}"
    t.link(f"/sys/class/net/{nic.name}", net)
    t.link(f"{net}/device", dev)
    nbits = spec.possible
    for q in range(nic.queues):
        t.write(f"{net}/queues/rx-{q}/rps_cpus", kernel_mask([], nbits) + "\n")
        t.write(f"{net}/queues/rx-{q}/rps_flow_cnt", "0\n")
        xps = [spec.online[q % len(spec.online)]]
        t.write(f"{net}/queues/tx-{q}/xps_cpus", kernel_mask(xps, nbits) + "\n")
        t.write(f"{net}/queues/tx-{q}/tx_maxrate", "0\n")
    chip = f"IR-PCI-MSIX-{nic.pci_address}"
    assert nic.irq_names and nic.irq_affinity
    for hw, (name, queue) in enumerate(nic.irq_names(nic)):
        affinity = nic.irq_affinity(queue, spec.online)
        t.write(f"{pci}/msi_irqs/{irq}", "msix\n")
        t.write(f"/proc/irq/{irq}/smp_affinity_list", format_cpulist(affinity) + "\n")
        t.write(f"/proc/irq/{irq}/smp_affinity", kernel_mask(affinity, nbits) + "\n")
        t.write(f"/proc/irq/{irq}/effective_affinity_list", f"{affinity[0]}\n")
        t.write(f"/proc/irq/{irq}/node", f"{max(nic.numa_node, 0)}\n")
        counts = {affinity[0]: 1000 + 37 * irq} if queue is not None else {affinity[0]: 3}
        interrupts.append(
            _interrupt_line(irq, spec.online, counts, f"{chip} {hw:4d}-edge     ", name)
        )
        irq += 1
    write_ethtool(t.root, nic.name, nic_ethtool_state(nic))
    return irq + 8  # drivers' vectors are not packed


def nic_ethtool_state(nic: NicSpec) -> dict:
    """The settable state FakeEthtool keeps per NIC, as rendered into ethtool/<if>/*.txt."""
    table = [i % nic.queues for i in range(nic.rss_table_size)] if nic.rss_table_size else None
    return {
        "driver": (nic.driver, nic.version, nic.firmware, nic.pci_address),
        "max_combined": nic.max_combined,
        "other": nic.other_channels,
        "combined": nic.queues,
        "rings": list(nic.rings) if nic.rings else None,
        "features": {k: list(v) for k, v in nic.features.items()},
        "table": table,
        "flow_hash": dict(nic.flow_hash),
    }


def write_ethtool(root: Path, ifname: str, state: dict) -> None:
    d = root / "ethtool" / ifname
    d.mkdir(parents=True, exist_ok=True)
    (d / "driver.txt").write_text(render_driver(*state["driver"]))
    maximum = {"combined": state["max_combined"], "other": state["other"]}
    current = {"combined": state["combined"], "other": state["other"]}
    (d / "show-channels.txt").write_text(render_channels(ifname, maximum, current))
    if state["rings"]:
        (d / "show-ring.txt").write_text(render_ring(ifname, *state["rings"]))
    features = {k: (v[0], v[1]) for k, v in state["features"].items()}
    (d / "show-features.txt").write_text(render_features(ifname, features))
    (d / "show-rxfh-indir.txt").write_text(render_rxfh(ifname, state["combined"], state["table"]))
    for proto, fields in state["flow_hash"].items():
        (d / f"rx-flow-hash-{proto}.txt").write_text(render_flow_hash(proto, fields))


def build_all(target: Path = FIXTURES) -> list[str]:
    names = []
    for spec in layouts():
        dest = target / spec.name
        if dest.exists():
            shutil.rmtree(dest)
        build(spec, dest)
        (dest / "README").write_text(spec.description + "\n")
        names.append(spec.name)
    return names


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES
    print("\n".join(build_all(out)))
