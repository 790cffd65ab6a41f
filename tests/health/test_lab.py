"""The health agent with the real daemons, on the namespace lab.

Real ExaBGP (running our agent) on lb1 and lb2, real BIRD as the router, real
HAProxy and lab backends (``lbappliance.lab.netns``). Every test builds its own
lab (~1.5 s) and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lbappliance.lab.netns import NetnsLab
from tests.health.labtools import (
    L4,
    WEB,
    agent_log,
    agent_pid,
    bgp_counters,
    cli,
    cut_backends,
    drop_probes,
    dropped,
    get,
    lab_hooks,
    uplink,
)

pytestmark = pytest.mark.slow

if os.geteuid() != 0:
    pytest.skip("the namespace lab needs root", allow_module_level=True)


@pytest.fixture
def lab():
    with NetnsLab.create() as lab:
        lab.start_all()
        lab.wait_ecmp(WEB)
        yield lab


@pytest.fixture
def short_drain_inventory(inventory_copy: Path) -> Path:
    """The lab site with a 3 s maintenance drain (30 s by default)."""
    site = inventory_copy / "sites" / "lab.yml"
    site.write_text(site.read_text() + "\nhealth_agent:\n  maintenance_drain: 3s\n")
    return inventory_copy


def test_announced_with_communities_ecmp_over_both_nodes(lab: NetnsLab):
    route = lab.bird_route(WEB)
    assert route.count("BGP.community: (65100,10)") == 2
    assert "BGP.med" not in route
    assert {get(lab)[0] for _ in range(6)} == {200}
    # The L4 VIP: announced by both once their XDP forwarders are attached.
    lab.wait_ecmp(L4, 10)
    assert lab.bird_route(L4).count("BGP.community: (65100,20)") == 2
    reason = json.loads(
        (lab.node_root("lb1") / "run/lbappliance/health-agent.state.json").read_text()
    )["vips"][L4]["reason"]
    assert "dataplane: XDP xdpgeneric id" in reason and "on eth1" in reason


def test_backends_lost_withdraws_that_node_only_then_recovers(lab: NetnsLab):
    lb1, lb2 = uplink(lab, "lb1"), uplink(lab, "lb2")
    # Every backend of the VIP dies as far as lb1 can tell (lb2 still reaches them).
    cut_backends(lab, "lb1")
    cut = time.monotonic()
    lab.wait(lambda: lab.fib_nexthops(WEB) == [lb2], 5, "lb1's route withdrawn")
    withdrawn = time.monotonic() - cut
    assert {get(lab) for _ in range(6)} <= {(200, "backend1"), (200, "backend2")}
    assert withdrawn < 2.0
    down = [r for r in agent_log(lab, "lb1") if r.get("vip") == WEB and r.get("to") == "down"][-1]
    assert down["command"] == "withdraw route 198.51.100.10/32 next-hop self"
    assert down["ack"] == "done" and "3 consecutive bad rounds" in down["reason"]
    # Recovery: re-announced only after `rise` good rounds.
    cut_backends(lab, "lb1", cut=False)
    lab.wait(lambda: lab.fib_nexthops(WEB) == sorted([lb1, lb2]), 10, "lb1 back")
    up = [r for r in agent_log(lab, "lb1") if r.get("vip") == WEB and r.get("from") == "down"][-1]
    assert up["to"] == "up" and up["reason"].startswith("3 consecutive good rounds")
    assert up["command"] == "announce route 198.51.100.10/32 next-hop self community [65100:10]"


def test_maintenance_graceful_shutdown_then_withdraw_then_back(short_drain_inventory: Path):
    inv = str(short_drain_inventory)
    with NetnsLab.create(inventory=short_drain_inventory) as lab:
        lab.start_all()
        lb1, lb2 = uplink(lab, "lb1"), uplink(lab, "lb2")
        lab.wait(lambda: lab.fib_nexthops(WEB) == sorted([lb1, lb2]), 20, "ECMP")
        seen: list[tuple[float, str]] = []
        stop = threading.Event()

        def watch() -> None:  # what the router holds for lb1's path, every 50 ms
            while not stop.is_set():
                route = lab.bird_route(WEB)
                block = next((b for b in route.split("unicast") if f"via {lb1}" in b), "")
                if not block:
                    state = "withdrawn"
                elif "(65535,0)" in block and "BGP.local_pref: 0" in block:
                    state = "gshut"
                else:
                    state = "normal"
                if not seen or seen[-1][1] != state:
                    seen.append((time.monotonic(), state))
                stop.wait(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            began = time.monotonic()
            enter = cli(
                "maintenance", "enter", "--site", "lab", "--inventory", inv, "--node", "lb1",
                "--wait", "--note", "lab test", *lab_hooks(lab),
            )  # fmt: skip
            took = time.monotonic() - began
        finally:
            stop.set()
            watcher.join()
        assert enter.returncode == 0, enter.stdout + enter.stderr
        assert "lb1: drained in" in enter.stdout
        states = [s for _, s in seen]
        assert states == ["normal", "gshut", "withdrawn"], seen
        drain = seen[2][0] - seen[1][0]
        # GRACEFUL_SHUTDOWN held for maintenance_drain (3 s here, 30 s by default).
        assert 2.5 < drain < 10, drain
        assert took < 60, took  # the drain plus a few node-helper round trips, busy or not
        # While lb1 drained, the router preferred lb2 only; now lb1 is gone.
        assert lab.fib_nexthops(WEB) == [lb2]
        assert {get(lab)[0] for _ in range(4)} == {200}
        # lb1's HAProxy servers are in MAINT; VRRP moved to lb2.
        status = cli("status", "--site", "lab", "--inventory", inv, "--json", *lab_hooks(lab))
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)["nodes"]["lb1"]
        assert report["agent"]["vips"][WEB]["state"] == "withdrawn"
        assert report["maintenance"]["file"] and "lab test" in report["maintenance"]["note"]
        assert {s["status"] for s in report["haproxy"]["backends"]["web"]["servers"]} == {"MAINT"}
        assert lab.vrrp_holders("203.0.113.10") == ["lb2"]
        # lb2 is now the last serving node: maintenance on it is refused, nothing changes.
        refused = cli(
            "maintenance", "enter", "--site", "lab", "--inventory", inv, "--node", "lb2",
            *lab_hooks(lab),
        )  # fmt: skip
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "lb2: refusing: it serves 198.51.100.10/32" in refused.stdout
        assert lab.fib_nexthops(WEB) == [lb2]

        leave = cli(
            "maintenance", "exit", "--site", "lab", "--inventory", inv, "--node", "lb1",
            "--wait", *lab_hooks(lab),
        )  # fmt: skip
        assert leave.returncode == 0, leave.stdout + leave.stderr
        assert "web/backend1, web/backend2" in leave.stdout
        assert lab.fib_nexthops(WEB) == sorted([lb1, lb2])
        # Slow start: the servers came back from MAINT throttled.
        sock = lab.node_root("lb1") / "run/haproxy/admin.sock"
        show = subprocess.run(
            ["socat", "-", f"UNIX-CONNECT:{sock}"], input="show stat\n",
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        header = show.lstrip("# ").splitlines()[0].split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in show.splitlines()[1:]]
        throttles = [
            r["throttle"] for r in rows if r.get("pxname") == "web" and "backend" in r["svname"]
        ]
        assert throttles and all(t and int(t) < 100 for t in throttles), throttles


def test_agent_killed_its_routes_go(lab: NetnsLab):
    lb1, lb2 = uplink(lab, "lb1"), uplink(lab, "lb2")
    first = agent_pid(lab, "lb1")
    assert first
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    lab.wait(lambda: lab.fib_nexthops(WEB) == [lb2], 5, "lb1's route gone after the kill")
    gone = time.monotonic() - killed
    assert gone < 2.0
    # ExaBGP respawned the agent; it started withdrawn and announces after `rise`.
    lab.wait(lambda: lab.fib_nexthops(WEB) == sorted([lb1, lb2]), 10, "lb1 back")
    second = agent_pid(lab, "lb1")
    assert second and second != first
    starts = [r for r in agent_log(lab, "lb1") if r["event"] == "start"]
    assert [s["pid"] for s in starts] == [first, second]


def test_agent_that_cannot_run_takes_exabgp_and_its_routes_down(lab: NetnsLab):
    lb2 = uplink(lab, "lb2")
    config = lab.config("lb1", "etc/lbappliance/health-agent.json")
    config.write_text(config.read_text().replace('"rise": 3', '"rise": "three"'))
    os.kill(agent_pid(lab, "lb1"), signal.SIGKILL)
    killed = time.monotonic()
    lab.wait(lambda: lab.fib_nexthops(WEB) == [lb2], 5, "lb1's route gone")
    proc = lab.daemons[("lb1", "exabgp")].proc
    lab.wait(lambda: proc.poll() is not None, 15, "ExaBGP giving up on its helper")
    log = lab.daemons[("lb1", "exabgp")].log.read_text()
    assert "Too many death for health-agent" in log
    assert "$.rise: expected int, got 'three'" in log
    assert time.monotonic() - killed < 15
    assert lab.fib_nexthops(WEB) == [lb2]
    assert "Established" not in lab.birdc("show", "protocols", "lb1")  # the session is down


def test_bad_agent_configuration_clear_error_no_announcement():
    with NetnsLab.create() as lab:
        config = lab.config("lb1", "etc/lbappliance/health-agent.json")
        data = json.loads(config.read_text())
        data["vips"][0]["prefix"] = "198.51.100.0/24"
        config.write_text(json.dumps(data))
        lab.start_all()
        lb2 = uplink(lab, "lb2")
        lab.wait(lambda: lab.fib_nexthops(WEB) == [lb2], 20, "lb2 announcing")
        proc = lab.daemons[("lb1", "exabgp")].proc
        lab.wait(lambda: proc.poll() is not None, 20, "lb1's ExaBGP giving up")
        log = lab.daemons[("lb1", "exabgp")].log.read_text()
        assert "lbappliance-health: configuration error in" in log
        assert "$.vips[0].prefix: 198.51.100.0/24 is not a host route (/32 or /128)" in log
        assert "nothing announced" in log
        assert bgp_counters(lab, "lb1")[0] == 0  # not one route ever reached the router
        assert lab.fib_nexthops(WEB) == [lb2]


def test_one_percent_probe_loss_moves_no_route(lab: NetnsLab):
    # The window opens once every VIP (the XDP and IPv6 ones arrive after the web VIP)
    # is announced by both nodes and the router's import counters stand still.
    lab.wait_settled()
    # Exactly every 100th probe connection of each node is lost (its SYN dropped).
    for node in ("lb1", "lb2"):
        drop_probes(lab, node, "198.51.100.10", 80, "numgen inc mod 100 == 0")
    before = {n: bgp_counters(lab, n) for n in ("lb1", "lb2")}
    window = float(os.environ.get("LBAPPLIANCE_LOSS_WINDOW", "60"))
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert lab.fib_nexthops(WEB) == lab.via(WEB)
        time.sleep(0.25)
    assert {n: bgp_counters(lab, n) for n in ("lb1", "lb2")} == before
    assert dropped(lab, "lb1") >= 1 and dropped(lab, "lb2") >= 1


def test_l4_vip_follows_its_xdp_program(lab: NetnsLab):
    lb1, lb2 = uplink(lab, "lb1"), uplink(lab, "lb2")
    lab.wait(lambda: lab.fib_nexthops(L4) == sorted([lb1, lb2]), 10, "ECMP for the L4 VIP")
    lab.dataplane("lb1", "detach")  # the XDP forwarder is gone from lb1's uplink
    lab.wait(lambda: lab.fib_nexthops(L4) == [lb2], 5, "L4 VIP withdrawn by lb1")
    assert lab.fib_nexthops(WEB) == sorted([lb1, lb2])  # the L7 VIP does not care
    down = [r for r in agent_log(lab, "lb1") if r.get("vip") == L4 and r.get("to") == "down"]
    assert "no XDP program attached to eth1" in down[-1]["reason"]
    lab.start_dataplane("lb1")
    lab.wait(lambda: lab.fib_nexthops(L4) == sorted([lb1, lb2]), 10, "L4 VIP back on lb1")


def test_status_command(lab: NetnsLab):
    lab.wait_ecmp(L4, 10)
    out = cli("status", "--site", "lab", *lab_hooks(lab))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "lb1  agent running" in text and "lb2  agent running" in text
    assert "BGP      10.10.0.1 up" in text
    assert "HAProxy  web 2/2 UP" in text
    assert f"VIP {WEB:<20} up        announced" in text
    assert f"VIP {L4:<20} up        announced" in text
    assert "VRRP     public MASTER" in text and "VRRP     public BACKUP" in text
    data = json.loads(cli("status", "--site", "lab", "--json", *lab_hooks(lab)).stdout)
    lb1 = data["nodes"]["lb1"]
    assert lb1["agent"]["neighbors"]["10.10.0.1"]["state"] == "up"
    assert lb1["haproxy"]["backends"]["web"]["up"] == 2
    # --imbalance runs the imbalance analysis on every node (1 s of HAProxy samples here).
    for _ in range(20):
        get(lab)
    out = cli("status", "--site", "lab", "--imbalance", "--sample", "1", *lab_hooks(lab))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("  imbalance:") == 2 and "  pool web: " in out.stdout
    data = json.loads(
        cli("status", "--site", "lab", "--imbalance", "--sample", "1", "--json",
            *lab_hooks(lab)).stdout
    )  # fmt: skip
    for node in ("lb1", "lb2"):
        pools = {p["pool"]: p for p in data["nodes"][node]["imbalance"]["pools"]}
        assert {s["server"] for s in pools["web"]["servers"]} == {"backend1", "backend2"}
        assert data["nodes"][node]["imbalance"]["alarm"] is False
