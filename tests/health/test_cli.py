"""`status` and `maintenance`: Ansible output parsing, the wait logic, the table."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest

from lbappliance.inventory import load_site
from lbappliance.inventory.derived import drain_wait, return_wait
from lbappliance.maintenance import EXIT_ERROR, EXIT_REFUSED, EXIT_TIMEOUT, enter, leave
from lbappliance.paths import RuntimePaths
from lbappliance.remote import NodeError, NodeRunner, parse_adhoc
from lbappliance.render.ansible import site_vars
from lbappliance.status import format_imbalance, format_node
from tests.conftest import INVENTORY
from tests.health.helpers import node_report as report


@pytest.fixture(scope="module")
def inv():
    return load_site(INVENTORY, "lab").model


def test_parse_adhoc_outputs():
    body = json.dumps({"node": "lb1", "ok": True})
    out = (
        f"lb1 | CHANGED | rc=0 >>\n{body}\n"
        'lb2 | UNREACHABLE! => {\n    "changed": false,\n'
        '    "msg": "Failed to connect to the host via ssh: timeout",\n    "unreachable": true\n}\n'
    )
    results = parse_adhoc(["lb1", "lb2", "lb3"], out)
    assert results["lb1"] == {"node": "lb1", "ok": True}
    assert str(results["lb2"]) == "lb2: unreachable: Failed to connect to the host via ssh: timeout"
    assert "no result in ansible output" in str(results["lb3"])
    failed = parse_adhoc(["lb1"], 'lb1 | FAILED | rc=1 >>\n{"error": "servers-maint: x"}\n')
    assert failed["lb1"] == {"error": "servers-maint: x"}
    module = parse_adhoc(
        ["lb1"],
        'lb1 | FAILED! => {"msg": "Module result deserialization failed",'
        ' "module_stderr": "python: not found\\nmore"}',
    )
    assert str(module["lb1"]) == (
        "lb1: failed: Module result deserialization failed (python: not found)"
    )
    junk = parse_adhoc(["lb1"], "lb1 | FAILED | rc=2 >>\nTraceback ...\n")
    assert isinstance(junk["lb1"], NodeError) and "rc=2 without a report" in str(junk["lb1"])


def test_runner_command_over_ssh(inv):
    with NodeRunner(inv) as runner:
        cmd = runner.command("lb1", runner.helper("lb1", ["report"]))
        assert cmd[:2] == ["ansible", "lb1"]
        assert cmd[-2:] == [
            "-a",
            "/opt/lbappliance/venv/bin/python -m lbappliance.health.node "
            "--config /etc/lbappliance/health-agent.json report",
        ]
        hosts = runner.inventory.read_text()
        assert "ansible_host: !unsafe '10.99.0.11'" in hosts
        assert "ansible_user: !unsafe 'root'" in hosts  # inventory values are never templated


class FakeRunner:
    """lb1 answers ``reports`` in turn; other nodes answer ``peers`` (an exception: unreachable)."""

    def __init__(self, reports: list[dict], peers: dict[str, dict | Exception] | None = None):
        self.reports = reports
        self.peers = {"lb2": report()} if peers is None else peers
        self.calls: list[list[str]] = []
        self.peer_calls: list[str] = []

    def __call__(self, node: str, action: list[str]) -> dict:
        if node != "lb1":
            self.peer_calls.append(node)
            answer = self.peers[node]
            if isinstance(answer, Exception):
                raise answer
            return answer
        self.calls.append(action)
        if action[0] == "servers-maint":
            return {**self.reports[-1], "servers_maint": ["web/backend1", "web/backend2"]}
        if action[0] == "maintenance-off":
            return {**self.reports[0], "servers_ready": ["web/backend1"]}
        return self.reports.pop(0) if len(self.reports) > 1 else self.reports[0]


def test_enter_waits_for_withdraw_vrrp_and_sessions(inv):
    runner = FakeRunner(
        [
            report(),  # serving now: is lb2 too? (it is)
            report(),  # answer to maintenance-on
            report(state="draining", vrrp="MASTER", sessions=3),
            report(announced=False, state="withdrawn", sessions=1),
            report(announced=False, state="withdrawn"),
        ]
    )
    lines: list[str] = []
    assert enter(runner, inv, "lb1", "test", True, 10, lines.append, poll=0) == 0
    assert runner.peer_calls == ["lb2"]
    assert [c[0] for c in runner.calls] == [
        "report",
        "maintenance-on",
        "report",
        "report",
        "report",
        "servers-maint",
    ]
    assert lines[1] == (
        "  waiting: 198.51.100.10/32 still announced (draining: 3 consecutive good rounds); "
        "VRRP public still MASTER here (203.0.113.10); 3 client sessions in flight"
    )
    assert lines[-1].endswith("HAProxy servers in MAINT: web/backend1, web/backend2")


def test_enter_reports_a_timeout(inv):
    runner = FakeRunner([report(), report(), report(state="draining")])
    lines: list[str] = []
    assert enter(runner, inv, "lb1", "test", True, 0, lines.append, poll=0) == EXIT_TIMEOUT
    assert lines[-1].startswith("lb1: TIMEOUT after 0 s; still pending: 198.51.100.10/32")
    assert "servers-maint" not in [c[0] for c in runner.calls]


@pytest.mark.parametrize(
    "peer",
    [report(announced=False, state="withdrawn"), NodeError("lb2: unreachable")],
    ids=["peer withdrawn", "peer unreachable"],
)
def test_enter_refuses_to_take_the_last_serving_node_out(inv, peer):
    runner = FakeRunner([report()], peers={"lb2": peer})
    lines: list[str] = []
    assert enter(runner, inv, "lb1", "test", False, None, lines.append) == EXIT_REFUSED
    assert lines == [
        "lb1: refusing: it serves 198.51.100.10/32 and no other node serves anything; "
        "maintenance would take the site down. Bring a peer back first, or pass --force."
    ]
    assert [c[0] for c in runner.calls] == ["report"]  # nothing changed on the node
    runner = FakeRunner([report()], peers={"lb2": peer})
    assert enter(runner, inv, "lb1", "test", False, None, lines.append, force=True) == 0
    assert [c[0] for c in runner.calls] == ["maintenance-on"] and runner.peer_calls == []


def test_enter_does_not_count_a_peer_whose_agent_stopped(inv):
    """The peer's state file says UP, but no agent keeps it fresh: it serves nothing."""
    runner = FakeRunner([report()], peers={"lb2": report(stale="stale state file: x", node="lb2")})
    lines: list[str] = []
    assert enter(runner, inv, "lb1", "test", False, None, lines.append) == EXIT_REFUSED
    assert lines == [
        "lb1: refusing: it serves 198.51.100.10/32 and no other node serves anything "
        "(not counted: 198.51.100.10/32 (up in lb2's state file; health agent not running "
        "(stale state file: x))); maintenance would take the site down. Bring a peer back "
        "first, or pass --force."
    ]


def test_enter_on_a_node_that_serves_nothing_needs_no_peer(inv):
    runner = FakeRunner([report(announced=False, state="withdrawn")], peers={})
    assert enter(runner, inv, "lb1", "test", False, None, lambda _: None) == 0


def test_a_report_without_verdicts_is_an_error_not_a_guess(inv):
    verdicts = ("serving", "drain_pending", "return_pending", "unhealthy")
    older = {k: v for k, v in report().items() if k not in verdicts}
    runner = FakeRunner([older])
    with pytest.raises(NodeError, match="lb1: the report has no serving: its node helper is older"):
        enter(runner, inv, "lb1", "test", False, None, lambda _: None)
    assert [c[0] for c in runner.calls] == ["report"]  # nothing changed on the node
    broken = FakeRunner([{"error": "configuration error in /etc/x.json: rise"}])
    with pytest.raises(NodeError, match=r"no serving: configuration error in /etc/x\.json"):
        enter(broken, inv, "lb1", "test", False, None, lambda _: None)


def test_the_cli_and_the_deploy_wait_as_long(inv):
    """maintenance_drain 30 s + drain_timeout 30 s, and rise 3 x 0.5 s, each + 60 s."""
    facts = site_vars(inv, RuntimePaths())
    assert facts["lb_drain_wait"] == drain_wait(inv) == 120
    assert facts["lb_return_wait"] == return_wait(inv) == 61.5


def test_leave_waits_only_for_healthy_vips(inv):
    runner = FakeRunner(
        [
            report(announced=False, state="withdrawn"),
            report(announced=False, state="down", health="fail"),
        ]
    )
    lines: list[str] = []
    assert leave(runner, inv, "lb1", True, 5, lines.append, poll=0) == 0
    assert "servers back to READY with slow start: web/backend1" in lines[0]
    assert lines[-1] == "lb1: warning: 198.51.100.10/32 stays withdrawn, unhealthy: probe: timeout"


def test_leave_refuses_when_the_inventory_says_maintenance(inv):
    nodes = [replace(inv.nodes[0], maintenance=True), *inv.nodes[1:]]
    runner = FakeRunner([report()])
    lines: list[str] = []
    assert leave(runner, replace(inv, nodes=nodes), "lb1", False, None, lines.append) == EXIT_ERROR
    assert runner.calls == []


def test_status_table():
    lines = format_node("lb1", report())
    assert lines[0] == "lb1  agent running (pid 42, state 0.3 s old)  maintenance: no"
    assert lines[1] == "  BGP      10.10.0.1 up for 100 s"
    assert lines[2] == "  VRRP     public BACKUP"
    assert lines[3] == "  HAProxy  web 2/2 UP; 0 sessions in flight"
    assert lines[4] == (
        "  VIP 198.51.100.10/32     up        announced for 10 s: 3 consecutive good rounds"
    )
    assert format_node("lb2", {"report_error": "lb2: unreachable: timeout"}) == [
        "lb2  UNREACHABLE  lb2: unreachable: timeout"
    ]


def test_status_over_ssh_reports_unreachable_nodes(inventory_copy):
    """The real `ansible` over SSH, to a closed port on loopback: a clear error, exit 1."""
    site = inventory_copy / "sites" / "lab.yml"
    text = site.read_text()
    for mgmt, loopback in (("10.99.0.11", "127.0.0.11"), ("10.99.0.12", "127.0.0.12")):
        text = text.replace(f"management_address: {mgmt}", f"management_address: {loopback}")
    # Loopback is on no interface of the node: its network is not the appliance's.
    text = text.replace(
        "    vrrp_priority: ", "    ssh_port: 1\n    network_managed: false\n    vrrp_priority: "
    )
    site.write_text(text)
    out = subprocess.run(
        ["lbappliance", "status", "--site", "lab", "--inventory", str(inventory_copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "lb1  UNREACHABLE  lb1: unreachable:" in out.stdout
    assert "Connection refused" in out.stdout


def test_imbalance_lines_or_why_they_are_missing():
    table = "pool web: BALANCED  (target latency 100 ms)\n  server ...\n"
    r = {**report(), "imbalance": {"pools": [], "table": table, "alarm": False}}
    assert format_imbalance(r) == [
        "  imbalance:",
        "  pool web: BALANCED  (target latency 100 ms)",
        "    server ...",
    ]
    failed = {**report(), "error": "imbalance: HAProxy admin socket: connection refused"}
    assert format_imbalance(failed) == [
        "  imbalance not measured: imbalance: HAProxy admin socket: connection refused"
    ]
