"""Structural load-imbalance detection from sampled HAProxy counters.

Per pool and window (5, 15 and 60 minutes, as far as history reaches):

- the coefficient of variation (population stdev / mean) across the pool's
  servers of their request rate and of their mean requests in flight, each per
  unit of inventory weight (a server meant to take twice the traffic is not an
  imbalance). CV > 0.3 is an imbalance; in every window, a structural one.
- per server, its z-score in each window; over 1.5 in every window marks the
  server as a structural outlier.

Per server, the capacity margin index ``CMI = 0.8 - utilization``, where the
utilization is the larger of latency / target latency (the weight
controller's capacity model) and sessions / maxconn. Under 0.2 is
critical, under 0.3 a warning.

History comes from the weight controller, which records a sample every 10 s
(``weights/history.py``) to ``/run/lbappliance/weights-history.json``; without it
the command samples HAProxy itself for a few seconds.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lbappliance.haproxy import AdminSocket
from lbappliance.paths import NODE
from lbappliance.weights.config import load
from lbappliance.weights.history import RECORD_EVERY, Sample, load_history, sample_of

WINDOWS = (("5m", 300.0), ("15m", 900.0), ("60m", 3600.0))
CV_IMBALANCED = 0.3
Z_OUTLIER = 1.5
CMI_THRESHOLD = 0.8  # utilisation ceiling: 20 % headroom kept for bursts
CMI_CRITICAL = 0.2
CMI_WARNING = 0.3
DEFAULT_HISTORY = NODE.weights_history


# --- analysis -------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolMeta:
    """What the inventory says about a pool: inventory weights and the target latency."""

    weights: dict[str, int]
    target_latency: float


@dataclass
class WindowStats:
    window: str
    span: float  # seconds of history actually covered
    coverage: float  # span / window length
    cv_rate: float | None
    cv_inflight: float | None
    imbalanced: bool
    z_rate: dict[str, float] = field(default_factory=dict)


@dataclass
class ServerReport:
    server: str
    status: str
    weight: int | None
    inventory_weight: int
    rate: float | None  # req/s over the shortest window
    inflight: float | None
    latency: float | None  # s, HAProxy's sliding average time to response headers
    utilization: float | None
    cmi: float | None
    cmi_level: str  # ok | warning | critical | unknown
    outlier: bool


@dataclass
class PoolReport:
    pool: str
    target_latency: float
    verdict: str  # balanced | imbalanced | structural | unknown
    windows: list[WindowStats]
    servers: list[ServerReport]
    note: str = ""


def _cv(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    if mean <= 0:
        return None
    return statistics.pstdev(values) / mean


def _z(values: dict[str, float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    mean = statistics.fmean(values.values())
    sd = statistics.pstdev(values.values())
    return {k: (v - mean) / sd if sd > 0 else 0.0 for k, v in values.items()}


def analyze_pool(pool: str, samples: list[Sample], meta: PoolMeta | None) -> PoolReport:
    """Imbalance report of ``pool`` from ``samples`` (oldest first, newest = now)."""
    newest = samples[-1]
    rows = newest.servers.get(pool, {})
    weights = dict(meta.weights) if meta else {}
    for name, row in rows.items():
        weights.setdefault(name, max(int(row.get("uweight") or 0), 1))
    active = [n for n, r in rows.items() if r.get("up") and not r.get("backup") and n in weights]
    target = meta.target_latency if meta else 0.1
    windows: list[WindowStats] = []
    first_rates: dict[str, float] = {}
    first_inflight: dict[str, float] = {}
    for label, length in WINDOWS:
        inside = [s for s in samples if newest.time - s.time <= length + RECORD_EVERY / 2]
        oldest = inside[0]
        span = newest.time - oldest.time
        if span <= 0 or (windows and span <= windows[-1].span):
            break  # no (more) history for this window
        rates, inflight = {}, {}
        for n in active:
            old = oldest.servers.get(pool, {}).get(n)
            if not old or old.get("stot") is None or rows[n].get("stot") is None:
                continue
            delta = rows[n]["stot"] - old["stot"]
            if delta < 0:
                continue  # counters reset (HAProxy reload)
            rates[n] = delta / span / weights[n]
            scur = [
                s.servers.get(pool, {}).get(n, {}).get("scur")
                for s in inside
                if s.servers.get(pool, {}).get(n, {}).get("scur") is not None
            ]
            inflight[n] = statistics.fmean(scur) / weights[n] if scur else 0.0
        cv_rate, cv_inflight = _cv(list(rates.values())), _cv(list(inflight.values()))
        # In-flight counts near zero are noise, not imbalance: only rates flag.
        imbalanced = cv_rate is not None and cv_rate > CV_IMBALANCED
        windows.append(
            WindowStats(
                label, span, min(1.0, span / length), cv_rate, cv_inflight, imbalanced, _z(rates)
            )
        )
        if not first_rates:
            first_rates = {n: r * weights[n] for n, r in rates.items()}
            first_inflight = {n: i * weights[n] for n, i in inflight.items()}
    servers = []
    for n, row in sorted(rows.items()):
        if row.get("backup"):
            continue
        latency = row["rtime"] / 1000 if row.get("rtime") is not None else None
        utils = []
        if latency is not None and target > 0:
            utils.append(latency / target)
        if row.get("slim") and row.get("scur") is not None:
            utils.append(row["scur"] / row["slim"])
        util = max(utils) if utils and row.get("up") else None
        cmi = CMI_THRESHOLD - util if util is not None else None
        level = (
            "unknown"
            if cmi is None
            else "critical"
            if cmi < CMI_CRITICAL
            else "warning"
            if cmi < CMI_WARNING
            else "ok"
        )
        outlier = bool(windows) and all(abs(w.z_rate.get(n, 0.0)) > Z_OUTLIER for w in windows)
        servers.append(
            ServerReport(
                server=n,
                status=row.get("status", ""),
                weight=row.get("uweight"),
                inventory_weight=weights.get(n, 0),
                rate=first_rates.get(n),
                inflight=first_inflight.get(n),
                latency=latency,
                utilization=util,
                cmi=cmi,
                cmi_level=level,
                outlier=outlier,
            )
        )
    if not windows:
        verdict, note = "unknown", "no history yet: need two samples"
    elif all(w.imbalanced for w in windows) and windows[0].coverage >= 0.9:
        verdict, note = "structural", ""
    elif any(w.imbalanced for w in windows):
        verdict, note = "imbalanced", ""
    else:
        verdict, note = "balanced", ""
    if windows and windows[0].coverage < 0.9:
        note = f"history covers {windows[0].span:.0f} s only"
    return PoolReport(pool, target, verdict, windows, servers, note)


def analyze(samples: list[Sample], metas: dict[str, PoolMeta]) -> list[PoolReport]:
    present = samples[-1].servers
    pools = [p for p in metas if p in present] + sorted(p for p in present if p not in metas)
    return [analyze_pool(p, samples, metas.get(p)) for p in pools]


# --- presentation ---------------------------------------------------------------------


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(reports: list[PoolReport]) -> str:
    out = []
    for r in reports:
        note = f"; {r.note}" if r.note else ""
        out.append(
            f"pool {r.pool}: {r.verdict.upper()}  "
            f"(target latency {r.target_latency * 1000:.0f} ms{note})"
        )
        out.append(f"  {'window':<7} {'covered':>8} {'CV req/s':>9} {'CV inflight':>12}")
        for w in r.windows:
            flag = "  > 0.3" if w.imbalanced else ""
            out.append(
                f"  {w.window:<7} {w.span:>7.0f}s {_f(w.cv_rate, '.2f'):>9} "
                f"{_f(w.cv_inflight, '.2f'):>12}{flag}"
            )
        out.append(
            f"  {'server':<16} {'status':<10} {'weight':>9} {'req/s':>7} {'inflight':>8} "
            f"{'latency':>9} {'util':>5} {'CMI':>6}"
        )
        for s in r.servers:
            weight = f"{_f(s.weight, 'd')}/{s.inventory_weight}"
            lat = "-" if s.latency is None else f"{s.latency * 1000:.0f}ms"
            marks = []
            if s.cmi_level in ("critical", "warning"):
                marks.append(s.cmi_level.upper())
            if s.outlier:
                marks.append("OUTLIER")
            out.append(
                f"  {s.server:<16} {s.status[:10]:<10} {weight:>9} {_f(s.rate, '.1f'):>7} "
                f"{_f(s.inflight, '.1f'):>8} {lat:>9} {_f(s.utilization, '.2f'):>5} "
                f"{_f(s.cmi, '.2f'):>6}  {' '.join(marks)}".rstrip()
            )
        out.append("")
    return "\n".join(out)


def to_json(reports: list[PoolReport]) -> str:
    return json.dumps({"pools": [asdict(r) for r in reports]}, indent=2, sort_keys=True)


def alarming(reports: list[PoolReport]) -> bool:
    """A structural imbalance or a critical capacity margin somewhere."""
    return any(r.verdict == "structural" for r in reports) or any(
        s.cmi_level == "critical" for r in reports for s in r.servers
    )


# --- measuring ------------------------------------------------------------------------


def measure(
    metas: dict[str, PoolMeta], sock: AdminSocket, history: Path, sample: float
) -> list[PoolReport]:
    """Reports from the controller's recent history, else from ``sample`` seconds of HAProxy.

    Raises ``HaproxyError`` when HAProxy cannot be read.
    """
    samples = load_history(history)
    if len(samples) < 2 or time.time() - samples[-1].time > 2 * RECORD_EVERY:
        first = sample_of(time.time(), sock.show_stat())
        time.sleep(sample)
        samples = [first]
    samples.append(sample_of(time.time(), sock.show_stat()))
    return analyze(samples, metas)


def on_node(weights_config: Path, socket_path: str, sample: float) -> dict[str, Any]:
    """What ``lbappliance status --imbalance`` gets from each node (the node helper calls it).

    Pools, inventory weights, targets and the history file come from the node's
    rendered ``weights.json`` (next to the agent's config).
    """
    metas, _, history = metas_from_config(weights_config)
    reports = measure(metas, AdminSocket(socket_path), Path(history or DEFAULT_HISTORY), sample)
    return {
        "pools": [asdict(r) for r in reports],
        "table": format_table(reports),
        "alarm": alarming(reports),
    }


def metas_from_config(
    path: Path,
) -> tuple[dict[str, PoolMeta], str | None, str | None]:
    """The node's weights.json: inventory weights and targets of the controlled pools,
    HAProxy's admin socket and the controller's history file."""
    try:
        cfg = load(path)
    except (OSError, ValueError, KeyError):
        return {}, None, None
    metas = {p.name: PoolMeta(dict(p.servers), p.target_latency) for p in cfg.pools}
    return metas, cfg.haproxy_socket, cfg.history_file
