"""lb_dataplane on lb1: XDP compiled on the node, attached to the spec's interface, maps filled.

The interface is a veth in a network-less container: the program runs in the
spec's mode (generic) but no packet is forwarded here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import testinfra

from lbappliance.paths import NODE_CLI

HOST = testinfra.get_host("podman://lbamol-lb1")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render" / "hosts" / "lb1"
SPEC = json.loads((RENDER / "etc/lbappliance/dataplane.json").read_text())
CLI = NODE_CLI
BPF = "/usr/local/lib/lbappliance/bpf"


def test_unit_active_enabled() -> None:
    service = HOST.service("lbappliance-dataplane")
    assert service.is_running and service.is_enabled


def test_objects_compiled_on_the_node_and_spec_installed() -> None:
    for name in ("xdp_lb", "xdp_pass", "xdp_decap"):
        obj = HOST.file(f"{BPF}/{name}.o")
        assert obj.exists and obj.size > 0
        assert HOST.check_output(f"od -An -tx1 -N4 {obj.path}").split() == ["7f", "45", "4c", "46"]
    spec = HOST.file("/etc/lbappliance/dataplane.json")
    want = hashlib.sha256((RENDER / "etc/lbappliance/dataplane.json").read_bytes()).hexdigest()
    assert spec.sha256sum == want and spec.mode == 0o644


def test_program_attached_to_the_spec_interface() -> None:
    link = json.loads(HOST.check_output(f"ip -j -d link show dev {SPEC['interface']}"))[0]
    mode = {"native": 1, "generic": 2}[SPEC["xdp_mode"]]  # XDP_ATTACHED_DRV / _SKB
    assert link["xdp"]["mode"] == mode and link["xdp"]["prog"]["id"] > 0, link.get("xdp")


def test_status_reads_every_service_from_the_pinned_maps() -> None:
    """The pinned maps hold the spec's services and tunnel sources. Their backends stay
    out of the tables here: none is reachable from this network-less container."""
    status = json.loads(HOST.check_output(f"{CLI} dataplane status --json"))
    assert status["attached"]["prog_id"] == status["pinned_prog_id"] is not None
    assert status["attached"]["mode"] == SPEC["xdp_mode"]
    want = {(s["name"], s["vip"], s["port"], s["protocol"]) for s in SPEC["services"]}
    got = {(s["name"], s["vip"], s["port"], s["protocol"]) for s in status["services"]}
    assert want == got
    for family in ("v4", "v6"):
        assert status[f"tunnel_source_{family}"] == SPEC[f"tunnel_source_{family}"]
