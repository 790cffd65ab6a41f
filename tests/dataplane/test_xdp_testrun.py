"""bpf/xdp_lb.c through BPF_PROG_TEST_RUN: scapy frames in, exact bytes out."""

from __future__ import annotations

import ipaddress

import pytest
from dphelpers import OUR_MAC, Forwarder, fake_mac, fake_next_hops, make_spec
from dpmodel import XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, Model
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from lbappliance.dataplane import bpfmaps
from lbappliance.dataplane.flowhash import flow_hash

CLIENT_MAC = "02:aa:00:00:00:01"

SERVICES = [
    {
        "name": "dns",
        "vip": "198.51.100.20",
        "port": 53,
        "protocol": "udp",
        "forwarding": "ipip",
        "backends": [{"address": f"10.30.0.{i}", "weight": 100, "mac": None} for i in (21, 22, 23)],
    },
    {
        "name": "web",
        "vip": "198.51.100.20",
        "port": 443,
        "protocol": "tcp",
        "forwarding": "ipip",
        "backends": [
            {"address": "10.30.0.21", "weight": 1, "mac": None},
            {"address": "10.30.0.22", "weight": 3, "mac": None},
        ],
    },
    {
        "name": "web6",
        "vip": "2001:db8:100::20",
        "port": 443,
        "protocol": "tcp",
        "forwarding": "ipip",
        "backends": [{"address": f"2001:db8:30::{i}", "weight": 1, "mac": None} for i in (1, 2, 3)],
    },
    {
        "name": "v4-to-v6",
        "vip": "203.0.113.7",
        "port": 80,
        "protocol": "tcp",
        "forwarding": "ipip",
        "backends": [{"address": "2001:db8:30::9", "weight": 1, "mac": None}],
    },
    {
        "name": "v6-to-v4",
        "vip": "2001:db8:100::7",
        "port": 80,
        "protocol": "udp",
        "forwarding": "ipip",
        "backends": [{"address": "10.30.0.9", "weight": 1, "mac": None}],
    },
    {
        "name": "l2",
        "vip": "203.0.113.8",
        "port": 8080,
        "protocol": "tcp",
        "forwarding": "l2dsr",
        "backends": [
            {"address": "10.30.0.31", "weight": 1, "mac": "02:00:00:00:31:31"},
            {"address": "10.30.0.32", "weight": 1, "mac": "02:00:00:00:32:32"},
        ],
    },
    {
        "name": "empty",
        "vip": "203.0.113.9",
        "port": 53,
        "protocol": "udp",
        "forwarding": "ipip",
        "backends": [],
    },
]


@pytest.fixture(scope="module")
def spec():
    return make_spec(SERVICES)


@pytest.fixture(scope="module")
def model(spec):
    return Model(spec, fake_next_hops(spec))


@pytest.fixture(scope="module")
def fwd(bpffs, xdp_object, spec):
    """One forwarder for the module: the tests only run packets through it
    (counters are compared as deltas)."""
    f = Forwarder(bpffs / "testrun", xdp_object)
    f.apply(spec)
    yield f
    f.close()


def eth(payload, dst=OUR_MAC):
    return Ether(src=CLIENT_MAC, dst=dst) / payload


def test_ipv4_udp_ipip_exact_bytes(fwd, spec, model):
    inner = (
        IP(src="10.1.2.3", dst="198.51.100.20", ttl=7, tos=0xB8, flags="DF", id=4242)
        / UDP(sport=12345, dport=53)
        / Raw(b"q" * 20)
    )
    res = fwd.run(bytes(eth(inner)))
    assert res.retval == XDP_TX
    backend = model.backend_for("10.1.2.3", "198.51.100.20", 12345, 53, 17)
    expected = (
        Ether(src=OUR_MAC, dst=fake_mac(backend), type=0x0800)
        / IP(
            version=4,
            ihl=5,
            tos=0xB8,
            id=0,
            flags="DF",
            ttl=64,
            proto=4,
            src="10.10.0.11",
            dst=backend,
        )
        / Raw(bytes(inner))
    )
    assert res.data == bytes(expected)  # scapy fills in length and checksum
    out = Ether(res.data)
    assert out[IP].chksum == IP(bytes(out[IP])[:20]).chksum
    assert out[IP].payload.ttl == 7  # the inner packet is untouched


def test_ipv6_tcp_ip6ip6_exact_bytes(fwd, spec, model):
    inner = IPv6(src="2001:db8:1::5", dst="2001:db8:100::20", tc=0x28, hlim=9) / TCP(
        sport=40000, dport=443, flags="S"
    )
    res = fwd.run(bytes(eth(inner)))
    assert res.retval == XDP_TX
    h = flow_hash("2001:db8:1::5", "2001:db8:100::20", 40000, 443, 6)
    backend = model.backend_for("2001:db8:1::5", "2001:db8:100::20", 40000, 443, 6)
    expected = (
        Ether(src=OUR_MAC, dst=fake_mac(backend), type=0x86DD)
        / IPv6(tc=0x28, fl=h & 0xFFFFF, nh=41, hlim=64, src="2001:db8:10::11", dst=backend)
        / Raw(bytes(inner))
    )
    assert res.data == bytes(expected)


def test_ipv4_vip_to_ipv6_backend_is_4in6(fwd, spec):
    inner = IP(src="10.1.2.3", dst="203.0.113.7") / TCP(sport=1000, dport=80)
    res = fwd.run(bytes(eth(inner)))
    assert res.retval == XDP_TX
    out = Ether(res.data)
    assert out[IPv6].nh == 4 and out[IPv6].dst == "2001:db8:30::9"
    assert bytes(out[IPv6].payload) == bytes(inner)


def test_ipv6_vip_to_ipv4_backend_is_6in4(fwd, spec):
    inner = IPv6(src="2001:db8:1::5", dst="2001:db8:100::7") / UDP(sport=1000, dport=80)
    res = fwd.run(bytes(eth(inner)))
    assert res.retval == XDP_TX
    out = Ether(res.data)
    assert out[IP].proto == 41 and out[IP].dst == "10.30.0.9"
    assert out[IP].flags == "DF"  # inner IPv6 is never fragmented on path
    assert bytes(out[IP].payload) == bytes(inner)


def test_l2dsr_rewrites_destination_mac_only(fwd, spec, model):
    frame = eth(IP(src="10.1.2.3", dst="203.0.113.8") / TCP(sport=5555, dport=8080) / Raw(b"x"))
    res = fwd.run(bytes(frame))
    assert res.retval == XDP_TX
    backend = model.backend_for("10.1.2.3", "203.0.113.8", 5555, 8080, 6)
    want_mac = {"10.30.0.31": "02:00:00:00:31:31", "10.30.0.32": "02:00:00:00:32:32"}[backend]
    frame[Ether].dst, frame[Ether].src = want_mac, OUR_MAC
    assert res.data == bytes(frame)


def test_ethernet_padding_is_kept_and_not_counted(fwd, model):
    inner = IP(src="10.1.2.3", dst="198.51.100.20") / UDP(sport=1, dport=53)
    frame = bytes(eth(inner)) + b"\0" * 18  # padded to the 60-byte minimum
    res = fwd.run(frame)
    assert (res.retval, res.data) == model.expect(frame)
    assert Ether(res.data)[IP].len == 20 + len(inner)


def test_ipv4_options_are_skipped_to_find_the_ports(fwd, model):
    inner = IP(src="10.9.9.9", dst="198.51.100.20", options=b"\x01\x01\x01\x00") / UDP(
        sport=777, dport=53
    )
    frame = bytes(eth(inner))
    assert Ether(frame)[IP].ihl == 6
    res = fwd.run(frame)
    assert res.retval == XDP_TX
    assert (res.retval, res.data) == model.expect(frame)


# --- egress on another interface: bpf_redirect ---------------------------------
#
# BPF_PROG_TEST_RUN does not carry out a redirect: it returns the program's
# verdict (XDP_REDIRECT) and the rewritten frame, which is what is checked.

EGRESS_IFINDEX = 7
EGRESS_MAC = "02:cc:00:00:00:07"


@pytest.fixture(scope="module")
def redirect_hops(spec):
    """Every backend behind another interface, except dns's 10.30.0.23 (on the ingress)."""
    hops = fake_next_hops(spec, EGRESS_IFINDEX, EGRESS_MAC)
    hops[("10.30.0.23", None)] = fake_next_hops(spec)[("10.30.0.23", None)]
    return hops


@pytest.fixture(scope="module")
def rfwd(bpffs, xdp_object, spec, redirect_hops):
    f = Forwarder(bpffs / "testrun-redirect", xdp_object)
    f.apply(spec, next_hops=redirect_hops)
    yield f
    f.close()


@pytest.fixture(scope="module")
def rmodel(spec, redirect_hops):
    return Model(spec, redirect_hops)


def test_redirect_ipv4_ipip_exact_bytes(rfwd, rmodel):
    inner = IP(src="10.1.2.3", dst="198.51.100.20", tos=0x10) / UDP(sport=2, dport=53) / Raw(b"r")
    backend = rmodel.backend_for("10.1.2.3", "198.51.100.20", 2, 53, 17)
    assert backend != "10.30.0.23"
    res = rfwd.run(bytes(eth(inner)))
    assert res.retval == XDP_REDIRECT
    expected = (
        Ether(src=EGRESS_MAC, dst=fake_mac(backend), type=0x0800)
        / IP(tos=0x10, id=0, flags=0, ttl=64, proto=4, src="10.10.0.11", dst=backend)
        / Raw(bytes(inner))
    )
    assert res.data == bytes(expected)


def test_redirect_ipv6_ip6ip6_exact_bytes(rfwd, rmodel):
    inner = IPv6(src="2001:db8:1::5", dst="2001:db8:100::20") / TCP(sport=40001, dport=443)
    h = flow_hash("2001:db8:1::5", "2001:db8:100::20", 40001, 443, 6)
    backend = rmodel.backend_for("2001:db8:1::5", "2001:db8:100::20", 40001, 443, 6)
    res = rfwd.run(bytes(eth(inner)))
    assert res.retval == XDP_REDIRECT
    expected = (
        Ether(src=EGRESS_MAC, dst=fake_mac(backend), type=0x86DD)
        / IPv6(fl=h & 0xFFFFF, nh=41, hlim=64, src="2001:db8:10::11", dst=backend)
        / Raw(bytes(inner))
    )
    assert res.data == bytes(expected)


def test_redirect_l2dsr_rewrites_both_macs(rfwd, rmodel):
    frame = eth(IP(src="10.1.2.3", dst="203.0.113.8") / TCP(sport=5555, dport=8080) / Raw(b"x"))
    backend = rmodel.backend_for("10.1.2.3", "203.0.113.8", 5555, 8080, 6)
    res = rfwd.run(bytes(frame))
    assert res.retval == XDP_REDIRECT
    frame[Ether].dst = {"10.30.0.31": "02:00:00:00:31:31", "10.30.0.32": "02:00:00:00:32:32"}[
        backend
    ]
    frame[Ether].src = EGRESS_MAC
    assert res.data == bytes(frame)


def test_tx_or_redirect_is_chosen_per_backend(rfwd, rmodel):
    """dns: 10.30.0.23 sits on the ingress interface (XDP_TX, source MAC the
    ingress one), the other two behind the egress one (XDP_REDIRECT)."""
    seen = set()
    for sport in range(3000, 3100):
        frame = bytes(eth(IP(src="10.1.2.3", dst="198.51.100.20") / UDP(sport=sport, dport=53)))
        res = rfwd.run(frame)
        assert (res.retval, res.data) == rmodel.expect(frame)
        out = Ether(res.data)
        seen.add((out[IP].dst, res.retval, out.src))
    assert seen == {
        ("10.30.0.21", XDP_REDIRECT, EGRESS_MAC),
        ("10.30.0.22", XDP_REDIRECT, EGRESS_MAC),
        ("10.30.0.23", XDP_TX, OUR_MAC),
    }


flows_v4 = st.tuples(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 65535),
    st.sampled_from([(17, 53), (6, 443)]),
)


@settings(max_examples=300, deadline=None)
@given(flow=flows_v4)
def test_backend_choice_equals_python_maglev_v4(fwd, model, flow):
    src, sport, (proto, dport) = flow
    l4 = UDP(sport=sport, dport=dport) if proto == 17 else TCP(sport=sport, dport=dport)
    frame = bytes(eth(IP(src=src, dst="198.51.100.20") / l4))
    res = fwd.run(frame)
    assert res.retval == XDP_TX
    assert Ether(res.data)[IP].dst == model.backend_for(src, "198.51.100.20", sport, dport, proto)


@settings(max_examples=150, deadline=None)
@given(src=st.integers(0, 2**128 - 1), sport=st.integers(0, 65535))
def test_backend_choice_equals_python_maglev_v6(fwd, model, src, sport):
    s = ipaddress.IPv6Address(src).compressed
    frame = bytes(eth(IPv6(src=s, dst="2001:db8:100::20") / TCP(sport=sport, dport=443)))
    res = fwd.run(frame)
    assert res.retval == XDP_TX
    assert Ether(res.data)[IPv6].dst == model.backend_for(s, "2001:db8:100::20", sport, 443, 6)


NON_VIP = {
    "other port": eth(IP(src="10.1.2.3", dst="198.51.100.20") / UDP(sport=1, dport=54)),
    "other proto same port": eth(IP(src="10.1.2.3", dst="198.51.100.20") / TCP(sport=1, dport=53)),
    "other address": eth(IP(src="10.1.2.3", dst="198.51.100.21") / UDP(sport=1, dport=53)),
    "icmp to vip": eth(IP(src="10.1.2.3", dst="198.51.100.20") / ICMP()),
    "arp": eth(ARP(pdst="198.51.100.20")),
    "vlan tagged": eth(Dot1Q(vlan=5) / IP(dst="198.51.100.20") / UDP(dport=53)),
    "v4 first fragment": eth(IP(dst="198.51.100.20", flags="MF") / UDP(sport=1, dport=53)),
    "v4 later fragment": eth(IP(dst="198.51.100.20", frag=10) / UDP(sport=1, dport=53)),
    "v6 fragment header": eth(
        IPv6(dst="2001:db8:100::20") / IPv6ExtHdrFragment() / TCP(sport=1, dport=443)
    ),
    "v6 other port": eth(IPv6(dst="2001:db8:100::20") / TCP(sport=1, dport=444)),
    "ipip to a backend": eth(IP(dst="10.30.0.21") / IP(dst="198.51.100.20") / UDP(dport=53)),
    "bad ip version": eth(IP(dst="198.51.100.20", version=5) / UDP(sport=1, dport=53)),
    "ihl below 5": eth(IP(dst="198.51.100.20", ihl=4) / UDP(sport=1, dport=53)),
}


@pytest.mark.parametrize("name", NON_VIP)
def test_everything_else_passes_unchanged(fwd, name):
    frame = bytes(NON_VIP[name])
    res = fwd.run(frame)
    assert res.retval == XDP_PASS
    assert res.data == frame


@pytest.mark.parametrize(
    "packet",
    [
        IP(src="10.1.2.3", dst="198.51.100.20") / UDP(sport=9, dport=53) / Raw(b"abc"),
        IP(src="10.1.2.3", dst="198.51.100.20") / TCP(sport=9, dport=443),
        IPv6(src="2001:db8:1::1", dst="2001:db8:100::20") / TCP(sport=9, dport=443) / Raw(b"a"),
    ],
    ids=["udp4", "tcp4", "tcp6"],
)
def test_every_truncation_passes_unchanged(fwd, packet):
    full = bytes(eth(packet))
    assert fwd.run(full).retval == XDP_TX
    # BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (so
    # does every driver): start there.
    for n in range(14, len(full)):
        res = fwd.run(full[:n])
        assert res.retval == XDP_PASS, n
        assert res.data == full[:n], n


def test_service_without_backends_drops_and_counts(fwd):
    frame = bytes(eth(IP(src="10.1.2.3", dst="203.0.113.9") / UDP(sport=9, dport=53)))
    with fwd.maps() as m:
        before = m.drops()["no_backend"]
        assert fwd.run(frame).retval == XDP_DROP
        assert m.drops()["no_backend"] == before + 1


def test_counters_per_vip_and_backend(fwd, model):
    inner = IP(src="10.1.2.3", dst="198.51.100.20") / UDP(sport=4321, dport=53) / Raw(b"z" * 30)
    backend = model.backend_for("10.1.2.3", "198.51.100.20", 4321, 53, 17)
    n = 5
    with fwd.maps() as m:
        stats_id = m.vips()[bpfmaps.vip_key("198.51.100.20", 53, "udp")][0]
        idx = next(i for i, e in m.backends().items() if e.address == backend)
        vip0, be0 = m.vip_counters()[stats_id], m.backend_counters()[idx]
        for _ in range(n):
            assert fwd.run(bytes(eth(inner))).retval == XDP_TX
        vip1, be1 = m.vip_counters()[stats_id], m.backend_counters()[idx]
    # Bytes are L3 bytes: the client's IP packet, before encapsulation.
    assert (vip1[0] - vip0[0], vip1[1] - vip0[1]) == (n, n * len(inner))
    assert (be1[0] - be0[0], be1[1] - be0[1]) == (n, n * len(inner))


# --- fuzz: any mutation of a VIP packet gets exactly the model's verdict ------

SEEDS = [
    bytes(eth(IP(src="10.1.2.3", dst="198.51.100.20") / UDP(sport=1, dport=53) / Raw(b"p" * 8))),
    bytes(eth(IP(src="10.1.2.3", dst="198.51.100.20") / TCP(sport=2, dport=443))),
    bytes(eth(IPv6(src="2001:db8::1", dst="2001:db8:100::20") / TCP(sport=3, dport=443))),
    bytes(eth(IPv6(src="2001:db8::1", dst="2001:db8:100::7") / UDP(sport=4, dport=80))),
    bytes(eth(IP(src="10.1.2.3", dst="203.0.113.8") / TCP(sport=5, dport=8080))),
    # Full-size frames: too big once encapsulated (ICMP "too big" answers).
    bytes(eth(IP(src="10.1.2.3", dst="198.51.100.20", flags="DF") / TCP(sport=6, dport=443)
              / Raw(b"f" * 1460))),
    bytes(eth(IPv6(src="2001:db8::1", dst="2001:db8:100::20") / TCP(sport=7, dport=443)
              / Raw(b"g" * 1440))),
]  # fmt: skip


@st.composite
def mutated(draw):
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    # Header bytes matter most: mutate within the first 64 bytes.
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 4]))):
        pos = draw(st.integers(12, min(len(frame), 64) - 1))
        frame[pos] = draw(st.integers(0, 255))
    how = draw(st.sampled_from(["keep", "keep", "cut", "pad"]))
    if how == "cut":  # test_run needs at least an Ethernet header
        frame = frame[: draw(st.integers(14, len(frame) - 1))]
    elif how == "pad":
        frame += bytes(draw(st.integers(1, 16)))
    return bytes(frame)


@settings(max_examples=600, deadline=None)
@given(frame=mutated())
def test_fuzzed_frames_match_the_model(fwd, model, frame):
    res = fwd.run(frame)
    assert (res.retval, res.data) == model.expect(frame)


@settings(max_examples=200, deadline=None)
@given(frame=mutated())
def test_fuzzed_frames_match_the_model_when_redirecting(rfwd, rmodel, frame):
    res = rfwd.run(frame)
    assert (res.retval, res.data) == rmodel.expect(frame)
