"""Helpers shared by the data-plane tests (imported by the test modules)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from lbappliance.dataplane import bpfmaps, bpfsys, loader
from lbappliance.dataplane import spec as specmod


def make_spec(services: list[dict[str, Any]], **top: Any) -> specmod.DataplaneSpec:
    raw = {
        "node": "lb1",
        "interface": "lbdp0",
        "xdp_mode": "generic",
        "table_size": 65537,
        "tunnel_source_v4": "10.10.0.11",
        "tunnel_source_v6": "2001:db8:10::11",
        "services": services,
    }
    raw.update(top)
    return specmod.parse(raw)


def fake_macs(spec: specmod.DataplaneSpec) -> dict[str, str]:
    """A distinct made-up next-hop MAC per backend (02:00:...: locally administered)."""
    out = {}
    for s in spec.services:
        for b in s.backends:
            tail = ipaddress.ip_address(b.address).packed[-3:]
            out[b.address] = "02:00:00:" + tail.hex(":")
    return out


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
        macs: dict[str, str | None] | None = None,
    ) -> loader.ApplyReport:
        self.spec = spec
        rep = loader.apply(
            spec,
            self.obj,
            self.root,
            down=down,
            macs=fake_macs(spec) if macs is None else macs,
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

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
        loader.unpin(self.root)
