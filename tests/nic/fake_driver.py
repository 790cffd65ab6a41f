"""A stand-in for ethtool and systemctl on a copied fixture tree, for fast apply tests.

It keeps each NIC's settable state, answers the commands the applier runs the way the kernel
and the drivers do (limits, the RSS-table check on shrinking channels, queue directories
appearing and going), and renders ethtool/<if>/*.txt again so the next read sees the result.
Real ethtool and sysfs are exercised by the namespace test (test_veth_lab.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from nicfixtures import FIXTURES, HostSpec, kernel_mask, layouts, nic_ethtool_state, write_ethtool

SHORT_FEATURES = {"lro": "large-receive-offload", "rx-gro-hw": "rx-gro-hw"}


def spec_named(name: str) -> HostSpec:
    return next(s for s in layouts() if s.name == name)


def copy_fixture(name: str, dest: Path) -> Path:
    root = dest / name
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    return root


class FakeDriver:
    def __init__(self, root: Path, spec: HostSpec):
        self.root = root
        self.spec = spec
        self.state = {nic.name: nic_ethtool_state(nic) for nic in spec.nics}
        self.configured_rxfh: set[str] = set()
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        argv = list(argv)
        self.commands.append(argv)
        if argv[0] == "systemctl":
            return self.systemctl(argv[1:])
        assert argv[0] == "ethtool", argv
        opt, ifname, *args = argv[1:]
        state = self.state[ifname]
        rc, err = {
            "-L": self.channels,
            "-G": self.rings,
            "-K": self.features,
            "-X": self.rxfh,
            "-N": self.flow_hash,
        }[opt](ifname, state, args)
        if rc == 0:
            write_ethtool(self.root, ifname, state)
        return rc, err

    def channels(self, ifname: str, state: dict, args: list[str]) -> tuple[int, str]:
        assert args[0] == "combined", args
        n = int(args[1])
        if n > state["max_combined"]:
            return 1, "netlink error: requested channel count exceeds maximum"
        table = state["table"]
        if table and ifname in self.configured_rxfh and max(table) >= n:
            return 1, "netlink error: Invalid argument"
        if table and ifname not in self.configured_rxfh:
            state["table"] = [i % n for i in range(len(table))]
        state["combined"] = n
        net = self.root / "sys/class/net" / ifname / "queues"
        nbits = self.spec.possible
        for kind, attr in (("rx", "rps_cpus"), ("tx", "xps_cpus")):
            for d in net.glob(f"{kind}-*"):
                if int(d.name.split("-")[1]) >= n:
                    shutil.rmtree(d)
            for q in range(n):
                path = net / f"{kind}-{q}" / attr
                if not path.exists():
                    path.parent.mkdir()
                    path.write_text(kernel_mask([], nbits) + "\n")
        return 0, ""

    def rings(self, ifname: str, state: dict, args: list[str]) -> tuple[int, str]:
        max_rx, max_tx, rx, tx = state["rings"]
        settings = dict(zip(args[::2], (int(v) for v in args[1::2]), strict=True))
        if settings.get("rx", 0) > max_rx or settings.get("tx", 0) > max_tx:
            return 1, "netlink error: Invalid argument"
        state["rings"] = [max_rx, max_tx, settings.get("rx", rx), settings.get("tx", tx)]
        return 0, ""

    def features(self, ifname: str, state: dict, args: list[str]) -> tuple[int, str]:
        for short, value in zip(args[::2], args[1::2], strict=True):
            name = SHORT_FEATURES[short]
            on, fixed = state["features"][name]
            if fixed and on != (value == "on"):
                return 1, "Could not change any device features"
            state["features"][name] = [value == "on", fixed]
        return 0, ""

    def rxfh(self, ifname: str, state: dict, args: list[str]) -> tuple[int, str]:
        assert args[0] == "equal", args
        n = int(args[1])
        if state["table"] is None or n > state["combined"]:
            return 1, "Cannot set RX flow hash configuration: Invalid argument"
        state["table"] = [i % n for i in range(len(state["table"]))]
        self.configured_rxfh.add(ifname)
        return 0, ""

    def flow_hash(self, ifname: str, state: dict, args: list[str]) -> tuple[int, str]:
        assert args[0] == "rx-flow-hash", args
        state["flow_hash"][args[1]] = args[2]
        return 0, ""

    def systemctl(self, args: list[str]) -> tuple[int, str]:
        if args[:2] == ["disable", "--now"]:
            d = self.root / "systemctl"
            (d / "irqbalance.service.is-active.txt").write_text("inactive\n")
            (d / "irqbalance.service.is-enabled.txt").write_text("disabled\n")
        return 0, ""

    def ethtool_commands(self) -> list[str]:
        return [" ".join(c) for c in self.commands if c[0] == "ethtool"]
