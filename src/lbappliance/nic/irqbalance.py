"""How irqbalance is told to keep away from the NIC: banned IRQs and CPUs, or stopped.

``ban`` writes a systemd drop-in that adds an environment file under /run; the file names
the NIC queue IRQs (``--banirq``, IRQ numbers change across boots and NIC resets, so it is
rewritten on every apply) and the CPUs that do packet work (``IRQBALANCE_BANNED_CPULIST``,
so no other device's IRQ lands on them).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from lbappliance.nic.cpulist import format_cpulist

UNIT = "irqbalance.service"
DROPIN_PATH = "/etc/systemd/system/irqbalance.service.d/lbappliance-nic.conf"
ENV_PATH = "/run/lbappliance/irqbalance.env"
INSTALLED_PATHS = (
    "/usr/sbin/irqbalance",
    "/lib/systemd/system/irqbalance.service",
    "/usr/lib/systemd/system/irqbalance.service",
)

DROPIN = f"""\
# Managed by `lbappliance nic apply` (irqbalance: ban). Do not edit.
[Service]
EnvironmentFile=-{ENV_PATH}
"""


def env_file(banned_irqs: Iterable[int], banned_cpus: Iterable[int]) -> str:
    args = " ".join(f"--banirq={irq}" for irq in sorted(banned_irqs))
    return (
        "# Written by `lbappliance nic apply`: NIC queue IRQs and the CPUs that serve them.\n"
        f"IRQBALANCE_BANNED_CPULIST={format_cpulist(banned_cpus)}\n"
        f'IRQBALANCE_ARGS="{args}"\n'
    )


class SystemctlSource:
    """``systemctl is-active|is-enabled irqbalance.service`` on a live host or a captured tree."""

    def __init__(self, root: str | Path, live: bool):
        self.root = Path(root)
        self.live = live

    def state(self, verb: str) -> str | None:
        if not self.live:
            path = self.root / "systemctl" / f"{UNIT}.{verb}.txt"
            return path.read_text().strip() if path.is_file() else None
        try:
            res = subprocess.run(
                ["systemctl", verb, UNIT], capture_output=True, text=True, timeout=10, check=False
            )
        except FileNotFoundError:
            return None
        out = res.stdout.strip()
        # "offline" / "Failed to connect to bus": no systemd manager running here.
        return out if out and " " not in out else None
