"""Per-server signals over a sliding window of ``show stat`` snapshots.

HAProxy's ``rtime`` (time to response headers) is a sliding average over the last 512
requests (the exact mean while a server has seen fewer), rounded up to whole
milliseconds. At 25 req/s that average spans 20 s, too slow to steer by. Two
readings of the average and the number of responses between them give the mean
of just those responses (``recent_mean``): the controller sees the last few
seconds, with a rounding error of at most ``(1 + d) / (2 (1 - d))`` ms for ``k``
responses, ``d = (511/512)**k`` (5 ms at 100). The window is the shortest (of at least
``min_span``) whose error is below 10 % of the estimate or a quarter of the
latency resolution the policy cares about, so a 900 ms server is seen within a few
responses and a 1 ms one is not chased through rounding noise.

Only ``rtime`` counts: HAProxy charges a request retried on another server with
the time spent on the first one in its ``qtime``/``ctime``, so one stuck server
would make the others look slow. Queueing shows in ``qcur`` and connection
trouble in ``econ``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lbappliance.haproxy import ServerStat

HAPROXY_SAMPLES = 512  # TIME_STATS_SAMPLES in HAProxy 2.x
MIN_RESPONSES = 5  # fewer: the window says nothing about latency
RELATIVE_ERROR = 0.1  # a window is long enough once its error is below this share
DECAY_BIAS = 1.0  # ms: HAProxy decays its sum by ceil(sum/512), not sum/512
AGENT_OK = ("", "L7OK", "L4OK", "L6OK", "INI")  # "" = no agent-check configured

Key = tuple[str, str]  # (pool, server)


@dataclass(frozen=True)
class Snapshot:
    """All server rows of one ``show stat`` reading at monotonic time ``time``."""

    time: float
    servers: dict[Key, ServerStat]


@dataclass(frozen=True)
class Signals:
    """What the controller knows about one server over its window."""

    stat: ServerStat
    window: float  # seconds between the two snapshots compared (0: only one reading)
    responses: int  # responses received in the window (one latency sample each)
    rate: float  # requests/s assigned in the window
    latency: float | None  # s, mean time to response headers
    error_ratio: float  # (connection errors + response errors + 5xx) / requests
    missing: str | None  # why the signals are unusable; the server is then degraded
    latency_long: float | None = None  # s, over the longest window (up to max_span)


def _sum(avg: int, count: int) -> float:
    """HAProxy's internal sum behind an average it printed rounded up."""
    return 0.0 if avg <= 0 else (avg - 0.5) * min(count, HAPROXY_SAMPLES)


def recent_mean(avg_old: int, count_old: int, avg_new: int, count_new: int, k: int) -> float:
    """Mean (ms) of the ``k`` samples HAProxy added between two readings of an average.

    ``count`` is the server's ``req_tot`` at each reading: below 512 HAProxy keeps an
    exact running mean, above it ``sum = sum - sum/512 + v`` per sample.
    """
    if k <= 0:
        raise ValueError("no samples between the readings")
    decay, gain = _window(count_old, k)
    return max(0.0, (_sum(avg_new, count_new) - _sum(avg_old, count_old) * decay) / gain)


def rounding_error(count_old: int, count_new: int, k: int) -> float:
    """Worst-case error (ms) of ``recent_mean`` from HAProxy's rounding of the averages."""
    decay, gain = _window(count_old, k)
    n_old, n_new = (min(c, HAPROXY_SAMPLES) for c in (count_old, count_new))
    return 0.5 * (n_new + n_old * decay) / gain


def _window(count_old: int, k: int) -> tuple[float, float]:
    """How much of the old sum survives ``k`` samples, and the weight of the new ones."""
    dynamic = max(0, min(HAPROXY_SAMPLES - count_old, k))  # samples added while below 512
    decay = (1 - 1 / HAPROXY_SAMPLES) ** (k - dynamic)
    return decay, dynamic * decay + (1 - decay) * HAPROXY_SAMPLES


def _complete(s: ServerStat) -> bool:
    fields = (s.stot, s.req_tot, s.responses, s.rtime, s.scur, s.uweight)
    return None not in fields


def _reset(old: ServerStat, new: ServerStat) -> bool:
    """Counters went backwards: HAProxy restarted or reloaded between the readings."""
    return (old.stot or 0) > (new.stot or 0) or (old.responses or 0) > (new.responses or 0)


def server_signals(
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
        latency=_latency(rows[first - oldest :], k) / 1000 if k >= MIN_RESPONSES else None,
        error_ratio=min(1.0, errors / sent) if sent else 0.0,
        missing=None,
        latency_long=_latency(rows, k_long) / 1000 if k_long >= MIN_RESPONSES else None,
    )


def _latency(rows: list[ServerStat], k: int) -> float:
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
