"""Attach, detach and read back XDP programs on interfaces (iproute2).

``ip link set dev IF xdpdrv|xdpgeneric pinned PROG`` attaches (``-force``
replaces a running program atomically, so a reload drops no packet); ``ip -j -d
link show`` reads the attachment back. iproute2 is present on every node and its
XDP flags are the documented interface; pyroute2's XDP attribute support varies
between releases.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_IP_MODES = {"native": "xdpdrv", "generic": "xdpgeneric"}
_LINK_MODES = {1: "native", 2: "generic", 3: "offload"}


class LoaderError(RuntimeError):
    pass


def pin_path(root: Path, interface: str) -> Path:
    """``<root>/<interface>``: bpffs refuses names with a dot (VLAN interfaces have
    one) and interface names cannot hold a colon, so dots become colons."""
    return root / interface.replace(".", ":")


def pinned_interface(pin: Path) -> str:
    """The interface a ``pin_path`` pin is named after."""
    return pin.name.replace(":", ".")


def run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode:
        raise LoaderError(f"{' '.join(cmd)}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


@dataclass(frozen=True)
class Attachment:
    mode: str | None  # "native" | "generic" | "offload" | None
    prog_id: int | None


def attachment(interface: str) -> Attachment:
    info = json.loads(run("ip", "-j", "-d", "link", "show", "dev", interface))[0]
    xdp = info.get("xdp")
    if not xdp or "prog" not in xdp:
        return Attachment(None, None)
    return Attachment(_LINK_MODES.get(xdp["mode"]), xdp["prog"]["id"])


def attach(interface: str, prog: Path, mode: str) -> None:
    try:
        run("ip", "-force", "link", "set", "dev", interface, _IP_MODES[mode], "pinned", str(prog))
    except LoaderError as exc:
        hint = virtio_xdp_hint(interface) if mode == "native" else None
        if hint:
            raise LoaderError(f"{exc}\n{hint}") from None
        raise


def virtio_xdp_hint(
    interface: str,
    sysfs: Path = Path("/sys"),
    channels_text: str | None = None,
    cpus: int | None = None,
) -> str | None:
    """What native XDP on a virtio-net NIC needs, in this NIC's numbers, or None.

    virtio-net gives XDP a transmit queue of its own per CPU, taken from the queue
    pairs the device has but does not use (``combined + CPUs <= max combined``);
    without them kernels before 5.13 refuse the program and later ones send XDP_TX
    and redirects through a slower shared, locked queue. While a program is
    attached the driver refuses ``ethtool -L``: set the queue count first.
    ``channels_text`` (``ethtool -l`` output) and ``cpus`` default to the live host's.
    """
    driver = sysfs / "class/net" / interface / "device/driver"
    if not driver.exists() or driver.resolve().name != "virtio_net":
        return None
    from lbappliance.nic.ethtool import parse_channels

    if channels_text is None:
        channels_text = subprocess.run(
            ["ethtool", "-l", interface], capture_output=True, text=True, check=False
        ).stdout
    channels = parse_channels(channels_text)
    cpus = cpus or os.cpu_count()
    if channels is None or not channels.max_combined or not channels.combined or not cpus:
        return (
            f"{interface} is virtio-net: native XDP needs a spare queue pair per CPU "
            "(combined + CPUs <= max combined); or use dataplane.xdp_mode: generic"
        )
    if channels.combined + cpus <= channels.max_combined:
        return None  # enough spare queue pairs: the failure is something else
    fits = channels.max_combined - cpus
    if fits < 1:
        todo = (
            f"the device has too few queue pairs for that: give the VM at least "
            f"{cpus + 1} (qemu: -netdev tap,queues=N with virtio-net-pci mq=on), "
            "or use dataplane.xdp_mode: generic"
        )
    else:
        todo = (
            f"set {interface} to at most {fits} combined queues first (the nic profile's "
            f"queues, or `ethtool -L {interface} combined {fits}`; refused while a program "
            "is attached), or use dataplane.xdp_mode: generic"
        )
    return (
        f"{interface} is virtio-net: native XDP needs a spare queue pair per CPU "
        f"({channels.combined} combined in use + {cpus} CPUs > {channels.max_combined} "
        f"available): {todo}"
    )


def detach_xdp(interface: str, mode: str) -> None:
    run("ip", "link", "set", "dev", interface, _IP_MODES.get(mode, "xdp"), "off")
