"""The VM lab for the tests: one booted pair for the whole session (boots cost minutes)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbappliance.lab.vm import QEMU, VmLab

from ..deploy.conftest import source_snapshot  # noqa: F401  (a fixture, shared)


def vm_lab_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, taps)"
    for tool in (QEMU, "qemu-img", "mkfs.ext4", "socat", "debootstrap", "zstd", "clang"):
        if not shutil.which(tool):
            return f"{tool} is not installed (./scripts/install-deps.sh)"
    return None


@pytest.fixture(scope="session")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmLab]:
    """The lab site with lb1 and lb2 as VMs, booted once, removed at the end.

    A name of its own (namespaces ``lbv<hex>-*``), so it runs next to the other labs
    without the container lab's lock.
    """
    if reason := vm_lab_available():
        pytest.skip(reason)
    lab = VmLab.load(name=f"lbv{uuid.uuid4().hex[:4]}", state=tmp_path_factory.mktemp("vmlab"))
    try:
        t = time.monotonic()
        timings = lab.up(progress=print)
        print(f"MEASURE VM lab up in {time.monotonic() - t:.1f} s: {timings}")
        yield lab
    finally:
        if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
            print(f"VM lab down: {lab.down()}")


@pytest.fixture(scope="session")
def vm_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vmdeploy")
