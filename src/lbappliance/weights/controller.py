"""The control loop: sample HAProxy, decide per pool, apply, log, export.

Stopping the loop changes nothing in HAProxy (it keeps serving with the last
weights applied) except that servers the controller parked at weight 0 go back to
their canary floor: no server is left out with nobody watching it. A controller
killed outright cannot do that; its restart (the unit restarts it) reads the parked
servers from ``state_file`` and probes them again. Otherwise a restarted controller
starts from the weights HAProxy has (after an HAProxy reload those are the
inventory's again, which also ends every park).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lbappliance.haproxy import AdminSocket, HaproxyError, ServerStat
from lbappliance.weights.config import Config
from lbappliance.weights.metrics import Metrics
from lbappliance.weights.policy import (
    LATENCY_RESOLUTION,
    Assessment,
    Decision,
    PoolState,
    Probes,
    ServerState,
    decide,
)
from lbappliance.weights.probe import Prober
from lbappliance.weights.signals import Signals, Windows

log = logging.getLogger("lbappliance.weights")

Recorder = Callable[[float, list[ServerStat]], None]  # (wall-clock time, show stat's servers)


# Tracked objects the cyclic collector lets accumulate before a collection: above what one
# tick leaves alive until the next (~70,000 at 10,000 services: rows, signals, decisions),
# which reference counting frees, so collections are rare instead of ~100 a tick.
YOUNG_OBJECTS = 200_000


def settle_collector() -> None:
    """Tune the cyclic collector for the loop (once, before it). What exists then (config,
    windows, states) lives as long as the controller: frozen, it is never rescanned; with
    the default young generation (700 objects) a tick at 10,000 services ran ~100
    collections and a full one about every tick, a third of its CPU."""
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


Inputs = tuple[bool, tuple[tuple[object, ...] | None, ...]]
Frozen = dict[str, tuple[object, ...]]  # a pool's server states, as values


def _frozen(servers: dict[str, ServerState]) -> Frozen:
    """The states' values: equal exactly when the states are (tuples of numbers and flags
    leave the cyclic collector's young generation at once, copies of the states would not)."""
    return {n: tuple(vars(st).values()) for n, st in servers.items()}


def _inputs(signals: dict[str, Signals | None], probes: dict[str, Probes | None] | None) -> Inputs:
    """Everything ``decide`` reads from a pool's signals, besides the pool's state.

    ``decide`` reads a server's ``stat`` only for its weight, status and queue, and its
    window only for being there; the rest of ``Signals`` it reads whole.
    """
    return probes is None, tuple(
        None
        if s is None
        else (
            s.stat.uweight,
            s.stat.status,
            s.stat.qcur,
            bool(s.window),
            s.responses,
            s.rate,
            s.latency,
            s.error_ratio,
            s.missing,
            s.latency_long,
        )
        for s in signals.values()
    )


@dataclasses.dataclass
class _Kept:
    """A pool's last decision, kept while its inputs and its state stay as they were.

    ``decide`` is a function of the pool's config, ``_inputs``, its state, the probes
    and ``now``. The decision is kept only when it left the state as it found it and
    there were no probes (no server parked or re-admitted: then ``now`` is not read
    either), so deciding again on equal inputs and state would give the same decision
    and leave the state alone again (``tests/weights/test_windows.py`` checks it against
    deciding every time).
    """

    inputs: Inputs
    servers: Frozen  # the pool's server states, before and after
    panic: bool
    decision: Decision

    @staticmethod
    def keeps(before: Frozen, panic: bool, state: PoolState) -> bool:
        """Whether a decision just made on ``inputs`` may be kept."""
        watched = any(s.parked or s.readmitting for s in state.servers.values())
        return not watched and panic == state.panic and before == _frozen(state.servers)

    def holds(self, inputs: Inputs, state: PoolState) -> bool:
        return (
            inputs == self.inputs
            and state.panic == self.panic
            and _frozen(state.servers) == self.servers
        )

    def again(self, signals: dict[str, Signals | None]) -> Decision:
        """The kept decision, showing this tick's signals (values ``decide`` did not read)."""
        d = self.decision
        assessments = [
            Assessment(
                a.server,
                a.state,
                signals.get(a.server),
                a.capacity,
                a.headroom,
                a.target,
                a.weight,
                a.reason,
            )
            for a in d.assessments
        ]
        return Decision(d.pool, assessments, [], d.healthy_fraction, d.panic, d.idle)


class Controller:
    def __init__(
        self,
        config: Config,
        sock: AdminSocket | None = None,
        metrics: Metrics | None = None,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        prober: Prober | None = None,
    ):
        """``prober``: how outliers are watched while parked; ``None``: no parking at all
        (outliers keep the canary floor). Its clock must be ``clock``."""
        self.config = config
        self.sock = sock or AdminSocket(config.haproxy_socket)
        self.metrics = metrics or Metrics({p.name: dict(p.servers) for p in config.pools})
        self.recorder = recorder
        self.clock = clock
        self.wall = wall
        # Each server's recent readings, as far back as the longest signal window reaches.
        self.windows = Windows([(p.name, s) for p in config.pools for s in p.servers])
        self.horizon = max((p.max_span for p in config.pools), default=30.0) + 2 * config.tick
        self._kept: dict[str, _Kept] = {}  # decisions a pool keeps while its inputs hold
        self.kept_decisions = 0  # pools whose decision was kept in the last tick
        self.states = {p.name: PoolState() for p in config.pools}
        self._socket_down = False
        self._panic: dict[str, bool] = {}
        self.prober = prober
        self._parked: set[tuple[str, str]] = set()
        if prober is not None:
            self._load_parked()

    def tick(self) -> list[Decision]:
        """Read ``show stat`` once, decide every pool that is due, apply all changes."""
        try:
            stats = self.sock.show_stat()
        except HaproxyError as exc:
            self._socket_failed(exc)
            return []
        now = self.clock()
        self.windows.add(now, stats, self.horizon)
        if self.recorder:
            self.recorder(self.wall(), stats)
        decisions = []
        before: dict[str, Frozen] = {}
        self.kept_decisions = 0
        for pool in self.config.pools:
            state = self.states[pool.name]
            if now - state.last_decision < pool.interval * 0.95:
                continue
            state.last_decision = now
            signals = {}
            for name in pool.servers:
                span = pool.max_span
                st = state.servers.get(name)
                if st is not None and st.readmitting:  # not what it answered before its park
                    span = min(span, max(now - st.since, pool.min_span))
                signals[name] = self.windows[(pool.name, name)].signals(
                    pool.min_span, span, LATENCY_RESOLUTION * pool.target_latency
                )
            probes: dict[str, Probes | None] | None = None
            if self.prober is not None:
                probes = {
                    n: self.prober.probes((pool.name, n))
                    for n, st in state.servers.items()
                    if st.parked or st.readmitting
                }
            inputs = _inputs(signals, probes)
            kept = self._kept.get(pool.name)
            if kept is not None and kept.holds(inputs, state):
                decisions.append(kept.again(signals))
                self.kept_decisions += 1
                continue
            previous = _frozen(state.servers)
            panic = state.panic
            decision = decide(pool, signals, state, probes, now)
            decisions.append(decision)
            before[pool.name] = previous
            if _Kept.keeps(previous, panic, state):
                self._kept[pool.name] = _Kept(inputs, previous, panic, decision)
            else:
                self._kept.pop(pool.name, None)
        changes = {(c.pool, c.server): c.new for d in decisions for c in d.changes}
        try:
            self.sock.set_weights(changes)
        except HaproxyError as exc:
            # Forget what was not applied (parks included): the next reading resynchronises.
            for d in decisions:
                for c in d.changes:
                    old = before[c.pool].get(c.server)
                    st = ServerState(*old) if old else ServerState(float(c.old), c.old)  # type: ignore[arg-type]
                    self.states[c.pool].servers[c.server] = st
            self._socket_failed(exc)
            return []
        if self._socket_down:
            log.info("admin socket %s answers again", self.config.haproxy_socket)
            self._socket_down = False
        self._sync_probes()
        for d in decisions:
            self._log(d)
        self.metrics.record(decisions, self.wall())
        return decisions

    def _log(self, d: Decision) -> None:
        if self._panic.get(d.pool, False) != d.panic:
            self._panic[d.pool] = d.panic
            frac = f"{d.healthy_fraction:.0%}" if d.healthy_fraction is not None else "?"
            if d.panic:
                log.warning("pool %s: panic mode on (%s healthy)", d.pool, frac)
            else:
                log.info("pool %s: panic mode off (%s healthy)", d.pool, frac)
        for c in d.changes:
            log.info(
                "pool %s server %s weight %d -> %d: %s", c.pool, c.server, c.old, c.new, c.reason
            )

    def _sync_probes(self) -> None:
        """Probe exactly the parked and re-admitted servers; record the parked ones."""
        if self.prober is None:
            return
        watch, parked = {}, set()
        for pool in self.config.pools:
            for name, st in self.states[pool.name].servers.items():
                key = (pool.name, name)
                row = self.windows[key].new  # this tick's row (None: absent)
                if (st.parked or st.readmitting) and row is not None:
                    watch[key] = (row.addr, pool.probe_path)
                if st.parked:
                    parked.add(key)
        for key in self.prober.watched() - set(watch):
            self.prober.unwatch(key)
        for key, (addr, path) in watch.items():
            self.prober.watch(key, addr, path)
        if parked != self._parked:
            self._parked = parked
            self._save_parked()

    def _save_parked(self) -> None:
        if not self.config.state_file:
            return
        parked = [
            {"pool": p, "server": s, "parks": self.states[p].servers[s].parks}
            for p, s in sorted(self._parked)
        ]
        path = Path(self.config.state_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"parked": parked}))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot record parked servers in %s: %s", path, exc)

    def _load_parked(self) -> None:
        """Resume the parks of a previous run; HAProxy's weight decides (0: still parked)."""
        path = Path(self.config.state_file) if self.config.state_file else None
        if path is None or not path.exists():
            return
        try:
            entries = json.loads(path.read_text()).get("parked", [])
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return
        now = self.clock()
        for e in entries:
            state = self.states.get(e.get("pool"))
            if state is not None and e.get("server") in self._servers(e["pool"]):
                state.servers[e["server"]] = ServerState(
                    0.0, 0, parked=True, parks=int(e.get("parks", 1)), since=now
                )
                self._parked.add((e["pool"], e["server"]))
                log.info(
                    "pool %s server %s: still parked, probing it again", e["pool"], e["server"]
                )

    def _servers(self, pool: str) -> dict[str, int]:
        return next((p.servers for p in self.config.pools if p.name == pool), {})

    def release_parked(self) -> None:
        """Put every parked server back at its canary floor (on a clean stop)."""
        changes: dict[tuple[str, str], int] = {}
        for pool in self.config.pools:
            for name, st in self.states[pool.name].servers.items():
                if st.parked:
                    changes[(pool.name, name)] = max(
                        1, round(pool.servers[name] * pool.canary_weight_percent / 100)
                    )
        if not changes:
            return
        try:
            self.sock.set_weights(changes)
        except HaproxyError as exc:
            log.warning("could not release parked servers %s: %s", sorted(changes), exc)
            return
        for (pool_name, name), weight in changes.items():
            st = self.states[pool_name].servers[name]
            st.parked, st.applied, st.smoothed = False, weight, float(weight)
            log.info(
                "pool %s server %s weight 0 -> %d: controller stopping, parked server back at "
                "its canary floor",
                pool_name,
                name,
                weight,
            )
        self._parked = set()
        self._save_parked()

    def _socket_failed(self, exc: Exception) -> None:
        self.metrics.socket_error()
        if not self._socket_down:
            log.warning("admin socket unavailable, HAProxy keeps its weights: %s", exc)
            self._socket_down = True

    def run(self, stop: threading.Event) -> None:
        """Tick every ``config.tick`` seconds until ``stop`` is set."""
        log.info(
            "controlling %s via %s every %.2f s",
            ", ".join(p.name for p in self.config.pools) or "no pools",
            self.config.haproxy_socket,
            self.config.tick,
        )
        settle_collector()
        next_tick = self.clock()
        while not stop.is_set():
            if self.config.pools:
                try:
                    self.tick()
                except Exception:  # a bug must not take the loop down; HAProxy is unaffected
                    log.exception("control step failed")
            next_tick += self.config.tick
            delay = next_tick - self.clock()
            if delay < 0:
                next_tick = self.clock()
                delay = 0
            stop.wait(delay)
        self.release_parked()
        if self.prober is not None:
            self.prober.stop()
        log.info("stopped; HAProxy keeps the last weights")
