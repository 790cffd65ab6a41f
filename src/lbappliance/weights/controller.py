"""The control loop: sample HAProxy, decide per pool, apply, log, export.

Stopping the loop changes nothing in HAProxy: it keeps serving with the last
weights applied. A restarted controller starts from the weights HAProxy has
(after an HAProxy reload those are the inventory's again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .config import Config
from .haproxy import AdminSocket, SocketError
from .metrics import Metrics
from .policy import LATENCY_RESOLUTION, Decision, PoolState, decide
from .signals import Snapshot, server_signals

log = logging.getLogger("lbappliance.weights")

Recorder = Callable[[float, Snapshot], None]


class Controller:
    def __init__(
        self,
        config: Config,
        sock: AdminSocket | None = None,
        metrics: Metrics | None = None,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.config = config
        self.sock = sock or AdminSocket(config.haproxy_socket)
        self.metrics = metrics or Metrics({p.name: dict(p.servers) for p in config.pools})
        self.recorder = recorder
        self.clock = clock
        self.wall = wall
        self.history: deque[Snapshot] = deque()
        self.states = {p.name: PoolState() for p in config.pools}
        self._socket_down = False
        self._panic: dict[str, bool] = {}

    def tick(self) -> list[Decision]:
        """Read ``show stat`` once, decide every pool that is due, apply all changes."""
        try:
            stats = self.sock.show_stat()
        except SocketError as exc:
            self._socket_failed(exc)
            return []
        now = self.clock()
        snap = Snapshot(now, {(s.pool, s.server): s for s in stats})
        self.history.append(snap)
        horizon = max((p.max_span for p in self.config.pools), default=30.0) + 2 * self.config.tick
        while self.history and now - self.history[0].time > horizon:
            self.history.popleft()
        if self.recorder:
            self.recorder(self.wall(), snap)
        decisions = []
        for pool in self.config.pools:
            state = self.states[pool.name]
            if now - state.last_decision < pool.interval * 0.95:
                continue
            state.last_decision = now
            signals = {
                name: server_signals(
                    self.history,
                    (pool.name, name),
                    pool.min_span,
                    pool.max_span,
                    LATENCY_RESOLUTION * pool.target_latency,
                )
                for name in pool.servers
            }
            decisions.append(decide(pool, signals, state))
        changes = {(c.pool, c.server): c.new for d in decisions for c in d.changes}
        try:
            self.sock.set_weights(changes)
        except SocketError as exc:
            # Forget what was not applied: the next reading of uweight resynchronises.
            for d in decisions:
                for c in d.changes:
                    self.states[c.pool].servers[c.server].applied = c.old
            self._socket_failed(exc)
            return []
        if self._socket_down:
            log.info("admin socket %s answers again", self.config.haproxy_socket)
            self._socket_down = False
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
        log.info("stopped; HAProxy keeps the last weights")
