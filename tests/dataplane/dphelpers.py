"""Helpers shared by the data-plane tests (imported by the test modules)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from lbappliance.dataplane import bpfmaps, bpfsys, loader
from lbappliance.dataplane import spec as specmod
from lbappliance.dataplane.neighbours import NextHop, Wanted

# BPF_PROG_TEST_RUN runs the program as if the frame came in on the caller's
# loopback device: ifindex 1 in every namespace. A next hop on it means XDP_TX.
INGRESS_IFINDEX = 1
OUR_MAC = "02:bb:00:00:00:02"


def make_spec(services: list[dict[str, Any]], **top: Any) -> specmod.DataplaneSpec:
    """A spec of ``services`` (backends without ``mtu`` get 1500) and ``top``
    keys. No previous-table window unless asked for: tests of the tables then
    see each apply's table alone."""
    raw = {
        "node": "lb1",
        "interface": "lbdp0",
        "xdp_mode": "generic",
        "table_size": 65537,
        "flow_table_size": 4096,
        "udp_idle_timeout": 30,
        "previous_table_window": 0,
        "tunnel_source_v4": "10.10.0.11",
        "tunnel_source_v6": "2001:db8:10::11",
        "services": [
            {**svc, "backends": [{"mtu": 1500, **b} for b in svc["backends"]]} for svc in services
        ],
    }
    raw.update(top)
    return specmod.parse(raw)


def fake_mac(address: str) -> str:
    """A distinct made-up next-hop MAC per backend (02:00:...: locally administered)."""
    return "02:00:00:" + ipaddress.ip_address(address).packed[-3:].hex(":")


def fake_next_hops(
    spec: specmod.DataplaneSpec, ifindex: int = INGRESS_IFINDEX, src_mac: str = OUR_MAC
) -> dict[Wanted, NextHop | None]:
    """Every backend behind ``ifindex`` (default: the ingress, XDP_TX), with
    its static MAC or a made-up one."""
    return {
        (b.address, b.mac): NextHop(ifindex, "fake", src_mac, b.mac or fake_mac(b.address))
        for s in spec.services
        for b in s.backends
    }


class Forwarder:
    """A loaded, unattached forwarder: apply specs, run packets through it."""

    def __init__(self, root: Path, obj: Path) -> None:
        self.root = root
        self.obj = obj
        self.spec: specmod.DataplaneSpec | None = None
        self._prog: bpfsys.Fd | None = None

    def apply(
        self,
        spec: specmod.DataplaneSpec,
        down: tuple[str, ...] = (),
        next_hops: dict[Wanted, NextHop | None] | None = None,
    ) -> loader.ApplyReport:
        self.spec = spec
        rep = loader.apply(
            spec,
            self.obj,
            self.root,
            down=down,
            next_hops=fake_next_hops(spec) if next_hops is None else next_hops,
            attach_program=False,
        )
        if self._prog is not None:
            self._prog.close()
        self._prog = bpfsys.obj_get(self.pin_dir / "prog")
        return rep

    @property
    def pin_dir(self) -> Path:
        assert self.spec is not None
        return loader.pin_dir_for(self.root, self.spec.interface)

    def run(self, frame: bytes, repeat: int = 1) -> bpfsys.TestRun:
        assert self._prog is not None
        return bpfsys.prog_test_run(self._prog, frame, repeat=repeat)

    def maps(self) -> bpfmaps.Maps:
        return bpfmaps.Maps(self.pin_dir / "maps")

    def forget_flows(self) -> int:
        """Empty both flow tables (every flow is new again); how many entries went."""
        n = 0
        with self.maps() as m:
            for name, key in bpfmaps.FLOW_MAPS.items():
                fd = m.fds[name]
                for k, _ in bpfsys.hash_items(fd, key.size, bpfmaps.FLOW_ENTRY.size):
                    n += bpfsys.map_delete(fd, k)
        return n

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
        loader.unpin(self.root)
