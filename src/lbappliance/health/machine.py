"""The per-VIP state machine: verdicts in, announce/withdraw decisions out.

States and the route each one wants at the routers:

    INIT       just started; withdrawn until ``rise`` good rounds (or ``fall`` bad: DOWN)
    UP         healthy; announced with the VIP's communities
    DEGRADED   serving but below policy; announced with a worse MED or an AS-path prepend
    DOWN       unhealthy (or dampened after flapping); withdrawn
    DRAINING   maintenance: announced with GRACEFUL_SHUTDOWN (65535:0) for the drain time
    WITHDRAWN  maintenance, drained; withdrawn until maintenance ends and ``rise`` good rounds

Hysteresis: leaving a state needs ``fall`` consecutive bad rounds or ``rise``
consecutive good ones, so an isolated failed probe never moves the route.
Flap dampening (RFC 2439 style) keeps a VIP that keeps falling withdrawn until
its penalty decays. Time is passed in (``now``), never read here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from lbappliance.health.config import AgentConfig, Dampening, Degraded, VipConfig
from lbappliance.health.exabgp import GRACEFUL_SHUTDOWN, Route, withdraw_line
from lbappliance.health.signals import Health, Verdict


class State(StrEnum):
    INIT = "init"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    DRAINING = "draining"
    WITHDRAWN = "withdrawn"


ANNOUNCED = (State.UP, State.DEGRADED, State.DRAINING)
# Announced as a full path (DRAINING is announced too, but with GRACEFUL_SHUTDOWN:
# routers use it only when nothing else is left). A node serves while a VIP is in
# one of these (health/drain.py `serving`, which the node helper reports to
# `lbappliance maintenance` and the deploy playbooks): the last serving node is not
# taken out of service.
SERVING = (State.UP, State.DEGRADED)


@dataclass(frozen=True)
class Policy:
    rise: int
    fall: int
    drain: float
    local_asn: int
    degraded: Degraded
    dampening: Dampening

    @classmethod
    def of(cls, cfg: AgentConfig) -> Policy:
        return cls(
            cfg.rise, cfg.fall, cfg.maintenance_drain, cfg.local_asn, cfg.degraded, cfg.dampening
        )


@dataclass(frozen=True)
class Decision:
    """A state change (or a blocked one), with its reason and the route it wants."""

    prefix: str
    old: State
    new: State
    reason: str
    route: Route | None  # what should be announced now (None: withdrawn)


class VipMachine:
    def __init__(self, vip: VipConfig, policy: Policy, now: float):
        self.vip = vip
        self.policy = policy
        self.base = Route(vip.prefix, vip.communities)
        self.state = State.INIT
        self.since = now
        self.reason = f"starting: withdrawn until {policy.rise} good rounds"
        self.announced: Route | None = None  # what ExaBGP acknowledged last
        self.ok = self.good = self.notok = self.fail = 0
        self.health: Health | None = None
        self.penalty = 0.0
        self._penalty_at = now
        self.suppressed = False
        self._suppress_logged = False
        self._drain_started = 0.0
        self._drain_route: Route | None = None
        self._maintenance_on = False
        self.transitions: Counter[tuple[str, str]] = Counter()

    # --- the route each state wants ------------------------------------------------

    def _degraded_route(self) -> Route:
        d = self.policy.degraded
        if d.action == "med":
            return Route(self.base.prefix, self.base.communities, med=d.med)
        if d.action == "prepend":
            path = (self.policy.local_asn,) * (1 + d.prepend)
            return Route(self.base.prefix, self.base.communities, as_path=path)
        return self.base

    def desired(self) -> Route | None:
        if self.state is State.UP:
            return self.base
        if self.state is State.DEGRADED:
            return self._degraded_route()
        if self.state is State.DRAINING:
            return self._drain_route
        return None

    def command(self) -> str | None:
        """The API line that brings ExaBGP to the desired route, if it is not there yet."""
        want = self.desired()
        if want == self.announced:
            return None
        return want.announce() if want else withdraw_line(self.vip.prefix)

    def confirm(self) -> None:
        """ExaBGP acknowledged ``command()``."""
        self.announced = self.desired()

    def forget(self) -> None:
        """Nothing is known to be announced (agent start: everything was withdrawn)."""
        self.announced = None

    @property
    def changing(self) -> bool:
        """A transition is being counted: probe at the fast interval."""
        if self.state is State.INIT:
            return True
        if self.state is State.DRAINING:
            return not self._maintenance_on  # counting the rise after maintenance
        expected = {
            State.UP: Health.OK,
            State.DEGRADED: Health.DEGRADED,
            State.DOWN: Health.FAIL,
        }.get(self.state)
        if expected is None or self.health is None:
            return False
        if self.state is State.DOWN and self.suppressed:
            return False
        return self.health is not expected

    # --- dampening -------------------------------------------------------------------

    def _decay(self, now: float) -> None:
        d = self.policy.dampening
        self.penalty *= 0.5 ** (max(0.0, now - self._penalty_at) / d.half_life)
        self._penalty_at = now
        if self.suppressed and self.penalty < d.reuse:
            self.suppressed = False
            self._suppress_logged = False

    def _flap(self) -> None:
        d = self.policy.dampening
        ceiling = d.reuse * 2 ** (d.max_suppress / d.half_life)
        self.penalty = min(self.penalty + d.penalty, ceiling)
        if self.penalty >= d.suppress:
            self.suppressed = True

    # --- transitions -----------------------------------------------------------------

    def _count(self, health: Health) -> None:
        self.health = health
        if health is Health.OK:
            self.ok, self.good, self.notok, self.fail = self.ok + 1, self.good + 1, 0, 0
        elif health is Health.DEGRADED:
            self.ok, self.good, self.notok, self.fail = 0, self.good + 1, self.notok + 1, 0
        else:
            self.ok, self.good, self.notok, self.fail = 0, 0, self.notok + 1, self.fail + 1

    def _reset(self) -> None:
        self.ok = self.good = self.notok = self.fail = 0

    def _go(self, new: State, reason: str, now: float) -> Decision:
        old = self.state
        if old in ANNOUNCED and new is State.DOWN:
            self._flap()
        if new is State.DRAINING:
            self._drain_started = now
            self._drain_route = (self.desired() or self.base).with_community(GRACEFUL_SHUTDOWN)
        self.state, self.since, self.reason = new, now, reason
        if old is not new:
            self.transitions[(old.value, new.value)] += 1
        return Decision(self.vip.prefix, old, new, reason, self.desired())

    def _rounds(self, n: int, what: str) -> str:
        return f"{n} consecutive {what} round{'s' if n != 1 else ''}"

    def observe(self, v: Verdict, now: float) -> Decision | None:
        """Feed one round's verdict; return a decision when something changes."""
        self._decay(now)
        leaving = self._maintenance_on and not v.maintenance
        self._maintenance_on = v.maintenance
        if leaving:
            # Health seen during maintenance does not count toward the rise.
            self._reset()
        self._count(v.health)
        if v.maintenance:
            return self._maintenance(v, now)
        if leaving and self.state is State.WITHDRAWN:
            return self._go(
                State.DOWN,
                f"maintenance over: announcing after {self.policy.rise} good rounds",
                now,
            )
        if leaving and self.state is State.DRAINING:
            return self._note(
                f"maintenance over: keeping GRACEFUL_SHUTDOWN until {self.policy.rise} good rounds"
            )
        return self._health(v, now)

    def _note(self, reason: str) -> Decision:
        """A decision that keeps the state (and the route) but changes why."""
        self.reason = reason
        return Decision(self.vip.prefix, self.state, self.state, reason, self.desired())

    def _maintenance(self, v: Verdict, now: float) -> Decision | None:
        p = self.policy
        why = v.maintenance_reason or "maintenance"
        if self.state in (State.UP, State.DEGRADED):
            if p.drain <= 0:
                return self._go(State.WITHDRAWN, f"maintenance ({why}): withdrawing", now)
            return self._go(
                State.DRAINING,
                f"maintenance ({why}): announcing with GRACEFUL_SHUTDOWN {GRACEFUL_SHUTDOWN} "
                f"for {p.drain:g} s, then withdrawing",
                now,
            )
        if self.state in (State.INIT, State.DOWN):
            return self._go(State.WITHDRAWN, f"maintenance ({why}): not announcing", now)
        if self.state is State.DRAINING:
            if self.fail >= p.fall:
                return self._go(
                    State.WITHDRAWN,
                    f"maintenance drain cut short after {self._rounds(self.fail, 'bad')}: "
                    f"{v.reason}",
                    now,
                )
            if now - self._drain_started >= p.drain:
                return self._go(
                    State.WITHDRAWN,
                    f"maintenance ({why}): drained for {p.drain:g} s, withdrawing",
                    now,
                )
        return None

    def _health(self, v: Verdict, now: float) -> Decision | None:
        p = self.policy
        s = self.state
        if s is not State.DOWN and self.fail >= p.fall:
            return self._go(State.DOWN, f"{self._rounds(self.fail, 'bad')}: {v.reason}", now)
        if s in (State.INIT, State.DOWN, State.DRAINING):
            if self.good < p.rise:
                return None
            if s is State.DOWN and self.suppressed:
                if self._suppress_logged:
                    return None
                self._suppress_logged = True
                return self._note(
                    f"healthy for {self._rounds(self.good, 'good')} but dampened after flapping: "
                    f"penalty {self.penalty:.0f} >= reuse {p.dampening.reuse:.0f}"
                )
            if self.ok >= p.rise:
                return self._go(State.UP, f"{self._rounds(self.ok, 'good')}: {v.reason}", now)
            return self._go(
                State.DEGRADED, f"{self._rounds(self.good, 'serving')}, degraded: {v.reason}", now
            )
        if s is State.UP and self.notok >= p.fall:
            return self._go(
                State.DEGRADED, f"{self._rounds(self.notok, 'degraded')}: {v.reason}", now
            )
        if s is State.DEGRADED and self.ok >= p.rise:
            return self._go(State.UP, f"{self._rounds(self.ok, 'good')}: {v.reason}", now)
        return None
