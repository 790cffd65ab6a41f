"""maglev_fill.c, compiled on first use and called through ctypes.

A node builds up to 1,024 tables of 65,537 slots at every boot (the pins are
gone) and whenever a spec changes many services; in pure Python that costs
60-150 ms a table, in C about a millisecond. The library is compiled with the
C compiler the node already has for its BPF programs (clang, or cc) into the
user's cache directory (``$XDG_CACHE_HOME/lbappliance``, else
``~/.cache/lbappliance``), named by a hash of the source and the machine, so
it is built once per version and never mixed between versions. Without a
compiler ``library()`` returns None and maglev.py fills in Python (same bytes,
slower); ``unavailable_reason()`` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("maglev_fill.c")
COMPILERS = ("cc", "clang", "gcc")

_reason: str | None = None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lbappliance"


def _compile(out: Path) -> None:
    cc = next((c for c in COMPILERS if shutil.which(c)), None)
    if cc is None:
        raise OSError(f"no C compiler ({', '.join(COMPILERS)}) to build {SOURCE.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    os.close(fd)
    try:
        p = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if p.returncode:
            raise OSError(f"{cc} {SOURCE.name}: {p.stderr.strip()}")
        os.replace(tmp, out)  # atomic: a concurrent build loads one or the other
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled fill, or None (see ``unavailable_reason``)."""
    global _reason
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + platform.machine().encode()).hexdigest()[:16]
    path = cache_dir() / f"maglev_fill-{key}.so"
    try:
        if not path.is_file():
            _compile(path)
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        _reason = str(e)
        return None
    u32p = ctypes.POINTER(ctypes.c_uint32)
    i32p = ctypes.POINTER(ctypes.c_int32)
    lib.lb_maglev_fill.argtypes = [i32p, ctypes.c_uint32, ctypes.c_uint32, u32p, u32p, u32p]
    lib.lb_maglev_fill.restype = ctypes.c_int
    lib.lb_maglev_map.argtypes = [u32p, ctypes.c_uint32, i32p, u32p, ctypes.c_uint32]
    lib.lb_maglev_map.restype = None
    lib.lb_maglev_clear.argtypes = [i32p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint8)]
    lib.lb_maglev_clear.restype = None
    return lib


def unavailable_reason() -> str | None:
    """Why ``library()`` is None (None if it loaded or was not tried)."""
    return _reason
