"""The weight policy: pure decisions on synthetic and recorded signals."""

from __future__ import annotations

from lbappliance.weights.config import PoolConfig
from lbappliance.weights.policy import PROBE_INTERVAL, PoolState, Probes, decide
from lbappliance.weights.signals import Signals, server_signals
from tests.weights.fixtures import recording, stat

SERVERS = {"s1": 100, "s2": 100, "s3": 100, "s4": 100}


def pool(**kw: object) -> PoolConfig:
    return PoolConfig(name="web", servers=dict(kw.pop("servers", SERVERS)), **kw)  # type: ignore[arg-type]


def sig(
    server: str,
    latency: float | None = 0.002,
    *,
    rate: float = 25.0,
    errors: float = 0.0,
    responses: int = 100,
    missing: str | None = None,
    **row: object,
) -> Signals:
    return Signals(
        stat=stat(server, **row),
        window=5.0 if latency is not None or missing else 0.0,
        responses=responses if latency is not None else 0,
        rate=rate,
        latency=latency,
        error_ratio=errors,
        missing=missing,
    )


def healthy(*names: str, **kw: object) -> dict[str, Signals]:
    return {n: sig(n, **kw) for n in names}  # type: ignore[arg-type]


def run(cfg: PoolConfig, state: PoolState, signals_fn, steps: int) -> list[dict[str, int]]:
    """Apply ``steps`` decisions, feeding each applied weight back as HAProxy's uweight."""
    weights = {
        n: state.servers[n].applied if n in state.servers else w for n, w in cfg.servers.items()
    }
    history = []
    for _ in range(steps):
        signals = {n: s for n, s in signals_fn().items()}
        for n, s in signals.items():
            signals[n] = Signals(
                **{**s.__dict__, "stat": stat(n, **{**_row(s), "uweight": weights[n]})}
            )
        d = decide(cfg, signals, state)
        for c in d.changes:
            weights[c.server] = c.new
        history.append(dict(weights))
    return history


def _row(s: Signals) -> dict[str, object]:
    return {k: getattr(s.stat, k) for k in ("status", "qcur", "agent_status")}


def test_all_healthy_nothing_changes() -> None:
    state = PoolState()
    for _ in range(20):
        d = decide(pool(), healthy(*SERVERS), state)
        assert not d.changes and not d.panic and d.healthy_fraction == 1


def test_hard_gray_failure_goes_to_the_floor_and_stays() -> None:
    state = PoolState()
    history = run(
        pool(),
        state,
        lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.9)},
        25,
    )
    s4 = [h["s4"] for h in history]
    assert s4 == sorted(s4, reverse=True)  # monotone, no bounce
    assert s4[0] < 100 and s4[-1] == 1  # an outlier's floor: 1 % of its inventory weight
    assert s4.index(1) <= 16  # alpha 0.3 per second: ~13 s from 100 to the floor
    assert all(h[n] == 100 for h in history for n in ("s1", "s2", "s3"))


def test_first_step_is_smoothed_and_explained() -> None:
    state = PoolState()
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.9)}, state)
    (change,) = d.changes
    assert (change.server, change.old, change.new) == ("s4", 100, 70)  # 0.3*1 + 0.7*100
    assert "latency 900.0 ms (target 100.0 ms)" in change.reason
    assert "outlier: over 20.0 ms (2x the pool's median 2.0 ms)" in change.reason


def test_soft_failure_is_an_outlier_under_the_target() -> None:
    """+60 ms is within the 100 ms target, but 30x the pool's median: the canary floor."""
    soft = lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.06)}  # noqa: E731
    history = run(pool(), PoolState(), soft, 30)
    assert history[-1]["s4"] == 1
    d = decide(pool(), soft(), PoolState())
    assert d.assessments[3].state == "outlier" and d.healthy_fraction == 0.75
    # Not an outlier with a wider factor: it keeps its headroom share, 100/60 - 1 = 0.67 of 9.
    history = run(pool(outlier_factor=50), PoolState(), soft, 30)
    assert 6 <= history[-1]["s4"] <= 8


def test_outliers_are_relative_to_the_pool() -> None:
    """The same 60 ms is no outlier when the whole pool is that slow, and 15 ms never is."""
    d = decide(pool(), healthy(*SERVERS, latency=0.06), PoolState())
    assert not d.changes and {a.state for a in d.assessments} == {"healthy"}
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.015)}, PoolState())
    assert d.assessments[3].state == "healthy"  # under outlier_min_latency (20 ms)
    # Two servers: the median is the faster one's latency, so one slow server stands out.
    two = pool(servers={"s1": 100, "s2": 100})
    d = decide(two, {"s1": sig("s1", 0.002), "s2": sig("s2", 0.06)}, PoolState())
    assert [a.state for a in d.assessments] == ["healthy", "outlier"]


def test_outlier_floor_is_below_the_healthy_floor() -> None:
    """Within target, capacity weighting stops at min_weight_percent; outliers go lower."""
    history = run(
        pool(outlier_factor=100, canary_weight_percent=1),
        PoolState(),
        lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.099)},
        40,
    )
    assert history[-1]["s4"] == 5  # just under the target: no headroom, the 5 % floor
    history = run(
        pool(canary_weight_percent=3),
        PoolState(),
        lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.099)},
        40,
    )
    assert history[-1]["s4"] == 3


def test_recovered_outlier_rises_gradually() -> None:
    state = PoolState()
    run(pool(), state, lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.9)}, 20)
    history = run(pool(), state, lambda: healthy(*SERVERS), 20)
    s4 = [h["s4"] for h in history]
    assert s4[:5] == [2, 4, 8, 16, 32]  # at most doubling per step
    assert s4 == sorted(s4) and s4[-1] == 100


def test_floor_follows_min_weight_percent_and_never_reaches_zero() -> None:
    history = run(
        pool(min_weight_percent=1),
        PoolState(),
        lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.9)},
        40,
    )
    assert history[-1]["s4"] == 1
    history = run(
        pool(min_weight_percent=0),
        PoolState(),
        lambda: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.9)},
        40,
    )
    assert history[-1]["s4"] == 1  # 0 would be HAProxy's drain, the operator's tool


def test_close_latencies_settle_without_oscillation() -> None:
    history = run(
        pool(servers={"s1": 100, "s2": 100}),
        PoolState(),
        lambda: {"s1": sig("s1", 0.020), "s2": sig("s2", 0.024)},
        60,
    )
    s2 = [h["s2"] for h in history]
    assert history[-1]["s1"] == 100 and 76 <= s2[-1] <= 84  # (100/24-1)/(100/20-1) = 0.79
    assert s2 == sorted(s2, reverse=True)
    assert len(set(s2[12:])) == 1  # settled after ~12 s


def test_recorded_close_latencies_bounded_change_per_minute() -> None:
    """Replayed on real HAProxy readings: weights move once, then stay (no sawtooth)."""
    snaps = recording("close_20_24ms")
    cfg = pool(servers={"backend1": 100, "backend2": 100})
    state = PoolState()
    applied = {"backend1": 100, "backend2": 100}
    changes = []
    for i in range(2, len(snaps) + 1):
        window = snaps[:i]
        signals = {}
        for n in cfg.servers:
            s = server_signals(window, ("web", n), cfg.min_span, cfg.max_span, 0.01)
            signals[n] = Signals(**{**s.__dict__, "stat": stat(n, uweight=applied[n])})
        for c in decide(cfg, signals, state).changes:
            applied[c.server] = c.new
            changes.append(c)
    assert applied["backend1"] == 100 and 75 <= applied["backend2"] <= 88
    assert all(c.server == "backend2" and c.new < c.old for c in changes)  # one direction only
    assert len(changes) <= 6


def test_missing_signals_degrade_and_never_rise() -> None:
    state = PoolState()
    # s4's stale numbers would look excellent; it is degraded all the same.
    stale = sig("s4", None, missing="no response for 3.0 s with 12 requests in flight")
    history = run(pool(), state, lambda: {**healthy("s1", "s2", "s3"), "s4": stale}, 20)
    s4 = [h["s4"] for h in history]
    assert s4 == sorted(s4, reverse=True) and s4[-1] == 1
    d = decide(
        pool(),
        {**healthy("s1", "s2", "s3"), "s4": sig("s4", None, missing="x", uweight=40)},
        PoolState(),
    )
    assert [c.new for c in d.changes] == [28]  # 0.3 * 1 + 0.7 * 40
    assert "degraded, weight never raised" in d.changes[0].reason
    # Below the floor already (an operator set it): it stays there, it does not rise to the floor.
    d = decide(
        pool(),
        {**healthy("s1", "s2", "s3"), "s4": sig("s4", None, missing="x", uweight=2)},
        PoolState(),
    )
    assert not d.changes


def test_missing_never_rises_even_in_panic() -> None:
    slow = {n: sig(n, 0.5) for n in ("s1", "s2", "s3")}
    state = PoolState()
    d = decide(pool(), {**slow, "s4": sig("s4", None, missing="x", uweight=50)}, state)
    assert d.panic and [c.server for c in d.changes] == ["s4"] and d.changes[0].new < 50


def test_silent_server_with_weight_is_missing() -> None:
    silent = sig("s4", None, responses=0)
    silent = Signals(**{**silent.__dict__, "window": 5.0})
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": silent}, PoolState())
    assert "no response although ~75 were expected" in d.changes[0].reason


def test_panic_spreads_over_all_servers() -> None:
    cfg = pool()
    state = PoolState()
    weights = {"s1": 5, "s2": 5, "s3": 5, "s4": 100}
    signals = {n: sig(n, 0.4, uweight=w) for n, w in weights.items()}
    signals["s4"] = sig("s4", 0.01, uweight=100)
    d = decide(cfg, signals, state)  # 1 of 4 healthy < 50 %
    assert d.panic and d.healthy_fraction == 0.25
    assert {c.server for c in d.changes} == {"s1", "s2", "s3"}
    assert all(c.new > c.old and "panic" in c.reason for c in d.changes)
    history = run(
        cfg,
        state,
        lambda: {**{n: sig(n, 0.4) for n in ("s1", "s2", "s3")}, "s4": sig("s4", 0.01)},
        20,
    )
    assert history[-1] == {"s1": 100, "s2": 100, "s3": 100, "s4": 100}


def test_panic_threshold_zero_never_panics() -> None:
    signals = {n: sig(n, 0.4) for n in SERVERS}
    signals["s4"] = sig("s4", 0.8)
    d = decide(pool(panic_threshold=0), signals, PoolState())
    assert not d.panic
    # All over target and overloaded: proportional to estimated capacity (s4 has half).
    assert [c.server for c in d.changes] == ["s4"]
    assert "all over target: by capacity" in d.changes[0].reason


def test_down_excluded_and_absent_servers_are_left_alone() -> None:
    signals = {
        "s1": sig("s1", 0.9, status="DOWN"),
        "s2": sig("s2", 0.9, status="MAINT"),
        "s3": sig("s3", 0.9, status="DRAIN"),
        "s4": sig("s4", 0.002),
    }
    d = decide(pool(), signals, PoolState())
    assert not d.changes
    states = {a.server: a.state for a in d.assessments}
    assert states == {"s1": "down", "s2": "excluded", "s3": "excluded", "s4": "healthy"}
    d = decide(pool(), {"s4": sig("s4")}, PoolState())
    assert {a.server: a.state for a in d.assessments}["s1"] == "absent"


def test_hysteresis_skips_small_moves() -> None:
    # Latencies under 10 % of the target count as equal: 3 ms and 9 ms are both "fast".
    d = decide(
        pool(), {"s1": sig("s1", 0.003), "s2": sig("s2", 0.009), **healthy("s3", "s4")}, PoolState()
    )
    assert not d.changes
    # 11 ms vs 10 ms: target 0.88 of inventory; one step 100 -> 96.4 is under 5 %: skipped,
    # the next ones add up and pass.
    state = PoolState()
    sigs = {"s1": sig("s1", 0.011), **healthy("s2", "s3", "s4")}
    first = decide(pool(), sigs, state)
    assert not first.changes
    history = run(pool(), state, lambda: sigs, 10)
    assert history[-1]["s1"] < 100


def test_weights_changed_outside_are_adopted() -> None:
    state = PoolState()
    decide(pool(), healthy(*SERVERS), state)
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.002, uweight=40)}, state)
    assert state.servers["s4"].applied in (40, d.changes[0].new if d.changes else 40)
    assert all(c.old == 40 for c in d.changes)  # restarted from HAProxy's value, not ours


def test_capacity_cap_limits_growth_near_the_target() -> None:
    # s4 at 90 ms (capacity 25*100/90 = 27.8 req/s, 80 % = 22.2) cannot be given its
    # headroom share if that would bring it more than 22 req/s.
    state = PoolState()
    d = decide(
        pool(),
        {**healthy("s1", "s2", "s3", rate=5), "s4": sig("s4", 0.09, rate=25, uweight=10)},
        state,
    )
    assert all(c.new <= 10 for c in d.changes)


def test_idle_pool_holds() -> None:
    quiet = {n: sig(n, 0.9 if n == "s4" else 0.002, responses=2) for n in SERVERS}
    d = decide(pool(), quiet, PoolState())
    assert d.idle and not d.changes


def test_errors_lower_capacity_and_health() -> None:
    signals = {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.002, errors=0.5)}
    d = decide(pool(), signals, PoolState())
    s4 = next(a for a in d.assessments if a.server == "s4")
    assert s4.state == "outlier" and d.changes and d.changes[0].new < 100
    assert "errors 50.0%" in d.changes[0].reason and "outlier: errors over 5%" in s4.reason


def test_queued_requests_mean_no_headroom() -> None:
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.002, qcur=7)}, PoolState())
    assert d.changes and "7 queued" in d.changes[0].reason


def test_rises_wait_for_the_long_window() -> None:
    """A few fast responses from an intermittently slow server do not raise it."""
    lucky = Signals(**{**sig("s4", 0.002, uweight=1).__dict__, "latency_long": 0.09})
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": lucky}, PoolState())
    assert not d.changes and "latency 90.0 ms" in d.assessments[3].reason
    recovered = Signals(**{**lucky.__dict__, "latency_long": 0.002})
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": recovered}, PoolState())
    assert [c.new for c in d.changes] == [2]


# --- parking: outliers out of users' traffic while the controller probes them ----------


def probed(
    cfg: PoolConfig,
    state: PoolState,
    signals_fn,
    probe_fn,
    steps: int,
    start: float = 0.0,
    status_at_zero: str = "DRAIN",
) -> list[dict[str, int]]:
    """Like ``run``, one step a second, with probes: ``probe_fn(t)`` is a probe's latency.

    Probes every PROBE_INTERVAL s of each parked or re-admitted server; HAProxy shows a
    weight-0 server as DRAIN.
    """
    weights = {
        n: state.servers[n].applied if n in state.servers else w for n, w in cfg.servers.items()
    }
    samples: dict[str, list[tuple[float, float | None]]] = {}
    started: dict[str, float] = {}
    history = []
    for i in range(steps):
        now = start + i
        signals = {}
        for n, s in signals_fn(now).items():
            row = {**_row(s), "uweight": weights[n]}
            if weights[n] == 0:
                row["status"] = status_at_zero
            signals[n] = Signals(**{**s.__dict__, "stat": stat(n, **row)})
        watched = [n for n, st in state.servers.items() if st.parked or st.readmitting]
        for n in list(samples):
            if n not in watched:
                del samples[n], started[n]
        for n in watched:
            got = samples.setdefault(n, [])
            started.setdefault(n, now - 1)
            t = now - 1 + PROBE_INTERVAL
            while t <= now:
                got.append((t, probe_fn(n, t)))
                t += PROBE_INTERVAL
        probes = {n: Probes(started=started[n], samples=tuple(samples[n])) for n in watched}
        probes = {n: p if p.samples else None for n, p in probes.items()}
        d = decide(cfg, signals, state, probes, now)
        for c in d.changes:
            weights[c.server] = c.new
        history.append(dict(weights))
    return history


def slow_until(heal: float, latency: float = 0.9):
    """s4 is slow (for users and probes) until ``heal``; its users' signals then are fast."""

    def signals(now: float) -> dict[str, Signals]:
        return {**healthy("s1", "s2", "s3"), "s4": sig("s4", latency if now < heal else 0.002)}

    def probe(server: str, t: float) -> float | None:
        return latency if server == "s4" and t < heal else 0.002

    return signals, probe


def test_outlier_is_parked_at_once_while_probing() -> None:
    state = PoolState()
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.06)}, state, {}, 0.0)
    (change,) = d.changes
    assert (change.server, change.old, change.new) == ("s4", 100, 0)  # no smoothing down
    assert "outlier: over 20.0 ms" in change.reason and "parked at weight 0" in change.reason
    assert d.assessments[3].state == "outlier" and state.servers["s4"].parked
    # Without probes (no prober) the same server only starts down to the canary floor.
    d = decide(pool(), {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.06)}, PoolState())
    assert [c.new for c in d.changes] == [70]


def test_parked_server_stays_out_while_probes_are_slow() -> None:
    signals, probe = slow_until(heal=1e9)
    history = probed(pool(), PoolState(), signals, probe, 40)
    assert all(h["s4"] == 0 for h in history)
    assert all(h[n] == 100 for h in history for n in ("s1", "s2", "s3"))


def test_healed_server_comes_back_gradually_after_calm_probes() -> None:
    state = PoolState()
    signals, probe = slow_until(heal=10.0)
    history = probed(pool(), state, signals, probe, 50)
    s4 = [h["s4"] for h in history]
    back = next(i for i, w in enumerate(s4) if w > 0)
    assert 10 + 5 <= back <= 10 + 7  # 5 s of healthy probes first
    assert s4[back : back + 5] == [1, 2, 4, 8, 16]  # the canary floor, then doubling
    assert s4[back:] == sorted(s4[back:]) and s4[-1] == 100
    assert not state.servers["s4"].readmitting and state.servers["s4"].parks == 0


def test_slow_probe_during_readmission_parks_again_and_waits_longer() -> None:
    state = PoolState()
    intermittent = {16.5}  # one slow probe during the first re-admission

    def probe(server: str, t: float) -> float | None:
        slow = t < 10 or any(abs(t - x) < 0.01 for x in intermittent)
        return 0.9 if server == "s4" and slow else 0.002

    signals = lambda now: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.002)}  # noqa: E731
    first = probed(pool(), state, lambda now: {**signals(now), "s4": sig("s4", 0.9)}, probe, 1)
    assert first[0]["s4"] == 0
    history = probed(pool(), state, signals, probe, 60, start=1.0)
    s4 = [h["s4"] for h in history]  # index i is the step at t = i + 1
    assert s4[14:17] == [1, 2, 0]  # re-admitted at 15 s, parked again at 17 s
    again = next(i for i in range(16, len(s4)) if s4[i] > 0) + 1
    assert 17 + 10 <= again <= 17 + 12  # the second calm period is twice as long
    assert s4[-1] == 100 and state.servers["s4"].parks == 0


def test_parking_never_leaves_the_pool_without_enough_healthy_servers() -> None:
    def two_slow(now: float) -> dict[str, Signals]:
        return {**healthy("s1", "s2"), **healthy("s3", "s4", latency=0.9)}

    def probe(server: str, t: float) -> float:
        return 0.9 if server in ("s3", "s4") else 0.002

    # Two of four parked: 2 of 4 still healthy and serving, the panic threshold (50 %).
    history = probed(pool(), PoolState(), two_slow, probe, 10)
    assert all(h == {"s1": 100, "s2": 100, "s3": 0, "s4": 0} for h in history)
    # A higher threshold: panic, nothing parked, everything at its inventory weight.
    history = probed(pool(panic_threshold=0.75), PoolState(), two_slow, probe, 10)
    assert all(h == {"s1": 100, "s2": 100, "s3": 100, "s4": 100} for h in history)
    # Without panic, parking still keeps servers serving: only those the threshold allows.
    history = probed(pool(panic_threshold=0), PoolState(), two_slow, probe, 10)
    assert all(h["s1"] == 100 and h["s2"] == 100 for h in history)
    # Two servers, one slow: parking it leaves 1 of 2 healthy, the threshold itself.
    two = pool(servers={"s1": 100, "s2": 100})

    def pair(now: float) -> dict[str, Signals]:
        return {"s1": sig("s1", 0.002), "s2": sig("s2", 0.9)}

    history = probed(two, PoolState(), pair, lambda server, t: probe("s3", t), 5)
    assert history[-1] == {"s1": 100, "s2": 0}
    # One server left serving is the least: with panic off, a 1-of-2 pool still keeps one.
    d = decide(
        pool(servers=two.servers, panic_threshold=0),
        {"s1": sig("s1", 0.002), "s2": sig("s2", 0.9)},
        PoolState(),
        {},
    )
    assert [(c.server, c.new) for c in d.changes] == [("s2", 0)]


def test_panic_readmits_parked_servers() -> None:
    state = PoolState()
    signals, probe = slow_until(heal=1e9)
    probed(pool(), state, signals, probe, 3)
    assert state.servers["s4"].parked

    def worse(now: float) -> dict[str, Signals]:
        return {**healthy("s1"), **healthy("s2", "s3", latency=0.9), "s4": sig("s4", None)}

    history = probed(pool(), state, worse, probe, 20, start=3.0)
    s4 = [h["s4"] for h in history]
    assert s4[0] == 1 and s4 == sorted(s4) and s4[-1] == 100  # back, then spread
    assert not state.servers["s4"].parked


def test_operator_weight_on_a_parked_server_ends_the_park() -> None:
    state = PoolState()
    signals, probe = slow_until(heal=1e9)
    probed(pool(), state, signals, probe, 3)
    adopted = {**healthy("s1", "s2", "s3"), "s4": sig("s4", None, uweight=50)}
    d = decide(pool(), adopted, state, {"s4": None}, 3.0)
    assert not state.servers["s4"].parked and state.servers["s4"].applied == 50
    assert d.assessments[3].state == "hold"


def test_probes_judged_by_their_mean_not_one_hiccup() -> None:
    """One probe delayed 60 ms (a busy LB) does not stop a re-admission; 10 % at +900 ms do."""
    state = PoolState()
    signals, _ = slow_until(heal=10.0)

    def hiccup(server: str, t: float) -> float:
        if server == "s4" and t < 10:
            return 0.9
        return 0.06 if abs(t - 17.5) < 0.01 else 0.002

    s4 = [h["s4"] for h in probed(pool(), state, signals, hiccup, 40)]
    back = next(i for i, w in enumerate(s4) if w > 0)
    assert s4[back:] == sorted(s4[back:]) and s4[-1] == 100  # no second park

    def intermittent(server: str, t: float) -> float:  # every 10th probe of s4 slow
        return 0.9 if server == "s4" and round(t / PROBE_INTERVAL) % 10 == 0 else 0.002

    state = PoolState()
    fast = lambda now: {**healthy("s1", "s2", "s3"), "s4": sig("s4", 0.09 if now < 1 else 0.002)}  # noqa: E731
    s4 = [h["s4"] for h in probed(pool(), state, fast, intermittent, 60)]
    assert s4[0] == 0 and all(w == 0 for w in s4)  # never 20 probes with a calm mean


def test_readmitted_server_without_users_latency_is_parked_again_on_slow_probes() -> None:
    # Found by tests/weights/test_windows.py: a re-admitted server whose own signals
    # measured nothing yet (no latency: "hold") and whose probes turn slow was parked
    # with a reason looked up where none had been written (KeyError: the tick failed).
    state = PoolState()
    d = decide(pool(), healthy(*SERVERS), state)
    st = state.servers["s4"]
    st.readmitting, st.since, st.applied, st.smoothed = True, 99.0, 1, 1.0
    probes = {"s4": Probes(98.0, tuple((99.0 + i * PROBE_INTERVAL, 0.9) for i in range(4)))}
    signals = {**healthy("s1", "s2", "s3"), "s4": sig("s4", None, uweight=1)}
    d = decide(pool(), signals, state, probes, 100.0)
    (change,) = d.changes
    assert (change.server, change.old, change.new) == ("s4", 1, 0)
    assert change.reason.startswith("re-admission stopped: probes: mean 900.0 ms")
    assert state.servers["s4"].parked
