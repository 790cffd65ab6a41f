"""Probes in rotation when a node has more than a round can run (``sensors.ProbeRotation``).

The real agent loop (``Agent.round``) with its real state machines, fed by a rotation
of 40 probes at 10 a round over fake probe results: what runs each round, how soon a
failing backend withdraws its VIP, and that a lone failure still moves nothing.
"""

from __future__ import annotations

import io
from typing import Any

from lbappliance.health.agent import Agent
from lbappliance.health.config import Probe
from lbappliance.health.exabgp import ExabgpChannel
from lbappliance.health.sensors import ProbeRotation
from lbappliance.health.signals import Observation, ProbeResult
from tests.health.helpers import AckingOut, Clock, config

PROBES = [Probe("tcp", f"10.30.{i // 200}.{i % 200 + 1}", 8080) for i in range(40)]
OK, BAD = ProbeResult(True, "connected in 1 ms"), ProbeResult(False, "connection refused")


def _vip(i: int) -> dict[str, Any]:
    return {
        "prefix": f"198.51.100.{i + 1}/32",
        "communities": ["65100:20"],
        "signals": ["probe"],
        "pools": [
            {
                "name": f"svc{i}",
                "min_up": 1,
                "targets": [{"kind": "tcp", "address": PROBES[i].address, "port": 8080}],
            }
        ],
    }


class Node:
    """The agent over a rotation; ``failing`` are the backends that refuse."""

    def __init__(self, tmp_path, per_round: int = 10):
        self.cfg = config(tmp_path, vips=[_vip(i) for i in range(len(PROBES))])
        self.rotation = ProbeRotation(PROBES, max(self.cfg.rise, self.cfg.fall), per_round)
        self.failing: set[Probe] = set()
        self.fail_once: set[Probe] = set()  # fail the next time they run, then answer
        self.ran: list[list[Probe]] = []
        self.clock = Clock()
        self.out = AckingOut()
        channel = ExabgpChannel(self.out, io.StringIO(), self.clock, ack_timeout=0.01)
        self.out.channel = channel
        self.agent = Agent(
            self.cfg, channel, self.observe, clock=self.clock, wall=self.clock, log=lambda r: None
        )
        self.agent.start()

    def observe(self) -> Observation:
        due = self.rotation.due()
        self.ran.append(due)
        obs = Observation()
        bad = self.failing | (self.fail_once & set(due))
        self.fail_once -= bad
        obs.probes = self.rotation.results({p: BAD if p in bad else OK for p in due})
        return obs

    def round(self) -> list[str]:
        seen = len(self.out.lines)
        self.clock.advance(self.agent.next_interval())
        self.agent.round()
        return self.out.lines[seen:]

    def announced(self) -> int:
        return sum(m.announced is not None for m in self.agent.machines.values())


def test_few_probes_all_run_every_round() -> None:
    rotation = ProbeRotation(PROBES, 3, per_round=40)
    assert rotation.due() == PROBES and rotation.rotation_rounds == 1
    fresh = {p: OK for p in PROBES}
    assert rotation.results(fresh) is fresh  # nothing kept, nothing merged


def test_rotation_runs_each_probe_in_turn_within_the_budget(tmp_path) -> None:
    node = Node(tmp_path)
    assert node.rotation.rotation_rounds == 4
    rounds = 0
    while node.announced() < len(PROBES):  # every VIP rises on fresh results
        node.round()
        rounds += 1
        assert rounds < 40
    steady = len(node.ran)
    for _ in range(8):
        node.round()
    for due in node.ran[steady:]:
        assert len(due) <= 10  # nothing failing: the budget holds
    last_run = {p: i for i, due in enumerate(node.ran) for p in due}
    assert all(len(node.ran) - last_run[p] <= 4 for p in PROBES)  # each within a rotation


def test_failing_backend_withdraws_within_a_rotation_and_fall_rounds(tmp_path) -> None:
    node = Node(tmp_path)
    while node.announced() < len(PROBES):
        node.round()
    for _ in range(5):  # somewhere in the rotation
        node.round()
    victim = PROBES[17]
    node.failing.add(victim)
    lines: list[str] = []
    rounds = 0
    while "withdraw route 198.51.100.18/32 next-hop self" not in lines:
        lines += node.round()
        rounds += 1
        assert rounds <= node.rotation.rotation_rounds + node.cfg.fall, lines
    # Seen when its turn came, then run every round: each bad round was a fresh failure.
    recent = node.ran[-rounds:]
    first_bad = next(i for i, due in enumerate(recent) if victim in due)
    assert all(victim in due for due in recent[first_bad:])
    assert lines == ["withdraw route 198.51.100.18/32 next-hop self"]
    node.failing.clear()  # back: announced after rise fresh good rounds, nothing else moved
    lines = []
    for _ in range(node.rotation.rotation_rounds + node.cfg.rise + 2):
        lines += node.round()
    assert lines == ["announce route 198.51.100.18/32 next-hop self community [65100:20]"]


def test_a_lone_failure_in_rotation_moves_nothing(tmp_path) -> None:
    node = Node(tmp_path)
    while node.announced() < len(PROBES):
        node.round()
    node.fail_once = {PROBES[3], PROBES[30]}
    lines: list[str] = []
    for _ in range(3 * node.rotation.rotation_rounds):
        lines += node.round()
    assert not node.fail_once  # both ran and failed once
    assert lines == []  # the next round ran them again, fresh, and they answered
    assert node.announced() == len(PROBES)
