"""End to end in network namespaces: client -> LB (XDP) -> 3 DSR backends.

The backends decapsulate with bpf/xdp_decap.c instead of an ``ipip`` device:
this machine's kernel is built without CONFIG_NET_IPIP. The packets on the
wire are the same IPIP packets an ipip device would take.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from dplab import BACKENDS, CLIENT, VIP, Lab

from lbappliance.dataplane import flowhash, loader, maglev

pytestmark = pytest.mark.slow

NAMES = {addr: role for role, addr in BACKENDS.items()}
PORTS = list(range(20000, 20240))
TAGS: list[str] = []  # labs built by this module, checked at the end


@pytest.fixture(scope="module")
def decap_object(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("decap") / "xdp_decap.o"
    return loader.compile_object(Path(__file__).parents[2] / "bpf" / "xdp_decap.c", out)


@pytest.fixture(scope="module")
def pass_object(tmp_path_factory) -> Path:
    """XDP_PASS for the bridge side of the LB's veth: native XDP_TX on veth
    only delivers to a peer that has an XDP program (LAB-NOTES)."""
    d = tmp_path_factory.mktemp("pass")
    (d / "xdp_pass.c").write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("xdp") int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }\n'
        'char _license[] SEC("license") = "Apache-2.0";\n'
    )
    return loader.compile_object(d / "xdp_pass.c", d / "xdp_pass.o")


@pytest.fixture
def lab(decap_object, bpffs):
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    lab = Lab()
    TAGS.append(lab.tag)
    try:
        lab.up(decap_object)
        lab.start_servers()
        yield lab
    finally:
        lab.close()


def predicted(ports, backends=None, down=()):
    table = maglev.build(list(backends or BACKENDS.values()), down=down)
    out = {}
    for p in ports:
        h = flowhash.flow_hash(CLIENT, VIP, p, 53, 17)
        out[p] = NAMES[table.backend_for_slot(flowhash.slot(h, table.size))]
    return out


def apply(lab, tmp_path, xdp_object, bpffs, *extra, mode="generic", backends=None):
    spec = lab.write_spec(tmp_path / "dataplane.json", mode=mode, backends=backends)
    return lab.dataplane(
        "apply", "--spec", str(spec), "--object", str(xdp_object),
        "--pin-root", str(bpffs / lab.tag), *extra,
    )  # fmt: skip


def test_flows_follow_the_table_and_dsr_completes(lab, tmp_path, xdp_object, bpffs):
    out = apply(lab, tmp_path, xdp_object, bpffs, "--json")
    report = json.loads(out.stdout)
    assert report["reloaded"] and not report["warnings"], report

    # Many flows, spread exactly as the Python table says.
    seen = lab.udp_probe(PORTS)
    assert {p: a[0] for p, a in seen.items()} == predicted(PORTS)
    assert set(predicted(PORTS).values()) == set(BACKENDS)

    # One flow stays on one backend.
    again = lab.udp_probe([PORTS[0]], tries=20)[PORTS[0]]
    assert set(again) == {predicted(PORTS[:1])[PORTS[0]]}

    # A TCP connection through the VIP completes (handshake, > 1 segment each
    # way, FIN), answered directly by the backend the table names.
    name, n = lab.tcp_probe()
    assert name in BACKENDS and n == len(name) + 1 + 2400

    # A failed backend: only its flows move.
    gone = BACKENDS["b2"]
    apply(lab, tmp_path, xdp_object, bpffs, "--down", gone)
    after = {p: a[0] for p, a in lab.udp_probe(PORTS).items()}
    before = predicted(PORTS)
    assert after == predicted(PORTS, down=(gone,))
    assert {p for p in PORTS if after[p] != before[p]} == {p for p in PORTS if before[p] == "b2"}

    # Counters: the status report shows every probe.
    st = json.loads(
        lab.dataplane("status", "--interface", "eth0", "--pin-root", str(bpffs / lab.tag),
                      "--json").stdout
    )  # fmt: skip
    dns = next(s for s in st["services"] if s["port"] == 53)
    assert dns["packets"] >= len(PORTS) * 2 + 20
    assert {b["address"] for b in dns["backends"]} == set(BACKENDS.values()) - {gone}
    assert st["attached"]["mode"] == "generic"

    # Detach: the kernel gets the VIP's packets again (and drops them, it has
    # no route for them), nothing is left pinned.
    out = lab.dataplane("detach", "--interface", "eth0", "--pin-root", str(bpffs / lab.tag))
    assert "detached" in out.stdout
    link = json.loads(lab.ip("lb", "-j", "-d", "link", "show", "eth0"))[0]
    assert "xdp" not in link or "prog" not in link["xdp"]
    assert not (bpffs / lab.tag / "eth0").exists()


def test_leaving_the_spec_moves_flows_as_the_rebuilt_table_says(lab, tmp_path, xdp_object, bpffs):
    apply(lab, tmp_path, xdp_object, bpffs)
    apply(lab, tmp_path, xdp_object, bpffs, backends=["b1", "b3"])
    seen = {p: a[0] for p, a in lab.udp_probe(PORTS).items()}
    assert seen == predicted(PORTS, backends=(BACKENDS["b1"], BACKENDS["b3"]))


def test_native_mode(lab, tmp_path, xdp_object, bpffs, pass_object):
    lab.ip("sw", "link", "set", "dev", "p-lb", "xdpdrv", "obj", str(pass_object), "sec", "xdp")
    out = apply(lab, tmp_path, xdp_object, bpffs, "--json", mode="native")
    assert json.loads(out.stdout)["mode"] == "native"
    link = json.loads(lab.ip("lb", "-j", "-d", "link", "show", "eth0"))[0]
    assert link["xdp"]["mode"] == 1  # XDP_FLAGS_DRV_MODE
    seen = {p: a[0] for p, a in lab.udp_probe(PORTS[:60]).items()}
    assert seen == predicted(PORTS[:60])
    assert lab.tcp_probe()[0] in BACKENDS
    # Switching the spec back to generic re-attaches in generic mode.
    out = apply(lab, tmp_path, xdp_object, bpffs, "--json")
    assert json.loads(out.stdout)["reloaded"]
    assert json.loads(lab.ip("lb", "-j", "-d", "link", "show", "eth0"))[0]["xdp"]["mode"] == 2


def test_nothing_is_left_behind():
    """Runs after the lab tests in this module: none of their namespaces remain."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert TAGS and not [t for t in TAGS if f"lbdp-{t}-" in names]
