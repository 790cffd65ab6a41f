"""Latency from HAProxy's sliding averages, windows, missing signals."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from lbappliance.weights.signals import (
    HAPROXY_SAMPLES,
    Snapshot,
    recent_mean,
    rounding_error,
    server_signals,
)
from tests.weights.fixtures import recording, stat


class SlidingAverage:
    """HAProxy 2.6's per-server time average, integer for integer (freq_ctr.h, stream.c)."""

    def __init__(self) -> None:
        self.sum = 0
        self.count = 0  # cum_req: the displayed average divides by it below 512

    def add(self, v: int) -> None:
        self.count += 1  # cum_req counts the request before its time is added
        n = HAPROXY_SAMPLES if self.count > HAPROXY_SAMPLES else 0
        self.sum = self.sum - ((self.sum + n - 1) // n if n else 0) + v

    @property
    def shown(self) -> int:  # what `show stat` prints: swrate_avg rounds up
        n = self.count if 0 < self.count < HAPROXY_SAMPLES else HAPROXY_SAMPLES
        return (self.sum + n - 1) // n


@settings(max_examples=300, deadline=None)
@given(
    before=st.integers(0, 3000),
    old_ms=st.integers(0, 50),
    new_ms=st.integers(0, 2000),
    k=st.integers(1, 800),
)
def test_recent_mean_recovers_the_new_samples(before: int, old_ms: int, new_ms: int, k: int):
    avg = SlidingAverage()
    for _ in range(before):
        avg.add(old_ms)
    shown_old, count_old = avg.shown, avg.count
    for _ in range(k):
        avg.add(new_ms)
    estimate = recent_mean(shown_old, count_old, avg.shown, avg.count, k)
    # Rounding of both printed averages, plus HAProxy's own integer decay (<= 1 ms/sample).
    assert abs(estimate - new_ms) <= rounding_error(count_old, avg.count, k) + 1.0


def test_rounding_error_shrinks_with_more_responses() -> None:
    errors = [rounding_error(5000, 5000 + k, k) for k in (10, 50, 100, 200, 1000)]
    assert errors == sorted(errors, reverse=True)
    d = (511 / 512) ** 100
    assert math.isclose(errors[2], (1 + d) / (1 - d) / 2)  # ~5.1 ms


def test_noisy_latencies_average_out() -> None:
    rng = random.Random(8)
    avg = SlidingAverage()
    for _ in range(2000):
        avg.add(rng.randint(0, 2))
    old = (avg.shown, avg.count)
    samples = [rng.randint(50, 70) for _ in range(150)]
    for v in samples:
        avg.add(v)
    got = recent_mean(old[0], old[1], avg.shown, avg.count, len(samples))
    assert abs(got - sum(samples) / len(samples)) < rounding_error(old[1], avg.count, 150) + 1


def _signals(name: str, t: float, server: str = "backend1"):
    snaps = [s for s in recording(name) if s.time <= t]
    return server_signals(snaps, ("web", server), 3.0, 30.0, 0.01)


def test_hard_gray_failure_is_seen_within_seconds() -> None:
    before = _signals("hard_900ms", 7.5)
    assert before.missing is None and before.latency < 0.005
    seen = [t for t in range(9, 22) if _signals("hard_900ms", t).latency > 0.1]
    assert seen and seen[0] <= 11  # onset at 8 s; HAProxy's own average needs far longer
    late = _signals("hard_900ms", 21)
    assert abs(late.latency - 0.9) < 0.1, late
    assert _signals("hard_900ms", 21, "backend2").latency < 0.005


def test_close_latencies_are_told_apart_steadily() -> None:
    for t in range(10, 30, 2):
        b1, b2 = _signals("close_20_24ms", t), _signals("close_20_24ms", t, "backend2")
        assert abs(b1.latency - 0.0205) < 0.003 and abs(b2.latency - 0.0245) < 0.003, (t, b1, b2)


def test_no_response_while_requests_are_in_flight_is_missing() -> None:
    assert _signals("stuck_30s", 7.5).missing is None
    late = _signals("stuck_30s", 17)
    assert late.missing and "no response" in late.missing and late.latency is None
    # HAProxy's own average still looks perfect: the trap of a controller that trusts it.
    assert late.stat.rtime is not None and late.stat.rtime <= 1


def test_window_needs_history() -> None:
    snaps = [Snapshot(0.0, {("web", "s1"): stat(stot=10, responses=10, req_tot=10)})]
    sig = server_signals(snaps, ("web", "s1"), 3.0, 30.0)
    assert sig is not None and sig.window == 0 and sig.latency is None and sig.missing is None
    assert server_signals(snaps, ("web", "absent"), 3.0, 30.0) is None


def test_counter_reset_cuts_the_window() -> None:
    a = stat(stot=5000, responses=5000, req_tot=5000, rtime=1)
    b = stat(stot=10, responses=10, req_tot=10, rtime=1)  # HAProxy restarted
    c = stat(stot=110, responses=110, req_tot=110, rtime=1)
    snaps = [Snapshot(t, {("web", "s1"): s}) for t, s in ((0, a), (5, b), (10, c))]
    sig = server_signals(snaps, ("web", "s1"), 3.0, 30.0)
    assert sig.window == 5 and sig.responses == 100 and sig.rate == 20


def test_empty_counters_and_failing_agent_are_missing() -> None:
    empty = stat(rtime=None)
    snaps = [Snapshot(0, {("web", "s1"): empty}), Snapshot(5, {("web", "s1"): empty})]
    assert "empty" in server_signals(snaps, ("web", "s1"), 3.0, 30.0).missing
    agent = stat(agent_status="L4CON")
    snaps = [Snapshot(0, {("web", "s1"): agent}), Snapshot(5, {("web", "s1"): agent})]
    assert "agent-check reports L4CON" in server_signals(snaps, ("web", "s1"), 3.0, 30.0).missing
    ok = stat(agent_status="* L7OK", stot=0)
    snaps = [Snapshot(0, {("web", "s1"): ok}), Snapshot(5, {("web", "s1"): ok})]
    assert server_signals(snaps, ("web", "s1"), 3.0, 30.0).missing is None


def test_errors_and_rate() -> None:
    a = stat(stot=1000, responses=1000, req_tot=1000, rtime=2)
    b = stat(stot=1100, responses=1090, req_tot=1100, rtime=2, econ=4, hrsp_5xx=6)
    snaps = [Snapshot(0, {("web", "s1"): a}), Snapshot(4, {("web", "s1"): b})]
    sig = server_signals(snaps, ("web", "s1"), 3.0, 30.0)
    assert sig.rate == 25 and math.isclose(sig.error_ratio, 0.1) and sig.responses == 90


def test_long_window_remembers_what_the_short_one_forgot() -> None:
    sig = _signals("hard_900ms", 21)
    assert sig.latency_long is not None and sig.window < 13
    # The long window reaches back before the onset at 8 s: its mean is lower but counts.
    assert 0.1 < sig.latency_long < sig.latency
