"""The queue constraint of native XDP on virtio-net, said in the NIC's numbers.

virtio-net wants a spare queue pair per CPU for XDP and refuses `ethtool -L` while a
program is attached. These run without a VM: a sysfs tree whose NIC is bound to
virtio_net, `ethtool -l` output as the VM lab's guests print it, and a runner
standing in for ethtool/ip (the VM lab tests run the real thing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lbappliance.dataplane.xdplink import virtio_xdp_hint
from lbappliance.nic.applier import Applier
from lbappliance.nic.changes import RESETS_DEVICE, Change

# `ethtool -l eth1` in a VM lab guest (qemu virtio-net-pci, queues=4), two queues in use.
ETHTOOL_L = """\
Channel parameters for eth1:
Pre-set maximums:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\tn/a
Combined:\t4
Current hardware settings:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\tn/a
Combined:\t{combined}
"""


def sysfs_with(tmp_path: Path, driver: str) -> Path:
    drivers = tmp_path / "bus/virtio/drivers" / driver
    drivers.mkdir(parents=True)
    dev = tmp_path / "devices/virtio1"
    dev.mkdir(parents=True)
    (dev / "driver").symlink_to(drivers)
    net = tmp_path / "class/net/eth1"
    net.mkdir(parents=True)
    (net / "device").symlink_to(dev)
    return tmp_path


def test_no_hint_for_other_drivers_or_when_queues_fit(tmp_path: Path) -> None:
    assert virtio_xdp_hint("eth1", sysfs_with(tmp_path / "a", "ixgbe"), ETHTOOL_L, 2) is None
    sysfs = sysfs_with(tmp_path / "b", "virtio_net")
    assert virtio_xdp_hint("eth1", sysfs, ETHTOOL_L.format(combined=2), 2) is None


def test_too_many_queues_in_use_says_how_many_fit(tmp_path: Path) -> None:
    sysfs = sysfs_with(tmp_path, "virtio_net")
    hint = virtio_xdp_hint("eth1", sysfs, ETHTOOL_L.format(combined=4), 2)
    assert hint is not None
    assert "(4 combined in use + 2 CPUs > 4 available)" in hint
    assert "`ethtool -L eth1 combined 2`" in hint
    assert "xdp_mode: generic" in hint


def test_a_device_without_enough_queue_pairs_says_so(tmp_path: Path) -> None:
    sysfs = sysfs_with(tmp_path, "virtio_net")
    hint = virtio_xdp_hint("eth1", sysfs, ETHTOOL_L.format(combined=1), 4)
    assert hint is not None and "give the VM at least 5" in hint


def test_refused_queue_change_under_xdp_says_detach_first(tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []

    def runner(argv: Sequence[str]) -> tuple[int, str]:
        calls.append(tuple(argv))
        if argv[0] == "ethtool":
            return 1, "netlink error: Invalid argument"
        return 0, '[{"ifname": "eth1", "xdp": {"mode": 1, "prog": {"id": 7}}}]'

    change = Change(RESETS_DEVICE, "eth1 combined queues", "4", "2",
                    ("ethtool", "-L", "eth1", "combined", "2"))  # fmt: skip
    error = Applier(tmp_path, runner=runner).execute(change)
    assert error is not None
    assert error.startswith("exit 1: netlink error: Invalid argument; an XDP program is attached")
    assert "`lbappliance dataplane detach`" in error
    assert calls[1] == ("ip", "-j", "link", "show", "dev", "eth1")


def test_refused_queue_change_without_xdp_is_reported_as_is(tmp_path: Path) -> None:
    def runner(argv: Sequence[str]) -> tuple[int, str]:
        return (1, "netlink error: Invalid argument") if argv[0] == "ethtool" else (0, "[{}]")

    change = Change(RESETS_DEVICE, "eth1 combined queues", "4", "2",
                    ("ethtool", "-L", "eth1", "combined", "2"))  # fmt: skip
    assert Applier(tmp_path, runner=runner).execute(change) == (
        "exit 1: netlink error: Invalid argument"
    )
