"""The XDP program's hashes, in Python (bpf/xdp_lb.c).

Flow hash: MurmurHash3 (32-bit) over the tuple as 32-bit words in network
byte order: source address, destination address, ``sport << 16 | dport``,
protocol; seed LB_HASH_SEED. The slot of a table of size M is
``(hash * M) >> 32`` (a multiply instead of a modulo). Tests use this to
predict the backend that the program picks; the seed is fixed so both nodes
of a pair pick the same one.

VIP directory hash (``vip_hash``): the packed ``vip_key`` as five 32-bit words
in the CPU's own byte order (program and control plane run on the same host),
folded by rotate-xor, mixed by MurmurHash3's finaliser.
"""

from __future__ import annotations

import ipaddress
import struct

HASH_SEED = 0x4C42
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _murmur3_words(words: list[int], seed: int) -> int:
    h = seed
    for k in words:
        k = (k * 0xCC9E2D51) & _M32
        k = _rotl(k, 15)
        k = (k * 0x1B873593) & _M32
        h ^= k
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _M32
    h ^= len(words) * 4
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def flow_hash(src: str, dst: str, sport: int, dport: int, proto: int) -> int:
    """Hash of a flow, as the XDP program computes it."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    words = [int.from_bytes(s[i : i + 4], "big") for i in range(0, len(s), 4)]
    words += [int.from_bytes(d[i : i + 4], "big") for i in range(0, len(d), 4)]
    words += [(sport << 16) | dport, proto]
    return _murmur3_words(words, HASH_SEED)


def slot(hash_value: int, table_size: int) -> int:
    return (hash_value * table_size) >> 32


def vip_hash(key: bytes) -> int:
    """Directory hash of a packed 20-byte ``vip_key``, as the XDP program computes it."""
    w0, w1, w2, w3, w4 = struct.unpack("=5I", key)
    h = w0 ^ _rotl(w1, 8) ^ _rotl(w2, 16) ^ _rotl(w3, 24) ^ ((w4 * 0x9E3779B1) & _M32)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h
