"""The exact ExaBGP API lines the agent writes, per state transition.

Fake signals and a fake clock drive the real agent loop (``Agent.round``);
``AckingOut`` plays ExaBGP and acknowledges every line with ``done``.
"""

from __future__ import annotations

import json
import random

from tests.health.helpers import L4, WEB, Harness

ANNOUNCE_WEB = "announce route 198.51.100.10/32 next-hop self community [65100:10]"
ANNOUNCE_L4 = "announce route 198.51.100.20/32 next-hop self community [65100:20]"
WITHDRAW_WEB = "withdraw route 198.51.100.10/32 next-hop self"
WITHDRAW_L4 = "withdraw route 198.51.100.20/32 next-hop self"


def test_start_withdraws_everything_then_announces_after_rise(tmp_path):
    h = Harness(tmp_path)
    h.agent.start()
    assert h.lines() == [WITHDRAW_WEB, WITHDRAW_L4]
    assert h.rounds(2) == []
    assert h.state() == "init"
    assert h.rounds(1) == [ANNOUNCE_WEB, ANNOUNCE_L4]
    assert h.state() == "up" and h.state(L4) == "up"


def test_start_also_withdraws_what_the_previous_agent_announced(tmp_path):
    (tmp_path / "state.json").write_text(
        json.dumps({"vips": {"198.51.100.99/32": {"announced": "announce route ..."}}})
    )
    h = Harness(tmp_path)
    h.agent.start()
    assert h.lines() == [
        WITHDRAW_WEB,
        WITHDRAW_L4,
        "withdraw route 198.51.100.99/32 next-hop self",
    ]


def test_down_after_fall_bad_rounds_and_back_after_rise(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.web_up = 0  # every backend of the VIP is down
    assert h.rounds(2, dt=0.2) == []
    assert h.rounds(1, dt=0.2) == [WITHDRAW_WEB]
    assert h.state() == "down" and h.state(L4) == "up"
    h.signals.web_up = 2
    assert h.rounds(2, dt=0.2) == []
    assert h.rounds(1, dt=0.2) == [ANNOUNCE_WEB]
    decision = next(r for r in h.logs if r.get("to") == "down")
    assert decision["command"] == WITHDRAW_WEB and decision["ack"] == "done"
    assert decision["reason"] == (
        "3 consecutive bad rounds: haproxy: backend web: 0/2 servers UP (need 1)"
    )


def test_isolated_failures_never_move_the_route(tmp_path):
    h = Harness(tmp_path)
    h.up()
    for _ in range(50):
        h.signals.web_probe = False
        assert h.rounds(2, dt=0.2) == []  # fall - 1 failures in a row
        h.signals.web_probe = True
        assert h.rounds(1) == []
    assert h.state() == "up"


def test_one_percent_probe_loss_moves_nothing(tmp_path):
    rng = random.Random(4)
    h = Harness(tmp_path)
    h.agent.state_interval = float("inf")  # no state file writes: only the decisions matter
    h.up()
    for _ in range(5000):  # ~42 min of rounds at the default interval
        h.signals.web_probe = rng.random() >= 0.01
        h.clock.advance(h.agent.next_interval())
        h.agent.round()
    assert h.lines() == []
    assert h.agent.machines[WEB].transitions == {("init", "up"): 1}


def test_degraded_announces_with_med(tmp_path):
    h = Harness(tmp_path)
    h.signals.web_total = 3
    h.up()
    h.signals.web_up = 1  # 1/3 UP: above the minimum, below the 50 % ratio
    assert h.rounds(2) == []
    assert h.rounds(1) == [
        "announce route 198.51.100.10/32 next-hop self med 100 community [65100:10]"
    ]
    assert h.state() == "degraded"
    h.signals.web_up = 3
    assert h.rounds(3) == [ANNOUNCE_WEB]
    assert h.state() == "up"


def test_degraded_announces_with_as_path_prepend(tmp_path):
    h = Harness(tmp_path, degraded={"action": "prepend", "med": 100, "prepend": 3})
    h.signals.web_total = 4
    h.up()
    h.signals.web_up = 1
    assert h.rounds(3) == [
        "announce route 198.51.100.10/32 next-hop self as-path [65100 65100 65100 65100] "
        "community [65100:10]"
    ]


def test_degraded_action_none_changes_no_route(tmp_path):
    h = Harness(tmp_path, degraded={"action": "none"})
    h.signals.web_total = 4
    h.up()
    h.signals.web_up = 1
    assert h.rounds(3) == []
    assert h.state() == "degraded"


def test_starting_degraded_announces_degraded(tmp_path):
    h = Harness(tmp_path)
    h.signals.web_total = 3
    h.signals.web_up = 1
    h.agent.start()
    h.lines()
    assert h.rounds(3) == [
        "announce route 198.51.100.10/32 next-hop self med 100 community [65100:10]",
        ANNOUNCE_L4,
    ]


def test_maintenance_drains_with_graceful_shutdown_then_withdraws(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.maintenance = True
    assert h.rounds(1) == [
        "announce route 198.51.100.10/32 next-hop self community [65100:10 65535:0]",
        "announce route 198.51.100.20/32 next-hop self community [65100:20 65535:0]",
    ]
    assert h.state() == "draining"
    assert h.rounds(59) == []  # 29.5 s of the 30 s drain
    assert h.rounds(1) == [WITHDRAW_WEB, WITHDRAW_L4]
    assert h.state() == "withdrawn"
    assert h.rounds(10) == []
    # Leaving maintenance: re-announced only after `rise` good rounds.
    h.signals.maintenance = False
    assert h.rounds(1) == []
    assert h.state() == "down"
    assert h.rounds(2, dt=0.2) == [ANNOUNCE_WEB, ANNOUNCE_L4]


def test_maintenance_keeps_degraded_attributes_while_draining(tmp_path):
    h = Harness(tmp_path)
    h.signals.web_total = 3
    h.up()
    h.signals.web_up = 1
    h.rounds(3)
    h.signals.maintenance = True
    assert h.rounds(1)[0] == (
        "announce route 198.51.100.10/32 next-hop self med 100 community [65100:10 65535:0]"
    )


def test_failure_during_drain_withdraws_at_once(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.maintenance = True
    h.rounds(1)
    h.signals.web_probe = False
    assert h.rounds(3) == [WITHDRAW_WEB]
    assert h.state() == "withdrawn" and h.state(L4) == "draining"


def test_maintenance_ended_during_drain_drops_the_community_after_rise(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.maintenance = True
    h.rounds(1)
    h.signals.maintenance = False
    assert h.rounds(2) == []
    assert h.state() == "draining"
    assert h.rounds(1) == [ANNOUNCE_WEB, ANNOUNCE_L4]
    assert h.state() == "up"


def test_maintenance_at_start_never_announces(tmp_path):
    (tmp_path / "maintenance").write_text("")
    h = Harness(tmp_path)
    h.signals.maintenance = True
    h.agent.start()
    h.lines()
    assert h.rounds(10) == []
    assert h.state() == "withdrawn"


def test_inventory_maintenance_flag_is_maintenance(tmp_path):
    h = Harness(tmp_path, maintenance=True)
    h.agent.start()
    h.lines()
    assert h.rounds(10) == []
    assert h.state() == "withdrawn"
    assert "inventory" in h.agent.machines[WEB].reason


def test_l4_vip_follows_the_dataplane(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.xdp = False  # the XDP program was detached
    assert h.rounds(3, dt=0.2) == [WITHDRAW_L4]
    assert "no XDP program attached to eth1" in h.agent.machines[L4].reason
    h.signals.xdp = True
    h.signals.l4_up = 1  # one backend of two: 50 %, not below the ratio
    assert h.rounds(3, dt=0.2) == [ANNOUNCE_L4]
    h.signals.l4_up = 0
    assert h.rounds(3, dt=0.2) == [WITHDRAW_L4]


def test_haproxy_dead_withdraws(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.haproxy_error = "admin socket /run/haproxy/admin.sock refuses connections"
    h.signals.web_probe = False
    assert h.rounds(3, dt=0.2) == [WITHDRAW_WEB]


def test_flapping_is_dampened(tmp_path):
    h = Harness(tmp_path)
    h.up()
    for _ in range(3):  # three falls in a few seconds: penalty above `suppress`
        h.signals.web_up = 0
        assert h.rounds(3, dt=0.2) == [WITHDRAW_WEB]
        h.signals.web_up = 2
        h.rounds(3, dt=0.2)
    m = h.agent.machines[WEB]
    assert m.suppressed and h.state() == "down"
    assert h.rounds(20) == []  # healthy, but held withdrawn
    blocked = [r for r in h.logs if "dampened" in r.get("reason", "")]
    assert len(blocked) == 1  # logged once, not every round
    h.clock.advance(60)  # two half-lives: the penalty decays below `reuse`
    assert h.rounds(1) == [ANNOUNCE_WEB]
    assert not m.suppressed


def test_unacknowledged_command_is_retried(tmp_path):
    h = Harness(tmp_path)
    h.agent.start()
    h.lines()
    h.rounds(2)
    h.out.answers = ["error"]
    assert h.rounds(1) == [ANNOUNCE_WEB, ANNOUNCE_L4]
    assert h.agent.machines[WEB].announced is None
    assert h.rounds(1) == [ANNOUNCE_WEB]  # the failed one again, nothing else
    retry = [r for r in h.logs if r["event"] == "retry"]
    assert retry and retry[0]["command"] == ANNOUNCE_WEB


def test_fast_interval_while_changing(tmp_path):
    h = Harness(tmp_path)
    h.agent.start()
    assert h.agent.next_interval() == 0.2  # INIT counts its rise
    h.rounds(3)
    assert h.agent.next_interval() == 0.5
    h.signals.web_probe = False
    h.rounds(1)
    assert h.agent.next_interval() == 0.2
    h.rounds(2)
    assert h.state() == "down" and h.agent.next_interval() == 0.5


def test_one_log_line_per_decision_with_reason(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.maintenance = True
    h.rounds(1)
    decisions = [r for r in h.logs if r["event"] == "decision"]
    assert [(d["vip"], d["from"], d["to"]) for d in decisions] == [
        (WEB, "init", "up"),
        (L4, "init", "up"),
        (WEB, "up", "draining"),
        (L4, "up", "draining"),
    ]
    assert all(d["reason"] and d["command"] for d in decisions)
    assert "GRACEFUL_SHUTDOWN 65535:0 for 30 s" in decisions[2]["reason"]


def test_state_file_records_states_and_reasons(tmp_path):
    h = Harness(tmp_path)
    h.up()
    h.signals.web_up = 0
    h.rounds(3, dt=0.2)
    state = json.loads((tmp_path / "state.json").read_text())
    web = state["vips"][WEB]
    assert web["state"] == "down" and web["announced"] is None
    assert "0/2 servers UP" in web["reason"]
    assert web["transitions"] == {"init->up": 1, "up->down": 1}
    assert state["vips"][L4]["announced"] == ANNOUNCE_L4
    assert state["haproxy"]["backends"] == {"web": {"up": 0, "total": 2}}
