"""The agent loop: observe, decide per VIP, tell ExaBGP, record.

No stale announcement survives the agent: ExaBGP keeps what a dead helper
announced and respawns it (``respawn`` is on by default), so the first thing
every agent does is withdraw every prefix it may own (its VIPs and whatever the
previous agent's state file lists as announced) before it announces anything.
An agent that cannot start (bad configuration, crash loop) never gets that far;
ExaBGP then gives up after more than 5 deaths within its 64 s respawn window and
exits, which closes the BGP sessions and removes the routes at the routers.
A hung agent is killed by its own watchdog, which withdraws on the way out.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbappliance.health.changes import Changes
from lbappliance.health.config import AgentConfig
from lbappliance.health.exabgp import ExabgpChannel, withdraw_line
from lbappliance.health.machine import Decision, Policy, State, VipMachine
from lbappliance.health.signals import Health, Observation, Verdict, evaluate
from lbappliance.jsonlog import Log, json_log

# Enum .name/.value are slow properties; the state file reads them for every VIP.
_STATE_TEXT = {s: s.value for s in State}
_HEALTH_TEXT = {h: h.name.lower() for h in Health}
_VIPS = "\x00vips\x00"  # where the state file's cached VIP entries go
AGENT = "lbappliance-health"  # the "agent" field of its log lines


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, sort_keys=True, separators=(",", ":")))


def write_text_atomic(path: str, text: str) -> None:
    """``text`` and a newline as the whole of ``path``, replaced at once."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(target)


def previously_announced(state_file: str) -> list[str]:
    """Prefixes the previous agent's state file records as announced."""
    try:
        data = json.loads(Path(state_file).read_text())
        return [p for p, v in data.get("vips", {}).items() if v.get("announced")]
    except (OSError, ValueError, AttributeError):
        return []


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        channel: ExabgpChannel,
        observe: Callable[[], Observation],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log: Log | None = None,
        state_interval: float = 1.0,
    ):
        self.cfg = cfg
        self.channel = channel
        self.observe = observe
        self.clock = clock
        self.wall = wall
        self.log = log or json_log(AGENT)
        self.state_interval = state_interval
        now = clock()
        policy = Policy.of(cfg)
        self.machines = {v.prefix: VipMachine(v, policy, now) for v in cfg.vips}
        self.verdicts: dict[str, Verdict] = {}
        self.changes = Changes(cfg.vips)
        self.observation = Observation()
        self.rounds = 0
        self.round_seconds = 0.0
        self.heartbeat = now
        self.started = wall()
        self._state_written = float("-inf")
        self._vip_json: dict[str, tuple[tuple[Any, ...], str]] = {}
        self._lock = threading.Lock()  # guards what snapshot() reads
        self.stop = threading.Event()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Withdraw everything this node may have announced before this agent existed."""
        prefixes = list(self.machines)
        prefixes += [p for p in previously_announced(self.cfg.state_file) if p not in prefixes]
        acks = {p: self.channel.send(withdraw_line(p)) for p in prefixes}
        for m in self.machines.values():
            m.forget()
        self.log(
            {
                "event": "start",
                "node": self.cfg.node,
                "pid": os.getpid(),
                "reason": "withdrawing every VIP until it passes its checks "
                f"({self.cfg.rise} good rounds)",
                "commands": [withdraw_line(p) for p in prefixes],
                "acks": sorted(set(acks.values())),
            }
        )
        self.write_state(force=True)
        # What exists now lives as long as the agent: the cyclic collector need not
        # rescan it (tens of thousands of objects at 10,000 VIPs) while rounds allocate.
        gc.freeze()

    def next_interval(self) -> float:
        changing = any(m.changing for m in self.machines.values())
        return self.cfg.fast_interval if changing else self.cfg.interval

    def run(self) -> None:
        """Rounds until ExaBGP goes away (stdin closed, ``shutdown``) or ``stop``."""
        self.start()
        while not (self.channel.closed.is_set() or self.stop.is_set()):
            began = self.clock()
            self.round()
            wait = self.next_interval() - (self.clock() - began)
            if wait > 0:
                self.channel.closed.wait(wait)
        self.log({"event": "exit", "node": self.cfg.node, "reason": self.exit_reason()})

    def exit_reason(self) -> str:
        if self.channel.closed.is_set():
            return "ExaBGP closed the API pipe (it is stopping or restarting)"
        return "stopped"

    # --- one round -------------------------------------------------------------------

    def round(self) -> list[Decision]:
        began = self.clock()
        obs = self.observe()
        now = self.clock()
        decisions = []
        # Only VIPs whose inputs changed are judged again (the verdict is a pure function).
        dirty = self.changes.dirty(self.observation, obs) if self.verdicts else None
        with self._lock:
            self.observation = obs
        for prefix, m in self.machines.items():
            if dirty is None or prefix in dirty or prefix not in self.verdicts:
                verdict = evaluate(self.cfg, m.vip, obs)
                with self._lock:
                    self.verdicts[prefix] = verdict
            else:
                verdict = self.verdicts[prefix]
            decision = m.observe(verdict, now)
            command = m.command()
            ack = None
            if command:
                ack = self.channel.send(command)
                if ack == "done":
                    m.confirm()
            if decision or command:
                self._log_decision(m, decision, command, ack)
            if decision:
                decisions.append(decision)
        self.rounds += 1
        self.round_seconds = self.clock() - began
        self.heartbeat = self.clock()
        self.write_state(force=bool(decisions))
        return decisions

    def _log_decision(
        self, m: VipMachine, d: Decision | None, command: str | None, ack: str | None
    ) -> None:
        record: dict[str, Any] = {"event": "decision" if d else "retry", "node": self.cfg.node}
        record["vip"] = m.vip.prefix
        if d:
            record.update({"from": d.old.value, "to": d.new.value, "reason": d.reason})
        else:
            record.update({"state": m.state.value, "reason": "previous command not acknowledged"})
        record["command"] = command
        if ack:
            record["ack"] = ack
        self.log(record)

    # --- state file and metrics ------------------------------------------------------

    def _vip(self, m: VipMachine, v: Verdict | None, since: float) -> dict[str, Any]:
        return {
            "state": _STATE_TEXT[m.state],
            "since": since,
            "reason": m.reason,
            "announced": m.announced.announce() if m.announced else None,
            "health": _HEALTH_TEXT[v.health] if v else None,
            "signals": {
                c.signal: {"health": _HEALTH_TEXT[c.health], "reason": c.reason}
                for c in (v.checks if v else ())
            },
            "maintenance": bool(v and v.maintenance),
            "transitions": {f"{a}->{b}": n for (a, b), n in m.transitions.items()},
            "penalty": round(m.penalty, 1),
            "suppressed": m.suppressed,
        }

    def snapshot(self, vips_text: bool = False) -> dict[str, Any]:
        """The state file's content. ``vips_text``: its "vips" as JSON text instead
        (sorted, compact), each VIP's from a cache kept while nothing it shows changed
        (its "since" then is as the snapshot that made the entry computed it)."""
        now, wall = self.clock(), self.wall()
        offset = round(wall - now, 3)
        with self._lock:
            obs = self.observation
            vips: dict[str, Any] = {}
            for prefix, m in self.machines.items():
                v = self.verdicts.get(prefix)
                if not vips_text:
                    vips[prefix] = self._vip(m, v, round(wall - (now - m.since), 3))
                    continue
                # Everything _vip reads (a transition always moves m.since).
                key = (v, m.state, m.since, offset, m.reason, m.announced, m.penalty, m.suppressed)
                cached = self._vip_json.get(prefix)
                if cached is None or cached[0] != key:
                    entry = self._vip(m, v, round(wall - (now - m.since), 3))
                    text = json.dumps(entry, sort_keys=True, separators=(",", ":"))
                    cached = self._vip_json[prefix] = (key, f"{json.dumps(prefix)}:{text}")
                vips[prefix] = cached[1]
            haproxy: dict[str, Any]
            if obs.haproxy:
                haproxy = {
                    "frontends": {
                        fe: {"status": st, "sessions": obs.haproxy.sessions.get(fe, 0)}
                        for fe, st in obs.haproxy.frontends.items()
                    },
                    "backends": {
                        be: {"up": s.up, "total": s.total} for be, s in obs.haproxy.backends.items()
                    },
                }
            else:
                haproxy = {"error": obs.haproxy_error}
        return {
            "node": self.cfg.node,
            "site": self.cfg.site,
            "pid": os.getpid(),
            "exabgp_pid": os.getppid(),
            "started": round(self.started, 3),
            "updated": round(wall, 3),
            "interval": self.next_interval(),
            "maintenance": {"on": obs.maintenance, "reason": obs.maintenance_reason},
            "neighbors": {
                a: {
                    "state": n.state,
                    "reason": n.reason,
                    "since": round(wall - (now - n.since), 3),
                }
                for a, n in sorted(self.channel.neighbors.items())
            },
            "vips": vips,
            "haproxy": haproxy,
            "commands": dict(self.channel.counts),
            "rounds": self.rounds,
            "round_seconds": self.round_seconds,
        }

    def write_state(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._state_written < self.state_interval:
            return
        self._state_written = now
        try:
            data = self.snapshot(vips_text=True)
            vips = data["vips"]
            data["vips"] = _VIPS
            text = json.dumps(data, sort_keys=True, separators=(",", ":"))
            body = "{" + ",".join(vips[p] for p in sorted(vips)) + "}"
            write_text_atomic(self.cfg.state_file, text.replace(json.dumps(_VIPS), body, 1))
        except OSError as exc:
            self.log({"event": "warning", "reason": f"cannot write state file: {exc}"})

    # --- last resorts ----------------------------------------------------------------

    def emergency_withdraw(self, reason: str) -> None:
        """Withdraw everything without waiting for acks (watchdog, SIGTERM)."""
        prefixes = list(self.machines)
        self.log({"event": "emergency-withdraw", "node": self.cfg.node, "reason": reason})
        self.channel.write_unacked([withdraw_line(p) for p in prefixes])


class Watchdog(threading.Thread):
    """Withdraws and exits the process when the loop stops making rounds.

    ExaBGP then respawns a fresh agent (which starts withdrawn) or, if that keeps
    failing, exits and takes the sessions down with it.
    """

    def __init__(self, agent: Agent, limit: float, exit: Callable[[int], None] = os._exit):
        super().__init__(name="watchdog", daemon=True)
        self.agent = agent
        self.limit = limit
        self._exit = exit

    def run(self) -> None:
        while not self.agent.stop.wait(self.limit / 4):
            stalled = time.monotonic() - self.agent.heartbeat
            if stalled > self.limit:
                self.agent.emergency_withdraw(
                    f"no completed round for {stalled:.1f} s (limit {self.limit:.1f} s); "
                    "withdrawing and exiting so ExaBGP restarts the agent"
                )
                self._exit(70)
                return
