"""Recorded ``show stat`` samples (tests/weights/data/*.json) and synthetic ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lbappliance.haproxy import ServerStat, parse_stat
from lbappliance.weights.policy import PROBE_INTERVAL, Probes
from lbappliance.weights.signals import Snapshot

DATA = Path(__file__).parent / "data"


def recording(name: str) -> list[Snapshot]:
    """Snapshots of a recording, times relative to its start (see its "description")."""
    data = json.loads((DATA / f"{name}.json").read_text())
    snaps = []
    for s in data["samples"]:
        text = "\n".join([data["header"], *s["rows"]]) + "\n"
        snaps.append(Snapshot(s["t"], {(r.pool, r.server): r for r in parse_stat(text).servers}))
    return snaps


def stat(server: str = "s1", pool: str = "web", **kw: object) -> ServerStat:
    """A server row with plausible defaults."""
    values: dict[str, object] = dict(
        pool=pool,
        server=server,
        status="UP",
        uweight=100,
        backup=False,
        scur=0,
        qcur=0,
        slim=200,
        stot=0,
        req_tot=0,
        responses=0,
        hrsp_5xx=0,
        econ=0,
        eresp=0,
        qtime=0,
        ctime=0,
        rtime=0,
        ttime=0,
        check_status="L7OK",
        agent_status="",
    )
    values.update(kw)
    return ServerStat(**values)  # type: ignore[arg-type]


class FakeProber:
    """Stands in for ``probe.Prober`` (no traffic leaves the test): each probe, one per
    ``PROBE_INTERVAL`` since ``watch``, takes ``latency`` seconds (a number, or a
    function of the probe's time)."""

    def __init__(self, clock: Callable[[], float], latency: float | Callable[[float], float] = 0.9):
        self.clock = clock
        self.latency = latency if callable(latency) else (lambda _t, v=latency: v)
        self.started: dict[tuple[str, str], float] = {}
        self.addresses: dict[tuple[str, str], str] = {}

    def watch(self, key: tuple[str, str], address: str, path: str) -> None:
        self.started.setdefault(key, self.clock())
        self.addresses[key] = address

    def unwatch(self, key: tuple[str, str]) -> None:
        self.started.pop(key, None)

    def watched(self) -> set[tuple[str, str]]:
        return set(self.started)

    def stop(self) -> None:
        self.started.clear()

    def probes(self, key: tuple[str, str]) -> Probes | None:
        if key not in self.started:
            return None
        now, start = self.clock(), self.started[key]
        times = [start + i * PROBE_INTERVAL for i in range(int((now - start) / PROBE_INTERVAL))]
        return Probes(start, tuple((t, self.latency(t)) for t in times))
