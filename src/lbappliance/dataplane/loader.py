"""Compile, load, attach and detach the XDP forwarder; apply a spec; report.

What does what, and why:

- ``clang -target bpf`` compiles bpf/xdp_lb.c on the node (the lb_dataplane
  role does it once; tests and benchmarks call ``compile_object``).
- ``bpftool prog load OBJ PIN type xdp pinmaps DIR`` loads it: bpftool is
  libbpf's own front end, so ELF relocations, BTF-defined maps and the
  array-of-maps template are handled by the reference loader, and every map is
  pinned by name under ``<pin_root>/<interface>/maps`` where the control plane
  (and ``bpftool map dump pinned ...`` when debugging) finds it again.
  iproute2's ``ip link set ... xdp obj`` could load too, but it pins maps in
  its own tc-era layout and handles map-in-map templates less predictably.
- ``ip link set dev IF xdpdrv|xdpgeneric pinned PROG`` attaches (xdplink.py).
- In native mode each backend egress interface other than the uplink gets
  bpf/xdp_pass.c too (egress.py): most drivers drop frames redirected to a
  device without an XDP program.
- Maps are then read and written with raw bpf(2) calls (bpfsys.py); each
  backend's egress interface and MACs come from the kernel's routes and
  neighbours through pyroute2 (neighbours.py).

Pins live on a bpf filesystem (mounted at /sys/fs/bpf by systemd; mounted here
if missing), so they vanish at reboot: the lb_dataplane role's oneshot unit
runs ``apply`` at boot. A re-apply with the same object keeps the running
program and its maps (and counters) and only syncs the maps; a changed object
(or XDP mode) is loaded next to the old one, filled, then swapped in.

``apply`` and ``detach`` hold an exclusive lock on the pin root (``status`` a
shared one) while they read or change pins: a second run on the same pins (a
unit reload while an operator applies ``--down``, two deploys at once) would
otherwise remove the other's staging directory or rename the pin directory
under it, and its next ``BPF_OBJ_GET`` (or bpftool, or ``ip``) fails with ENOENT.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbappliance.dataplane import bpfmaps, bpfsys, egress, neighbours
from lbappliance.dataplane.spec import DataplaneSpec
from lbappliance.dataplane.xdplink import (
    Attachment,
    LoaderError,
    attach,
    attachment,
    detach_xdp,
    pin_path,
    run,
)
from lbappliance.paths import NODE, NODE_BPF_OBJECT, NODE_BPF_PINS

DEFAULT_PIN_ROOT = Path(NODE_BPF_PINS)
DEFAULT_OBJECT = Path(NODE_BPF_OBJECT)
DEFAULT_PASS_OBJECT = DEFAULT_OBJECT.with_name("xdp_pass.o")
DEFAULT_SPEC = Path(NODE.dataplane_spec)


def bpf_source_dir() -> Path:
    from lbappliance.paths import project_dir

    return project_dir() / "bpf"


def compile_object(source: Path, out: Path, clang: str = "clang") -> Path:
    """``clang -O2 -g -target bpf`` (no kernel headers needed: uapi ones do)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    include = f"/usr/include/{platform.machine()}-linux-gnu"
    run(
        clang,
        "-O2",
        "-g",
        "-Wall",
        "-target",
        "bpf",
        f"-I{include}",
        "-c",
        str(source),
        "-o",
        str(out),
    )
    return out


def ensure_bpffs(path: Path) -> None:
    """Make sure ``path`` is on a bpf filesystem (mount /sys/fs/bpf if needed)."""
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        mnt = pre.split()[4]
        if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) > len(best):
            best, fstype = mnt, post.split()[0]
    if fstype == "bpf":
        return
    if str(path).startswith("/sys/fs/bpf/") and best != "/sys/fs/bpf":
        run("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
        return
    raise LoaderError(f"{path} is not on a bpf filesystem")


def load(obj: Path, pin_dir: Path, maps: Mapping[str, Path] | None = None) -> None:
    """Load ``obj`` and pin its program at ``pin_dir/prog``, maps in ``pin_dir/maps``.

    ``maps``: map name -> pinned map the object uses instead of creating its own.
    ``--nomount``: bpftool would otherwise mount a new bpffs over a pin
    directory it does not find on one (gone, or not bpffs); our pins must land
    on the filesystem ``ensure_bpffs`` checked, or the load must fail.
    """
    pin_dir.mkdir(parents=True)
    reuse = [
        a for name, path in (maps or {}).items() for a in ("map", "name", name, "pinned", str(path))
    ]
    run("bpftool", "--nomount", "prog", "load", str(obj), str(pin_dir / "prog"), "type", "xdp",
         *reuse, "pinmaps", str(pin_dir / "maps"))  # fmt: skip


def load_with_flow_tables(obj: Path, pin_dir: Path, flow_table_size: int) -> None:
    """``load``, with flow tables of ``flow_table_size`` entries each.

    libbpf sizes a map from the object (a placeholder there): the tables are
    created here first, pinned beside ``pin_dir`` for bpftool to hand over,
    and that extra pin removed once the object holds them.
    """
    tmp = pin_dir.with_name(pin_dir.name + ":flows")
    unpin(tmp)
    tmp.mkdir()
    try:
        for name, key in bpfmaps.FLOW_MAPS.items():
            with bpfsys.map_create(
                bpfsys.BPF_MAP_TYPE_LRU_HASH,
                key.size,
                bpfmaps.FLOW_ENTRY.size,
                flow_table_size,
                bpfsys.BPF_F_NO_COMMON_LRU,
                name,
            ) as fd:
                bpfsys.obj_pin(fd, tmp / name)
        load(obj, pin_dir, {name: tmp / name for name in bpfmaps.FLOW_MAPS})
    finally:
        unpin(tmp)


def unpin(pin_dir: Path) -> None:
    if pin_dir.exists():
        shutil.rmtree(pin_dir)


@contextlib.contextmanager
def pins_locked(pin_root: Path, shared: bool = False) -> Iterator[None]:
    """Hold ``flock`` on the pin root directory (bpffs holds no regular files,
    so the directory itself is the lock): exclusive for changing pins, shared
    for reading them. Without a pin root there are no pins to protect."""
    try:
        fd = os.open(pin_root, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def pin_dir_for(pin_root: Path, interface: str) -> Path:
    """The forwarder's pin directory for ``interface`` (``xdplink.pin_path``)."""
    return pin_path(pin_root, interface)


def pinned_prog_id(pin_dir: Path) -> int | None:
    return egress.prog_id_at(pin_dir / "prog")


@dataclass
class ApplyReport:
    interface: str
    mode: str
    reloaded: bool
    prog_id: int | None
    sync: bpfmaps.SyncResult = field(default_factory=bpfmaps.SyncResult)
    egress: list[egress.Change] = field(default_factory=list)

    def lines(self) -> list[str]:
        s = self.sync
        out = [
            f"{self.interface}: {'loaded and attached' if self.reloaded else 'program kept'}"
            f" ({self.mode}, prog id {self.prog_id})"
        ]
        out += [c.line() for c in self.egress]
        out += [f"table written: {t}" for t in s.tables_written]
        out += [f"VIP removed: {v}" for v in s.vips_removed]
        if s.backends_added or s.backends_freed:
            out.append(f"backend entries: +{s.backends_added} -{s.backends_freed}")
        out += [f"backend {c}" for c in s.states_changed]
        egress_changed = any(c.action != "kept" for c in self.egress)
        if not s.changed and not self.reloaded and not egress_changed:
            out.append("no change")
        out += [f"warning: {w}" for w in s.warnings]
        return out


def wanted_next_hops(spec: DataplaneSpec) -> list[neighbours.Wanted]:
    """(address, static MAC) of every backend in a table: each needs a next hop."""
    return sorted({(b.address, b.mac) for s in spec.services for b in s.backends if b.weight})


def apply(
    spec: DataplaneSpec,
    obj: Path,
    pin_root: Path = DEFAULT_PIN_ROOT,
    down: Iterable[str] = (),
    next_hops: Mapping[neighbours.Wanted, neighbours.NextHop | None] | None = None,
    attach_program: bool = True,
    pass_object: Path = DEFAULT_PASS_OBJECT,
) -> ApplyReport:
    """Bring the forwarder on ``spec.interface`` in line with ``spec``.

    ``next_hops`` overrides resolution from the kernel (tests, benchmarks);
    ``attach_program=False`` loads and fills without attaching
    (BPF_PROG_TEST_RUN, benchmarks). In native mode ``pass_object`` (compiled
    bpf/xdp_pass.c) goes onto the egress interfaces (egress.py): those of the
    next hops before the maps are written, so no redirect meets a device
    without a program; after, interfaces no backend entry uses lose theirs.
    """
    ensure_bpffs(pin_root)
    pin_root.mkdir(parents=True, exist_ok=True)
    pin_dir = pin_dir_for(pin_root, spec.interface)
    helpers = egress.helper_dir(pin_dir)
    native = attach_program and spec.xdp_mode == "native"
    warnings: list[str] = []
    if next_hops is None:
        next_hops, warnings = neighbours.resolve(wanted_next_hops(spec))
    with pins_locked(pin_root):
        helper_warnings: list[str] = []
        routed = {h.ifname for h in next_hops.values() if h} - {spec.interface} if native else set()
        changes = egress.ensure(helpers, pass_object, routed, helper_warnings)
        report = _apply_forwarder(spec, obj, pin_dir, down, next_hops, attach_program)
        if attach_program:
            used = _egress_in_maps(pin_dir) - {spec.interface} if native else set()
            changes += egress.ensure(helpers, pass_object, used - routed, helper_warnings)
            changes += egress.remove_unused(helpers, used | routed)
        report.egress = changes
        report.sync.warnings[:0] = warnings
        report.sync.warnings += helper_warnings
        return report


def _apply_forwarder(
    spec: DataplaneSpec,
    obj: Path,
    pin_dir: Path,
    down: Iterable[str],
    next_hops: Mapping[neighbours.Wanted, neighbours.NextHop | None],
    attach_program: bool,
) -> ApplyReport:
    """``apply``'s forwarder part: keep the program and sync its maps, or load,
    fill and attach a new one in place of the old."""
    digest = bpfmaps.object_digest(obj)
    att = attachment(spec.interface) if attach_program else Attachment(spec.xdp_mode, None)
    pid = pinned_prog_id(pin_dir)
    if pid is not None:
        try:
            with bpfmaps.Maps(pin_dir / "maps") as m:
                # A resized flow table means new maps, hence a new load.
                same_object = (
                    m.config()[2] == digest and m.flow_table_size() == spec.flow_table_size
                )
        except OSError:  # pinned by an older build with other maps: replace it
            same_object = False
        attached = not attach_program or (att.prog_id == pid and att.mode == spec.xdp_mode)
        if same_object and attached:
            with bpfmaps.Maps(pin_dir / "maps") as m:
                _write_config(m, spec, digest)
                res = m.sync(spec, next_hops, down)
            return ApplyReport(spec.interface, spec.xdp_mode, False, pid, res)

    staging = pin_dir.with_name(pin_dir.name + ":new")
    unpin(staging)
    load_with_flow_tables(obj, staging, spec.flow_table_size)
    try:
        with bpfmaps.Maps(staging / "maps") as m:
            _write_config(m, spec, digest)
            res = m.sync(spec, next_hops, down)
        if attach_program:
            if att.mode is not None and att.mode != spec.xdp_mode:
                detach_xdp(spec.interface, att.mode)
            attach(spec.interface, staging / "prog", spec.xdp_mode)
    except BaseException:
        unpin(staging)
        raise
    unpin(pin_dir)
    os.rename(staging, pin_dir)
    return ApplyReport(spec.interface, spec.xdp_mode, True, pinned_prog_id(pin_dir), res)


def _egress_in_maps(pin_dir: Path) -> set[str]:
    """Interfaces the backend entries that get packets send out of (draining
    ones included; a down entry, e.g. one superseded by a new next hop, gets none)."""
    with bpfmaps.Maps(pin_dir / "maps") as m:
        ifindexes = {e.ifindex for e in m.backends().values() if e.state != bpfmaps.STATE_DOWN}
    out = set()
    for ifindex in ifindexes:
        with contextlib.suppress(OSError):
            out.add(socket.if_indextoname(ifindex))
    return out


def _write_config(m: bpfmaps.Maps, spec: DataplaneSpec, digest: bytes) -> None:
    m.write_config(spec.tunnel_source_v4, spec.tunnel_source_v6, digest, spec.udp_idle_timeout)


def detach(interface: str, pin_root: Path = DEFAULT_PIN_ROOT) -> list[str]:
    """Detach our program from ``interface`` and remove its pins, then the
    egress interfaces' XDP_PASS programs."""
    with pins_locked(pin_root):
        return _detach_locked(interface, pin_dir_for(pin_root, interface))


def _detach_locked(interface: str, pin_dir: Path) -> list[str]:
    out = []
    pid = pinned_prog_id(pin_dir)
    att = attachment(interface)
    if att.prog_id is not None and att.mode is not None:
        if pid is not None and att.prog_id != pid:
            out.append(f"{interface}: XDP program {att.prog_id} is not ours, left attached")
        else:
            detach_xdp(interface, att.mode)
            out.append(f"{interface}: detached XDP program {att.prog_id} ({att.mode})")
    if pid is not None:
        unpin(pin_dir)
        out.append(f"removed {pin_dir}")
    out += [c.line() for c in egress.remove_unused(egress.helper_dir(pin_dir), ())]
    if not out:
        out.append(f"{interface}: nothing attached or pinned")
    return out


def status(
    interface: str, pin_root: Path = DEFAULT_PIN_ROOT, spec: DataplaneSpec | None = None
) -> dict[str, Any]:
    """Attachment, VIPs with their tables and counters, backends, drops, and the
    egress interfaces' XDP_PASS programs."""
    with pins_locked(pin_root, shared=True):
        return _status_locked(interface, pin_dir_for(pin_root, interface), spec)


def _status_locked(interface: str, pin_dir: Path, spec: DataplaneSpec | None) -> dict[str, Any]:
    att = attachment(interface)
    out: dict[str, Any] = {
        "interface": interface,
        "attached": {"mode": att.mode, "prog_id": att.prog_id},
        "pinned_prog_id": pinned_prog_id(pin_dir),
        "egress_programs": egress.status(egress.helper_dir(pin_dir)),
        "services": [],
    }
    if out["pinned_prog_id"] is None:
        return out
    with bpfmaps.Maps(pin_dir / "maps") as m:
        backends = m.backends()
        vip_ctr = m.vip_counters()
        be_ctr = m.backend_counters()
        flows = m.flows()
        per_backend = flow_entries_per_backend(flows, backends)
        for key, (stats_id, table_id, size, _, _) in sorted(m.vips().items()):
            vip, port, proto = bpfmaps.parse_vip_key(key)
            svc = spec.service_for(vip, port, proto) if spec else None
            slots = m.table(table_id) if size else []
            share: dict[int, int] = {}
            for idx in slots or []:
                share[idx] = share.get(idx, 0) + 1
            out["services"].append(
                {
                    "name": svc.name if svc else None,
                    "vip": vip,
                    "port": port,
                    "protocol": proto,
                    "table_size": size,
                    "packets": vip_ctr[stats_id][0],
                    "bytes": vip_ctr[stats_id][1],
                    "backends": [
                        {
                            "address": backends[idx].address,
                            "egress": _ifname(backends[idx].ifindex),
                            "src_mac": backends[idx].src_mac,
                            "mac": backends[idx].mac,
                            "forwarding": bpfmaps.MODE_NAMES[backends[idx].mode],
                            "mtu": backends[idx].mtu,
                            "state": bpfmaps.STATE_NAMES[backends[idx].state],
                            "slots": share.get(idx, 0),
                            "flow_entries": per_backend.get(idx, 0),
                            "packets": be_ctr[idx][0],
                            "bytes": be_ctr[idx][1],
                        }
                        for idx in sorted(
                            set(share) | draining_of(svc, backends),
                            key=lambda i: backends[i].address,
                        )
                        if idx in backends
                    ],
                }
            )
        out["drops"] = m.drops()
        out["flows"] = m.flow_counters() | {
            "entries": len(flows),
            "table_size": m.flow_table_size(),
        }
        out["tunnel_source_v4"], out["tunnel_source_v6"], _ = m.config()
    return out


def flow_entries_per_backend(
    flows: list[bpfmaps.FlowEntry], backends: Mapping[int, bpfmaps.BackendEntry]
) -> dict[int, int]:
    """Backend index -> flow entries that still name it (same serial)."""
    out: dict[int, int] = {}
    for f in flows:
        be = backends.get(f.backend_id)
        if be is not None and be.gen == f.gen:
            out[f.backend_id] = out.get(f.backend_id, 0) + 1
    return out


def draining_of(svc: Any, backends: Mapping[int, bpfmaps.BackendEntry]) -> set[int]:
    """Entries of ``svc`` (spec service or None) in no table, kept while they drain."""
    zero = {b.address for b in svc.backends if not b.weight} if svc is not None else set()
    return {i for i, e in backends.items() if e.state == bpfmaps.STATE_DRAIN and e.address in zero}


@dataclass(frozen=True)
class DrainReport:
    address: str
    drained: bool  # no packet forwarded to it for ``idle`` seconds
    waited: float  # seconds


def drain_wait(
    interface: str,
    address: str,
    idle: float,
    timeout: float,
    pin_root: Path = DEFAULT_PIN_ROOT,
    interval: float = 0.1,
) -> DrainReport:
    """Wait until the forwarder has sent no packet to ``address`` for ``idle``
    seconds (its flows have ended), or ``timeout``.

    Packets, not flow entries, tell: a TCP entry outlives its connection
    until the LRU evicts it, and the program reads no clock for TCP packets.
    """
    start = last_change = time.monotonic()
    last: int | None = None
    while True:
        with (
            pins_locked(pin_root, shared=True),
            bpfmaps.Maps(pin_dir_for(pin_root, interface) / "maps") as m,
        ):
            ids = [i for i, e in m.backends().items() if e.address == address]
            counters = m.backend_counters()
            packets = sum(counters[i][0] for i in ids)
        now = time.monotonic()
        if packets != last:
            last, last_change = packets, now
        if now - last_change >= idle:
            return DrainReport(address, True, now - start)
        if now - start >= timeout:
            return DrainReport(address, False, now - start)
        time.sleep(interval)


def _ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"ifindex {ifindex}"
