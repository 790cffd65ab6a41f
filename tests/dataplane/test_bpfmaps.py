"""Control plane against the real maps: layouts, atomic swaps, garbage, reloads."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
from dphelpers import Forwarder, fake_next_hops, make_spec
from dpmodel import XDP_PASS, XDP_REDIRECT, XDP_TX, Model
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from lbappliance.dataplane import bpfmaps, loader

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
    """Backend chosen for n flows (None where not forwarded)."""
    out = {}
    for sport in range(1000, 1000 + n):
        r = fwd.run(frame(sport))
        out[sport] = Ether(r.data)[IP].dst if r.retval == XDP_TX else None
    return out


@pytest.fixture
def fwd(forwarder) -> Forwarder:
    return forwarder()


def vip_info(fwd, vip="198.51.100.20", port=53):
    with fwd.maps() as m:
        return m.vips().get(bpfmaps.vip_key(vip, port, "udp"))


def test_struct_layouts_match_the_objects_btf(xdp_object):
    dump = json.loads(
        subprocess.run(
            ["bpftool", "-j", "btf", "dump", "file", str(xdp_object)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    structs = {t["name"]: t for t in dump["types"] if t["kind"] == "STRUCT"}
    expect = {
        "vip_key": (bpfmaps.VIP_KEY, {"addr": 0, "port": 16, "proto": 18, "family": 19}),
        "vip_info": (bpfmaps.VIP_INFO, {"stats_id": 0, "table_id": 4, "table_size": 8}),
        "backend": (
            bpfmaps.BACKEND,
            {"addr": 0, "mac": 16, "family": 22, "mode": 23, "src_mac": 24, "ifindex": 32},
        ),
        "lb_config": (
            bpfmaps.CONFIG,
            {"src_v4": 0, "src_v6": 4, "has_v4": 20, "has_v6": 21, "object_sha256": 24},
        ),
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


def test_detach_without_attachment_removes_pins(fwd, monkeypatch):
    spec = spec_of(service(B[:1]))
    fwd.apply(spec)
    monkeypatch.setattr(loader, "attachment", lambda _i: loader.Attachment(None, None))
    out = loader.detach(spec.interface, fwd.root)
    assert out == [f"removed {fwd.pin_dir}"]
    assert not fwd.pin_dir.exists()
