"""The flow table, previous table generation, draining and ICMP "too big",
through BPF_PROG_TEST_RUN: scapy frames in, verdicts, bytes and counters out."""

from __future__ import annotations

import threading
import time

import pytest
from dphelpers import OUR_MAC, Forwarder, fake_next_hops, make_spec
from dpmodel import XDP_TX, Model
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbappliance.dataplane import bpfmaps, loader

CLIENT_MAC = "02:aa:00:00:00:01"
VIP4, VIP6 = "198.51.100.20", "2001:db8:100::20"
B = [f"10.30.0.{i}" for i in range(21, 26)]
B6 = [f"2001:db8:30::{i}" for i in range(1, 5)]
SIZE = 4099  # a small prime: fast table builds


def services(web=B[:3], web_weights=None, udp=B[:3], mtu=1500):
    def backends(addrs, weights=None):
        return [
            {"address": a, "weight": (weights or {}).get(a, 1), "mac": None, "mtu": mtu}
            for a in addrs
        ]

    return [
        {"name": "web", "vip": VIP4, "port": 443, "protocol": "tcp", "forwarding": "ipip",
         "backends": backends(web, web_weights)},
        {"name": "dns", "vip": VIP4, "port": 53, "protocol": "udp", "forwarding": "ipip",
         "backends": backends(udp)},
        {"name": "web6", "vip": VIP6, "port": 443, "protocol": "tcp", "forwarding": "ipip",
         "backends": backends(B6[:3])},
        {"name": "v4-to-v6", "vip": "203.0.113.7", "port": 80, "protocol": "tcp",
         "forwarding": "ipip", "backends": backends(B6[3:])},
    ]  # fmt: skip


def spec(window=0.0, udp_idle=30, **kw):
    return make_spec(
        services(**kw), table_size=SIZE, previous_table_window=window, udp_idle_timeout=udp_idle
    )


def tcp(sport, flags="A", payload=b""):
    ip = IP(src=f"10.1.{sport % 250}.{sport // 250 % 250 + 1}", dst=VIP4, flags="DF")
    return bytes(
        Ether(src=CLIENT_MAC, dst=OUR_MAC) / ip / TCP(sport=sport, dport=443, flags=flags) / payload
    )


def udp(sport):
    ip = IP(src=f"10.2.{sport % 250}.{sport // 250 % 250 + 1}", dst=VIP4)
    return bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / ip / UDP(sport=sport, dport=53))


def to(fwd: Forwarder, frame: bytes) -> str:
    res = fwd.run(frame)
    assert res.retval == XDP_TX
    return Ether(res.data)[IP].dst


def model_backend(sp, frame: bytes) -> str:
    return Ether(Model(sp, fake_next_hops(sp)).expect(frame)[1])[IP].dst


def moving(sp_a, sp_b, make=tcp, n=40, start=1000):
    """``n`` source ports whose flows the two specs' tables send to different backends."""
    out = []
    for sport in range(start, start + 5000):
        if model_backend(sp_a, make(sport)) != model_backend(sp_b, make(sport)):
            out.append(sport)
            if len(out) == n:
                return out
    raise AssertionError("not enough moving flows")


def counters(fwd: Forwarder) -> dict[str, int]:
    with fwd.maps() as m:
        return m.flow_counters()


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.fixture
def fwd(forwarder) -> Forwarder:
    return forwarder()


def test_a_syn_picks_by_maglev_and_records_later_packets_hit(fwd):
    sp = spec()
    fwd.apply(sp)
    c0 = counters(fwd)
    backend = to(fwd, tcp(4000, "S"))
    assert backend == model_backend(sp, tcp(4000, "S"))
    assert delta(c0, counters(fwd)) == {"miss": 1}
    with fwd.maps() as m:
        (entry,) = [f for f in m.flows() if f.sport == 4000]
        assert m.backends()[entry.backend_id].address == backend
        assert (entry.src, entry.dst, entry.dport, entry.proto) == ("10.1.0.17", VIP4, 443, 6)
    for _ in range(3):
        assert to(fwd, tcp(4000, "A", b"data")) == backend
    assert delta(c0, counters(fwd)) == {"miss": 1, "hit": 3}


def test_established_flows_keep_their_backend_when_a_backend_is_added(fwd):
    before, after = spec(web=B[:3]), spec(web=B[:4])
    ports = moving(before, after)
    fwd.apply(before)
    old = {p: to(fwd, tcp(p, "S")) for p in ports}
    fwd.apply(after)
    assert {p: to(fwd, tcp(p)) for p in ports} == old  # entries decide, not the new table
    # New connections follow the new table, a reused 5-tuple's SYN too.
    assert all(to(fwd, tcp(p + 20000, "S")) == model_backend(after, tcp(p + 20000)) for p in ports)
    assert {p: to(fwd, tcp(p, "S")) for p in ports} == {
        p: model_backend(after, tcp(p)) for p in ports
    }


def test_an_entry_whose_backend_is_down_is_dropped_and_the_flow_rehashed(fwd):
    sp = spec(web=B[:4])
    fwd.apply(sp)
    flows = {p: to(fwd, tcp(p, "S")) for p in range(5000, 5100)}
    gone = B[1]
    on_gone = [p for p, b in flows.items() if b == gone]
    assert on_gone
    fwd.apply(sp, down=(gone,))
    c0 = counters(fwd)
    down_model = Model(sp, fake_next_hops(sp), down=(gone,))
    for p in on_gone:  # re-picked by the table without it: never black-holed
        new = to(fwd, tcp(p))
        assert new != gone
        assert new == Ether(down_model.expect(tcp(p))[1])[IP].dst
    assert delta(c0, counters(fwd)) == {"rehash": len(on_gone), "miss": len(on_gone)}
    assert {p: to(fwd, tcp(p)) for p in flows if p not in on_gone} == {
        p: b for p, b in flows.items() if p not in on_gone
    }
    # Back up: the moved flows stay where they went (their entries say so).
    moved = {p: to(fwd, tcp(p)) for p in on_gone}
    fwd.apply(sp)
    assert {p: to(fwd, tcp(p)) for p in on_gone} == moved


def test_a_flow_without_entry_goes_by_the_previous_table_inside_the_window(fwd):
    before, after = spec(web=B[:3], window=60), spec(web=B[:4], window=60)
    ports = moving(before, after)
    fwd.apply(before)
    fwd.apply(after)
    c0 = counters(fwd)
    # An established flow this node never saw (ECMP moved it here): the
    # backend it was set up on, by the table of before the change.
    assert {p: to(fwd, tcp(p)) for p in ports} == {p: model_backend(before, tcp(p)) for p in ports}
    assert delta(c0, counters(fwd)) == {"previous_table": len(ports)}
    assert {p: to(fwd, tcp(p)) for p in ports} == {p: model_backend(before, tcp(p)) for p in ports}
    assert delta(c0, counters(fwd)) == {"previous_table": len(ports), "hit": len(ports)}
    # A SYN is a new connection: the current table, always.
    fresh = [p + 30000 for p in ports]
    assert all(to(fwd, tcp(p, "S")) == model_backend(after, tcp(p)) for p in fresh)
    # UDP has no SYN to tell: an unknown UDP flow is new, the current table.
    udp_ports = moving(spec(udp=B[:3]), spec(udp=B[:4]), make=udp, n=10)
    fwd.apply(spec(udp=B[:3], window=60))
    fwd.apply(spec(udp=B[:4], window=60))
    after_udp = spec(udp=B[:4])
    assert all(to(fwd, udp(p)) == model_backend(after_udp, udp(p)) for p in udp_ports)


def test_outside_the_window_the_current_table_decides(fwd):
    before, after = spec(web=B[:3], window=1), spec(web=B[:4], window=1)
    ports = moving(before, after, n=10)
    fwd.apply(before)
    fwd.apply(after)
    assert to(fwd, tcp(ports[0])) == model_backend(before, tcp(ports[0]))  # inside
    time.sleep(1.3)
    c0 = counters(fwd)
    assert {p: to(fwd, tcp(p)) for p in ports[1:]} == {
        p: model_backend(after, tcp(p)) for p in ports[1:]
    }
    assert delta(c0, counters(fwd)) == {"miss": len(ports) - 1}
    # The window over, an unchanged apply drops the previous table.
    fwd.apply(after)
    with fwd.maps() as m:
        _, table_id, _, prev_size, _ = m.vips()[bpfmaps.vip_key(VIP4, 443, "tcp")]
        assert prev_size == 0 and m.table(table_id ^ 1) is None


def test_no_window_no_previous_table(fwd):
    before, after = spec(web=B[:3]), spec(web=B[:4])
    ports = moving(before, after, n=10)
    fwd.apply(before)
    fwd.apply(after)
    assert {p: to(fwd, tcp(p)) for p in ports} == {p: model_backend(after, tcp(p)) for p in ports}


def test_the_previous_table_is_not_followed_to_a_down_backend(fwd):
    before, after = spec(web=B[:4], window=60), spec(web=B[:3] + B[4:5], window=60)
    ports = moving(before, after, n=40)
    to_gone = [p for p in ports if model_backend(before, tcp(p)) == B[3]]
    assert to_gone
    fwd.apply(before)
    fwd.apply(after, down=(B[3],))  # B[3] left the spec and failed
    for p in to_gone:
        assert to(fwd, tcp(p)) == model_backend(after, tcp(p))


def test_udp_entries_expire_after_the_idle_timeout(fwd):
    before, after = spec(udp=B[:3], udp_idle=1), spec(udp=B[:4], udp_idle=1)
    ports = moving(before, after, make=udp, n=10)
    fwd.apply(before)
    old = {p: to(fwd, udp(p)) for p in ports}
    fwd.apply(after)
    assert {p: to(fwd, udp(p)) for p in ports} == old  # within the timeout
    time.sleep(1.5)
    c0 = counters(fwd)
    assert {p: to(fwd, udp(p)) for p in ports} == {p: model_backend(after, udp(p)) for p in ports}
    assert delta(c0, counters(fwd)) == {"udp_expired": len(ports), "miss": len(ports)}


def test_a_draining_backend_keeps_its_flows_and_gets_no_new_ones(fwd):
    full = spec(web=B[:4])
    fwd.apply(full)
    flows = {p: to(fwd, tcp(p, "S")) for p in range(6000, 6100)}
    x = B[3]  # in no other service
    kept = [p for p, b in flows.items() if b == x]
    assert kept
    draining = spec(web=B[:4], web_weights={x: 0})
    rep = fwd.apply(draining)
    assert f"{x} draining" in rep.sync.states_changed
    assert all(to(fwd, tcp(p)) == x for p in kept)  # existing flows keep it
    assert x not in {to(fwd, tcp(p, "S")) for p in range(7000, 7200)}  # new ones never
    fwd.apply(draining)  # unchanged: the previous table (naming x) goes...
    with fwd.maps() as m:
        assert x in {e.address for e in m.backends().values()}  # ...x's entry stays
    assert all(to(fwd, tcp(p)) == x for p in kept)
    # Removed from the spec: its entry is freed an apply later; its flows are
    # then re-picked, never dropped.
    removed = spec(web=[b for b in B[:4] if b != x])
    fwd.apply(removed)
    fwd.apply(removed)
    with fwd.maps() as m:
        assert x not in {e.address for e in m.backends().values()}
    c0 = counters(fwd)
    assert {p: to(fwd, tcp(p)) for p in kept} == {p: model_backend(removed, tcp(p)) for p in kept}
    assert delta(c0, counters(fwd)) == {"rehash": len(kept), "miss": len(kept)}


# --- ICMP "too big" -------------------------------------------------------------


def test_a_full_size_frame_gets_fragmentation_needed_exact_bytes(fwd):
    fwd.apply(spec())
    inner = (
        IP(src="10.1.2.3", dst=VIP4, flags="DF", ttl=60)
        / TCP(sport=7777, dport=443, flags="A")
        / Raw(b"x" * 1460)
    )
    frame = bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / inner)
    assert len(frame) == 1514
    with fwd.maps() as m:
        before = m.drops()["too_big"]
    res = fwd.run(frame)
    assert res.retval == XDP_TX
    expected = (
        Ether(src=OUR_MAC, dst=CLIENT_MAC)
        / IP(src=VIP4, dst="10.1.2.3", id=0, flags=0, ttl=64, tos=0)
        / ICMP(type=3, code=4, nexthopmtu=1480)
        / Raw(bytes(inner)[:512])
    )
    assert res.data == bytes(expected)  # scapy computes lengths and both checksums
    with fwd.maps() as m:
        assert m.drops()["too_big"] == before + 1
    # 20 bytes less fits the path once encapsulated: forwarded.
    inner[Raw].load = b"x" * 1440
    assert to(fwd, bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / inner)) in B


def test_the_reported_mtu_is_the_backends_path_less_the_outer_header(fwd):
    fwd.apply(make_spec(services(mtu=1400), table_size=SIZE))
    inner = IP(src="10.1.2.3", dst=VIP4) / TCP(sport=7, dport=443) / Raw(b"y" * 1341)
    assert len(inner) + 20 == 1401
    res = fwd.run(bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / inner))
    assert res.retval == XDP_TX and Ether(res.data)[ICMP].nexthopmtu == 1380
    # An IPv4 VIP to an IPv6 backend: the outer header is 40 bytes.
    inner = IP(src="10.1.2.3", dst="203.0.113.7") / TCP(sport=7, dport=80) / Raw(b"y" * 1321)
    res = fwd.run(bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / inner))
    assert res.retval == XDP_TX and Ether(res.data)[ICMP].nexthopmtu == 1360


def test_an_ipv6_frame_too_big_gets_packet_too_big_exact_bytes(fwd):
    fwd.apply(spec())
    inner = (
        IPv6(src="2001:db8:1::5", dst=VIP6, hlim=50)
        / TCP(sport=8888, dport=443, flags="A")
        / Raw(b"z" * 1440)
    )
    frame = bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / inner)
    assert len(frame) == 1514
    res = fwd.run(frame)
    assert res.retval == XDP_TX
    expected = (
        Ether(src=OUR_MAC, dst=CLIENT_MAC)
        / IPv6(src=VIP6, dst="2001:db8:1::5", hlim=64)
        / ICMPv6PacketTooBig(mtu=1460)
        / Raw(bytes(inner)[:512])
    )
    assert res.data == bytes(expected)
    inner[Raw].load = b"z" * 1400
    res = fwd.run(bytes(Ether(src=CLIENT_MAC, dst=OUR_MAC) / inner))
    assert res.retval == XDP_TX and Ether(res.data)[IPv6].dst in B6


def test_drain_wait_returns_once_the_backend_gets_no_packets(fwd):
    sp = spec(web=B[:4], web_weights={B[3]: 0})
    fwd.apply(spec(web=B[:4]))
    flow = next(p for p in range(8000, 8200) if to(fwd, tcp(p, "S")) == B[3])
    fwd.apply(sp)
    stop = threading.Event()

    def traffic() -> None:  # the flow keeps going to the draining backend
        while not stop.is_set():
            assert to(fwd, tcp(flow)) == B[3]
            time.sleep(0.02)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        busy = loader.drain_wait(sp.interface, B[3], idle=0.5, timeout=1.0, pin_root=fwd.root)
    finally:
        stop.set()
        t.join()
    assert not busy.drained and busy.waited >= 1.0
    idle = loader.drain_wait(sp.interface, B[3], idle=0.5, timeout=10, pin_root=fwd.root)
    assert idle.drained and 0.5 <= idle.waited < 5
