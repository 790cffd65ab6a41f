"""End to end in the namespace lab: client -> router -> LB (XDP) -> three DSR backends.

The lab is the project's one lab (``lbappliance.lab.netns``, built from
inventory/sites/lab.yml): L4 service ``echo`` = 198.51.100.20:8080/tcp over
10.30.0.21-23, each backend a lab HTTP server answering with its name. Both
LB nodes run the forwarder from their rendered spec (``lab.start_all()``);
their health agents announce the VIP once it is attached, and the router
spreads it over lb1 and lb2 by ECMP, hashing on L4 ports here so that the
flows of one client use both nodes. The nodes build the same Maglev table, so
a flow's backend does not depend on the node it crosses: every expectation
below is the Python table's answer, whichever node forwarded.

The forwarder receives on eth1 (uplink) and redirects out of eth2 (backend
segment); the backends strip the outer header with bpf/xdp_decap.c (this
kernel has no ipip driver; the lab attaches it) and answer the client
directly from the VIP on their loopback.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lbappliance.dataplane import flowhash, maglev, neighbours
from lbappliance.dataplane import spec as specmod
from lbappliance.lab.netns import NetnsLab
from lbappliance.render.specs import DATAPLANE_TARGET

pytestmark = pytest.mark.slow

VIP, PORT = "198.51.100.20", 8080
L4 = f"{VIP}/32"
PORTS = list(range(20000, 20200))  # client source ports: one flow each
LABS: list[NetnsLab] = []  # labs built by this module, checked at the end


@pytest.fixture
def lab():
    if os.geteuid() != 0 or not shutil.which("clang") or not shutil.which("bpftool"):
        pytest.skip("needs root, clang and bpftool")
    with NetnsLab.create() as lab:
        LABS.append(lab)
        lab.start_all()
        lab.wait(lambda: lab.fib_nexthops(L4) == uplinks(lab), 20, f"{L4} over both nodes")
        # L4 hashing at the router: one client's flows cross both nodes.
        lab.run("router", ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])
        # The client's frames as a real NIC puts them on the wire: segmented and
        # checksummed. veth would otherwise carry 64 kB TSO super-frames (no NIC
        # hands XDP those; encapsulated, they exceed eth2's MTU and the redirect
        # drops them) with checksums left to "hardware" (CHECKSUM_PARTIAL, lost
        # when native XDP turns the skb into a bare frame: the backend would drop
        # the packet). Turning tx checksum offload off turns TSO off with it.
        lab.run("client", ["ethtool", "-K", "eth1", "tx", "off"])
        yield lab


def uplinks(lab: NetnsLab) -> list[str]:
    return sorted(str(lb.address_on("uplink")) for lb in lab.topology.lbs)


def client(lab: NetnsLab) -> str:
    return str(lab.topology.client.address_on("client"))


def names(lab: NetnsLab) -> dict[str, str]:
    return {str(h.address_on("backend")): h.name for h in lab.topology.backends}


def rendered(lab: NetnsLab, node: str = "lb1") -> specmod.DataplaneSpec:
    return specmod.load(lab.config(node, DATAPLANE_TARGET))


def predicted(
    lab: NetnsLab, ports: list[int], backends: list[str] | None = None, down: tuple = ()
) -> dict[int, str]:
    """Backend name per source port, as the Python Maglev table says."""
    spec = rendered(lab)
    weights = spec.services[0].weights()
    if backends is not None:
        weights = {b: w for b, w in weights.items() if b in backends}
    table = maglev.build(weights, spec.table_size, down=down)
    out = {}
    for p in ports:
        h = flowhash.flow_hash(client(lab), VIP, p, PORT, socket.IPPROTO_TCP)
        out[p] = names(lab)[table.backend_for_slot(flowhash.slot(h, table.size))]
    return out


def ask(lab: NetnsLab, port: int, body: bytes | None = None) -> str:
    """One HTTP exchange from client source port ``port`` to the VIP: the
    answering backend's name. Closed with a RST, so the same flow (4-tuple)
    can be used again at once."""
    conn = http.client.HTTPConnection(VIP, PORT, timeout=3, source_address=(client(lab), port))
    try:
        conn.request("POST" if body else "GET", "/", body=body)
        r = conn.getresponse()
        assert r.status == 200
        return r.read().decode().strip()
    finally:
        if conn.sock:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def probe(lab: NetnsLab, ports: list[int]) -> dict[int, str]:
    with lab.inside("client"):
        return {p: ask(lab, p) for p in ports}


def status(lab: NetnsLab, node: str, spec: Path | None = None) -> dict[str, Any]:
    return json.loads(lab.dataplane(node, "status", "--json", spec=spec).stdout)


def apply_everywhere(lab: NetnsLab, *args: str, spec: Path | None = None) -> None:
    for lb in lab.topology.lbs:
        lab.dataplane(lb.name, "apply", *args, spec=spec)


def spec_copy(lab: NetnsLab, path: Path, **changes: Any) -> Path:
    """The rendered spec with top-level ``changes``; ``backends`` replaces the service's."""
    raw = json.loads(lab.config("lb1", DATAPLANE_TARGET).read_text())
    if "backends" in changes:
        keep = changes.pop("backends")
        svc = raw["services"][0]
        svc["backends"] = [b for b in svc["backends"] if b["address"] in keep]
    raw.update(changes)
    path.write_text(json.dumps(raw))
    return path


def mac(lab: NetnsLab, host: str, ifname: str) -> str:
    return json.loads(lab.run(host, ["ip", "-j", "link", "show", ifname]).stdout)[0]["address"]


def test_next_hops_come_from_the_kernels_routes(lab: NetnsLab):
    """Backends: out of eth2 (not the ingress eth1) with eth2's MAC, to the
    backend's own MAC; via a gateway: its MAC; lo is no Ethernet egress."""
    gone = "127.0.0.1"
    with lab.inside("lb1"):
        hops, warnings = neighbours.resolve(
            [(a, None) for a in names(lab)] + [(client(lab), None), (gone, None)]
        )
    for addr, host in names(lab).items():
        hop = hops[(addr, None)]
        assert hop is not None
        assert (hop.ifname, hop.src_mac) == ("eth2", mac(lab, "lb1", "eth2"))
        assert hop.mac == mac(lab, host, "eth1")
    via_router = hops[(client(lab), None)]
    assert via_router is not None and via_router.ifname == "eth1"
    assert via_router.mac == mac(lab, "router", "eth1")
    assert hops[(gone, None)] is None
    assert warnings == [f"{gone}: not routed via an Ethernet interface"]


def test_flows_follow_the_table_on_both_nodes_and_tcp_completes(lab: NetnsLab):
    for lb in lab.topology.lbs:
        st = status(lab, lb.name)
        assert st["attached"]["mode"] == "generic"
        (svc,) = st["services"]
        assert {b["egress"] for b in svc["backends"]} == {"eth2"}
        assert {b["address"] for b in svc["backends"]} == set(names(lab))

    # Many flows, spread exactly as the Python table says, over all three.
    expected = predicted(lab, PORTS)
    assert probe(lab, PORTS) == expected
    assert set(expected.values()) == set(names(lab).values())
    # ...through both nodes (L4 ECMP at the router), which agree.
    counts = {lb.name: status(lab, lb.name)["services"][0]["packets"] for lb in lab.topology.lbs}
    assert all(n > 0 for n in counts.values()), counts
    assert sum(counts.values()) >= 3 * len(PORTS)  # SYN, ACK + request, ACK of FIN, RST

    # One flow stays on one backend.
    assert set(probe(lab, [PORTS[0]] * 20).values()) == {expected[PORTS[0]]}

    # A TCP connection through the VIP completes with full-size segments from
    # the client (a 64 kB POST: the backend's advertised MSS leaves room for
    # the outer header), answered directly by the backend the table names.
    with lab.inside("client"):
        assert ask(lab, 21000, body=b"x" * 65536) == predicted(lab, [21000])[21000]

    # Nothing dropped by the forwarder.
    for lb in lab.topology.lbs:
        assert set(status(lab, lb.name)["drops"].values()) == {0}


def test_a_failed_backend_moves_only_its_flows(lab: NetnsLab):
    before = probe(lab, PORTS)
    gone = "10.30.0.22"
    apply_everywhere(lab, "--down", gone)
    after = probe(lab, PORTS)
    assert after == predicted(lab, PORTS, down=(gone,))
    moved = {p for p in PORTS if after[p] != before[p]}
    assert moved == {p for p in PORTS if before[p] == names(lab)[gone]}
    for lb in lab.topology.lbs:
        backends = status(lab, lb.name)["services"][0]["backends"]
        assert {b["address"] for b in backends} == set(names(lab)) - {gone}
    # Back up: exactly its flows return.
    apply_everywhere(lab)
    assert probe(lab, PORTS) == before


def test_leaving_the_spec_moves_flows_as_the_rebuilt_table_says(lab: NetnsLab, tmp_path: Path):
    keep = ["10.30.0.21", "10.30.0.23"]
    apply_everywhere(lab, spec=spec_copy(lab, tmp_path / "dataplane.json", backends=keep))
    assert probe(lab, PORTS) == predicted(lab, PORTS, backends=keep)


def test_detached_node_is_withdrawn_the_other_carries_on(lab: NetnsLab):
    lb1, lb2 = lab.topology.lbs
    out = lab.dataplane(lb1.name, "detach").stdout
    assert "detached" in out
    link = json.loads(lab.run(lb1.name, ["ip", "-j", "-d", "link", "show", "eth1"]).stdout)[0]
    assert "prog" not in link.get("xdp", {})
    assert not (lab.pin_root(lb1.name) / "eth1").exists()
    # The health agent sees no XDP program on eth1: lb1's route goes.
    lab.wait(lambda: lab.fib_nexthops(L4) == [str(lb2.address_on("uplink"))], 10, "lb1 withdrawn")
    assert probe(lab, PORTS[:40]) == predicted(lab, PORTS[:40])


def xdp(lab: NetnsLab, node: str, ifname: str) -> dict[str, Any]:
    """``ip -d -j link``'s xdp object of a node's interface (mode 1 native, 2 generic)."""
    link = json.loads(lab.run(node, ["ip", "-j", "-d", "link", "show", ifname]).stdout)[0]
    return link.get("xdp", {})


def test_native_mode(lab: NetnsLab, tmp_path: Path):
    """Native mode on both nodes: the forwarder on eth1 and, because most drivers
    drop frames redirected to a device without an XDP program, the loader's
    XDP_PASS program on the egress interface eth2 (veth's own rule, a program on
    the switch-side peers, is the lab's: ``peer_xdp``)."""
    for lb in lab.topology.lbs:
        lab.peer_xdp(lb.name)
    native = spec_copy(lab, tmp_path / "native.json", xdp_mode="native")
    apply_everywhere(lab, spec=native)
    helper = {}
    for lb in lab.topology.lbs:
        uplink, egress = xdp(lab, lb.name, "eth1"), xdp(lab, lb.name, "eth2")
        assert (uplink["mode"], uplink["prog"]["name"]) == (1, "xdp_lb")  # XDP_FLAGS_DRV_MODE
        assert (egress["mode"], egress["prog"]["name"]) == (1, "xdp_pass")
        helper[lb.name] = egress["prog"]["id"]
        assert status(lab, lb.name, native)["egress_programs"] == [
            {
                "interface": "eth2",
                "pinned_prog_id": helper[lb.name],
                "attached": {"mode": "native", "prog_id": helper[lb.name]},
            }
        ]
    text = lab.dataplane("lb1", "status", spec=native).stdout
    assert f"egress eth2: XDP_PASS prog {helper['lb1']} pinned, attached (native)" in text, text
    again = lab.dataplane("lb1", "apply", spec=native).stdout
    assert f"eth2: egress XDP_PASS program kept (prog id {helper['lb1']})" in again, again
    assert xdp(lab, "lb1", "eth2")["prog"]["id"] == helper["lb1"]

    assert probe(lab, PORTS[:60]) == predicted(lab, PORTS[:60])
    with lab.inside("client"):
        assert ask(lab, 21000, body=b"x" * 65536) == predicted(lab, [21000])[21000]
    for lb in lab.topology.lbs:
        assert set(status(lab, lb.name, native)["drops"].values()) == {0}

    # Back to the rendered spec: generic mode, which needs no egress program.
    apply_everywhere(lab)
    st = status(lab, "lb1")
    assert st["attached"]["mode"] == "generic" and st["egress_programs"] == []
    assert "prog" not in xdp(lab, "lb1", "eth2")
    assert probe(lab, PORTS[:20]) == predicted(lab, PORTS[:20])

    # Native again, then detach: both programs go.
    lab.dataplane("lb1", "apply", spec=native)
    assert xdp(lab, "lb1", "eth2")["prog"]["name"] == "xdp_pass"
    out = lab.dataplane("lb1", "detach", spec=native).stdout
    assert "eth2: egress XDP_PASS program removed" in out, out
    assert "prog" not in xdp(lab, "lb1", "eth1") and "prog" not in xdp(lab, "lb1", "eth2")
    assert sorted(p.name for p in lab.pin_root("lb1").iterdir()) == []


def test_nothing_is_left_behind():
    """Runs after the lab tests in this module: no namespace, bpffs or workdir remains."""
    names_ = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mounts = Path("/proc/mounts").read_text()
    assert LABS
    for lab in LABS:
        assert f"{lab.name}-" not in names_
        assert str(lab.workdir) not in mounts
        assert not lab.workdir.exists()


def test_too_big_for_the_tunnel_gets_icmp_and_the_client_lowers_its_path_mtu(
    lab: NetnsLab, tmp_path: Path
):
    """Real packets: a 1500-byte UDP datagram with DF to a VIP whose backends sit
    behind a 1500-byte path no longer fits once encapsulated; the forwarder
    answers "fragmentation needed" (MTU 1480) and the client's kernel takes it:
    the socket's path MTU drops to 1480 and a second full-size send is refused."""
    raw = json.loads(lab.config("lb1", DATAPLANE_TARGET).read_text())
    udp = dict(raw["services"][0], name="udp", port=9999, protocol="udp")
    for lb in lab.topology.lbs:
        spec = json.loads(lab.config(lb.name, DATAPLANE_TARGET).read_text())
        spec["services"].append(udp)
        path = tmp_path / f"{lb.name}.json"
        path.write_text(json.dumps(spec))
        lab.dataplane(lb.name, "apply", spec=path)
    ip_mtu_discover, ip_pmtudisc_do, ip_mtu = 10, 2, 14
    with lab.inside("client"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, ip_mtu_discover, ip_pmtudisc_do)
        s.connect((VIP, 9999))
        assert s.getsockopt(socket.IPPROTO_IP, ip_mtu) == 1500
        s.send(b"x" * 1472)  # 1500 bytes of IP: fits the client's link
        lab.wait(lambda: s.getsockopt(socket.IPPROTO_IP, ip_mtu) == 1480, 5, "path MTU 1480")
        with pytest.raises(OSError) as e:
            s.send(b"x" * 1472)
        assert e.value.errno == errno.EMSGSIZE
        # The ICMP is also queued as the socket's error: read (and clear) it.
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EMSGSIZE
        s.send(b"x" * 1452)  # 1480 bytes: fits, forwarded
    stats = [status(lab, lb.name, tmp_path / f"{lb.name}.json") for lb in lab.topology.lbs]
    assert sum(st["drops"]["too_big"] for st in stats) == 1
    # The flow table saw that flow: one miss (its first packet), hits after.
    udp_flows = [st["flows"] for st in stats]
    assert sum(f["miss"] for f in udp_flows) >= 1
    assert sum(f["hit"] for f in udp_flows) >= 1
    text = lab.dataplane("lb1", "status", spec=tmp_path / "lb1.json").stdout
    assert "flow table: " in text and " of 65536 entries; hit " in text, text
