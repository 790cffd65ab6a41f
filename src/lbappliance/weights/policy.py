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
    t = cfg.target_latency
    kind: dict[str, str] = {}
    why: dict[str, str] = {}
    for name in cfg.servers:
        sig = signals.get(name)
        if sig is None:
            kind[name] = "absent"
            continue
        cur = sig.stat.uweight
        st = state.servers.get(name)
        if cur is not None and (st is None or st.applied != cur):
            state.servers[name] = ServerState(float(cur), cur)  # first sight or changed outside
        st = state.servers.get(name)
        if st is not None and st.parked and not sig.stat.status.startswith(("MAINT", "NOLB")):
            kind[name] = "parked" if sig.stat.status.startswith(("UP", "DRAIN")) else "down"
        elif sig.stat.admin_excluded:
            kind[name] = "excluded"
        elif not sig.stat.up:
            kind[name] = "down"
        elif sig.missing:
            kind[name], why[name] = "missing", f"signals missing ({sig.missing})"
        elif sig.latency is None:
            kind[name] = "hold"
        else:
            kind[name] = "measured"
    # Servers HAProxy sends traffic to and whose current weight is known.
    up = [n for n, k in kind.items() if k in ("measured", "hold", "missing") and n in state.servers]
    responses = sum(signals[n].responses for n in up)  # type: ignore[union-attr]
    idle = responses < POOL_MIN_RESPONSES
    total_weight = sum(state.servers[n].applied for n in up) or 1
    for n in up:
        sig = signals[n]
        assert sig is not None
        expected = responses * state.servers[n].applied / total_weight
        if kind[n] == "hold" and sig.window and sig.responses == 0 and expected >= EXPECTED_MIN:
            kind[n] = "missing"
            why[n] = f"signals missing (no response although ~{expected:.0f} were expected)"

    latencies: dict[str, float] = {}
    for n in (n for n in up if kind[n] == "measured"):
        sig = signals[n]
        assert sig is not None and sig.latency is not None
        latencies[n] = max(sig.latency, sig.latency_long or 0.0)
    median = _lower_median(list(latencies.values())) if latencies else 0.0
    slow = max(cfg.outlier_factor * median, cfg.outlier_min_latency)
    probe_why: dict[str, str] = {}
    probe_ok: dict[str, bool] = {}
    for n, k in kind.items():
        st = state.servers.get(n)
        if probes is not None and st is not None and (k == "parked" or st.readmitting):
            probe_ok[n], probe_why[n] = _judge(probes.get(n), st, slow, now)

    capacity: dict[str, float] = {}
    headroom: dict[str, float] = {}
    healthy: set[str] = set()
    outliers: set[str] = set()
    for n, latency in latencies.items():
        sig = signals[n]
        assert sig is not None
        good = 1 - sig.error_ratio
        capacity[n] = sig.rate * good * t / max(latency, 1e-4)
        headroom[n] = max(good * t / max(latency, LATENCY_RESOLUTION * t) - 1, 0.0)
        queued = sig.stat.qcur or 0
        if queued:  # at its maxconn: no headroom, whatever the latency says
            headroom[n] = 0.0
        why[n] = (
            f"latency {_ms(latency)} (target {_ms(t)}), errors {sig.error_ratio:.1%}, "
            f"capacity {capacity[n]:.1f} req/s" + (f", {queued} queued" if queued else "")
        )
        if latency > slow:
            outliers.add(n)
            why[n] += (
                f", outlier: over {_ms(slow)} ({cfg.outlier_factor:g}x the pool's median "
                f"{_ms(median)})"
            )
        elif sig.error_ratio > ERROR_DEGRADED:
            outliers.add(n)
            why[n] += f", outlier: errors over {ERROR_DEGRADED:.0%}"
        elif latency <= t and not queued:
            healthy.add(n)
    healthy |= {n for n in up if kind[n] == "hold"}
    counted = [n for n, k in kind.items() if k not in ("excluded", "absent")]
    fraction = len(healthy) / len(counted) if counted else None
    if not idle and fraction is not None:
        state.panic = fraction < cfg.panic_threshold

    changes: list[Change] = []
    parked = _park_and_readmit(
        cfg, state, kind, up, healthy, outliers, counted, probe_ok, probe_why, why, now, changes,
        probes is not None, idle, latencies,
    )  # fmt: skip

    # Target weights, as a fraction of each server's inventory weight, and their floors.
    up = [n for n in up if n not in parked]
    floors = {
        n: (
            cfg.canary_weight_percent
            if n in outliers or kind[n] == "missing"
            else cfg.min_weight_percent
        )
        / 100
        for n in up
    }
    ratio: dict[str, float] = {}
    if state.panic:
        for n in up:
            if kind[n] != "missing":
                ratio[n] = 1.0
                why[n] = (
                    f"panic: {len(healthy)}/{len(counted)} servers healthy "
                    f"< {cfg.panic_threshold:.0%}, spreading over all; " + why.get(n, "no data")
                )
    elif not idle and headroom:
        normal = [n for n in headroom if n not in outliers]
        best = max((headroom[n] for n in normal), default=0.0)
        most = max((capacity[n] for n in normal), default=0.0)
        for n in headroom:
            if n in parked:
                continue
            if n in outliers:
                ratio[n] = 0.0
                why[n] += "; outlier: canary floor"
            elif best > 0:
                ratio[n] = headroom[n] / best
                why[n] += f", headroom {headroom[n]:.2f} of best {best:.2f}"
            else:  # every server over target (panic disabled): by capacity
                ratio[n] = capacity[n] / max(most, 1e-9)
                why[n] += ", all over target: by capacity"
        _cap(cfg, signals, state, up, ratio, capacity, floors, why)
    for n in up:
        st = state.servers[n]
        if kind[n] == "missing":
            ratio[n] = floors[n]
            why[n] += "; degraded, weight never raised"
        elif st.readmitting and n not in ratio and not idle:  # no users' latency yet
            ratio[n] = 1.0
            why[n] = why.get(n, "") + "re-admitting: " + probe_why.get(n, "")

    assessments = []
    for name, weight in cfg.servers.items():
        sig = signals.get(name)
        st = state.servers.get(name)
        target = None
        if name in ratio and st is not None:
            target = weight * max(ratio[name], floors[name])
            low = max(1, round(weight * floors[name]))
            change = _step(cfg, name, weight, low, target, st, kind[name] == "missing", why[name])
            if change:
                changes.append(change)
            if st.readmitting and name in healthy and st.applied >= round(target):
                st.readmitting, st.parks = False, 0  # back where the policy wants it
        state_name = kind[name]
        if state_name == "parked":
            state_name = "outlier"
            why[name] = why.get(name) or "parked: " + probe_why.get(name, "no probe yet")
        elif state_name == "measured":
            state_name = (
                "healthy" if name in healthy else "outlier" if name in outliers else "degraded"
            )
        assessments.append(
            Assessment(
                server=name,
                state=state_name,
                signals=sig,
                capacity=capacity.get(name),
                headroom=headroom.get(name),
                target=target,
                weight=st.applied if st else None,
                reason=why.get(name, "pool idle: holding" if idle else ""),
            )
        )
    return Decision(cfg.name, assessments, changes, fraction, state.panic, idle)


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


def _park_and_readmit(
    cfg: PoolConfig,
    state: PoolState,
    kind: dict[str, str],
    up: list[str],
    healthy: set[str],
    outliers: set[str],
    counted: list[str],
    probe_ok: dict[str, bool],
    probe_why: dict[str, str],
    why: dict[str, str],
    now: float,
    changes: list[Change],
    probing: bool,
    idle: bool,
    latencies: dict[str, float],
) -> set[str]:
    """Park outliers at weight 0 and re-admit parked servers; the servers parked after it."""
    parked = {n for n, k in kind.items() if k == "parked"}

    def readmit(n: str, reason: str) -> None:
        st = state.servers[n]
        low = max(1, round(cfg.servers[n] * cfg.canary_weight_percent / 100))
        st.parked, st.readmitting, st.since = False, True, now
        st.applied, st.smoothed = low, float(low)
        changes.append(Change(cfg.name, n, 0, low, reason))
        why[n] = reason
        kind[n] = "hold"  # no users' latency yet
        parked.discard(n)

    if state.panic:
        for n in sorted(parked):
            readmit(n, "re-admitted: the pool is in panic, spreading over all servers")
        return parked
    for n in sorted(parked):
        if probe_ok.get(n):
            readmit(n, f"re-admitted at the canary floor: {probe_why[n]}")
    if not probing or idle:
        return parked
    candidates = [n for n in up if n in outliers]
    candidates += [
        n
        for n in up
        if state.servers[n].readmitting and probe_ok.get(n) is False and n not in outliers
    ]
    serving = {n for n in healthy if n not in parked and not state.servers[n].readmitting}
    need = max(1, math.ceil(cfg.panic_threshold * len(counted)))
    if len(serving) < need:
        for n in candidates:
            why[n] += f"; not parked: only {len(serving)} servers healthy and serving"
        return parked
    for n in sorted(candidates, key=lambda n: -latencies.get(n, math.inf)):
        st = state.servers[n]
        reason = why[n] if n in outliers else f"{why[n]}; re-admission stopped: {probe_why[n]}"
        reason += "; parked at weight 0, probing it directly"
        changes.append(Change(cfg.name, n, st.applied, 0, reason))
        st.parked, st.readmitting, st.since = True, False, now
        st.parks += 1
        st.applied, st.smoothed = 0, 0.0
        why[n] = reason
        parked.add(n)
    return parked


def _cap(
    cfg: PoolConfig,
    signals: dict[str, Signals | None],
    state: PoolState,
    up: list[str],
    ratio: dict[str, float],
    capacity: dict[str, float],
    floors: dict[str, float],
    why: dict[str, str],
) -> None:
    """Lower targets whose share of the pool's load would exceed the capacity fraction."""
    load = sum(signals[n].rate for n in up)  # type: ignore[union-attr]
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
