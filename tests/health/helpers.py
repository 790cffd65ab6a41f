"""Fakes for the agent's unit tests: a clock, an acknowledging ExaBGP, signals, node reports."""

from __future__ import annotations

import copy
import io
from typing import Any

from lbappliance.health.agent import Agent
from lbappliance.health.config import AgentConfig, Probe, parse
from lbappliance.health.drain import verdicts
from lbappliance.health.exabgp import ExabgpChannel
from lbappliance.health.signals import (
    HaproxyView,
    LinkView,
    NetworkView,
    Observation,
    ProbeResult,
    RouteView,
    Servers,
)

WEB = "198.51.100.10/32"
L4 = "198.51.100.20/32"
WEB_PROBE = Probe("http", "198.51.100.10", 80, "/health")
L4_TARGETS = (Probe("tcp", "10.30.0.21", 8080), Probe("tcp", "10.30.0.22", 8080))

CONFIG: dict[str, Any] = {
    "node": "lb1",
    "site": "lab",
    "local_asn": 65100,
    "interval": 0.5,
    "fast_interval": 0.2,
    "timeout": 0.15,
    "rise": 3,
    "fall": 3,
    "degraded": {"action": "med", "med": 100, "prepend": 3},
    "maintenance_file": "/nonexistent/maintenance",
    "maintenance_drain": 30.0,
    "haproxy_socket": "/nonexistent/admin.sock",
    "state_file": "/nonexistent/state.json",
    "metrics": {"address": "127.0.0.1", "port": 0},
    "return_path": {
        "uplinks": [{"name": "eth1", "addresses": ["10.10.0.11/24", "2001:db8:10::11/64"]}],
        "all_uplinks": ["eth1"],
        "destinations": ["0.0.0.0/0", "::/0"],
    },
    "vips": [
        {
            "prefix": WEB,
            "communities": ["65100:10"],
            "signals": ["haproxy", "probe", "return_path", "maintenance"],
            "haproxy": {
                "frontends": ["web"],
                "backends": ["web"],
                "min_servers_up": 1,
                "min_servers_ratio": 0.5,
            },
            "probes": [{"kind": "http", "address": "198.51.100.10", "port": 80, "path": "/health"}],
        },
        {
            "prefix": L4,
            "communities": ["65100:20"],
            "signals": ["dataplane", "probe", "maintenance"],
            "dataplane": {"xdp_interface": "eth1", "ipvs_services": []},
            "pools": [
                {
                    "name": "echo",
                    "min_up": 1,
                    "min_ratio": 0.5,
                    "targets": [
                        {"kind": "tcp", "address": "10.30.0.21", "port": 8080},
                        {"kind": "tcp", "address": "10.30.0.22", "port": 8080},
                    ],
                }
            ],
        },
    ],
}


def config(tmp_path: Any = None, **overrides: Any) -> AgentConfig:
    data = copy.deepcopy(CONFIG)
    if tmp_path is not None:
        data["state_file"] = str(tmp_path / "state.json")
        data["maintenance_file"] = str(tmp_path / "maintenance")
    for key, value in overrides.items():
        data[key] = value
    return parse(data)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class AckingOut(io.StringIO):
    """ExaBGP's side of the pipe: records every line and acknowledges it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.channel: ExabgpChannel | None = None
        self.answers: list[str] = []  # queued answers; "done" when empty

    def write(self, s: str) -> int:
        for line in s.splitlines():
            self.lines.append(line)
            assert self.channel is not None
            self.channel.handle(self.answers.pop(0) if self.answers else "done")
        return len(s)


def healthy_network() -> NetworkView:
    """lb1 as deployed: eth1 up with its addresses, both default routes through it."""
    return NetworkView(
        links={
            "eth0": LinkView(True, frozenset({"10.99.0.11/24"})),
            "eth1": LinkView(True, frozenset({"10.10.0.11/24", "2001:db8:10::11/64"})),
        },
        routes=(
            RouteView("0.0.0.0/0", 100, ("eth1",)),
            RouteView("10.10.0.0/24", 0, ("eth1",)),
            RouteView("10.99.0.0/24", 0, ("eth0",)),
            RouteView("::/0", 100, ("eth1",)),
        ),
    )


class Signals:
    """A mutable world the fake sensors report on."""

    def __init__(self) -> None:
        self.web_up = 2
        self.web_total = 2
        self.frontend = "OPEN"
        self.haproxy_error = ""
        self.web_probe = True
        self.xdp = True
        self.l4_up = 2
        self.maintenance = False
        self.network = healthy_network()

    def observe(self) -> Observation:
        obs = Observation()
        if self.haproxy_error:
            obs.haproxy_error = self.haproxy_error
        else:
            obs.haproxy = HaproxyView(
                {"web": self.frontend}, {"web": 0}, {"web": Servers(self.web_up, self.web_total)}
            )
        obs.probes[WEB_PROBE] = (
            ProbeResult(True, "200 in 2 ms") if self.web_probe else ProbeResult(False, "timeout")
        )
        for i, target in enumerate(L4_TARGETS):
            ok = i < self.l4_up
            obs.probes[target] = ProbeResult(ok, "connected" if ok else "connection refused")
        obs.xdp["eth1"] = "xdpgeneric id 7" if self.xdp else None
        obs.maintenance = self.maintenance
        obs.network, obs.network_error = self.network, ""
        obs.maintenance_reason = "maintenance file present" if self.maintenance else ""
        return obs


class Harness:
    """An agent wired to fakes; ``lines()`` returns what it wrote since the last call."""

    def __init__(self, tmp_path: Any, **overrides: Any):
        self.clock = Clock()
        self.signals = Signals()
        self.out = AckingOut()
        self.channel = ExabgpChannel(self.out, io.StringIO(), self.clock, ack_timeout=0.01)
        self.out.channel = self.channel
        self.logs: list[dict[str, Any]] = []
        self.cfg = config(tmp_path, **overrides)
        self.agent = Agent(
            self.cfg,
            self.channel,
            self.signals.observe,
            clock=self.clock,
            wall=lambda: 1.8e9 + self.clock(),
            log=self.logs.append,
        )
        self._seen = 0

    def lines(self) -> list[str]:
        new = self.out.lines[self._seen :]
        self._seen = len(self.out.lines)
        return new

    def rounds(self, n: int, dt: float = 0.5) -> list[str]:
        """Run ``n`` rounds, ``dt`` seconds apart; return the lines written."""
        for _ in range(n):
            self.clock.advance(dt)
            self.agent.round()
        return self.lines()

    def state(self, prefix: str = WEB) -> str:
        return self.agent.machines[prefix].state.value

    def up(self) -> None:
        """Start and reach UP on both VIPs."""
        self.agent.start()
        self.lines()
        self.rounds(3)


def node_report(
    announced: bool = True,
    state: str = "up",
    health: str = "ok",
    vrrp: str = "BACKUP",
    sessions: int = 0,
    stale: str | None = None,
    node: str = "lb1",
) -> dict:
    """A node helper's report: these fields, and its verdicts on them. ``stale``: the
    agent's state file is stale, for this reason (its VIPs as it left them)."""
    raw = {
        "node": node,
        "time": 1000.0,
        "maintenance": {"file": False, "note": "", "inventory": False},
        "agent": {
            "running": True,
            "pid": 42,
            "age": 0.3,
            "neighbors": {"10.10.0.1": {"state": "up", "reason": "", "since": 900.0}},
            "vips": {
                WEB: {
                    "state": state,
                    "announced": "announce route ..." if announced else None,
                    "reason": "3 consecutive good rounds",
                    "health": health,
                    "since": 990.0,
                    "signals": {"probe": {"health": health, "reason": "probe: timeout"}},
                }
            },
        },
        "haproxy": {
            "frontends": {"web": {"status": "OPEN", "sessions": sessions}},
            "backends": {"web": {"up": 2, "total": 2, "servers": []}},
            "sessions": sessions,
            "streams": sessions,
        },
        "vrrp": [{"name": "public", "state": vrrp, "vips": ["203.0.113.10"], "demoted": False}],
    }
    if stale is not None:
        raw["agent"] = {**raw["agent"], "running": False, "error": stale}
    return {**raw, **verdicts(raw)}
