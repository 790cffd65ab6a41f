"""Control plane against the real maps: layouts, atomic swaps, garbage, reloads."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from dphelpers import Forwarder, fake_next_hops, make_spec
from dpmodel import XDP_PASS, XDP_REDIRECT, XDP_TX, Model
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from lbappliance.dataplane import bpfmaps, bpfsys, flowhash, loader

REPO = Path(__file__).resolve().parents[2]
SIZE = 4099  # small prime: these tests rebuild tables often


def service(backends, name="dns", vip="198.51.100.20", port=53, weights=None):
    return {
        "name": name,
        "vip": vip,
        "port": port,
        "protocol": "udp",
        "forwarding": "ipip",
        "backends": [
            {"address": b, "weight": (weights or {}).get(b, 1), "mac": None} for b in backends
        ],
    }


B = [f"10.30.0.{i}" for i in range(21, 26)]


def spec_of(*services, size=SIZE):
    return make_spec(list(services), table_size=size)


def frame(sport, dst="198.51.100.20", dport=53):
    return bytes(
        Ether(dst="02:bb:00:00:00:02")
        / IP(src=f"10.1.{sport % 200}.{sport % 250 + 1}", dst=dst)
        / UDP(sport=sport, dport=dport)
    )


def route(fwd, n=300):
    """Backend chosen for n new flows (None where not forwarded): the flow
    table is emptied first, so this is what the current table says."""
    fwd.forget_flows()
    out = {}
    for sport in range(1000, 1000 + n):
        r = fwd.run(frame(sport))
        out[sport] = Ether(r.data)[IP].dst if r.retval == XDP_TX else None
    return out


@pytest.fixture
def fwd(forwarder) -> Forwarder:
    return forwarder()


def vip_info(fwd, vip="198.51.100.20", port=53):
    """(stats_id, table_id, table_size) of a VIP."""
    with fwd.maps() as m:
        info = m.vips().get(bpfmaps.vip_key(vip, port, "udp"))
    return info[:3] if info else None


# The directory's entry is an inner map's value, which the forwarder's BTF
# holds only as a forward declaration: a probe object gives its layout.
LAYOUT_PROBE = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_maps.h"
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vip_entry);
} probe SEC(".maps");
"""


def btf_structs(obj):
    dump = json.loads(
        subprocess.run(
            ["bpftool", "-j", "btf", "dump", "file", str(obj)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {t["name"]: t for t in dump["types"] if t["kind"] == "STRUCT"}


def test_struct_layouts_match_the_objects_btf(xdp_object, tmp_path):
    (tmp_path / "probe.c").write_text(LAYOUT_PROBE)
    shutil.copy(REPO / "bpf" / "lb_maps.h", tmp_path)
    structs = btf_structs(xdp_object)
    structs |= btf_structs(loader.compile_object(tmp_path / "probe.c", tmp_path / "probe.o"))
    expect = {
        "vip_key": (bpfmaps.VIP_KEY, {"addr": 0, "port": 16, "proto": 18, "family": 19}),
        "vip_info": (
            bpfmaps.VIP_INFO,
            {"stats_id": 0, "table_id": 4, "table_size": 8, "prev_size": 12, "prev_until": 16},
        ),
        "vip_entry": (bpfmaps.VIP_ENTRY, {"key": 0, "info": 24}),
        "backend": (
            bpfmaps.BACKEND,
            {
                "addr": 0,
                "mac": 16,
                "family": 22,
                "mode": 23,
                "src_mac": 24,
                "mtu": 30,
                "ifindex": 32,
                "gen": 36,
                "state": 40,
            },
        ),
        "lb_config": (
            bpfmaps.CONFIG,
            {
                "src_v4": 0,
                "src_v6": 4,
                "has_v4": 20,
                "has_v6": 21,
                "object_sha256": 24,
                "udp_idle_ns": 56,
            },
        ),
        "flow_key4": (
            bpfmaps.FLOW_KEY4,
            {"saddr": 0, "daddr": 4, "sport": 8, "dport": 10, "proto": 12},
        ),
        "flow_key6": (
            bpfmaps.FLOW_KEY6,
            {"saddr": 0, "daddr": 16, "sport": 32, "dport": 34, "proto": 36},
        ),
        "flow_entry": (bpfmaps.FLOW_ENTRY, {"backend_id": 0, "gen": 4, "last_seen": 8, "hash": 16}),
        "counters": (bpfmaps.COUNTERS, {"packets": 0, "bytes": 8}),
    }
    for name, (st, offsets) in expect.items():
        t = structs[name]
        assert t["size"] == st.size, name
        got = {m["name"]: m["bits_offset"] // 8 for m in t["members"]}
        assert {k: got[k] for k in offsets} == offsets, name


def test_reapply_with_the_same_input_changes_nothing(fwd):
    spec = spec_of(service(B[:3]))
    first = fwd.apply(spec)
    assert first.reloaded and first.sync.changed
    again = fwd.apply(spec)
    assert not again.reloaded and not again.sync.changed
    assert again.prog_id == first.prog_id


def test_an_update_fills_the_other_slot_then_switches(fwd):
    spec_a = spec_of(service(B[:3]))
    spec_b = spec_of(service(B[:4]))
    fwd.apply(spec_a)
    stats_id, table_a, _ = vip_info(fwd)
    assert table_a == 2 * stats_id
    before = route(fwd)
    fwd.apply(spec_b)
    _, table_b, size = vip_info(fwd)
    assert (table_b, size) == (2 * stats_id + 1, SIZE)
    with fwd.maps() as m:
        assert m.table(table_a) is not None  # the previous generation stays...
    after = route(fwd)
    model_b = Model(spec_b, fake_next_hops(spec_b))
    for sport, be in after.items():
        assert be == Ether(model_b.expect(frame(sport))[1])[IP].dst
    assert after != before
    fwd.apply(spec_b)
    with fwd.maps() as m:
        assert m.table(table_a) is None  # ...until an apply that changes nothing
    fwd.apply(spec_a)
    assert vip_info(fwd)[1] == table_a
    assert route(fwd) == before


def test_a_failed_backend_moves_only_its_flows(fwd):
    spec = spec_of(service(B[:4]))
    fwd.apply(spec)
    before = route(fwd, 500)
    rep = fwd.apply(spec, down=(B[1],))
    assert rep.sync.tables_written
    after = route(fwd, 500)
    moved = {f for f in before if before[f] != after[f]}
    assert moved == {f for f in before if before[f] == B[1]}
    assert B[1] not in after.values()
    fwd.apply(spec)
    assert route(fwd, 500) == before


def test_backend_entries_are_freed_one_apply_later(fwd):
    fwd.apply(spec_of(service(B[:3])))
    rep = fwd.apply(spec_of(service(B[:2])))
    assert rep.sync.backends_freed == 0  # the previous table still names B[2]
    with fwd.maps() as m:
        assert B[2] in {e.address for e in m.backends().values()}
    rep = fwd.apply(spec_of(service(B[:2])))
    assert rep.sync.backends_freed == 1
    with fwd.maps() as m:
        assert B[2] not in {e.address for e in m.backends().values()}


def test_a_changed_next_hop_gets_a_new_entry(fwd):
    spec = spec_of(service(B[:2]))
    hops = fake_next_hops(spec)
    fwd.apply(spec, next_hops=hops)
    flows = route(fwd, 100)
    sport = next(f for f, be in flows.items() if be == B[0])
    hops[(B[0], None)] = dataclasses.replace(hops[(B[0], None)], mac="02:00:00:99:99:99")
    rep = fwd.apply(spec, next_hops=hops)
    assert rep.sync.backends_added == 1
    assert Ether(fwd.run(frame(sport)).data).dst == "02:00:00:99:99:99"
    # Moved behind another interface: redirected there, with that one's MAC.
    hops[(B[0], None)] = dataclasses.replace(
        hops[(B[0], None)], ifindex=9, src_mac="02:09:09:09:09:09"
    )
    rep = fwd.apply(spec, next_hops=hops)
    assert rep.sync.backends_added == 1
    res = fwd.run(frame(sport))
    assert res.retval == XDP_REDIRECT and Ether(res.data).src == "02:09:09:09:09:09"
    with fwd.maps() as m:
        assert {e.ifindex for e in m.backends().values() if e.address == B[0]} >= {9}


def test_unresolved_next_hop_is_left_out_with_a_warning(fwd):
    spec = spec_of(service(B[:3]))
    hops = fake_next_hops(spec) | {(B[2], None): None}
    rep = fwd.apply(spec, next_hops=hops)
    assert any(B[2] in w for w in rep.sync.warnings)
    assert B[2] not in route(fwd).values()


def test_removed_vip_passes_and_its_tables_go_on_the_next_apply(fwd):
    web = service(B[:2], name="web", port=443)
    fwd.apply(spec_of(service(B[:3]), web))
    stats_web = vip_info(fwd, port=443)[0]
    assert fwd.run(frame(5, dport=443)).retval == XDP_TX
    rep = fwd.apply(spec_of(service(B[:3])))
    assert rep.sync.vips_removed == ["198.51.100.20 443/udp"]
    assert fwd.run(frame(5, dport=443)).retval == XDP_PASS
    with fwd.maps() as m:
        assert m.table(2 * stats_web) is not None
    fwd.apply(spec_of(service(B[:3])))
    with fwd.maps() as m:
        assert m.table(2 * stats_web) is None and m.table(2 * stats_web + 1) is None


def test_table_size_change_is_atomic_too(fwd):
    fwd.apply(spec_of(service(B[:3])))
    spec = spec_of(service(B[:3]), size=251)
    fwd.apply(spec)
    stats_id, table_id, size = vip_info(fwd)
    assert size == 251 and table_id == 2 * stats_id + 1
    model = Model(spec, fake_next_hops(spec))
    for sport, be in route(fwd).items():
        assert be == Ether(model.expect(frame(sport))[1])[IP].dst


def holders(fwd, table_id):
    """Which arrays of maps hold a table in slot ``table_id``."""
    with fwd.maps() as m:
        return [
            name
            for name in bpfmaps.TABLE_MAPS
            if bpfsys.map_lookup(m.fds[name], bpfmaps.U32.pack(table_id), 4) is not None
        ]


def test_standard_size_tables_live_in_their_own_array(fwd):
    """65537-slot tables go to lb_tables_std (the lookup the verifier inlines),
    others to lb_tables; switching sizes stays a slot switch."""
    std = spec_of(service(B[:3]), size=bpfmaps.STD_TABLE_SIZE)
    other = spec_of(service(B[:3]))
    fwd.apply(std)
    t_std = vip_info(fwd)[1]
    assert holders(fwd, t_std) == ["lb_tables_std"]
    fwd.apply(other)
    _, t_other, size = vip_info(fwd)
    assert (t_other, size) == (t_std ^ 1, SIZE)
    assert holders(fwd, t_other) == ["lb_tables"]
    assert holders(fwd, t_std) == ["lb_tables_std"]  # the previous generation stays
    model = Model(other, fake_next_hops(other))
    for sport, be in route(fwd).items():
        assert be == Ether(model.expect(frame(sport))[1])[IP].dst
    fwd.apply(std)
    assert vip_info(fwd)[1] == t_std
    model = Model(std, fake_next_hops(std))
    for sport, be in route(fwd).items():
        assert be == Ether(model.expect(frame(sport))[1])[IP].dst
    fwd.apply(std)  # unchanged: the other generation goes, from both arrays
    assert holders(fwd, t_other) == [] and holders(fwd, t_std) == ["lb_tables_std"]


def test_no_backend_left_drops(fwd):
    spec = spec_of(service(B[:2]))
    rep = fwd.apply(spec, down=tuple(B[:2]))
    assert any("no backend up" in w for w in rep.sync.warnings)
    assert vip_info(fwd)[2] == 0
    assert set(route(fwd, 20).values()) == {None}


def test_a_new_object_is_loaded_beside_and_swapped_in(fwd, tmp_path, xdp_object):
    spec = spec_of(service(B[:3]))
    first = fwd.apply(spec)
    other = tmp_path / "xdp_lb.o"
    shutil.copy(xdp_object, other)
    with other.open("ab") as f:
        f.write(b"\0" * 8)  # same program, different digest
    fwd.obj = other
    rep = fwd.apply(spec)
    assert rep.reloaded and rep.prog_id != first.prog_id
    assert not (fwd.root / f"{spec.interface}:new").exists()
    model = Model(spec, fake_next_hops(spec))
    for sport, be in route(fwd, 50).items():
        assert be == Ether(model.expect(frame(sport))[1])[IP].dst


def test_pins_of_an_older_build_are_replaced(fwd):
    """An upgrade: the running program's maps are not those this control plane
    knows (here one is missing), so the new object is loaded and swapped in."""
    spec = spec_of(service(B[:3]))
    first = fwd.apply(spec)
    (fwd.pin_dir / "maps" / "lb_vip_dir").unlink()
    rep = fwd.apply(spec)
    assert rep.reloaded and rep.prog_id != first.prog_id
    assert set(route(fwd, 50).values()) <= set(B[:3])


def test_detach_without_attachment_removes_pins(fwd, monkeypatch):
    spec = spec_of(service(B[:1]))
    fwd.apply(spec)
    monkeypatch.setattr(loader, "attachment", lambda _i: loader.Attachment(None, None))
    out = loader.detach(spec.interface, fwd.root)
    assert out == [f"removed {fwd.pin_dir}"]
    assert not fwd.pin_dir.exists()


def colliding_ports(vip: str, n: int) -> list[int]:
    """``n`` UDP ports whose keys on ``vip`` share one directory home slot."""
    by_slot: dict[int, list[int]] = {}
    for port in range(1, 65536):
        h = flowhash.vip_hash(bpfmaps.vip_key(vip, port, "udp")) & (bpfmaps.DIR_SLOTS - 1)
        by_slot.setdefault(h, []).append(port)
        if len(by_slot[h]) == n:
            return by_slot[h]
    raise AssertionError("no collision found")


def test_directory_probes_past_colliding_vips(fwd):
    """Keys sharing a home slot take the next ones; each is found, a colliding
    non-VIP still passes, and a rebuild without the first keeps the others."""
    a, b, c, other = colliding_ports("198.51.100.20", 4)
    services = [service(B[:2], name=f"s{p}", port=p) for p in (a, b, c)]
    fwd.apply(spec_of(*services))
    for port in (a, b, c):
        assert fwd.run(frame(7, dport=port)).retval == XDP_TX, port
    assert fwd.run(frame(7, dport=other)).retval == XDP_PASS
    fwd.apply(spec_of(*services[1:]))
    assert fwd.run(frame(7, dport=a)).retval == XDP_PASS
    for port in (b, c):
        assert fwd.run(frame(7, dport=port)).retval == XDP_TX, port


def test_many_vips_are_all_found(fwd):
    ports = range(1000, 1300)
    fwd.apply(spec_of(*[service(B[:2], name=f"s{p}", port=p) for p in ports], size=251))
    with fwd.maps() as m:
        assert len(m.vips()) == len(ports)
    assert all(fwd.run(frame(9, dport=p)).retval == XDP_TX for p in ports)


def test_a_directory_that_cannot_hold_the_vips_is_refused(fwd, monkeypatch):
    monkeypatch.setattr(flowhash, "vip_hash", lambda key: 5)  # every key, one home slot
    ports = range(2000, 2000 + bpfmaps.DIR_PROBES + 1)
    with pytest.raises(bpfmaps.DirectoryFull, match="within 8 probes"):
        fwd.apply(spec_of(*[service(B[:1], name=f"s{p}", port=p) for p in ports]))


def routes(fwd, ports, n=100, first_sport=1000):
    """Backend chosen for n flows to each VIP port (None where not forwarded)."""
    out = {}
    for port in ports:
        for sport in range(first_sport, first_sport + n):
            r = fwd.run(frame(sport, dport=port))
            out[port, sport] = Ether(r.data)[IP].dst if r.retval == XDP_TX else None
    return out


def test_a_changed_service_rebuilds_only_its_table(fwd, monkeypatch):
    """Unchanged services are recognised by their tables' names (a digest of
    their inputs): not rebuilt, not read back. New flows (source ports the
    flow table has not seen) follow each service's table as the spec says."""
    services = [service(B[:3], name=f"s{p}", port=p) for p in (53, 54, 55)]
    fwd.apply(spec_of(*services))
    builds = []
    real_build = bpfmaps.maglev.build
    monkeypatch.setattr(
        bpfmaps.maglev, "build", lambda *a, **kw: builds.append(a) or real_build(*a, **kw)
    )
    assert not fwd.apply(spec_of(*services)).sync.changed
    assert builds == []
    services[1] = service(B[:4], name="s54", port=54)
    spec = spec_of(*services)
    rep = fwd.apply(spec)
    assert rep.sync.tables_written == ["s54 198.51.100.20 54/udp"]
    assert len(builds) == 1
    after = routes(fwd, (53, 54, 55), first_sport=3000)
    assert B[3] in {v for (port, _), v in after.items() if port == 54}
    model = Model(spec, fake_next_hops(spec))
    for (port, sport), be in after.items():
        assert be == Ether(model.expect(frame(sport, dport=port))[1])[IP].dst
    # A changed next hop changes the table's input (a new backend entry).
    hops = fake_next_hops(spec)
    hops[B[0], None] = dataclasses.replace(hops[B[0], None], mac="02:00:00:99:99:99")
    rep = fwd.apply(spec, next_hops=hops)
    assert sorted(rep.sync.tables_written) == [f"s{p} 198.51.100.20 {p}/udp" for p in (53, 54, 55)]


def test_the_directory_names_only_tables_already_in_place(fwd, monkeypatch):
    """Tables go into their arrays in batches; the directory switches to them
    only once every one it names is in."""
    real = bpfmaps.Maps._publish_dir
    seen = []

    def publish_dir(self, vips):
        for _stats_id, table_id, size, *_prev in vips.values():
            if size:
                seen.append(table_id)
                assert self._has_table(table_id), f"table {table_id} named before it is in"
        real(self, vips)

    monkeypatch.setattr(bpfmaps.Maps, "_publish_dir", publish_dir)
    monkeypatch.setattr(bpfmaps, "PUBLISH_BATCH", 2)
    fwd.apply(spec_of(*[service(B[:3], name=f"s{p}", port=p) for p in range(50, 55)]))
    fwd.apply(spec_of(*[service(B[:4], name=f"s{p}", port=p) for p in range(50, 55)]))
    assert len(seen) == 10


def test_tables_built_without_the_compiled_fill_are_the_same(fwd, monkeypatch):
    spec = spec_of(service(B[:4]))
    fwd.apply(spec)
    compiled = route(fwd)
    fwd.apply(spec_of(service(B[:1])))
    monkeypatch.setattr(bpfmaps.maglev_native, "library", lambda: None)
    monkeypatch.setattr(bpfmaps.maglev.maglev_native, "library", lambda: None)
    rep = fwd.apply(spec)
    assert any("pure Python" in w for w in rep.sync.warnings)
    assert route(fwd) == compiled


def test_inner_tables_are_mmapable_and_frozen(fwd):
    fwd.apply(spec_of(service(B[:3]), size=bpfmaps.STD_TABLE_SIZE))
    _, table_id, _ = vip_info(fwd)
    with fwd.maps() as m, m._inner_table(table_id) as fd:
        info = bpfsys.map_info(fd)
        assert info.flags & bpfsys.BPF_F_MMAPABLE
        assert info.name.startswith("t") and len(info.name) == 15
        with pytest.raises(OSError):  # frozen: no writes from user space
            bpfsys.map_update(fd, bpfmaps.U32.pack(0), bpfmaps.U32.pack(1))
