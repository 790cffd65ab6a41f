"""Recorded ``show stat`` samples (tests/weights/data/*.json) and synthetic ones."""

from __future__ import annotations

import json
from pathlib import Path

from lbappliance.haproxy import ServerStat, parse_stat
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
