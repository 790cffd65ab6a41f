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

import math
from collections.abc import Iterable, Sequence
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


_KEPT = 1 - 1 / HAPROXY_SAMPLES  # of the sum, per sample added at 512


def _window(count_old: int, k: int) -> tuple[float, float]:
    """How much of the old sum survives ``k`` samples, and the weight of the new ones."""
    dynamic = max(0, min(HAPROXY_SAMPLES - count_old, k))  # samples added while below 512
    decay = _KEPT ** (k - dynamic)
    return decay, dynamic * decay + (1 - decay) * HAPROXY_SAMPLES


def _complete(s: ServerStat) -> bool:
    fields = (s.stot, s.req_tot, s.responses, s.rtime, s.scur, s.uweight)
    return None not in fields


class Window:
    """One server's readings kept for its signals: the run of consecutive complete rows
    ending at the newest (an absent or incomplete row ends it), within ``horizon`` s.

    ``add`` costs O(1) (amortised) per reading and ``signals`` looks only at the readings
    its window search needs, where a rescan of the whole history per server per tick cost
    ~74 us at 10,000 services. ``signals`` gives, value for value, what that rescan gave
    (``tests/weights/test_windows.py`` keeps it as the definition and compares).
    """

    __slots__ = (
        "_cut_resp",
        "_cut_stot",
        "base",
        "cut",
        "err",
        "new",
        "req",
        "resp",
        "scur",
        "steady",
        "stot",
        "sums",
        "t",
    )

    def __init__(self) -> None:
        self.new: ServerStat | None = None  # the newest reading, complete or not
        self.base = 0  # number of readings ever dropped from the front of the lists below
        self.cut = -1  # (absolute) index of the newest kept reading the newest one is reset
        # against: an older reading with more streams or responses than the newest
        self.t: list[float] = []
        self.stot: list[int] = []
        self.resp: list[int] = []
        self.req: list[int] = []
        self.scur: list[int] = []
        self.err: list[int] = []  # econ + eresp + hrsp_5xx
        self.steady: list[float] = []  # max(rtime - 0.5, 0): what _latency averages
        self.sums: list[float] = []  # _sum(rtime, req_tot): HAProxy's sum behind rtime
        # Absolute indices of the readings no later one has reached, per counter (a
        # monotonic stack): its top is the newest older reading above the newest one.
        self._cut_stot: list[int] = []
        self._cut_resp: list[int] = []

    def add(self, time: float, row: ServerStat | None, horizon: float) -> None:
        """The reading of ``time`` (``None``: absent from ``show stat``)."""
        self.new = row
        if row is None or not _complete(row):
            self._drop(len(self.t))
            return
        stot, resp = row.stot, row.responses
        n = self.base + len(self.t)  # this reading's absolute index
        self.cut = max(
            _above(self._cut_stot, self.stot, stot, self.base, n),  # type: ignore[arg-type]
            _above(self._cut_resp, self.resp, resp, self.base, n),  # type: ignore[arg-type]
        )
        self.t.append(time)
        self.stot.append(stot)  # type: ignore[arg-type]
        self.resp.append(resp)  # type: ignore[arg-type]
        self.req.append(row.req_tot)  # type: ignore[arg-type]
        self.scur.append(row.scur)  # type: ignore[arg-type]
        self.err.append((row.econ or 0) + (row.eresp or 0) + (row.hrsp_5xx or 0))
        rtime = row.rtime
        self.steady.append(max(rtime - 0.5, 0.0))  # type: ignore[operator]
        self.sums.append(_sum(rtime, row.req_tot))  # type: ignore[arg-type]
        old = 0
        while time - self.t[old] > horizon:
            old += 1
        if old:
            self._drop(old)

    def _drop(self, count: int) -> None:
        """Forget the ``count`` oldest readings."""
        for values in (self.t, self.stot, self.resp, self.req, self.scur):
            del values[:count]
        del self.err[:count], self.steady[:count], self.sums[:count]
        self.base += count
        for stack in (self._cut_stot, self._cut_resp):
            while stack and stack[0] < self.base:
                del stack[0]

    def __len__(self) -> int:
        return len(self.t)

    def signals(self, min_span: float, max_span: float, resolution: float = 0.01) -> Signals | None:
        """``server_signals`` of this server: see there."""
        new = self.new
        if new is None:
            return None
        if not _complete(new):  # then nothing is kept
            return Signals(new, 0.0, 0, 0.0, None, 0.0, "show stat left its counters empty")
        agent = new.agent_status.removeprefix("* ")  # "* " marks a check in progress
        if agent not in AGENT_OK:
            return Signals(new, 0.0, 0, 0.0, None, 0.0, f"agent-check reports {agent}")
        t, resp, stot, req, sums = self.t, self.resp, self.stot, self.req, self.sums
        last = len(t) - 1
        now = t[last]
        # The oldest usable reading: within max_span, no counter reset since (spans only
        # shrink toward the newest, so the first one in reach from the front is it).
        oldest = max(self.cut - self.base + 1, 0)
        while oldest < last and now - t[oldest] > max_span:
            oldest += 1
        r_new, s_new, q_new = resp[last], stot[last], req[last]
        tolerance = 250 * resolution
        sum_new, n_new = sums[last], min(q_new, HAPROXY_SAMPLES)
        first = None  # index of the short window's oldest reading
        for i in range(last - 1, oldest - 1, -1):
            span = now - t[i]
            if span < min_span:
                continue
            k = r_new - resp[i]
            if first is None:
                sent = s_new - stot[i]
                if k == 0 and new.scur and (sent or self.scur[i]):
                    stuck = f"no response for {span:.1f} s with {new.scur} requests in flight"
                    return Signals(new, span, 0, 0.0, None, 0.0, stuck)
            first = i
            if k >= MIN_RESPONSES:
                # rounding_error and recent_mean, inlined (the same operations, in order)
                q_old = req[i]
                dynamic = max(0, min(HAPROXY_SAMPLES - q_old, k))
                decay = _KEPT ** (k - dynamic)
                gain = dynamic * decay + (1 - decay) * HAPROXY_SAMPLES
                error = 0.5 * (n_new + min(q_old, HAPROXY_SAMPLES) * decay) / gain
                if error <= tolerance:
                    break
                ms = max(0.0, (sum_new - sums[i] * decay) / gain)
                if error <= max(RELATIVE_ERROR * ms, tolerance):
                    break
        if first is None:
            return Signals(new, 0.0, 0, 0.0, None, 0.0, None)
        span = now - t[first]
        k = r_new - resp[first]
        sent = s_new - stot[first]
        errors = self.err[last] - self.err[first]
        k_long = r_new - resp[oldest]
        return Signals(
            stat=new,
            window=span,
            responses=k,
            rate=sent / span,
            latency=self._latency(first, k) / 1000 if k >= MIN_RESPONSES else None,
            error_ratio=min(1.0, errors / sent) if sent else 0.0,
            missing=None,
            latency_long=self._latency(oldest, k_long) / 1000 if k_long >= MIN_RESPONSES else None,
        )

    def _latency(self, start: int, k: int) -> float:
        """Mean response time (ms) of the ``k`` responses from reading ``start`` to the newest.

        The recent mean is used only when it differs from HAProxy's own average
        (taken over the window's readings, which smooths its whole-millisecond
        steps) by more than its rounding error: a smaller difference is rounding
        noise, and the long average is the steadier estimate.
        """
        req, sums, last = self.req, self.sums, len(self.t) - 1
        # recent_mean and rounding_error, inlined (the same operations, in order)
        q_old = req[start]
        dynamic = max(0, min(HAPROXY_SAMPLES - q_old, k))
        decay = _KEPT ** (k - dynamic)
        gain = dynamic * decay + (1 - decay) * HAPROXY_SAMPLES
        recent = max(0.0, (sums[last] - sums[start] * decay) / gain)
        n_old, n_new = min(q_old, HAPROXY_SAMPLES), min(req[last], HAPROXY_SAMPLES)
        error = 0.5 * (n_new + n_old * decay) / gain + DECAY_BIAS
        # Half-integers: their float sum is exact, in any order.
        steady = sum(self.steady[start + 1 :]) / (last - start)
        return recent if abs(recent - steady) > error else steady


def _above(stack: list[int], values: list[int], value: int, base: int, index: int) -> int:
    """The newest reading in ``stack`` whose value exceeds ``value`` (-1: none); then push
    ``index`` (the reading of ``value``) so the stack keeps only readings no later one
    reached."""
    while stack and values[stack[-1] - base] <= value:
        stack.pop()
    newest = stack[-1] if stack else -1
    stack.append(index)
    return newest


class Windows:
    """The ``Window`` of every server the controller steers, fed one ``show stat`` a tick."""

    def __init__(self, keys: list[Key]):
        self.windows = {key: Window() for key in keys}
        self._by_pool: dict[str, dict[str, Window]] = {}  # looked up without a key tuple
        for (pool, server), window in self.windows.items():
            self._by_pool.setdefault(pool, {})[server] = window

    def add(self, time: float, rows: Iterable[ServerStat], horizon: float) -> None:
        """The readings of ``time`` (a row repeated: the last one counts, as in a dict)."""
        latest: dict[Window, ServerStat] = {}
        by_pool = self._by_pool
        for row in rows:
            servers = by_pool.get(row.pool)
            window = servers.get(row.server) if servers is not None else None
            if window is not None:
                latest[window] = row
        for window in self.windows.values():
            window.add(time, latest.get(window), horizon)

    def __getitem__(self, key: Key) -> Window:
        return self.windows[key]

    @property
    def depth(self) -> int:
        """The most readings any server's window holds."""
        return max((len(w) for w in self.windows.values()), default=0)


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
    longest one. Only readings since the server's counters were last complete and
    did not go backwards (HAProxy restarted or reloaded) count. Requests in flight
    with no response at all for ``min_span`` make the signals missing (a stale
    average would still look fine).
    """
    window = Window()
    for snap in history:
        window.add(snap.time, snap.servers.get(key), math.inf)
    return window.signals(min_span, max_span, resolution)
