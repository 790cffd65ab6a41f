"""What bpf/xdp_lb.c must do with any frame, written independently in Python.

Used to check the program's verdict and output bytes on fuzzed input: the
model parses with plain slicing and builds outer headers with struct, so a
mistake in the C parser shows up as a mismatch rather than being copied.
"""

from __future__ import annotations

import ipaddress
import struct

from lbappliance.dataplane import flowhash, maglev
from lbappliance.dataplane.neighbours import NextHop, Wanted
from lbappliance.dataplane.spec import DataplaneSpec

XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 1, 2, 3, 4
INGRESS_IFINDEX = 1  # BPF_PROG_TEST_RUN: the caller's lo


_PROTO = {6: "tcp", 17: "udp"}
_L4_MIN = {6: 20, 17: 8}


def ipv4_checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


ICMP_QUOTE = 512  # LB_ICMP_QUOTE


def too_big(frame: bytes, family: int, mtu: int) -> tuple[int, bytes]:
    """The ICMP "fragmentation needed" / ICMPv6 "packet too big" answer to ``frame``."""
    l3 = frame[14 : 14 + ICMP_QUOTE]
    eth = frame[6:12] + frame[0:6]
    if family == 4:
        src, dst = l3[12:16], l3[16:20]
        icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + l3
        icmp = icmp[:2] + struct.pack("!H", ipv4_checksum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, dst, src)
        ip = ip[:10] + struct.pack("!H", ipv4_checksum(ip)) + ip[12:]
        return XDP_TX, eth + b"\x08\x00" + ip + icmp
    src, dst = l3[8:24], l3[24:40]
    icmp = struct.pack("!BBHI", 2, 0, 0, mtu) + l3
    pseudo = dst + src + struct.pack("!II", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", ipv4_checksum(pseudo + icmp)) + icmp[4:]
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, dst, src)
    return XDP_TX, eth + b"\x86\xdd" + ip + icmp


class Model:
    def __init__(
        self,
        spec: DataplaneSpec,
        next_hops: dict[Wanted, NextHop | None],
        down: tuple[str, ...] = (),
    ) -> None:
        self.spec = spec
        self.services = {}
        for s in spec.services:
            hop_of = {b.address: next_hops.get((b.address, b.mac)) for b in s.backends}
            off = set(down) | {a for a, h in hop_of.items() if h is None}
            table = maglev.build(s.weights(), spec.table_size, down=off)
            self.services[s.key] = (s, table, hop_of)

    def backend_for(self, src: str, dst: str, sport: int, dport: int, proto: int) -> str:
        _, table, _ = self.services[(dst, dport, _PROTO[proto])]
        h = flowhash.flow_hash(src, dst, sport, dport, proto)
        return table.backend_for_slot(flowhash.slot(h, table.size))

    def expect(self, frame: bytes) -> tuple[int, bytes]:
        """(verdict, output frame) for ``frame``."""
        passed = (XDP_PASS, frame)
        if len(frame) < 14:
            return passed
        ethertype = frame[12:14]
        l3 = frame[14:]
        if ethertype == b"\x08\x00":
            if len(l3) < 20:
                return passed
            version, ihl = l3[0] >> 4, l3[0] & 15
            if version != 4 or ihl < 5:
                return passed
            if struct.unpack("!H", l3[6:8])[0] & 0x3FFF:
                return passed
            proto = l3[9]
            if proto not in _L4_MIN:
                return passed
            hlen = ihl * 4
            tot = struct.unpack("!H", l3[2:4])[0]
            if tot < hlen + _L4_MIN[proto] or tot > len(l3):
                return passed
            src = str(ipaddress.IPv4Address(l3[12:16]))
            dst = str(ipaddress.IPv4Address(l3[16:20]))
            sport, dport = struct.unpack("!HH", l3[hlen : hlen + 4])
            inner_len, family, tos = tot, 4, l3[1]
            df = bool(struct.unpack("!H", l3[6:8])[0] & 0x4000)
        elif ethertype == b"\x86\xdd":
            if len(l3) < 40 or l3[0] >> 4 != 6:
                return passed
            proto = l3[6]
            if proto not in _L4_MIN:
                return passed
            plen = struct.unpack("!H", l3[4:6])[0]
            if plen < _L4_MIN[proto] or 40 + plen > len(l3):
                return passed
            src = ipaddress.IPv6Address(l3[8:24]).compressed
            dst = ipaddress.IPv6Address(l3[24:40]).compressed
            sport, dport = struct.unpack("!HH", l3[40:44])
            inner_len, family, df = 40 + plen, 6, True
            tos = ((l3[0] & 15) << 4) | (l3[1] >> 4)
        else:
            return passed

        entry = self.services.get((dst, dport, _PROTO[proto]))
        if entry is None:
            return passed
        svc, table, hop_of = entry
        if not table.size:
            return XDP_DROP, frame
        h = flowhash.flow_hash(src, dst, sport, dport, proto)
        backend = table.backend_for_slot(flowhash.slot(h, table.size))
        hop = hop_of[backend]
        sent = XDP_TX if hop.ifindex == INGRESS_IFINDEX else XDP_REDIRECT
        be_mac = bytes.fromhex(hop.mac.replace(":", ""))
        our_mac = bytes.fromhex(hop.src_mac.replace(":", ""))
        if svc.forwarding == "l2dsr":
            return sent, be_mac + our_mac + frame[12:]
        be = ipaddress.ip_address(backend)
        inner_proto = 4 if family == 4 else 41
        mtu = next(b.mtu for b in svc.backends if b.address == backend)
        outer = 20 if be.version == 4 else 40
        if inner_len + outer > mtu:
            return too_big(frame, family, mtu - outer)
        if be.version == 4:
            src4 = ipaddress.IPv4Address(self.spec.tunnel_source_v4).packed
            hdr = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                tos,
                inner_len + 20,
                0,
                0x4000 if df else 0,
                64,
                inner_proto,
                0,
                src4,
                be.packed,
            )
            hdr = hdr[:10] + struct.pack("!H", ipv4_checksum(hdr)) + hdr[12:]
            return sent, be_mac + our_mac + b"\x08\x00" + hdr + frame[14:]
        src6 = ipaddress.IPv6Address(self.spec.tunnel_source_v6).packed
        first = (6 << 28) | (tos << 20) | (h & 0xFFFFF)
        hdr = struct.pack("!IHBB16s16s", first, inner_len, inner_proto, 64, src6, be.packed)
        return sent, be_mac + our_mac + b"\x86\xdd" + hdr + frame[14:]
