"""Fixtures for the data-plane tests: a private bpffs, the compiled object,
and forwarders loaded (not attached) for BPF_PROG_TEST_RUN."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dphelpers import Forwarder

from lbappliance.dataplane import loader

REPO = Path(__file__).resolve().parents[2]


def _need_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(2), bpffs)")
    for tool in ("clang", "bpftool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="session")
def bpffs() -> Iterator[Path]:
    """A bpf filesystem of our own, unmounted afterwards (the host's
    /sys/fs/bpf is neither needed nor touched)."""
    _need_root_and_tools()
    d = Path(tempfile.mkdtemp(prefix="lbdp-bpffs-"))
    subprocess.run(["mount", "-t", "bpf", "bpf", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


@pytest.fixture
def pin_root(bpffs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A pin root of the test's own on the session's bpf filesystem, emptied after."""
    root = bpffs / request.node.name
    yield root
    loader.unpin(root)


@pytest.fixture(scope="session")
def xdp_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_root_and_tools()
    out = tmp_path_factory.mktemp("bpf") / "xdp_lb.o"
    return loader.compile_object(REPO / "bpf" / "xdp_lb.c", out)


@pytest.fixture(scope="session")
def pass_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bpf/xdp_pass.c compiled: XDP_PASS, what native mode puts on egress interfaces."""
    _need_root_and_tools()
    out = tmp_path_factory.mktemp("bpf") / "xdp_pass.o"
    return loader.compile_object(REPO / "bpf" / "xdp_pass.c", out)


@pytest.fixture
def forwarder(
    bpffs: Path, xdp_object: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Forwarder]]:
    made: list[Forwarder] = []

    def make() -> Forwarder:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:60]
        f = Forwarder(bpffs / f"{name}-{len(made)}", xdp_object)
        made.append(f)
        return f

    try:
        yield make
    finally:
        for f in made:
            f.close()
