"""The few bpf(2) commands the control plane needs, called through ctypes.

Why raw syscalls rather than a library: there is no maintained Python binding
of libbpf on Debian or PyPI short of BCC (which compiles programs with its own
LLVM at run time), and pyroute2 does not touch BPF maps. Loading an ELF object
(relocations, BTF, map-in-map templates) is libbpf's job and bpftool does it
well (see loader.py); what is left after loading is a handful of fixed-layout
commands on file descriptors: open a pinned map, look up/update/delete
elements, batch-update a whole Maglev table in one call, create an inner table
map (or a flow table, pinned for bpftool to hand to the object), freeze it,
read a hash map in batches, and BPF_PROG_TEST_RUN for the tests and benchmarks. Each is a
struct packed into ``union bpf_attr`` (linux/bpf.h).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_FREEZE = 22
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_LRU_HASH = 9
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_MMAPABLE = 1 << 10
BPF_F_INNER_MAP = 1 << 12

BPF_ANY = 0

_ATTR_SIZE = 128

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BPFError(OSError):
    pass


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise BPFError(errno.ENOSYS, f"bpf(2) number unknown on {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BPFError(err, f"bpf(cmd {cmd}): {os.strerror(err)}")
    return ret


def _attr(fmt: str, *values: int | bytes) -> ctypes.Array:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


class Fd:
    """An owned BPF object file descriptor (context manager)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def obj_get(path: str | Path) -> Fd:
    """Open a pinned map or program."""
    p = ctypes.create_string_buffer(os.fsencode(str(path)))
    return Fd(_bpf(BPF_OBJ_GET, _attr("=QII", _addr(p), 0, 0)))


def obj_pin(fd: Fd, path: str | Path) -> None:
    p = ctypes.create_string_buffer(os.fsencode(str(path)))
    _bpf(BPF_OBJ_PIN, _attr("=QII", _addr(p), fd.fd, 0))


def map_create(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str
) -> Fd:
    attr = _attr(
        "=7I16s",
        map_type,
        key_size,
        value_size,
        max_entries,
        flags,
        0,
        0,
        name.encode()[:15],
    )
    return Fd(_bpf(BPF_MAP_CREATE, attr))


def map_lookup(fd: Fd, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, _attr("=IIQQQ", fd.fd, 0, _addr(k), _addr(v), 0))
    except BPFError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return v.raw


def map_update(fd: Fd, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _bpf(BPF_MAP_UPDATE_ELEM, _attr("=IIQQQ", fd.fd, 0, _addr(k), _addr(v), flags))


def map_delete(fd: Fd, key: bytes) -> bool:
    k = ctypes.create_string_buffer(key, len(key))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, _attr("=IIQQQ", fd.fd, 0, _addr(k), 0, 0))
    except BPFError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update_batch(fd: Fd, keys: bytes, values: bytes, count: int) -> None:
    """Update ``count`` elements in one call (packed keys, packed values)."""
    k = ctypes.create_string_buffer(keys, len(keys))
    v = ctypes.create_string_buffer(values, len(values))
    attr = _attr("=QQQQIIQQ", 0, 0, _addr(k), _addr(v), count, fd.fd, 0, 0)
    _bpf(BPF_MAP_UPDATE_BATCH, attr)
    done = struct.unpack_from("=I", attr, 32)[0]
    if done != count:
        raise BPFError(errno.EIO, f"batch update wrote {done} of {count} elements")


def array_lookup_all(fd: Fd, max_entries: int, value_size: int) -> bytes:
    """Every value of an array map, concatenated (BPF_MAP_LOOKUP_BATCH).

    For per-CPU maps pass ``value_size`` already multiplied by the number of
    possible CPUs (each rounded up to 8 bytes).
    """
    keys = ctypes.create_string_buffer(4 * max_entries)
    values = ctypes.create_string_buffer(value_size * max_entries)
    out_batch = ctypes.create_string_buffer(4)
    attr = _attr(
        "=QQQQIIQQ", 0, _addr(out_batch), _addr(keys), _addr(values), max_entries, fd.fd, 0, 0
    )
    try:
        _bpf(BPF_MAP_LOOKUP_BATCH, attr)
    except BPFError as e:
        if e.errno != errno.ENOENT:  # ENOENT: the last batch, all read
            raise
    got = struct.unpack_from("=I", attr, 32)[0]
    if got != max_entries:
        raise BPFError(errno.EIO, f"batch lookup read {got} of {max_entries} elements")
    return values.raw


def hash_items(
    fd: Fd, key_size: int, value_size: int, chunk: int = 4096
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash map, read by BPF_MAP_LOOKUP_BATCH in chunks
    (a snapshot only as consistent as the map is quiet)."""
    out: list[tuple[bytes, bytes]] = []
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    in_batch = ctypes.create_string_buffer(4)
    out_batch = ctypes.create_string_buffer(4)
    first = True
    while True:
        attr = _attr(
            "=QQQQIIQQ",
            0 if first else _addr(in_batch),
            _addr(out_batch),
            _addr(keys),
            _addr(values),
            chunk,
            fd.fd,
            0,
            0,
        )
        done = False
        try:
            _bpf(BPF_MAP_LOOKUP_BATCH, attr)
        except BPFError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the last batch
                raise
            done = True
        got = struct.unpack_from("=I", attr, 32)[0]
        kr, vr = keys.raw, values.raw
        out += [
            (kr[i * key_size : (i + 1) * key_size], vr[i * value_size : (i + 1) * value_size])
            for i in range(got)
        ]
        if done:
            return out
        ctypes.memmove(in_batch, out_batch, 4)
        first = False


def map_freeze(fd: Fd) -> None:
    """Make a map read-only for system calls (the program may still read it)."""
    _bpf(BPF_MAP_FREEZE, _attr("=I", fd.fd))


def map_get_fd_by_id(map_id: int) -> Fd:
    return Fd(_bpf(BPF_MAP_GET_FD_BY_ID, _attr("=III", map_id, 0, 0)))


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(fd: Fd) -> MapInfo:
    info = ctypes.create_string_buffer(64)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd.fd, len(info), _addr(info)))
    t, i, ks, vs, me, fl, name = struct.unpack_from("=6I16s", info, 0)
    return MapInfo(t, i, ks, vs, me, fl, name.rstrip(b"\0").decode())


def prog_id(fd: Fd) -> int:
    info = ctypes.create_string_buffer(16)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd.fd, len(info), _addr(info)))
    return struct.unpack_from("=I", info, 4)[0]


@dataclass(frozen=True)
class TestRun:
    retval: int
    data: bytes
    duration_ns: int


def prog_test_run(fd: Fd, data: bytes, repeat: int = 1, out_size: int | None = None) -> TestRun:
    """BPF_PROG_TEST_RUN: run the program on ``data`` (``repeat`` times).

    ``duration_ns`` is the kernel's mean time per run. For XDP the output
    buffer must fit the packet after bpf_xdp_adjust_head.
    """
    din = ctypes.create_string_buffer(data, len(data))
    size_out = out_size if out_size is not None else len(data) + 256
    dout = ctypes.create_string_buffer(size_out)
    attr = _attr(
        "=IIIIQQII",
        fd.fd,
        0,
        len(data),
        size_out,
        _addr(din),
        _addr(dout),
        repeat,
        0,
    )
    _bpf(BPF_PROG_TEST_RUN, attr)
    _, retval, _, got, _, _, _, duration = struct.unpack_from("=IIIIQQII", attr, 0)
    return TestRun(retval=retval, data=dout.raw[:got], duration_ns=duration)


def possible_cpus() -> int:
    """Number of possible CPUs: per-CPU map values hold one slot per each."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n
