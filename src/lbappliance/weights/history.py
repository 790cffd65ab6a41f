"""The weight controller's history: a sample of every server's counters every 10 s,
an hour of them kept in a JSON file that ``lbappliance imbalance`` reads."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lbappliance.haproxy import ServerStat

RECORD_EVERY = 10.0
KEEP = 3600.0 + 60.0
FIELDS = ("stot", "scur", "slim", "uweight", "rtime")


@dataclass(frozen=True)
class Sample:
    """Counters of every server at one wall-clock time."""

    time: float
    servers: dict[str, dict[str, dict[str, Any]]]  # pool -> server -> field -> value


def sample_of(when: float, stats: list[ServerStat]) -> Sample:
    servers: dict[str, dict[str, dict[str, Any]]] = {}
    for s in stats:
        row: dict[str, Any] = {f: getattr(s, f) for f in FIELDS}
        row["up"] = s.up
        row["backup"] = s.backup
        row["status"] = s.status
        servers.setdefault(s.pool, {})[s.server] = row
    return Sample(when, servers)


class HistoryRecorder:
    """Keeps an hour of samples, one per ``every`` seconds, in a JSON file (atomically)."""

    def __init__(self, path: Path, every: float = RECORD_EVERY, keep: float = KEEP):
        self.path = path
        self.every = every
        self.keep = keep
        self.samples = load_history(path)
        self.last = self.samples[-1].time if self.samples else -math.inf

    def record(self, when: float, stats: list[ServerStat]) -> None:
        if when - self.last < self.every:
            return
        self.last = when
        self.samples.append(sample_of(when, stats))
        self.samples = [s for s in self.samples if when - s.time <= self.keep]
        # History is a convenience: control must not depend on it.
        with contextlib.suppress(OSError):
            _write_atomic(self.path, {"samples": [asdict(s) for s in self.samples]})


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_history(path: Path) -> list[Sample]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [Sample(float(s["time"]), s["servers"]) for s in data.get("samples", [])]
