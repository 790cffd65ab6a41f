"""Capture the parts of a live host's sysfs/procfs the planner reads, for planning elsewhere.

The tree keeps sysfs' own layout and relative symlinks, so ``gather_facts(root=tree)`` reads
it exactly as it reads ``/``; ethtool and systemctl outputs go to ``ethtool/`` and
``systemctl/`` at its top.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from lbappliance.nic.ethtool import QUERIES, CapturedEthtool, LiveEthtool
from lbappliance.nic.facts import SYSCTLS
from lbappliance.nic.irqbalance import DROPIN_PATH, ENV_PATH, INSTALLED_PATHS, UNIT, SystemctlSource

CPU_FILES = ("online", "offline", "possible", "present", "isolated", "kernel_max", "smt/control")
TOPOLOGY_FILES = ("core_id", "physical_package_id", "thread_siblings_list", "core_siblings_list")
DEVICE_FILES = ("numa_node", "local_cpulist", "vendor", "device", "subsystem_vendor")


class Capture:
    def __init__(self, out: str | Path, source: str | Path = "/"):
        self.out = Path(out)
        self.src = Path(source)
        self.live = self.src.resolve() == Path("/")

    def copy(self, absolute: str) -> None:
        src = self.src / absolute.lstrip("/")
        if src.is_file():
            try:
                data = src.read_bytes()
            except OSError:  # write-only or unreadable attribute
                return
            dst = self.out / absolute.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)

    def link(self, absolute: str) -> str | None:
        """Recreate the symlink at ``absolute``; its resolved absolute target."""
        src = self.src / absolute.lstrip("/")
        if not src.is_symlink():
            return None
        dst = self.out / absolute.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_symlink():
            os.symlink(os.readlink(src), dst)
        return "/" + str(Path(os.path.realpath(src)).relative_to(self.src.resolve()))

    def cpus(self) -> None:
        base = "/sys/devices/system/cpu"
        for name in CPU_FILES:
            self.copy(f"{base}/{name}")
        for entry in sorted((self.src / base.lstrip("/")).glob("cpu[0-9]*")):
            self.copy(f"{base}/{entry.name}/online")
            for name in TOPOLOGY_FILES:
                self.copy(f"{base}/{entry.name}/topology/{name}")
        for entry in sorted((self.src / "sys/devices/system/node").glob("node[0-9]*")):
            self.copy(f"/sys/devices/system/node/{entry.name}/cpulist")

    def device(self, dev: str) -> list[int]:
        """Copy a device directory's facts; its MSI IRQ numbers."""
        for name in DEVICE_FILES:
            self.copy(f"{dev}/{name}")
        self.link(f"{dev}/driver")
        self.link(f"{dev}/subsystem")
        msi = self.src / dev.lstrip("/") / "msi_irqs"
        irqs = sorted(int(e.name) for e in msi.iterdir()) if msi.is_dir() else []
        for irq in irqs:
            self.copy(f"{dev}/msi_irqs/{irq}")
        return irqs

    def interface(self, name: str) -> list[int]:
        real = self.link(f"/sys/class/net/{name}") or f"/sys/class/net/{name}"
        queues = self.src / real.lstrip("/") / "queues"
        for entry in sorted(queues.iterdir()) if queues.is_dir() else ():
            for attr in ("rps_cpus", "rps_flow_cnt", "xps_cpus"):
                self.copy(f"{real}/queues/{entry.name}/{attr}")
        irqs: list[int] = []
        dev = self.link(f"{real}/device")
        if dev:
            irqs += self.device(dev)
            if os.path.basename(os.readlink(self.src / dev.lstrip("/") / "subsystem")) == "virtio":
                irqs += self.device(os.path.dirname(dev))
        ethtool = LiveEthtool() if self.live else CapturedEthtool(self.src)
        for query in QUERIES:
            text = ethtool.query(name, query)
            if text is not None:
                path = self.out / "ethtool" / name / f"{query}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        return irqs

    def run(self, interfaces: Sequence[str] | None = None) -> list[str]:
        self.cpus()
        net = self.src / "sys/class/net"
        names = (
            list(interfaces)
            if interfaces
            else sorted(e.name for e in net.iterdir() if (e / "device").exists())
        )
        irqs: list[int] = []
        for name in names:
            irqs += self.interface(name)
        self.copy("/proc/interrupts")
        known = set(int(m) for m in re.findall(r"^\s*(\d+):", self.text("/proc/interrupts"), re.M))
        for irq in sorted(set(irqs) & known):
            for attr in ("smp_affinity_list", "effective_affinity_list", "node"):
                self.copy(f"/proc/irq/{irq}/{attr}")
        for key in SYSCTLS:
            self.copy("/proc/sys/" + key.replace(".", "/"))
        for path in (*INSTALLED_PATHS, DROPIN_PATH, ENV_PATH):
            src = self.src / path.lstrip("/")
            if src.is_file():
                dst = self.out / path.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                if path in INSTALLED_PATHS:
                    dst.touch()  # only its presence matters
                else:
                    shutil.copyfile(src, dst)
        systemctl = SystemctlSource(self.src, live=self.live)
        for verb in ("is-active", "is-enabled"):
            state = systemctl.state(verb)
            if state is not None:
                path = self.out / "systemctl" / f"{UNIT}.{verb}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(state + "\n")
        return names

    def text(self, absolute: str) -> str:
        path = self.src / absolute.lstrip("/")
        return path.read_text() if path.is_file() else ""


def capture(
    out: str | Path, interfaces: Sequence[str] | None = None, source: str | Path = "/"
) -> list[str]:
    """Capture the host (or tree) at ``source`` into ``out``; the interfaces captured."""
    return Capture(out, source).run(interfaces)
