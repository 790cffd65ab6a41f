"""The controller's running windows and kept decisions against the definitions they replace.

``reference_signals`` is the signal window as it was defined before the per-server
windows: a rescan of the whole history for each server, each tick (kept here verbatim
as the definition). ``ReferenceController`` is the tick as it was: that rescan and a
``decide`` for every pool that is due. Both are run beside the real ones over many
ticks of random and adversarial ``show stat`` rows (servers appearing and vanishing,
counters reset or going backwards, empty fields, failing agent checks, stuck
requests, weights changed by an operator, pools idle for a while, irregular ticks,
parks and re-admissions through a prober); every Signals, every decision, every
state and every weight applied must be identical.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections import deque
from collections.abc import Sequence

import pytest

from lbappliance.haproxy import ServerStat
from lbappliance.weights.config import Config, PoolConfig
from lbappliance.weights.controller import Controller
from lbappliance.weights.policy import (
    LATENCY_RESOLUTION,
    Decision,
    Probes,
    decide,
)
from lbappliance.weights.signals import (
    AGENT_OK,
    DECAY_BIAS,
    MIN_RESPONSES,
    RELATIVE_ERROR,
    Signals,
    Snapshot,
    Window,
    _complete,
    recent_mean,
    rounding_error,
    server_signals,
)
from tests.weights.fixtures import FakeProber

Key = tuple[str, str]


def _reset(old: ServerStat, new: ServerStat) -> bool:
    return (old.stot or 0) > (new.stot or 0) or (old.responses or 0) > (new.responses or 0)


def reference_signals(
    history: Sequence[Snapshot],
    key: Key,
    min_span: float,
    max_span: float,
    resolution: float = 0.01,
) -> Signals | None:
    """Signals of ``key`` from ``history`` (oldest first); ``None`` if not in the newest.

    The window is the shortest one of at least ``min_span`` seconds whose latency
    error is under ``RELATIVE_ERROR`` of the estimate or a quarter of ``resolution``
    (seconds), else the longest up to ``max_span``; ``latency_long`` is over the
    longest one. Requests in flight with no response at all for ``min_span`` make
    the signals missing (a stale average would still look fine).
    """
    newest = history[-1]
    new = newest.servers.get(key)
    if new is None:
        return None
    if not _complete(new):
        return Signals(new, 0.0, 0, 0.0, None, 0.0, "show stat left its counters empty")
    agent = new.agent_status.removeprefix("* ")  # "* " marks a check in progress
    if agent not in AGENT_OK:
        return Signals(new, 0.0, 0, 0.0, None, 0.0, f"agent-check reports {agent}")
    # The oldest usable reading: within max_span, complete, no counter reset since.
    oldest = len(history) - 1
    for i in range(len(history) - 2, -1, -1):
        old = history[i].servers.get(key)
        if old is None or not _complete(old) or _reset(old, new):
            break
        if newest.time - history[i].time > max_span:
            break
        oldest = i
    first = None  # index of the short window's oldest snapshot
    for i in range(len(history) - 2, oldest - 1, -1):
        old = history[i].servers[key]
        span = newest.time - history[i].time
        if span < min_span:
            continue
        k = new.responses - old.responses  # type: ignore[operator]
        if first is None:
            sent = new.stot - old.stot  # type: ignore[operator]
            if k == 0 and new.scur and (sent or old.scur):
                stuck = f"no response for {span:.1f} s with {new.scur} requests in flight"
                return Signals(new, span, 0, 0.0, None, 0.0, stuck)
        first = i
        if k >= MIN_RESPONSES:
            error = rounding_error(old.req_tot, new.req_tot, k)  # type: ignore[arg-type]
            ms = recent_mean(old.rtime, old.req_tot, new.rtime, new.req_tot, k)  # type: ignore[arg-type]
            if error <= max(RELATIVE_ERROR * ms, 250 * resolution):
                break
    if first is None:
        return Signals(new, 0.0, 0, 0.0, None, 0.0, None)
    chosen = history[first].servers[key]
    span = newest.time - history[first].time
    k = new.responses - chosen.responses  # type: ignore[operator]
    sent = new.stot - chosen.stot  # type: ignore[operator]
    errors = sum(
        (getattr(new, f) or 0) - (getattr(chosen, f) or 0) for f in ("econ", "eresp", "hrsp_5xx")
    )
    rows = [h.servers[key] for h in list(history)[oldest:]]
    k_long = new.responses - rows[0].responses  # type: ignore[operator]
    return Signals(
        stat=new,
        window=span,
        responses=k,
        rate=sent / span,
        latency=_reference_latency(rows[first - oldest :], k) / 1000
        if k >= MIN_RESPONSES
        else None,
        error_ratio=min(1.0, errors / sent) if sent else 0.0,
        missing=None,
        latency_long=_reference_latency(rows, k_long) / 1000 if k_long >= MIN_RESPONSES else None,
    )


def _reference_latency(rows: list[ServerStat], k: int) -> float:
    """Mean response time (ms) of the ``k`` responses between the first and last row.

    The recent mean is used only when it differs from HAProxy's own average
    (taken over the window's readings, which smooths its whole-millisecond
    steps) by more than its rounding error: a smaller difference is rounding
    noise, and the long average is the steadier estimate.
    """
    old, new = rows[0], rows[-1]
    recent = recent_mean(old.rtime, old.req_tot, new.rtime, new.req_tot, k)  # type: ignore[arg-type]
    error = rounding_error(old.req_tot, new.req_tot, k) + DECAY_BIAS  # type: ignore[arg-type]
    steady = sum(max(r.rtime - 0.5, 0.0) for r in rows[1:]) / (len(rows) - 1)  # type: ignore[operator]
    return recent if abs(recent - steady) > error else steady


class ReferenceController(Controller):
    """The tick as it was: the whole history kept, rescanned per server, every pool decided."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.history: deque[Snapshot] = deque()

    def tick(self) -> list[Decision]:
        stats = self.sock.show_stat()
        now = self.clock()
        snap = Snapshot(now, {(s.pool, s.server): s for s in stats})
        self.history.append(snap)
        horizon = max((p.max_span for p in self.config.pools), default=30.0) + 2 * self.config.tick
        while self.history and now - self.history[0].time > horizon:
            self.history.popleft()
        decisions = []
        for pool in self.config.pools:
            state = self.states[pool.name]
            if now - state.last_decision < pool.interval * 0.95:
                continue
            state.last_decision = now
            signals = {}
            for name in pool.servers:
                span = pool.max_span
                st = state.servers.get(name)
                if st is not None and st.readmitting:
                    span = min(span, max(now - st.since, pool.min_span))
                signals[name] = reference_signals(
                    self.history,
                    (pool.name, name),
                    pool.min_span,
                    span,
                    LATENCY_RESOLUTION * pool.target_latency,
                )
            probes: dict[str, Probes | None] | None = None
            if self.prober is not None:
                probes = {
                    n: self.prober.probes((pool.name, n))
                    for n, st in state.servers.items()
                    if st.parked or st.readmitting
                }
            decisions.append(decide(pool, signals, state, probes, now))
        changes = {(c.pool, c.server): c.new for d in decisions for c in d.changes}
        self.sock.set_weights(changes)
        self._reference_sync_probes(snap)
        self.metrics.record(decisions, self.wall())
        return decisions

    def _reference_sync_probes(self, snap: Snapshot) -> None:
        """Probe exactly the parked and re-admitted servers (their rows from ``snap``)."""
        if self.prober is None:
            return
        watch = {}
        for pool in self.config.pools:
            for name, st in self.states[pool.name].servers.items():
                key = (pool.name, name)
                row = snap.servers.get(key)
                if (st.parked or st.readmitting) and row is not None:
                    watch[key] = (row.addr, pool.probe_path)
        for key in self.prober.watched() - set(watch):
            self.prober.unwatch(key)
        for key, (addr, path) in watch.items():
            self.prober.watch(key, addr, path)


class Server:
    """One server's counters, moved at random, with adversarial turns."""

    def __init__(self, rng: random.Random, pool: str, name: str):
        self.rng, self.pool, self.name = rng, pool, name
        self.stot = self.responses = self.errors = self.fivexx = 0
        self.rtime = rng.randint(0, 30)
        self.rate = rng.choice((0, 2, 10, 40))
        self.slow = False
        self.last: ServerStat | None = None

    def step(self, weight: int | None) -> ServerStat | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            return None  # absent from show stat
        if roll < 0.05:  # HAProxy restarted: counters start again
            self.stot = self.responses = self.errors = self.fivexx = rng.randint(0, 20)
        elif roll < 0.06:  # a counter going backwards a little (a reload's new process)
            self.stot = max(0, self.stot - rng.randint(1, 50))
            self.responses = min(self.responses, self.stot)
        if rng.random() < 0.05:
            self.rate = rng.choice((0, 0, 1, 5, 25, 60))
        if rng.random() < 0.05:
            self.slow = not self.slow
        sent = 0 if weight == 0 else max(0, int(rng.gauss(self.rate, 2)))
        self.stot += sent
        inflight = rng.choice((0, 0, 0, 1, 3)) if sent or rng.random() < 0.1 else 0
        if rng.random() < 0.03:
            inflight = 5  # stuck: nothing answered
            self.responses = max(self.responses, self.stot - inflight)
        else:
            self.responses = max(self.responses, self.stot - inflight)
        self.fivexx += rng.random() < 0.05
        self.errors += rng.random() < 0.03
        target = rng.choice((900, 300)) if self.slow else rng.randint(1, 40)
        self.rtime = max(0, self.rtime + (target - self.rtime) // rng.randint(1, 8))
        status = rng.choices(
            ["UP", "UP 1/3", "DOWN", "MAINT", "DRAIN", "no check"], [90, 3, 3, 1, 1, 2]
        )[0]
        empty = rng.random() < 0.02
        return ServerStat(
            pool=self.pool,
            server=self.name,
            status=status,
            uweight=weight,
            backup=False,
            scur=inflight,
            qcur=rng.choice((0, 0, 0, 0, 2)),
            slim=200,
            stot=None if empty and rng.random() < 0.5 else self.stot,
            req_tot=self.stot,
            responses=self.responses,
            hrsp_5xx=self.fivexx,
            econ=self.errors if rng.random() < 0.9 else None,
            eresp=0,
            qtime=0,
            ctime=0,
            rtime=None if empty else self.rtime,
            ttime=self.rtime,
            check_status="L7OK",
            agent_status=rng.choices(["", "* L7OK", "L4CON", "L7OK"], [85, 5, 2, 8])[0],
            addr=f"10.30.0.{len(self.name)}:8080",
            weight=weight,
        )


def pools(rng: random.Random, count: int) -> list[PoolConfig]:
    out = []
    for p in range(count):
        servers = {f"s{i}": rng.choice((100, 100, 50, 10)) for i in range(rng.randint(1, 5))}
        out.append(
            PoolConfig(
                name=f"pool{p}",
                servers=servers,
                interval=rng.choice((0.5, 1.0, 1.0, 2.0)),
                target_latency=rng.choice((0.1, 0.05, 0.5)),
                panic_threshold=rng.choice((0.5, 0.0, 0.75)),
            )
        )
    return out


class Site:
    """``show stat`` of every server; applies ``set weight`` like HAProxy."""

    def __init__(self, seed: int, cfg: Config):
        rng = random.Random(seed)
        self.servers = [Server(rng, p.name, s) for p in cfg.pools for s in p.servers]
        self.weights = {(p.name, s): w for p in cfg.pools for s, w in p.servers.items()}
        self.rng = rng
        self.idle_pools: set[str] = set()

    def rows(self) -> list[ServerStat]:
        if self.rng.random() < 0.1:  # some pools go quiet for a while, some wake up
            pool = self.rng.choice(self.servers).pool
            self.idle_pools ^= {pool}
        out = []
        for s in self.servers:
            key = (s.pool, s.name)
            if self.rng.random() < 0.01:  # an operator's `set weight`
                self.weights[key] = self.rng.choice((0, 1, 50, 100))
            if s.pool in self.idle_pools and s.last is not None:
                out.append(dataclasses.replace(s.last, uweight=self.weights[key]))
                continue
            row = s.step(self.weights[key])
            if row is not None:
                s.last = row
                out.append(row)
        return out


class Socket:
    """One controller's HAProxy: the same rows, with the weights that controller set."""

    def __init__(self, rows: list[list[ServerStat]]):
        self.rows = rows
        self.i = 0
        self.weights: dict[Key, int] = {}
        self.applied: list[dict[Key, int]] = []

    def show_stat(self) -> list[ServerStat]:
        rows = self.rows[self.i]
        self.i += 1
        return [
            dataclasses.replace(r, uweight=self.weights[key])
            if (key := (r.pool, r.server)) in self.weights
            else r
            for r in rows
        ]

    def set_weights(self, weights: dict[Key, int]) -> None:
        self.applied.append(dict(weights))
        self.weights.update(weights)


def _slow_in_odd_sevens(t: float) -> float:
    """Probes answer slow or fast by the clock (the same for both controllers)."""
    return 0.9 if int(t / 7) % 2 else 0.004


def _history(seed: int, ticks: int) -> list[Snapshot]:
    rng = random.Random(seed)
    cfg = Config("lb1", "t", "/nonexistent", pools(rng, 6))
    site = Site(seed, cfg)
    t, snaps = 1000.0, []
    for _ in range(ticks):
        t += rng.choice((1.0, 1.0, 0.5, 0.98, 1.03, 3.0, 0.0001))
        snaps.append(Snapshot(t, {(r.pool, r.server): r for r in site.rows()}))
    return snaps


@pytest.mark.parametrize("seed", range(6))
def test_window_gives_the_rescans_signals(seed: int) -> None:
    snaps = _history(seed, 160)
    keys = sorted({k for s in snaps for k in s.servers})
    windows = {k: Window() for k in keys}
    horizon = 34.0
    compared = dict.fromkeys(("signals", "latency", "missing"), 0)
    for n, snap in enumerate(snaps):
        history = [s for s in snaps[: n + 1] if snap.time - s.time <= horizon]
        for key in keys:
            windows[key].add(snap.time, snap.servers.get(key), horizon)
            for min_span, max_span, resolution in ((3.0, 30.0, 0.01), (2.0, 5.0, 0.05)):
                want = reference_signals(history, key, min_span, max_span, resolution)
                got = windows[key].signals(min_span, max_span, resolution)
                assert got == want, (n, key, min_span, max_span)
                compared["signals"] += want is not None
                compared["latency"] += want is not None and want.latency is not None
                compared["missing"] += want is not None and want.missing is not None
            if n % 40 == 0:
                assert server_signals(history, key, 3.0, 30.0) == reference_signals(
                    history, key, 3.0, 30.0
                )
    # Not vacuous: windows with a latency and every kind of missing signal were compared.
    assert compared["latency"] > 500 and compared["missing"] > 100, compared


def _run(seed: int, ticks: int, controller: type[Controller], rows, times, cfg, prober: bool):
    sock = Socket(rows)
    clock = lambda: times[max(sock.i - 1, 0)]  # noqa: E731
    ctl = controller(
        cfg,
        sock=sock,
        clock=clock,
        wall=clock,
        prober=FakeProber(clock, _slow_in_odd_sevens) if prober else None,
    )  # type: ignore[arg-type]
    out = []
    for _ in range(ticks):
        decisions = ctl.tick()
        out.append((decisions, copy.deepcopy(ctl.states), getattr(ctl, "kept_decisions", 0)))
    return out, sock.applied


@pytest.mark.parametrize(("seed", "prober"), [(s, s % 3 != 0) for s in range(9)])
def test_controller_decides_as_when_it_rescanned_and_decided_every_pool(seed, prober) -> None:
    rng = random.Random(seed)
    cfg = Config("lb1", "t", "/nonexistent", pools(rng, 12))
    site = Site(seed, cfg)
    ticks = 240
    rows = [site.rows() for _ in range(ticks)]
    times, t = [], 1000.0
    for _ in range(ticks):
        t += rng.choice((1.0, 1.0, 1.0, 0.5, 0.97, 1.02, 4.0))
        times.append(t)
    new, new_applied = _run(seed, ticks, Controller, rows, times, cfg, prober)
    ref, ref_applied = _run(seed, ticks, ReferenceController, rows, times, cfg, prober)
    for n, ((d_new, s_new, _), (d_ref, s_ref, _)) in enumerate(zip(new, ref, strict=True)):
        assert d_new == d_ref, n
        assert s_new == s_ref, n
    assert new_applied == ref_applied
    kept = sum(k for _, _, k in new)
    decided = sum(len(d) for d, _, _ in new)
    changes = sum(len(a) for a in new_applied)
    parks = sum(st.parks for st_pools in new[-1][1].values() for st in st_pools.servers.values())
    # Not vacuous: decisions were kept, others made afresh, weights moved (and servers parked).
    assert 0 < kept < decided and changes > 20, (kept, decided, changes)
    assert parks > 0 or not prober
