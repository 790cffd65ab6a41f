"""The node-side verdicts on a node's report (lbappliance.health.drain): what
`maintenance`, `status` and the deploy playbooks read, driven with report fixtures."""

from __future__ import annotations

import copy

import pytest

from lbappliance.health.drain import (
    drain_pending,
    return_pending,
    serving,
    serving_unconfirmed,
    unhealthy,
    verdicts,
)
from tests.health.helpers import WEB, node_report

L4 = "198.51.100.20/32"


def with_vip(report: dict, prefix: str, **fields: object) -> dict:
    """``report`` with one more VIP: a copy of its WEB entry with ``fields``."""
    out = copy.deepcopy(report)
    out["agent"]["vips"][prefix] = {**out["agent"]["vips"][WEB], **fields}
    return out


def agent_stopped(report: dict, error: str | None = "no state file") -> dict:
    out = copy.deepcopy(report)
    out["agent"] = {**out["agent"], "running": False, "error": error}
    return out


@pytest.mark.parametrize(
    ("state", "serves"),
    [("up", True), ("degraded", True), ("draining", False), ("withdrawn", False),
     ("down", False), ("init", False)],
)  # fmt: skip
def test_serving_is_a_full_path_up_or_degraded(state: str, serves: bool) -> None:
    assert serving(node_report(state=state)) == ([WEB] if serves else [])


def test_serving_lists_each_vip_of_a_running_agent_only() -> None:
    both = with_vip(node_report(), L4, state="withdrawn", announced=None)
    assert serving(both) == [WEB]
    assert serving_unconfirmed(both) == []
    # A stale state file is no proof of serving: nobody counts on it, and it says why.
    stale = agent_stopped(both, error="stale state file: its agent (pid 42) is gone")
    assert serving(stale) == []
    assert serving_unconfirmed(stale) == [
        f"{WEB} (up in lb1's state file; health agent not running "
        "(stale state file: its agent (pid 42) is gone))"
    ]
    assert serving({"agent": {"running": False, "error": "no state file"}}) == []
    assert serving_unconfirmed({"agent": {"running": False, "error": "no state file"}}) == []


def test_drained_when_withdrawn_backup_and_no_session() -> None:
    assert drain_pending(node_report(announced=False, state="withdrawn")) == []


def test_drain_waits_for_the_graceful_shutdown_route_to_go() -> None:
    assert drain_pending(node_report(state="draining")) == [
        f"{WEB} still announced (draining: 3 consecutive good rounds)"
    ]


def test_drain_pending_agent_not_running() -> None:
    dead = agent_stopped(node_report(announced=False, state="withdrawn"))
    assert drain_pending(dead) == ["health agent not running (no state file)"]
    assert drain_pending(agent_stopped(dead, error=None)) == [
        "health agent not running (stale state)"
    ]


def test_drain_pending_vrrp_master() -> None:
    master = node_report(announced=False, state="withdrawn", vrrp="MASTER")
    assert drain_pending(master) == ["VRRP public still MASTER here (203.0.113.10)"]


def test_drain_pending_sessions_in_flight() -> None:
    busy = node_report(announced=False, state="withdrawn", sessions=7)
    assert drain_pending(busy) == ["7 client sessions in flight"]
    # No HAProxy answer: nothing is known in flight (the routes and VRRP still count).
    busy["haproxy"] = {"error": "HAProxy admin socket: connection refused", "sessions": 7}
    assert drain_pending(busy) == []


def test_drain_pending_lists_everything_in_order() -> None:
    report = agent_stopped(node_report(state="draining", vrrp="MASTER", sessions=2))
    assert drain_pending(report) == [
        "health agent not running (no state file)",
        f"{WEB} still announced (draining: 3 consecutive good rounds)",
        "VRRP public still MASTER here (203.0.113.10)",
        "2 client sessions in flight",
    ]


@pytest.mark.parametrize(
    ("state", "announced", "health"),
    [
        ("withdrawn", False, "ok"),  # the agent has not seen the maintenance end yet
        ("down", False, "ok"),  # counting its rise
        ("down", False, "degraded"),  # rising to DEGRADED
        ("draining", True, "ok"),  # GRACEFUL_SHUTDOWN kept until rise good rounds
        ("init", False, "fail"),  # just started: DOWN after `fall` rounds, not yet
        ("up", False, "ok"),  # decided, not acknowledged by ExaBGP yet
    ],
)
def test_return_waits_for_what_will_serve(state: str, announced: bool, health: str) -> None:
    report = node_report(state=state, announced=announced, health=health)
    assert return_pending(report) == [f"{WEB} not serving yet ({state}: 3 consecutive good rounds)"]
    assert unhealthy(report) == []


def test_returned_when_serving_or_down_for_a_health_reason() -> None:
    failing = {"probe": {"health": "fail", "reason": "probe: timeout"},
               "haproxy": {"health": "ok", "reason": "2/2 servers up"}}  # fmt: skip
    report = with_vip(
        node_report(), L4, state="down", announced=None, health="fail", signals=failing
    )
    assert return_pending(report) == []
    assert unhealthy(report) == [f"{L4} stays withdrawn, unhealthy: probe: timeout"]
    assert serving(report) == [WEB]


def test_return_pending_agent_not_running() -> None:
    dead = agent_stopped(node_report(announced=False, state="withdrawn"))
    assert return_pending(dead) == ["health agent not running (no state file)"]


def test_verdicts_are_what_the_node_helper_adds() -> None:
    report = node_report(state="draining", sessions=1)
    assert verdicts(report) == {
        "serving": [],
        "serving_unconfirmed": [],
        "drain_pending": [
            f"{WEB} still announced (draining: 3 consecutive good rounds)",
            "1 client sessions in flight",
        ],
        "return_pending": [f"{WEB} not serving yet (draining: 3 consecutive good rounds)"],
        "unhealthy": [],
    }
