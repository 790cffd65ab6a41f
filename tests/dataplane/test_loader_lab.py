"""apply/detach attaching for real: a veth pair in a scratch namespace, pins on
the tests' private bpffs."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dphelpers import fake_next_hops, make_spec

from lbappliance.dataplane import loader
from lbappliance.dataplane import spec as specmod
from lbappliance.lab.setns import entered

pytestmark = pytest.mark.slow

IFACE = "veth0"


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace holding veth0 <-> veth1 (both up), deleted afterwards."""
    name = f"lbdpt-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", IFACE, "type", "veth", "peer", "name", "veth1")
        _ip("-n", name, "link", "set", IFACE, "up")
        _ip("-n", name, "link", "set", "veth1", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def spec() -> specmod.DataplaneSpec:
    svc = {
        "name": "dns",
        "vip": "198.51.100.20",
        "port": 53,
        "protocol": "udp",
        "forwarding": "ipip",
        "backends": [{"address": "10.30.0.21", "weight": 1, "mac": "02:00:00:00:00:21"}],
    }
    return make_spec([svc], interface=IFACE, table_size=251)


def attached_prog(netns: str) -> int | None:
    xdp = json.loads(_ip("-n", netns, "-j", "-d", "link", "show", "dev", IFACE))[0].get("xdp")
    return xdp["prog"]["id"] if xdp and "prog" in xdp else None


def detach_then_apply(
    netns: str, pin_root: Path, obj: Path, times: int, errors: list[Exception]
) -> None:
    s = spec()
    with entered(f"/run/netns/{netns}"):
        for _ in range(times):
            try:
                loader.detach(IFACE, pin_root)
                loader.apply(s, obj, pin_root, next_hops=fake_next_hops(s))
            except Exception as e:  # collected: the test reports every failure
                errors.append(e)


def test_apply_right_after_detach(netns: str, pin_root: Path, xdp_object: Path):
    """The reported sequence, 40 times in a row: each apply loads, attaches and
    pins afresh; each detach leaves nothing attached or pinned."""
    s = spec()
    with entered(f"/run/netns/{netns}"):
        first = loader.apply(s, xdp_object, pin_root, next_hops=fake_next_hops(s))
        assert first.reloaded and attached_prog(netns) == first.prog_id
        for _ in range(40):
            loader.detach(IFACE, pin_root)
            assert attached_prog(netns) is None
            assert not loader.pin_dir_for(pin_root, IFACE).exists()
            rep = loader.apply(s, xdp_object, pin_root, next_hops=fake_next_hops(s))
            assert rep.reloaded and rep.prog_id is not None
            assert attached_prog(netns) == rep.prog_id
        loader.detach(IFACE, pin_root)


def test_concurrent_runs_on_the_same_pins_take_turns(netns: str, pin_root: Path, xdp_object: Path):
    """Two detach+apply loops on one interface's pins at once (a unit reload
    while an operator applies): without the pin-root lock one removes the
    other's staging pins (BPF_OBJ_GET ENOENT, bpftool or ip failing to find
    them, a rename of a vanished directory). With it every run succeeds and
    one program ends attached, pinned, with no staging directory left."""
    errors: list[Exception] = []
    workers = [
        threading.Thread(target=detach_then_apply, args=(netns, pin_root, xdp_object, 15, errors))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    assert [repr(e) for e in errors] == []
    pinned = loader.pinned_prog_id(loader.pin_dir_for(pin_root, IFACE))
    assert pinned is not None and attached_prog(netns) == pinned
    assert sorted(p.name for p in pin_root.iterdir()) == [IFACE]
    with entered(f"/run/netns/{netns}"):
        loader.detach(IFACE, pin_root)
