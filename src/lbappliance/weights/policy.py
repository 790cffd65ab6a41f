"""The weight policy, as a pure function of one pool's signals (and probes).

Per server with fresh signals (latency ``L``, error ratio ``e``, request rate ``λ``;
requests queued at the server's maxconn mean no headroom at all). ``L`` is the
larger of the recent window's mean and the long (``max_span``) window's: a weight
falls as soon as the last seconds show trouble, and rises only once the whole long
window agrees (gradual re-admission; it also keeps a few lucky requests
of an intermittently slow server from raising it).

- estimated capacity ``C = λ (1 - e) T / L`` (requests/s it could serve at the
  target latency ``T``): ``load x target / actual``;
- headroom per unit of weight ``g = (1 - e) T / max(L, 0.1 T) - 1`` (``>= 0``), a form of
  ``(capacity - load) / load``. Taking it per unit of weight, not per
  server, keeps a server that happens to get more traffic from looking bigger
  and pulling even more (two equal servers would drift apart); latencies under
  10 % of the target count as equal so millisecond noise does not move weights;
- target weight ``inventory weight x g / max(g)``, then lowered until the load it
  would bring stays under ``max_capacity_fraction`` (80 %) of ``C``;
- floor: ``min_weight_percent`` (5 %) of the inventory weight, never below 1, so no
  server starves;
- smoothing: ``w = alpha x target + (1 - alpha) x w`` (alpha 0.3), applied only when it
  moves the HAProxy weight by ``hysteresis_percent`` (5 %) or reaches a bound; a
  rising weight at most doubles per step (gradual re-admission).

An *outlier* (a circuit breaker: latency over ``outlier_factor`` (2) x the
pool's median and over ``outlier_min_latency``, or errors over 5 %) is not healthy
and its target is the canary floor, ``canary_weight_percent`` (1 %) of its inventory
weight (a canary): a server slowed by 60 ms is well within a 100 ms target,
yet every request it gets lands in the clients' p99. A server whose signals are
missing (no response while requests are in flight, empty counters, failing
agent-check, no traffic although its weight should bring some) is degraded: its
target is the canary floor and its weight never rises. Below
``panic_threshold`` healthy servers the pool is in panic: every
server with signals goes back to its inventory weight, so the load is spread
instead of crushing the few fast ones. Servers in maintenance, drain or DOWN
are HAProxy's business and are not touched.

Parking (when the controller can probe, ``probes`` given): an outlier is taken out
of users' traffic at once, weight 0, instead of the canary floor, and watched with
the controller's own requests sent straight to it (``probe.py``). It is re-admitted
when the probes of the last ``PROBE_CALM`` s (doubling with each park of the same
server, at most ``PROBE_CALM_MAX``) all answered, with a mean under the outlier
threshold: first at its canary floor, then doubling per step while the probes go on;
a probe mean over the threshold since its re-admission, or an outlier reading from
users' traffic, parks it again. Safety: parking never leaves fewer than
``panic_threshold`` of the pool's servers (and never fewer than one) healthy and
serving; the other outliers keep the canary floor; panic re-admits every parked
server; an operator's change of a parked server's weight ends the park.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from lbappliance.weights.config import PoolConfig
from lbappliance.weights.signals import Signals

LATENCY_RESOLUTION = 0.1  # latencies below this fraction of the target count as equal
ERROR_DEGRADED = 0.05  # error ratio above which a server is not healthy
POOL_MIN_RESPONSES = 20  # fewer responses in the pool's window: nothing learned, hold
EXPECTED_MIN = 10  # responses a server's weight should have brought before silence is odd
CAP_PASSES = 3  # capping one server raises the others' shares: a few fixed-point passes
RISE_FACTOR = 2  # a rising weight at most doubles per step
PROBE_CALM = 5.0  # s of healthy probes before a parked server is re-admitted (first park)
PROBE_CALM_MAX = 20.0  # s: the wait doubles with each park of the same server, up to this
PROBE_MIN_SHARE = 0.5  # of the probes a calm period should hold must have answered
PROBE_INTERVAL = 0.25  # s between two probes of one server
PROBE_TIMEOUT = 1.0  # s; a probe slower than this failed (an outlier threshold is far lower)


@dataclass
class ServerState:
    smoothed: float  # the controller's continuous weight
    applied: int  # the HAProxy weight last applied or observed
    parked: bool = False  # out of users' traffic (weight 0), judged by probes
    readmitting: bool = False  # back from a park, rising; still probed
    parks: int = 0  # parks since it last reached full weight (the calm period doubles)
    since: float = -math.inf  # when it was last parked or re-admitted (decide's ``now``)


@dataclass(frozen=True)
class Probes:
    """The controller's own requests to one server: ``(time, latency s or None)`` each.

    ``None``: failed (no answer within the probe timeout, refused, or a 5xx).
    ``started``: when probing of this server began.
    """

    started: float
    samples: tuple[tuple[float, float | None], ...]


@dataclass
class PoolState:
    servers: dict[str, ServerState] = field(default_factory=dict)
    panic: bool = False
    last_decision: float = -math.inf


@dataclass(frozen=True)
class Assessment:
    """One server's classification and numbers, for the log and the metrics."""

    server: str
    state: str  # healthy | outlier | degraded | missing | hold | down | excluded | absent
    # (a parked server is an outlier)
    signals: Signals | None = None
    capacity: float | None = None
    headroom: float | None = None
    target: float | None = None  # target weight before smoothing
    weight: int | None = None  # HAProxy weight after this decision
    reason: str = ""


@dataclass(frozen=True)
class Change:
    pool: str
    server: str
    old: int
    new: int
    reason: str


@dataclass(frozen=True)
class Decision:
    pool: str
    assessments: list[Assessment]
    changes: list[Change]
    healthy_fraction: float | None
    panic: bool
    idle: bool


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _lower_median(values: list[float]) -> float:
    """The median, or the lower middle value: with two servers, the faster one."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


class Kind(StrEnum):
    """What a server is this round, before its signals are weighed."""

    ABSENT = "absent"  # not in HAProxy's answer
    PARKED = "parked"  # out of users' traffic, judged by probes
    DOWN = "down"
    EXCLUDED = "excluded"  # maintenance or drain: the operator's
    MISSING = "missing"  # signals missing: degraded
    HOLD = "hold"  # serving, nothing measured yet
    MEASURED = "measured"


# Kinds HAProxy sends traffic to (with a known weight: see ``_Round.up``).
SERVING = (Kind.MEASURED, Kind.HOLD, Kind.MISSING)


def decide(
    cfg: PoolConfig,
    signals: dict[str, Signals | None],
    state: PoolState,
    probes: dict[str, Probes | None] | None = None,
    now: float = 0.0,
) -> Decision:
    """One control step for a pool; updates ``state`` and returns the weight changes.

    ``probes`` (one entry per parked or re-admitted server, ``None`` while it has none)
    says the controller can probe: outliers are then parked at weight 0. ``now`` is the
    time of ``probes``' clock.
    """
    r = _Round(cfg, signals, state, probes, now)
    r.classify()
    r.find_silent()
    r.measure()
    r.judge_probes()
    r.assess()
    r.update_panic()
    r.park_and_readmit()
    r.up = [n for n in r.up if n not in r.parked]
    r.targets()
    return r.apply()


@dataclass
class _Round:
    """One ``decide`` step: its inputs and what each named step finds, in order."""

    cfg: PoolConfig
    signals: dict[str, Signals | None]
    state: PoolState
    probes: dict[str, Probes | None] | None
    now: float
    kind: dict[str, Kind] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    up: list[str] = field(default_factory=list)
    idle: bool = True
    latencies: dict[str, float] = field(default_factory=dict)
    median: float = 0.0
    slow: float = 0.0
    probe_ok: dict[str, bool] = field(default_factory=dict)
    probe_why: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, float] = field(default_factory=dict)
    headroom: dict[str, float] = field(default_factory=dict)
    healthy: set[str] = field(default_factory=set)
    outliers: set[str] = field(default_factory=set)
    counted: list[str] = field(default_factory=list)
    fraction: float | None = None
    changes: list[Change] = field(default_factory=list)
    parked: set[str] = field(default_factory=set)
    floors: dict[str, float] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)

    def sig(self, name: str) -> Signals:
        sig = self.signals[name]
        assert sig is not None
        return sig

    def classify(self) -> None:
        """Each server's kind; a weight first seen or changed outside resets its state."""
        for name in self.cfg.servers:
            sig = self.signals.get(name)
            if sig is None:
                self.kind[name] = Kind.ABSENT
                continue
            cur = sig.stat.uweight
            st = self.state.servers.get(name)
            if cur is not None and (st is None or st.applied != cur):
                self.state.servers[name] = ServerState(float(cur), cur)
            st = self.state.servers.get(name)
            status = sig.stat.status
            if st is not None and st.parked and not status.startswith(("MAINT", "NOLB")):
                self.kind[name] = Kind.PARKED if status.startswith(("UP", "DRAIN")) else Kind.DOWN
            elif sig.stat.admin_excluded:
                self.kind[name] = Kind.EXCLUDED
            elif not sig.stat.up:
                self.kind[name] = Kind.DOWN
            elif sig.missing:
                self.kind[name] = Kind.MISSING
                self.why[name] = f"signals missing ({sig.missing})"
            elif sig.latency is None:
                self.kind[name] = Kind.HOLD
            else:
                self.kind[name] = Kind.MEASURED

    def find_silent(self) -> None:
        """Servers that serve with a known weight; whether the pool is idle; a server
        silent although its weight should have brought it responses is missing."""
        self.up = [n for n, k in self.kind.items() if k in SERVING and n in self.state.servers]
        responses = sum(self.sig(n).responses for n in self.up)
        self.idle = responses < POOL_MIN_RESPONSES
        total_weight = sum(self.state.servers[n].applied for n in self.up) or 1
        for n in self.up:
            sig = self.sig(n)
            expected = responses * self.state.servers[n].applied / total_weight
            if (
                self.kind[n] == Kind.HOLD
                and sig.window
                and sig.responses == 0
                and expected >= EXPECTED_MIN
            ):
                self.kind[n] = Kind.MISSING
                self.why[n] = (
                    f"signals missing (no response although ~{expected:.0f} were expected)"
                )

    def measure(self) -> None:
        """Each measured server's latency, the pool's median and the outlier threshold."""
        for n in (n for n in self.up if self.kind[n] == Kind.MEASURED):
            sig = self.sig(n)
            assert sig.latency is not None
            self.latencies[n] = max(sig.latency, sig.latency_long or 0.0)
        values = list(self.latencies.values())
        self.median = _lower_median(values) if values else 0.0
        self.slow = max(self.cfg.outlier_factor * self.median, self.cfg.outlier_min_latency)

    def judge_probes(self) -> None:
        """The probes' verdict on each parked or re-admitted server."""
        if self.probes is None:
            return
        for n, k in self.kind.items():
            st = self.state.servers.get(n)
            if st is not None and (k == Kind.PARKED or st.readmitting):
                self.probe_ok[n], self.probe_why[n] = _judge(
                    self.probes.get(n), st, self.slow, self.now
                )

    def assess(self) -> None:
        """Capacity and headroom of each measured server; healthy or outlier."""
        t = self.cfg.target_latency
        for n, latency in self.latencies.items():
            sig = self.sig(n)
            good = 1 - sig.error_ratio
            self.capacity[n] = sig.rate * good * t / max(latency, 1e-4)
            self.headroom[n] = max(good * t / max(latency, LATENCY_RESOLUTION * t) - 1, 0.0)
            queued = sig.stat.qcur or 0
            if queued:  # at its maxconn: no headroom, whatever the latency says
                self.headroom[n] = 0.0
            self.why[n] = (
                f"latency {_ms(latency)} (target {_ms(t)}), errors {sig.error_ratio:.1%}, "
                f"capacity {self.capacity[n]:.1f} req/s" + (f", {queued} queued" if queued else "")
            )
            if latency > self.slow:
                self.outliers.add(n)
                self.why[n] += (
                    f", outlier: over {_ms(self.slow)} ({self.cfg.outlier_factor:g}x the pool's "
                    f"median {_ms(self.median)})"
                )
            elif sig.error_ratio > ERROR_DEGRADED:
                self.outliers.add(n)
                self.why[n] += f", outlier: errors over {ERROR_DEGRADED:.0%}"
            elif latency <= t and not queued:
                self.healthy.add(n)
        self.healthy |= {n for n in self.up if self.kind[n] == Kind.HOLD}

    def update_panic(self) -> None:
        """The healthy fraction of the servers that count; panic below the threshold."""
        excluded = (Kind.EXCLUDED, Kind.ABSENT)
        self.counted = [n for n, k in self.kind.items() if k not in excluded]
        self.fraction = len(self.healthy) / len(self.counted) if self.counted else None
        if not self.idle and self.fraction is not None:
            self.state.panic = self.fraction < self.cfg.panic_threshold

    def park_and_readmit(self) -> None:
        self.parked = _park_and_readmit(self)

    def targets(self) -> None:
        """Each serving server's target, as a fraction of its inventory weight, and floor."""
        cfg, kind, why = self.cfg, self.kind, self.why
        for n in self.up:
            low = n in self.outliers or kind[n] == Kind.MISSING
            self.floors[n] = (cfg.canary_weight_percent if low else cfg.min_weight_percent) / 100
        if self.state.panic:
            for n in self.up:
                if kind[n] != Kind.MISSING:
                    self.ratio[n] = 1.0
                    why[n] = (
                        f"panic: {len(self.healthy)}/{len(self.counted)} servers healthy "
                        f"< {cfg.panic_threshold:.0%}, spreading over all; " + why.get(n, "no data")
                    )
        elif not self.idle and self.headroom:
            self.by_headroom()
            _cap(self)
        for n in self.up:
            st = self.state.servers[n]
            if kind[n] == Kind.MISSING:
                self.ratio[n] = self.floors[n]
                why[n] += "; degraded, weight never raised"
            elif st.readmitting and n not in self.ratio and not self.idle:  # no users' latency
                self.ratio[n] = 1.0
                why[n] = why.get(n, "") + "re-admitting: " + self.probe_why.get(n, "")

    def by_headroom(self) -> None:
        """Targets in proportion to headroom (outliers: the canary floor)."""
        headroom, capacity, why = self.headroom, self.capacity, self.why
        normal = [n for n in headroom if n not in self.outliers]
        best = max((headroom[n] for n in normal), default=0.0)
        most = max((capacity[n] for n in normal), default=0.0)
        for n in headroom:
            if n in self.parked:
                continue
            if n in self.outliers:
                self.ratio[n] = 0.0
                why[n] += "; outlier: canary floor"
            elif best > 0:
                self.ratio[n] = headroom[n] / best
                why[n] += f", headroom {headroom[n]:.2f} of best {best:.2f}"
            else:  # every server over target (panic disabled): by capacity
                self.ratio[n] = capacity[n] / max(most, 1e-9)
                why[n] += ", all over target: by capacity"

    def apply(self) -> Decision:
        """Step each weight toward its target; the decision with every assessment."""
        assessments = [self.step(name, weight) for name, weight in self.cfg.servers.items()]
        return Decision(
            self.cfg.name, assessments, self.changes, self.fraction, self.state.panic, self.idle
        )

    def step(self, name: str, weight: int) -> Assessment:
        st = self.state.servers.get(name)
        kind, why = self.kind[name], self.why
        target = None
        if name in self.ratio and st is not None:
            floor = self.floors[name]
            target = weight * max(self.ratio[name], floor)
            low = max(1, round(weight * floor))
            change = _step(self.cfg, name, weight, low, target, st, kind == Kind.MISSING, why[name])
            if change:
                self.changes.append(change)
            if st.readmitting and name in self.healthy and st.applied >= round(target):
                st.readmitting, st.parks = False, 0  # back where the policy wants it
        state_name = kind.value
        if kind == Kind.PARKED:
            state_name = "outlier"
            why[name] = why.get(name) or "parked: " + self.probe_why.get(name, "no probe yet")
        elif kind == Kind.MEASURED:
            state_name = (
                "healthy"
                if name in self.healthy
                else "outlier"
                if name in self.outliers
                else "degraded"
            )
        return Assessment(
            server=name,
            state=state_name,
            signals=self.signals.get(name),
            capacity=self.capacity.get(name),
            headroom=self.headroom.get(name),
            target=target,
            weight=st.applied if st else None,
            reason=why.get(name, "pool idle: holding" if self.idle else ""),
        )


def _judge(p: Probes | None, st: ServerState, slow: float, now: float) -> tuple[bool, str]:
    """Whether a parked server may come back (or a re-admitted one may go on), and why.

    The mean of the probes over the calm period (a re-admitted server: since its
    re-admission, at most that long) is held against ``slow``, as users' mean latency is:
    one probe delayed by a scheduling hiccup does not decide, a server slow on 10 % of its
    answers does. A parked server also needs every probe of the period answered and enough
    of them; a re-admitted one stops at a mean over ``slow`` (a failed probe counting as
    ``PROBE_TIMEOUT``).
    """
    if p is None or not p.samples:
        return False, "no probe answered yet"
    calm = min(PROBE_CALM * 2 ** max(st.parks - 1, 0), PROBE_CALM_MAX)
    start = max(now - calm, st.since) if st.readmitting else now - calm
    recent = [lat for t, lat in p.samples if t >= start]
    failed = sum(1 for lat in recent if lat is None)
    mean = sum(PROBE_TIMEOUT if lat is None else lat for lat in recent) / max(len(recent), 1)
    last = p.samples[-1][1]
    shown = "failed" if last is None else _ms(last)
    verdict = (
        f"probes: mean {_ms(mean)} of {len(recent)}, {failed} failed, over the last "
        f"{now - start:.3g} s (outlier threshold {_ms(slow)}; last {shown})"
    )
    if st.readmitting:
        return bool(recent) and mean <= slow, verdict
    enough = now - max(p.started, st.since) >= calm and len(recent) >= (
        PROBE_MIN_SHARE * calm / PROBE_INTERVAL
    )
    return enough and not failed and mean <= slow, verdict


def _also(reason: str, more: str) -> str:
    return f"{reason}; {more}" if reason else more


def _park_and_readmit(r: _Round) -> set[str]:
    """Park outliers at weight 0 and re-admit parked servers; the servers parked after it."""
    cfg, state, why = r.cfg, r.state, r.why
    parked = {n for n, k in r.kind.items() if k == Kind.PARKED}

    def readmit(n: str, reason: str) -> None:
        st = state.servers[n]
        low = max(1, round(cfg.servers[n] * cfg.canary_weight_percent / 100))
        st.parked, st.readmitting, st.since = False, True, r.now
        st.applied, st.smoothed = low, float(low)
        r.changes.append(Change(cfg.name, n, 0, low, reason))
        why[n] = reason
        r.kind[n] = Kind.HOLD  # no users' latency yet
        parked.discard(n)

    if state.panic:
        for n in sorted(parked):
            readmit(n, "re-admitted: the pool is in panic, spreading over all servers")
        return parked
    for n in sorted(parked):
        if r.probe_ok.get(n):
            readmit(n, f"re-admitted at the canary floor: {r.probe_why[n]}")
    if r.probes is None or r.idle:
        return parked
    candidates = [n for n in r.up if n in r.outliers]
    candidates += [
        n
        for n in r.up
        if state.servers[n].readmitting and r.probe_ok.get(n) is False and n not in r.outliers
    ]
    serving = {n for n in r.healthy if n not in parked and not state.servers[n].readmitting}
    need = max(1, math.ceil(cfg.panic_threshold * len(r.counted)))
    if len(serving) < need:
        for n in candidates:
            why[n] = _also(
                why.get(n, ""), f"not parked: only {len(serving)} servers healthy and serving"
            )
        return parked
    for n in sorted(candidates, key=lambda n: -r.latencies.get(n, math.inf)):
        st = state.servers[n]
        reason = (
            why[n]
            if n in r.outliers
            else _also(why.get(n, ""), f"re-admission stopped: {r.probe_why[n]}")
        )  # a re-admitted server may have no users' latency yet, nor a reason
        reason += "; parked at weight 0, probing it directly"
        r.changes.append(Change(cfg.name, n, st.applied, 0, reason))
        st.parked, st.readmitting, st.since = True, False, r.now
        st.parks += 1
        st.applied, st.smoothed = 0, 0.0
        why[n] = reason
        parked.add(n)
    return parked


def _cap(r: _Round) -> None:
    """Lower targets whose share of the pool's load would exceed the capacity fraction."""
    cfg, state, up, ratio, capacity, floors, why = (
        r.cfg,
        r.state,
        r.up,
        r.ratio,
        r.capacity,
        r.floors,
        r.why,
    )
    load = sum(r.sig(n).rate for n in up)
    if load <= 0:
        return
    if load > cfg.max_capacity_fraction * sum(capacity[n] for n in ratio):
        for n in ratio:  # overloaded: no split satisfies the cap, keep it proportional
            why[n] += f", pool load over {cfg.max_capacity_fraction:.0%} of estimated capacity"
        return
    capped: set[str] = set()
    for _ in range(CAP_PASSES):
        planned = {
            n: cfg.servers[n] * ratio[n] if n in ratio else state.servers[n].smoothed for n in up
        }
        total = sum(planned.values()) or 1.0
        for n in ratio:
            share_load = load * planned[n] / total
            limit = cfg.max_capacity_fraction * capacity[n]
            if share_load > limit and ratio[n] > floors[n]:
                ratio[n] = max(floors[n], ratio[n] * limit / share_load)
                capped.add(n)
    for n in capped:
        why[n] += f", capped at {cfg.max_capacity_fraction:.0%} of estimated capacity"


def _step(
    cfg: PoolConfig,
    name: str,
    weight: int,
    low: int,
    target: float,
    st: ServerState,
    degraded: bool,
    reason: str,
) -> Change | None:
    """Smooth toward ``target``; return the HAProxy change if it is worth applying."""
    previous = st.smoothed
    st.smoothed = cfg.alpha * target + (1 - cfg.alpha) * st.smoothed
    if degraded:
        st.smoothed = min(st.smoothed, previous)
    old = st.applied
    new = min(max(round(st.smoothed), low), weight)
    if degraded:
        new = min(new, old)
    if new > old * RISE_FACTOR:  # gradual re-admission; the smoothed weight waits too
        new = old * RISE_FACTOR
        st.smoothed = float(new)
    if new == old:
        return None
    step = abs(new - old)
    if step < max(1.0, cfg.hysteresis_percent / 100 * old) and new not in (low, weight):
        return None
    st.applied = new
    return Change(cfg.name, name, old, new, reason)
