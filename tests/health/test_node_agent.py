"""The agent part of the node report: a state file counts as a running agent only
while its writer lives and keeps it fresh, and a stale one serves nothing."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from lbappliance.health.config import AgentConfig, load
from lbappliance.health.drain import serving, serving_unconfirmed
from lbappliance.health.node import agent_report
from lbappliance.status import format_node
from tests.conftest import ROOT

GOLDEN = ROOT / "tests/render/golden/lab/hosts/lb1/etc/lbappliance/health-agent.json"
WEB = "198.51.100.10/32"
NOW = 10_000.0


@pytest.fixture
def cfg(tmp_path: Path) -> AgentConfig:
    return replace(load(str(GOLDEN)), state_file=str(tmp_path / "state.json"))


def write_state(cfg: AgentConfig, pid: int, age: float, interval: float = 0.5) -> None:
    state = {
        "pid": pid,
        "updated": NOW - age,
        "interval": interval,
        "vips": {WEB: {"state": "up", "announced": "announce route ...", "reason": "ok"}},
    }
    Path(cfg.state_file).write_text(json.dumps(state))


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_fresh_state_of_a_live_agent_serves(cfg: AgentConfig) -> None:
    write_state(cfg, os.getpid(), age=1.0)
    agent = agent_report(cfg, now=lambda: NOW)
    assert agent["running"] is True and "error" not in agent
    assert serving({"agent": agent}) == [WEB]
    assert serving_unconfirmed({"agent": agent}) == []


def test_a_state_not_written_for_a_few_rounds_serves_nothing(cfg: AgentConfig) -> None:
    write_state(cfg, os.getpid(), age=10.0)
    report = {"agent": agent_report(cfg, now=lambda: NOW), "haproxy": {"error": "none here"}}
    assert report["agent"]["running"] is False
    assert report["agent"]["error"] == "stale state file: last written 10 s ago, over 5 s"
    assert serving(report) == []
    assert serving_unconfirmed(report) == [
        f"{WEB} (up in this node's state file; health agent not running "
        "(stale state file: last written 10 s ago, over 5 s))"
    ]
    # What people read in `lbappliance status`.
    assert (
        "agent NOT RUNNING (stale state file: last written 10 s ago"
        in format_node("lb1", report)[0]
    )


def test_staleness_counts_in_the_agents_own_rounds(cfg: AgentConfig) -> None:
    """A slow interval (4 s) allows three of its rounds (12 s) before the file is stale."""
    write_state(cfg, os.getpid(), age=10.0, interval=4.0)
    assert agent_report(cfg, now=lambda: NOW)["running"] is True
    write_state(cfg, os.getpid(), age=13.0, interval=4.0)
    assert agent_report(cfg, now=lambda: NOW)["running"] is False


def test_a_fresh_state_whose_agent_is_gone_serves_nothing(cfg: AgentConfig) -> None:
    pid = gone_pid()
    write_state(cfg, pid, age=0.5)
    report = {"agent": agent_report(cfg, now=lambda: NOW)}
    assert report["agent"]["error"] == f"stale state file: its agent (pid {pid}) is gone"
    assert serving(report) == []
    assert serving_unconfirmed(report)[0].startswith(f"{WEB} (up in this node's state file;")
