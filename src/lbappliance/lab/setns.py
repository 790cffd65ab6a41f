"""Enter another network namespace from one thread, and come back."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def entered(netns_path: str) -> Iterator[None]:
    """Run the block with this thread in the namespace at ``netns_path``.

    Only the calling thread moves; sockets made inside stay in that namespace.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
        yield
    finally:
        libc.setns(own, CLONE_NEWNET)
        os.close(target)
        os.close(own)
