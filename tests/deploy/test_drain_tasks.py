"""The playbooks' drain logic (tasks/serving.yml, drain.yml, undrain.yml) reads only
the node helper's verdicts: driven here by ``helperstub.py``, which answers with
scripted reports (built with the real verdicts of lbappliance.health.drain), under
the real ansible-playbook with the local connection.

The stub stands in for a node's daemons, which need a lab (the namespace-lab test
tests/deploy/test_drain_netns.py runs the same tasks against real ones): what is
tested here is the playbooks' side — the refusal, the one wait and its deadline,
what a deadline lets through and what it does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.health.helpers import WEB, node_report

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "playbooks" / "tasks"
STUB = Path(__file__).with_name("helperstub.py")

UP = node_report()
DRAINING = node_report(state="draining", vrrp="MASTER", sessions=3)
WITHDRAWN_BUSY = node_report(announced=False, state="withdrawn", sessions=1)
WITHDRAWN = node_report(announced=False, state="withdrawn")
RISING = node_report(announced=False, state="down")
NOTHING = node_report(announced=False, state="down", health="fail")
STALE = node_report(stale="stale state file: its agent (pid 42) is gone")
STALE_PEER = node_report(stale="stale state file: its agent (pid 42) is gone", node="lb2")


def run(
    tmp_path: Path,
    answers: list[dict],
    tasks: list[str] | Path,
    peer: dict[str, object] | None = None,
    **extra: object,
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``tasks`` (task files, or a playbook limited to lb1) for lb1, lb2 its peer,
    with the stub as the node helper; the ansible-playbook run and the helper actions
    it made, in order."""
    script = tmp_path / "answers.json"
    script.write_text(json.dumps(answers))
    config = tmp_path / "health-agent.json"
    config.write_text(json.dumps({"vrrp_demote_value": 254}))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {"lb1": local, "lb2": peer or local}
    (tmp_path / "hosts.yml").write_text(
        json.dumps({"all": {"children": {"lb_nodes": {"hosts": hosts}}}})
    )
    variables = {
        "lb_deploy_node_helper": [sys.executable, str(STUB), str(script)],
        "lb_deploy_agent_config_file": str(config),
        "lb_render_host_dir": "",
        "lb_maintenance_file": str(tmp_path / "maintenance"),
        "lb_vrrp_demote_file": str(tmp_path / "vrrp-demote"),
        "lb_drain_wait": 30,
        "lb_return_wait": 30,
        "lb_deploy_poll": 0.1,
        **extra,
    }
    (tmp_path / "extra.json").write_text(json.dumps(variables))
    if isinstance(tasks, Path):
        playbook = tasks
    else:
        playbook = tmp_path / "play.yml"
        includes = "".join(f"    - ansible.builtin.include_tasks: {TASKS / t}\n" for t in tasks)
        playbook.write_text(
            f"""- hosts: lb1
  gather_facts: false
  vars_files: [{ROOT / "playbooks" / "vars" / "deploy.yml"}]
  vars:
    lb_deploy_force: false
    lb_deploy_serving: true
    lb_deploy_served_before: [{WEB}]
  tasks:
{includes}"""
        )
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "False"}
    cmd = ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(playbook), "-l", "lb1"]
    cmd += ["-e", f"@{tmp_path / 'extra.json'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    log = script.with_suffix(".log")
    return proc, log.read_text().split() if log.exists() else []


def test_drain_waits_for_every_verdict_then_undrain_for_the_return(tmp_path: Path) -> None:
    answers = [
        UP,  # lb2's report: it serves
        UP,  # maintenance-on
        DRAINING, WITHDRAWN_BUSY, WITHDRAWN,  # drained once nothing is pending
        WITHDRAWN,  # maintenance-off
        DRAINING, RISING, UP,  # serving again once nothing is pending
    ]  # fmt: skip
    proc, calls = run(tmp_path, answers, ["drain.yml", "undrain.yml"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert calls == ["report", "maintenance-on", "report", "report", "report",
                     "maintenance-off", "report", "report", "report"]  # fmt: skip
    assert "Still pending" not in out


@pytest.mark.parametrize(
    "peer",
    [
        {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1},
        None,
    ],
    ids=["peer unreachable", "peer serves nothing"],
)
def test_drain_refuses_when_no_peer_serves(tmp_path: Path, peer: dict | None) -> None:
    proc, calls = run(tmp_path, [NOTHING, UP], ["drain.yml"], peer=peer)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "lb1 is serving and no other node is: draining it would take the" in out
    assert "maintenance-on" not in calls  # nothing changed on lb1


def test_drain_does_not_count_a_peer_whose_agent_stopped(tmp_path: Path) -> None:
    """lb2's state file says UP, but its agent is gone: lb1 is the last serving node."""
    proc, calls = run(tmp_path, [STALE_PEER, UP], ["drain.yml"])
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out[-3000:]
    assert (
        f"lb1 is serving and no other node is (not counted: {WEB} (up in lb2's state file; "
        "health agent not running (stale state file: its agent (pid 42) is gone))): draining"
    ) in out
    assert "maintenance-on" not in calls


def test_drain_stops_at_a_node_whose_agent_stopped(tmp_path: Path) -> None:
    """A stopped agent never withdraws: its node is not converged under live routes."""
    proc, calls = run(tmp_path, [UP, STALE, STALE], ["drain.yml"], lb_drain_wait=1)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out[-3000:]
    assert "lb1 still serves after 1 s in maintenance: health agent not running" in out
    assert calls[:2] == ["report", "maintenance-on"]


def test_drain_deadline_goes_on_with_sessions_left(tmp_path: Path) -> None:
    slow = {**WITHDRAWN_BUSY, "delay": 1.0}  # each look takes a second or more
    proc, calls = run(tmp_path, [UP, UP, slow], ["drain.yml"], lb_drain_wait=2)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Still pending after 2 s, going on: 1 client sessions in flight" in out
    # The deadline is 2 s on the node's clock: a few looks, not the 21 retries that
    # lb_drain_wait / lb_deploy_poll allows.
    assert calls[:2] == ["report", "maintenance-on"]
    assert 1 <= calls.count("report") - 1 <= 4, calls


def test_drain_deadline_stops_at_a_node_that_still_serves(tmp_path: Path) -> None:
    proc, _ = run(tmp_path, [UP, UP, UP], ["drain.yml"], lb_drain_wait=1)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert (
        f"lb1 still serves after 1 s in maintenance: {WEB} still announced "
        "(up: 3 consecutive good rounds)"
    ) in out


def test_undrain_fails_when_the_node_does_not_serve_what_it_served(tmp_path: Path) -> None:
    proc, _ = run(tmp_path, [WITHDRAWN, NOTHING], ["undrain.yml"], lb_return_wait=1)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert (
        f"lb1 does not serve what it served before ({WEB}) after 1 s: "
        f"{WEB} stays withdrawn, unhealthy: probe: timeout"
    ) in out


MAINTENANCE = ROOT / "playbooks" / "maintenance.yml"


def test_maintenance_playbook_reads_what_the_node_serves_from_its_helper(tmp_path: Path) -> None:
    # lb1's report (the probe, then serving.yml), lb2's, maintenance-on, drained.
    proc, calls = run(tmp_path, [UP, UP, UP, WITHDRAWN], MAINTENANCE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # It served, so the peer was asked and the drain waited.
    assert calls == ["report", "report", "maintenance-on", "report"]
    (tmp_path / "answers.log").unlink()
    proc, calls = run(tmp_path, [WITHDRAWN, WITHDRAWN, UP], MAINTENANCE, lb_maintenance="exit")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert calls == ["report", "maintenance-off", "report"]


def test_maintenance_playbook_drains_a_node_that_only_a_stale_state_says_serves(
    tmp_path: Path,
) -> None:
    # lb1's probe (stale), lb2's report, maintenance-on, then the stale file never drains.
    proc, calls = run(tmp_path, [STALE, UP, STALE], MAINTENANCE, lb_drain_wait=1)
    assert proc.returncode != 0, (proc.stdout + proc.stderr)[-3000:]
    assert calls[:3] == ["report", "report", "maintenance-on"]


def test_a_helper_without_verdicts_stops_the_play_before_any_change(tmp_path: Path) -> None:
    verdicts = ("serving", "serving_unconfirmed", "drain_pending", "return_pending", "unhealthy")
    older = {k: v for k, v in UP.items() if k not in verdicts}
    proc, calls = run(tmp_path, [older], MAINTENANCE)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "lb1: the node helper's report does not say what the node serves" in out
    assert "(the lbappliance installed there is older than this one)" in out
    assert calls == ["report"]


def probe(tmp_path: Path, options: dict) -> dict:
    """playbooks/vars/deploy.yml's node probe, run as the plan runs it (the node's python3)."""
    code = yaml.safe_load((ROOT / "playbooks" / "vars" / "deploy.yml").read_text())
    argv = ["python3", "-c", code["lb_deploy_node_probe"], str(tmp_path / "deployed.json")]
    argv += [str(tmp_path / "maintenance"), "{}", json.dumps(options)]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def test_the_probe_carries_the_helpers_report_once_it_is_installed(tmp_path: Path) -> None:
    script = tmp_path / "answers.json"
    script.write_text(json.dumps([UP]))
    config = tmp_path / "health-agent.json"
    helper = {"helper": [sys.executable, str(STUB), str(script)], "config": str(config)}
    assert probe(tmp_path, helper)["report"] is None  # never converged: no configuration
    config.write_text("{}")
    assert probe(tmp_path, helper)["report"]["serving"] == [WEB]
    script.write_text(json.dumps([{"exit": 2, "stderr": "No module named lbappliance"}]))
    assert probe(tmp_path, helper)["report"] == {
        "error": "the node helper failed (rc=2): No module named lbappliance"
    }
    assert "report" not in probe(tmp_path, {})
