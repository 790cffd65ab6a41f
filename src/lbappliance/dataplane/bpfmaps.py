"""The forwarder's maps (bpf/lb_maps.h) and how the control plane fills them.

Update protocol, chosen so that no packet ever sees a half-written state:

- Every VIP owns two table slots, ``2s`` and ``2s+1``, in one of two arrays
  of maps: ``lb_tables_std`` for tables of the standard size 65537 (inner maps
  of exactly that size, whose lookup the verifier inlines) and ``lb_tables``
  for any other size (``BPF_F_INNER_MAP``); the table size in ``vip_info``
  says which. A new table goes into a fresh inner map, fully written and
  frozen, which is then put into the slot the VIP is *not* using (and that
  slot cleared in the other array); only then is the VIP's ``vip_info`` (stats
  id, table slot, table size) switched to it. A packet reads either the old
  table or the new one. Inner tables are ``BPF_F_MMAPABLE``: the whole table
  is one memcpy through mmap(2), where a batch update costs the kernel a copy
  per slot (about 10-30 ms a table here, minutes for a thousand). New tables
  go into their array in batches (``PUBLISH_BATCH``: every update of an array
  of maps waits for an RCU grace period, a batch once), and deletes of old
  tables run from threads (their waits overlap).
- An inner table's map name is a digest of everything its slots follow from
  (Maglev inputs, down set, backend entry indices; see ``table_name``). An
  apply compares names, not slots: a service whose inputs did not change is
  neither rebuilt nor read back, so a re-apply of 1,000 services costs a few
  system calls each and a change to one service builds one table.
- VIP keys and their ``vip_info`` live in the VIP directory, a fixed-size
  array (open addressing, linear probing: the program's lookups are inlined,
  a hash map's would be a kernel call). It is never written in place: every
  apply that changes a VIP builds a new directory, frozen, and swaps it in
  through the one-slot array of maps ``lb_vip_dir``, after every table it
  names is in place. All VIPs switch at once; a packet sees the old directory
  or the new one.
- The replaced table stays in the inactive slot as the VIP's *previous
  generation*: the directory entry names its size and the end of the window
  (``previous_table_window`` after the switch) during which the program picks
  from it for a TCP packet without SYN of a flow it has no entry for. The
  first apply that leaves the VIP unchanged after the window deletes it (and
  clears the size in a new directory): by then no packet can still be reading
  it, and the program falls back to the current table when a previous one is
  gone anyway.
- Backend entries are immutable but for their ``state`` byte: a backend whose
  address, next hop (egress interface, MACs), mode or path MTU changes gets a
  new index, written before any table refers to it, with a serial (``gen``)
  no entry had before; flow entries record index and serial, so one naming a
  freed or reused index is seen as stale. An entry is freed (zeroed, its
  serial kept so serials never repeat) only when no table left in either
  array refers to it and it is not draining, so not before the apply after
  the one that stopped using it.
- ``state`` is written in place after the tables and the directory: ``down``
  (a failed backend: flow entries naming it are dropped and their flows
  re-picked, never sent to it), ``drain`` (weight 0 in the spec: in no table,
  flows with an entry keep it until it leaves the spec) or ``up``.
- The flow tables are the program's own: the control plane only reads them
  (status, drain).
- A removed VIP leaves the directory first; its tables are dropped on the
  next apply.

The kernel maps are the only state: ``sync`` reads them back, so it needs no
state file and a re-run with the same input changes nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import mmap
import socket
import struct
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lbappliance.dataplane import bpfsys, flowhash, maglev, maglev_native
from lbappliance.dataplane.bpfsys import Fd
from lbappliance.dataplane.neighbours import NextHop, Wanted
from lbappliance.dataplane.spec import MAX_BACKENDS, MAX_SERVICES, DataplaneSpec

MAX_TABLES = 2 * MAX_SERVICES
STD_TABLE_SIZE = 65537  # LB_STD_TABLE_SIZE: tables of this size go to lb_tables_std
TABLE_MAPS = ("lb_tables_std", "lb_tables")
DIR_SLOTS = 16384  # LB_VIP_SLOTS
DIR_PROBES = 8  # LB_VIP_PROBES
TABLE_STRIDE = 2  # u32 words per slot: array map values are 8-byte aligned
PUBLISH_BATCH = 256  # new tables held open (one fd each) before they go in
DROP_THREADS = 64

MODE_UNUSED, MODE_IPIP, MODE_L2DSR = 0, 1, 2
MODES = {"ipip": MODE_IPIP, "l2dsr": MODE_L2DSR}
MODE_NAMES = {v: k for k, v in MODES.items()}

DROP_REASONS = ("no_backend", "no_table", "no_tunnel_source", "adjust_head_failed", "too_big")
FLOW_COUNTERS = ("hit", "miss", "previous_table", "rehash", "udp_expired")  # LB_FLOW_*
STATE_UP, STATE_DOWN, STATE_DRAIN = 0, 1, 2  # LB_BACKEND_*
STATE_NAMES = {STATE_UP: "up", STATE_DOWN: "down", STATE_DRAIN: "draining"}

VIP_KEY = struct.Struct("=16sHBB")  # addr, port (network order), proto, family
# stats_id, table_id, table_size, prev_size, prev_until (CLOCK_MONOTONIC ns)
VIP_INFO = struct.Struct("=IIIIQ")
VIP_ENTRY = struct.Struct(f"={VIP_KEY.size}s4x{VIP_INFO.size}s")  # key, pad, info
# addr, mac, family, mode, src_mac, mtu, ifindex, gen, state
BACKEND = struct.Struct("=16s6sBB6sHIIB3x")
# src_v4, src_v6, has_v4, has_v6, object_sha256, udp_idle_ns
CONFIG = struct.Struct("=4s16sBB2x32sQ")
COUNTERS = struct.Struct("=QQ")  # packets, bytes
FLOW_KEY4 = struct.Struct("=4s4sHHB3x")  # saddr, daddr, sport, dport, proto
FLOW_KEY6 = struct.Struct("=16s16sHHB3x")
# backend_id, gen, last_seen (CLOCK_MONOTONIC_COARSE ns), flow hash
FLOW_ENTRY = struct.Struct("=IIQI4x")
FLOW_MAPS = {"lb_flows4": FLOW_KEY4, "lb_flows6": FLOW_KEY6}
U32 = struct.Struct("=I")

VipInfo = tuple[int, int, int, int, int]  # stats_id, table_id, table_size, prev_size, prev_until

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}

MAP_NAMES = (
    "lb_vip_dir",
    "lb_tables_std",
    "lb_tables",
    "lb_backends",
    "lb_config",
    "lb_vip_stats",
    "lb_backend_stats",
    "lb_drops",
    "lb_flow_stats",
    "lb_flows4",
    "lb_flows6",
)


def vip_key(vip: str, port: int, protocol: str) -> bytes:
    ip = ipaddress.ip_address(vip)
    return VIP_KEY.pack(
        ip.packed.ljust(16, b"\0"), socket.htons(port), PROTOS[protocol], ip.version
    )


def parse_vip_key(raw: bytes) -> tuple[str, int, str]:
    addr, port, proto, family = VIP_KEY.unpack(raw)
    ip = ipaddress.ip_address(addr[:4] if family == 4 else addr)
    return ip.compressed, socket.ntohs(port), PROTO_NAMES.get(proto, str(proto))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


@dataclass(frozen=True)
class BackendEntry:
    """One lb_backends entry; equal (and hashed) by what is immutable."""

    address: str
    mac: str  # Ethernet destination
    mode: int
    src_mac: str  # Ethernet source: the egress interface's MAC
    ifindex: int  # egress interface
    mtu: int  # path MTU toward the backend
    gen: int = field(default=0, compare=False)  # serial, never reused
    state: int = field(default=STATE_UP, compare=False)

    def pack(self) -> bytes:
        ip = ipaddress.ip_address(self.address)
        return BACKEND.pack(
            ip.packed.ljust(16, b"\0"),
            _mac(self.mac),
            ip.version,
            self.mode,
            _mac(self.src_mac),
            self.mtu,
            self.ifindex,
            self.gen,
            self.state,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> BackendEntry | None:
        addr, mac, family, mode, src_mac, mtu, ifindex, gen, state = BACKEND.unpack(raw)
        if mode == MODE_UNUSED:
            return None
        ip = ipaddress.ip_address(addr[:4] if family == 4 else addr)
        return cls(ip.compressed, mac.hex(":"), mode, src_mac.hex(":"), ifindex, mtu, gen, state)


def monotonic_ns() -> int:
    """The clock of ``prev_until`` (bpf_ktime_get_coarse_ns follows it within a tick)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def coarse_ns() -> int:
    """The clock of a flow entry's ``last_seen`` (bpf_ktime_get_coarse_ns)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC_COARSE)


@dataclass(frozen=True)
class FlowEntry:
    family: int
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    backend_id: int
    gen: int
    last_seen: int  # CLOCK_MONOTONIC_COARSE ns (TCP: when recorded)
    hash: int


def table_name(
    size: int, weights: Mapping[str, int], down: Iterable[str], index: Sequence[int]
) -> str:
    """The inner map name of the table built from these inputs: ``t`` and 80
    bits of their SHA-256 in the map-name alphabet (letters, digits, ``_``,
    ``.``; 15 characters fit BPF_OBJ_NAME_LEN). ``index`` is the lb_backends
    index of each of ``maglev.backend_names(weights)``. The algorithm's
    version is part of the input: a table built by another one never matches.
    """
    names = maglev.backend_names(weights)
    down = set(down)
    text = "\n".join(
        [f"lbapp-maglev-v1 {size}"]
        + [f"{n} {weights[n]} {int(n in down)} {i}" for n, i in zip(names, index, strict=True)]
    )
    digest = hashlib.sha256(text.encode()).digest()[:10]
    return "t" + base64.urlsafe_b64encode(digest).decode().rstrip("=").replace("-", ".")


class DirectoryFull(LookupError):
    """The VIPs do not fit the directory's probe limit (practically never:
    at most 1024 VIPs in 16384 slots)."""


@dataclass
class SyncResult:
    """What an apply changed, for the CLI's report."""

    tables_written: list[str] = field(default_factory=list)
    vips_removed: list[str] = field(default_factory=list)
    backends_added: int = 0
    backends_freed: int = 0
    states_changed: list[str] = field(default_factory=list)  # "10.30.0.22 draining"
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.tables_written
            or self.vips_removed
            or self.backends_added
            or self.backends_freed
            or self.states_changed
        )


class Maps:
    """The pinned maps of one loaded forwarder (``<pin_dir>/maps/<name>``)."""

    def __init__(self, maps_dir: Path) -> None:
        self.dir = maps_dir
        self.fds: dict[str, Fd] = {name: bpfsys.obj_get(maps_dir / name) for name in MAP_NAMES}
        self.ncpus = bpfsys.possible_cpus()

    def close(self) -> None:
        for fd in self.fds.values():
            fd.close()

    def __enter__(self) -> Maps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------

    def vips(self) -> dict[bytes, VipInfo]:
        """VIP key -> (stats_id, table_id, table_size, prev_size, prev_until)."""
        v = bpfsys.map_lookup(self.fds["lb_vip_dir"], U32.pack(0), 4)
        if v is None:
            return {}
        with bpfsys.map_get_fd_by_id(U32.unpack(v)[0]) as fd:
            raw = bpfsys.array_lookup_all(fd, DIR_SLOTS, VIP_ENTRY.size)
        out = {}
        for key, info in VIP_ENTRY.iter_unpack(raw):
            if key[-1]:  # family 0: empty slot
                out[key] = VIP_INFO.unpack(info)
        return out

    def backends(self) -> dict[int, BackendEntry]:
        raw = bpfsys.array_lookup_all(self.fds["lb_backends"], MAX_BACKENDS, BACKEND.size)
        out = {}
        for i in range(MAX_BACKENDS):
            e = BackendEntry.unpack(raw[i * BACKEND.size : (i + 1) * BACKEND.size])
            if e is not None:
                out[i] = e
        return out

    def _inner_table(self, table_id: int) -> Fd | None:
        """The inner table in slot ``table_id`` (of whichever array holds one
        there: publishing clears the other)."""
        for name in TABLE_MAPS:
            v = bpfsys.map_lookup(self.fds[name], U32.pack(table_id), 4)
            if v is not None:
                return bpfsys.map_get_fd_by_id(U32.unpack(v)[0])
        return None

    def _table_values(self, table_id: int) -> array | None:
        fd = self._inner_table(table_id)
        if fd is None:
            return None
        with fd:
            info = bpfsys.map_info(fd)
            size = info.max_entries
            if info.flags & bpfsys.BPF_F_MMAPABLE:
                with mmap.mmap(fd.fd, _mmap_len(size), prot=mmap.PROT_READ) as mm:
                    return array("I", mm[: 4 * TABLE_STRIDE * size])[::TABLE_STRIDE]
            return array("I", bpfsys.array_lookup_all(fd, size, 4))

    def table(self, table_id: int) -> list[int] | None:
        """The backend indices of the inner table in slot ``table_id``."""
        values = self._table_values(table_id)
        return None if values is None else values.tolist()

    def _table_name(self, table_id: int) -> str | None:
        fd = self._inner_table(table_id)
        if fd is None:
            return None
        with fd:
            return bpfsys.map_info(fd).name

    def _has_table(self, table_id: int) -> bool:
        return any(
            bpfsys.map_lookup(self.fds[name], U32.pack(table_id), 4) is not None
            for name in TABLE_MAPS
        )

    def _has_dir(self) -> bool:
        return bpfsys.map_lookup(self.fds["lb_vip_dir"], U32.pack(0), 4) is not None

    def _drop_tables(self, table_ids: Iterable[int], arrays: Iterable[str] = TABLE_MAPS) -> None:
        """Clear these slots of ``arrays``. Every delete that finds a table
        waits for an RCU grace period (the kernel makes sure no program still
        reads it), 2-15 ms here: one after the other that is seconds for a
        thousand tables. Concurrent waiters share grace periods, so the
        deletes run from threads (ctypes releases the GIL)."""
        jobs = [
            (self.fds[name], U32.pack(t))
            for t in table_ids
            for name in arrays
            if bpfsys.map_lookup(self.fds[name], U32.pack(t), 4) is not None
        ]
        if len(jobs) < 2:
            for fd, key in jobs:
                bpfsys.map_delete(fd, key)
            return
        with ThreadPoolExecutor(max_workers=min(len(jobs), DROP_THREADS)) as pool:
            list(pool.map(lambda job: bpfsys.map_delete(*job), jobs))

    def _raw_gens(self) -> list[int]:
        raw = bpfsys.array_lookup_all(self.fds["lb_backends"], MAX_BACKENDS, BACKEND.size)
        return [BACKEND.unpack_from(raw, i * BACKEND.size)[7] for i in range(MAX_BACKENDS)]

    def flow_table_size(self) -> int:
        return bpfsys.map_info(self.fds["lb_flows4"]).max_entries

    def flows(self) -> list[FlowEntry]:
        """Every entry of both flow tables."""
        out = []
        for name, key in FLOW_MAPS.items():
            for k, v in bpfsys.hash_items(self.fds[name], key.size, FLOW_ENTRY.size):
                src, dst, sport, dport, proto = key.unpack(k)
                family = 4 if key is FLOW_KEY4 else 6
                out.append(
                    FlowEntry(
                        family,
                        ipaddress.ip_address(src).compressed,
                        ipaddress.ip_address(dst).compressed,
                        socket.ntohs(sport),
                        socket.ntohs(dport),
                        proto,
                        *FLOW_ENTRY.unpack(v),
                    )
                )
        return out

    def flow_counters(self) -> dict[str, int]:
        stride = 8 * self.ncpus
        raw = bpfsys.array_lookup_all(self.fds["lb_flow_stats"], len(FLOW_COUNTERS), stride)
        return {
            name: sum(struct.unpack_from(f"={self.ncpus}Q", raw, i * stride))
            for i, name in enumerate(FLOW_COUNTERS)
        }

    def config(self) -> tuple[str | None, str | None, bytes]:
        raw = bpfsys.map_lookup(self.fds["lb_config"], U32.pack(0), CONFIG.size)
        assert raw is not None
        v4, v6, has4, has6, digest, _ = CONFIG.unpack(raw)
        return (
            str(ipaddress.IPv4Address(v4)) if has4 else None,
            ipaddress.IPv6Address(v6).compressed if has6 else None,
            digest,
        )

    def _percpu_counters(self, name: str, n: int) -> list[tuple[int, int]]:
        stride = COUNTERS.size * self.ncpus
        raw = bpfsys.array_lookup_all(self.fds[name], n, stride)
        out = []
        for i in range(n):
            p = b = 0
            for c in range(self.ncpus):
                pp, bb = COUNTERS.unpack_from(raw, i * stride + c * COUNTERS.size)
                p += pp
                b += bb
            out.append((p, b))
        return out

    def vip_counters(self) -> list[tuple[int, int]]:
        return self._percpu_counters("lb_vip_stats", MAX_SERVICES)

    def backend_counters(self) -> list[tuple[int, int]]:
        return self._percpu_counters("lb_backend_stats", MAX_BACKENDS)

    def drops(self) -> dict[str, int]:
        stride = 8 * self.ncpus
        raw = bpfsys.array_lookup_all(self.fds["lb_drops"], len(DROP_REASONS), stride)
        return {
            reason: sum(struct.unpack_from(f"={self.ncpus}Q", raw, i * stride))
            for i, reason in enumerate(DROP_REASONS)
        }

    # -- writing ---------------------------------------------------------------

    def write_config(
        self,
        src_v4: str | None,
        src_v6: str | None,
        object_sha256: bytes,
        udp_idle_timeout: float = 30.0,
    ) -> bool:
        raw = CONFIG.pack(
            ipaddress.IPv4Address(src_v4).packed if src_v4 else bytes(4),
            ipaddress.IPv6Address(src_v6).packed if src_v6 else bytes(16),
            int(src_v4 is not None),
            int(src_v6 is not None),
            object_sha256,
            int(udp_idle_timeout * 1e9),
        )
        fd = self.fds["lb_config"]
        if bpfsys.map_lookup(fd, U32.pack(0), CONFIG.size) == raw:
            return False
        bpfsys.map_update(fd, U32.pack(0), raw)
        return True

    def _zero_counters(self, name: str, idx: int) -> None:
        bpfsys.map_update(self.fds[name], U32.pack(idx), bytes(COUNTERS.size * self.ncpus))

    @staticmethod
    def _new_table(size: int, values: bytes, name: str) -> Fd:
        """A new inner table of ``size`` slots holding ``values`` (native u32,
        TABLE_STRIDE words a slot), frozen."""
        flags = bpfsys.BPF_F_MMAPABLE | (0 if size == STD_TABLE_SIZE else bpfsys.BPF_F_INNER_MAP)
        inner = bpfsys.map_create(bpfsys.BPF_MAP_TYPE_ARRAY, 4, 4, size, flags, name)
        with mmap.mmap(inner.fd, _mmap_len(size)) as mm:
            mm[: len(values)] = values
        bpfsys.map_freeze(inner)  # no writable mapping left: allowed now
        return inner

    def _publish_tables(self, tables: list[tuple[int, int, Fd]]) -> None:
        """Put each ``(table_id, size, inner)`` into its array and clear that
        slot in the other one. One BPF_MAP_UPDATE_BATCH per array: each update
        of an array of maps waits for an RCU grace period, a batch once."""
        for std in (True, False):
            group = [(t, fd) for t, size, fd in tables if (size == STD_TABLE_SIZE) == std]
            if not group:
                continue
            outer, other = TABLE_MAPS if std else reversed(TABLE_MAPS)
            bpfsys.map_update_batch(
                self.fds[outer],
                struct.pack(f"={len(group)}I", *(t for t, _ in group)),
                struct.pack(f"={len(group)}I", *(fd.fd for _, fd in group)),
                len(group),
            )
            self._drop_tables((t for t, _ in group), (other,))
        for *_, fd in tables:
            fd.close()
        tables.clear()

    def _publish_dir(self, vips: Mapping[bytes, VipInfo]) -> None:
        """A new VIP directory holding ``vips``, swapped in whole."""
        slots = [bytes(VIP_ENTRY.size)] * DIR_SLOTS
        for key in sorted(vips):
            h = flowhash.vip_hash(key)
            for i in range(DIR_PROBES):
                idx = (h + i) & (DIR_SLOTS - 1)
                if not slots[idx][VIP_KEY.size - 1]:
                    slots[idx] = VIP_ENTRY.pack(key, VIP_INFO.pack(*vips[key]))
                    break
            else:
                vip, port, proto = parse_vip_key(key)
                raise DirectoryFull(
                    f"VIP directory: no free slot for {vip} {port}/{proto} within "
                    f"{DIR_PROBES} probes"
                )
        with bpfsys.map_create(
            bpfsys.BPF_MAP_TYPE_ARRAY, 4, VIP_ENTRY.size, DIR_SLOTS, 0, "lb_vip_dir"
        ) as inner:
            bpfsys.map_update_batch(
                inner, struct.pack(f"={DIR_SLOTS}I", *range(DIR_SLOTS)), b"".join(slots), DIR_SLOTS
            )
            bpfsys.map_freeze(inner)
            bpfsys.map_update(self.fds["lb_vip_dir"], U32.pack(0), U32.pack(inner.fd))

    def sync(
        self,
        spec: DataplaneSpec,
        next_hops: Mapping[Wanted, NextHop | None],
        down: Iterable[str] = (),
    ) -> SyncResult:
        """Make the maps forward as ``spec`` says.

        ``next_hops`` maps each backend's (address, static MAC) to its egress
        interface and MACs (None or missing: unresolved, the backend is treated
        as down). ``down`` lists backend addresses that failed: their slots,
        and only theirs, go to the others, and flows with an entry naming them
        are re-picked. A backend of weight 0 that has an entry drains: in no
        table, its flows with an entry keep it.
        """
        res = SyncResult()
        down = set(down)
        now = monotonic_ns()
        window = int(spec.previous_table_window * 1e9)
        current_vips = self.vips()
        current_backends = self.backends()
        by_content = {e: i for i, e in current_backends.items()}
        free_backends = (i for i in range(MAX_BACKENDS) if i not in current_backends)
        next_gen = max(self._raw_gens()) + 1
        taken_stats = {v[0] for v in current_vips.values()}
        # Backend indices each table of this apply's directory refers to.
        known_tables: dict[int, set[int]] = {}
        unpublished: list[tuple[int, int, Fd]] = []  # (table_id, size, inner map)
        previous: list[int] = []  # previous generations to drop
        built = 0
        wanted: set[bytes] = set()
        vips = dict(current_vips)  # the directory to be
        states: dict[int, int] = {}  # backend index -> state wanted
        draining: set[int] = set()
        in_tables: dict[int, BackendEntry] = {}  # entries the new tables use

        for svc in spec.services:
            key = vip_key(svc.vip, svc.port, svc.protocol)
            wanted.add(key)
            label = f"{svc.name} {svc.vip} {svc.port}/{svc.protocol}"
            entries: dict[str, BackendEntry] = {}
            svc_down = set(down)
            for b in svc.backends:
                hop = next_hops.get((b.address, b.mac))
                if b.weight and hop is None:
                    res.warnings.append(f"{label}: no next hop for {b.address}, left out")
                    svc_down.add(b.address)
                    continue
                if hop is not None:
                    entries[b.address] = BackendEntry(
                        b.address, hop.mac, MODES[svc.forwarding], hop.src_mac, hop.ifindex, b.mtu
                    )
            for b in svc.backends:
                if not b.weight:  # draining: every entry it still has stays
                    for i, e in current_backends.items():
                        if e.address == b.address and e.mode == MODES[svc.forwarding]:
                            draining.add(i)
                            if states.get(i) != STATE_UP:  # another service's table uses it
                                states[i] = STATE_DRAIN
            weights = svc.weights()
            # Backend map index of every Maglev backend (allocate new entries).
            index: list[int] = []
            live: set[int] = set()
            for name in maglev.backend_names(weights):
                e = entries.get(name)
                if e is None or name in svc_down:
                    index.append(0)  # owns no slot
                    continue
                if e not in by_content:
                    free = next(free_backends)
                    by_content[e] = free
                    e = dataclasses.replace(e, gen=next_gen)
                    next_gen += 1
                    bpfsys.map_update(self.fds["lb_backends"], U32.pack(free), e.pack())
                    self._zero_counters("lb_backend_stats", free)
                    res.backends_added += 1
                index.append(by_content[e])
                states[by_content[e]] = STATE_UP
                in_tables[by_content[e]] = e
                live.add(by_content[e])
            size = spec.table_size if live else 0
            name = table_name(size, weights, svc_down, index)

            old = current_vips.get(key)
            if old is None:
                stats_id = next(
                    s
                    for s in range(MAX_SERVICES)
                    if s not in taken_stats
                    and not self._has_table(2 * s)
                    and not self._has_table(2 * s + 1)
                )
                taken_stats.add(stats_id)
                self._zero_counters("lb_vip_stats", stats_id)
                active, active_size = None, 0
            else:
                stats_id, active, active_size, prev_size, prev_until = old
            if (
                old is not None
                and active_size == size
                and (not size or self._table_name(active) == name)
            ):
                # Unchanged. Once its window is over, the previous generation
                # has had at least a whole apply cycle for packets in flight
                # to finish with it: drop it.
                if not prev_size or now >= prev_until:
                    previous.append(active ^ 1)
                    if prev_size:
                        vips[key] = (stats_id, active, active_size, 0, 0)
                known_tables[active] = live
                continue
            table_id = 2 * stats_id if active is None or active % 2 else 2 * stats_id + 1
            if size:
                table = maglev.build(weights, size, down=svc_down)
                values = table.values(index, TABLE_STRIDE)
                unpublished.append((table_id, size, self._new_table(size, values, name)))
                built += 1
                if len(unpublished) == PUBLISH_BATCH:
                    self._publish_tables(unpublished)
                known_tables[table_id] = live
            else:
                res.warnings.append(f"{label}: no backend up, its packets are dropped")
            keep_prev = window > 0 and active is not None and active_size > 0
            vips[key] = (
                stats_id,
                table_id,
                size,
                active_size if keep_prev else 0,
                now + window if keep_prev else 0,
            )
            res.tables_written.append(label)

        self._publish_tables(unpublished)  # every table in before the directory names it
        for key in current_vips.keys() - wanted:
            del vips[key]
            vip, port, proto = parse_vip_key(key)
            res.vips_removed.append(f"{vip} {port}/{proto}")
        if vips != current_vips or not self._has_dir():
            self._publish_dir(vips)

        # States last: a backend marked down is already in no table. An entry
        # replaced by a newer one of the same backend (next hop changed) is
        # down too: its flows are re-picked, and reach the new one.
        newer = {(e.address, e.mode) for e in in_tables.values()}
        for i in set(current_backends) | set(states):
            e = current_backends.get(i)
            superseded = i not in states and e is not None and (e.address, e.mode) in newer
            if e is not None and (e.address in down or superseded):
                self._set_state(i, STATE_DOWN, res)
            else:
                self._set_state(i, states.get(i, STATE_UP), res)
        self._drop_tables(previous)
        if built and maglev_native.library() is None:
            res.warnings.append(
                "Maglev tables built in pure Python, 50-200 ms each: "
                f"{maglev_native.unavailable_reason()}"
            )
        self._collect_garbage(current_vips, known_tables, current_backends, draining, res)
        return res

    def _set_state(self, idx: int, state: int, res: SyncResult) -> None:
        raw = bpfsys.map_lookup(self.fds["lb_backends"], U32.pack(idx), BACKEND.size)
        e = BackendEntry.unpack(raw) if raw else None
        if e is None or e.state == state:
            return
        bpfsys.map_update(
            self.fds["lb_backends"], U32.pack(idx), dataclasses.replace(e, state=state).pack()
        )
        res.states_changed.append(f"{e.address} {STATE_NAMES[state]}")

    def _collect_garbage(
        self,
        before: dict[bytes, VipInfo],
        known_tables: dict[int, set[int]],
        backends: dict[int, BackendEntry],
        draining: set[int],
        res: SyncResult,
    ) -> None:
        """Drop the tables of VIPs removed by an earlier apply (not this one:
        packets may still be reading those) and free the backend entries no
        table refers to (and not draining). Tables this apply wrote or found
        unchanged are known; the others (previous generations, removed VIPs)
        are read back."""
        keep_stats = {v[0] for k, v in before.items()} | {v[0] for v in self.vips().values()}
        self._drop_tables(t for t in range(MAX_TABLES) if t // 2 not in keep_stats)
        referenced: set[int] = set(draining)
        for table_id in range(MAX_TABLES):
            if table_id // 2 not in keep_stats:
                continue
            refs = known_tables.get(table_id)
            if refs is None:
                values = self._table_values(table_id)
                refs = set(values) if values is not None else set()
            referenced |= refs
        for idx in backends.keys() - referenced:
            # Zeroed but for its serial: serials stay unique across entries.
            freed = BACKEND.pack(bytes(16), bytes(6), 0, 0, bytes(6), 0, 0, backends[idx].gen, 0)
            bpfsys.map_update(self.fds["lb_backends"], U32.pack(idx), freed)
            res.backends_freed += 1


def _mmap_len(size: int) -> int:
    return -(-4 * TABLE_STRIDE * size // mmap.PAGESIZE) * mmap.PAGESIZE


def object_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()
