"""Native mode's XDP_PASS programs on the egress interfaces, on real veths.

A scratch namespace holds the uplink (up0) and two backend-facing veths (eg0,
eh0); the next hops are given (no routes to resolve), everything else is the
kernel's: the loader attaches, reads back and detaches for real. A bridge (d0)
stands for a driver without native XDP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dphelpers import make_spec

from lbappliance.dataplane import loader
from lbappliance.dataplane.neighbours import NextHop, Wanted
from lbappliance.dataplane.spec import DataplaneSpec
from lbappliance.lab.setns import entered

UPLINK = "up0"
B1, B2 = "10.30.0.21", "10.30.0.22"


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"lbegr-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        for a, b in (("up0", "up1"), ("eg0", "eg1"), ("eh0", "eh1")):
            _ip("-n", name, "link", "add", a, "type", "veth", "peer", "name", b)
            _ip("-n", name, "link", "set", a, "up")
            _ip("-n", name, "link", "set", b, "up")
        _ip("-n", name, "link", "add", "d0", "type", "bridge")
        with entered(f"/run/netns/{name}"):
            yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def spec(mode: str = "native", weights: dict[str, int] | None = None) -> DataplaneSpec:
    weights = weights or {B1: 1, B2: 1}
    svc = {
        "name": "echo",
        "vip": "198.51.100.20",
        "port": 8080,
        "protocol": "tcp",
        "forwarding": "ipip",
        "backends": [{"address": a, "weight": w, "mac": None} for a, w in weights.items()],
    }
    return make_spec([svc], interface=UPLINK, xdp_mode=mode, table_size=251)


def hops(via: dict[str, str]) -> dict[Wanted, NextHop | None]:
    """Backend address -> egress interface, as the kernel's routes would say."""
    return {
        (addr, None): NextHop(
            socket.if_nametoindex(ifname),
            ifname,
            "02:bb:00:00:00:02",
            "02:00:00:00:00:" + addr.rsplit(".", 1)[1],
        )
        for addr, ifname in via.items()
    }


def xdp(ifname: str) -> dict[str, Any]:
    """``ip -d -j link``'s xdp object: mode 1 native, 2 generic; prog name and id."""
    return json.loads(_ip("-j", "-d", "link", "show", "dev", ifname))[0].get("xdp", {})


def apply(pin_root: Path, xdp_object: Path, pass_object: Path, s: DataplaneSpec, via: dict):
    return loader.apply(s, xdp_object, pin_root, next_hops=hops(via), pass_object=pass_object)


def test_native_apply_puts_xdp_pass_on_each_egress_interface_once(
    netns: str, pin_root: Path, xdp_object: Path, pass_object: Path
):
    rep = apply(pin_root, xdp_object, pass_object, spec(), {B1: "eg0", B2: "eh0"})
    assert xdp(UPLINK)["mode"] == 1 and xdp(UPLINK)["prog"]["name"] == "xdp_lb"
    ids = {}
    for ifname in ("eg0", "eh0"):
        assert xdp(ifname)["mode"] == 1 and xdp(ifname)["prog"]["name"] == "xdp_pass"
        ids[ifname] = xdp(ifname)["prog"]["id"]
    assert [(c.interface, c.action, c.prog_id) for c in rep.egress] == [
        ("eg0", "attached", ids["eg0"]),
        ("eh0", "attached", ids["eh0"]),
    ]
    assert f"eg0: egress XDP_PASS program attached (prog id {ids['eg0']})" in rep.lines()
    st = loader.status(UPLINK, pin_root)
    assert st["egress_programs"] == [
        {
            "interface": i,
            "pinned_prog_id": ids[i],
            "attached": {"mode": "native", "prog_id": ids[i]},
        }
        for i in ("eg0", "eh0")
    ]

    # The same again: nothing re-attached, nothing to report but "kept".
    again = apply(pin_root, xdp_object, pass_object, spec(), {B1: "eg0", B2: "eh0"})
    assert [(c.interface, c.action) for c in again.egress] == [("eg0", "kept"), ("eh0", "kept")]
    assert "no change" in again.lines()
    assert {i: xdp(i)["prog"]["id"] for i in ids} == ids

    # Both backends now behind eh0: eg0's program goes, eh0's stays.
    moved = apply(pin_root, xdp_object, pass_object, spec(), {B1: "eh0", B2: "eh0"})
    assert [(c.interface, c.action) for c in moved.egress] == [("eh0", "kept"), ("eg0", "removed")]
    assert "prog" not in xdp("eg0") and xdp("eh0")["prog"]["id"] == ids["eh0"]

    out = loader.detach(UPLINK, pin_root)
    assert "eh0: egress XDP_PASS program removed" in out
    assert all("prog" not in xdp(i) for i in (UPLINK, "eg0", "eh0"))
    assert sorted(p.name for p in pin_root.iterdir()) == []


def test_the_uplink_itself_gets_none(
    netns: str, pin_root: Path, xdp_object: Path, pass_object: Path
):
    """A backend behind the uplink is reached with XDP_TX: no second program there."""
    rep = apply(pin_root, xdp_object, pass_object, spec(), {B1: UPLINK, B2: "eg0"})
    assert [c.interface for c in rep.egress] == ["eg0"]
    assert xdp(UPLINK)["prog"]["name"] == "xdp_lb"


def test_a_draining_backend_keeps_its_egress_program(
    netns: str, pin_root: Path, xdp_object: Path, pass_object: Path
):
    """Weight 0: out of the table, but its flows still leave through eg0."""
    apply(pin_root, xdp_object, pass_object, spec(), {B1: "eg0", B2: "eh0"})
    rep = apply(pin_root, xdp_object, pass_object, spec(weights={B1: 0, B2: 1}), {B2: "eh0"})
    assert [(c.interface, c.action) for c in rep.egress] == [("eh0", "kept"), ("eg0", "kept")]
    assert xdp("eg0")["prog"]["name"] == "xdp_pass"
    loader.detach(UPLINK, pin_root)


def test_another_program_is_left_alone(
    netns: str, pin_root: Path, xdp_object: Path, pass_object: Path
):
    """A native program of somebody else's serves the redirects: kept, not pinned,
    not detached. A generic one does not: left too, with a warning."""
    _ip("link", "set", "dev", "eg0", "xdpdrv", "obj", str(pass_object), "sec", "xdp")
    _ip("link", "set", "dev", "eh0", "xdpgeneric", "obj", str(pass_object), "sec", "xdp")
    theirs = {i: xdp(i)["prog"]["id"] for i in ("eg0", "eh0")}
    rep = apply(pin_root, xdp_object, pass_object, spec(), {B1: "eg0", B2: "eh0"})
    assert rep.egress == []
    assert rep.sync.warnings == [
        f"eh0: XDP program {theirs['eh0']} (generic) is not ours, left attached; "
        "native redirects to eh0 need a native program"
    ]
    assert loader.status(UPLINK, pin_root)["egress_programs"] == []
    loader.detach(UPLINK, pin_root)
    assert {i: xdp(i)["prog"]["id"] for i in ("eg0", "eh0")} == theirs


def test_generic_mode_needs_none_and_removes_ours(
    netns: str, pin_root: Path, xdp_object: Path, pass_object: Path
):
    apply(pin_root, xdp_object, pass_object, spec(), {B1: "eg0", B2: "eh0"})
    rep = apply(pin_root, xdp_object, pass_object, spec("generic"), {B1: "eg0", B2: "eh0"})
    assert [(c.interface, c.action) for c in rep.egress] == [
        ("eg0", "removed"),
        ("eh0", "removed"),
    ]
    assert xdp(UPLINK)["mode"] == 2
    assert all("prog" not in xdp(i) for i in ("eg0", "eh0"))
    assert loader.status(UPLINK, pin_root)["egress_programs"] == []
    fresh = apply(pin_root, xdp_object, pass_object, spec("generic"), {B1: "eg0", B2: "eh0"})
    assert fresh.egress == []
    loader.detach(UPLINK, pin_root)


def test_a_device_without_native_xdp_is_a_warning_not_a_failure(
    netns: str, pin_root: Path, xdp_object: Path, pass_object: Path
):
    rep = apply(pin_root, xdp_object, pass_object, spec(), {B1: "d0", B2: "eg0"})
    assert [(c.interface, c.action) for c in rep.egress] == [("eg0", "attached")]
    (warning,) = rep.sync.warnings
    assert warning.startswith("d0: no native XDP program attached (")
    assert warning.endswith(
        "packets redirected to d0 are dropped unless its driver takes them without one"
    )
    assert "prog" not in xdp("d0") and xdp(UPLINK)["prog"]["name"] == "xdp_lb"
    assert [e["interface"] for e in loader.status(UPLINK, pin_root)["egress_programs"]] == ["eg0"]
    loader.detach(UPLINK, pin_root)
