"""The weight controller against real HAProxy in the namespace lab (root, ~2.5 min).

HAProxy runs the lab site's rendered config on lb1, the controller runs as its
daemon (``python -m lbappliance.weights`` with lb1's rendered weights.json), and
the benchmark's open-loop client sends requests from the client namespace to the
VIP (routed to lb1 by a static route on the lab router: no BGP needed here).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbappliance.haproxy import AdminSocket

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gray_failure.py"
VIP = "198.51.100.10"


@pytest.fixture
def lab() -> Iterator:
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    from lbappliance.lab.netns import NetnsLab

    with NetnsLab.create() as lab:
        for host in lab.topology.backends:
            lab.start_backend(host)
        for host in lab.topology.backends:
            lab.wait_tcp(host.name, str(host.address_on("backend")), 8080)
        lab.start_haproxy("lb1")
        uplink = str(lab.topology.host("lb1").address_on("uplink"))
        lab.run("router", ["ip", "route", "replace", f"{VIP}/32", "via", uplink])
        lab.wait_tcp("client", VIP, 80)
        yield lab


def admin(lab) -> AdminSocket:
    return AdminSocket(str(lab.config("lb1", "run/haproxy/admin.sock")))


def weights(lab) -> dict[str, int]:
    return {s.server: s.uweight for s in admin(lab).show_stat() if s.pool == "web"}


def start_controller(lab):
    config = lab.config("lb1", "etc/lbappliance/weights.json")
    return lab.popen(
        "lb1", "weights", [sys.executable, "-m", "lbappliance.weights", "--config", str(config)]
    )


def controller_log(lab) -> str:
    return (lab.workdir / "logs" / "lb1-weights.log").read_text()


class Load:
    """The benchmark's open-loop client, in the client namespace, in the background."""

    def __init__(self, lab, rate: float, duration: float, timeout: float = 5.0):
        self.start = time.monotonic() + 1.0  # the schedule's start (system-wide clock)
        cmd = ["ip", "netns", "exec", lab.ns("client"), sys.executable, str(BENCH), "load"]
        cmd += ["--host", VIP, "--rate", str(rate), "--duration", str(duration)]
        cmd += ["--timeout", str(timeout), "--start-at", repr(self.start)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)

    def results(self) -> list[list]:
        out, _ = self.proc.communicate(timeout=120)
        return json.loads(out)


def watch(lab, seconds: float, every: float = 1.0) -> list[tuple[float, dict[str, int]]]:
    start = time.monotonic()
    seen = []
    while (t := time.monotonic() - start) < seconds:
        seen.append((t, weights(lab)))
        time.sleep(every)
    return seen


def test_slow_backend_loses_weight_within_bounded_time(lab) -> None:
    load = Load(lab, rate=50, duration=34)
    start_controller(lab)
    time.sleep(4)  # a few seconds of history first
    lab.set_backend("backend1", latency_ms=900)  # /health keeps answering 200
    seen = watch(lab, 26)
    first_drop = next(t for t, w in seen if w["backend1"] <= 50)
    floor = next(t for t, w in seen if w["backend1"] <= 2)  # the canary floor is 1
    assert first_drop <= 8, seen
    assert floor <= 25, seen
    assert all(w["backend2"] == 100 for _, w in seen)
    b1 = [w["backend1"] for _, w in seen]
    assert b1 == sorted(b1, reverse=True)  # no bounce
    assert "server backend1 weight 100 ->" in controller_log(lab)
    assert "latency" in controller_log(lab)
    with lab.inside("lb1"):
        metrics = urllib.request.urlopen("http://127.0.0.1:9172/metrics", timeout=5).read()
    assert (
        b'lbappliance_weights_server_state{pool="web",server="backend1",state="outlier"} 1'
        in metrics
    )
    results = load.results()
    assert not [r for r in results if r[2] != 200]


def test_close_latencies_keep_weights_steady(lab) -> None:
    lab.set_backend("backend1", latency_ms=20)
    lab.set_backend("backend2", latency_ms=24)
    load = Load(lab, rate=50, duration=62)
    start_controller(lab)
    seen = watch(lab, 60)
    settled = [w for t, w in seen if t >= 20]
    moves = sum(abs(a[n] - b[n]) for a, b in itertools.pairwise(settled) for n in a)
    assert moves <= 12, seen  # bounded change over the last 40 s of the minute
    b2 = [w["backend2"] for _, w in seen]
    reversals = sum(1 for x, y, z in zip(b2, b2[1:], b2[2:], strict=False) if (y - x) * (z - y) < 0)
    assert reversals <= 1, b2  # no sawtooth
    assert all(w["backend1"] == 100 for _, w in seen)
    assert 70 <= b2[-1] <= 92  # (100/24 - 1) / (100/20 - 1) = 0.79 of the faster one
    assert not [r for r in load.results() if r[2] != 200]


def test_killed_controller_leaves_weights_and_traffic(lab) -> None:
    # Slower than its peer but no outlier (70 < 2 x 40 ms): lowered, not parked.
    lab.set_backend("backend2", latency_ms=40)
    load = Load(lab, rate=50, duration=30)
    daemon = start_controller(lab)
    time.sleep(4)
    lab.set_backend("backend1", latency_ms=70)
    lab.wait(lambda: weights(lab)["backend1"] <= 40, 15, "backend1 weight lowered")
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(5)
    lab.daemons.pop(("lb1", "weights"))
    frozen = weights(lab)
    lab.set_backend("backend1")  # recovered, but nobody raises its weight now
    time.sleep(8)
    assert weights(lab) == frozen  # HAProxy keeps the last weights
    results = load.results()
    assert not [r for r in results if r[2] != 200]
    after = [r for r in results if r[0] > results[-1][0] - 8]
    assert len(after) >= 350 and {r[3] for r in after} == {"backend1", "backend2"}


def test_missing_signals_lower_weight_never_raise(lab) -> None:
    load = Load(lab, rate=50, duration=26, timeout=2)
    start_controller(lab)
    time.sleep(4)
    # No response at all: HAProxy's average for it stays at its healthy value.
    lab.set_backend("backend1", latency_ms=60_000)
    seen = watch(lab, 20)
    b1 = [w["backend1"] for _, w in seen]
    assert b1 == sorted(b1, reverse=True), b1
    assert b1[-1] <= 20, b1
    rtime = next(s.rtime for s in admin(lab).show_stat() if s.server == "backend1")
    assert rtime is not None and rtime < 50  # the stale average HAProxy still shows
    assert "signals missing (no response" in controller_log(lab)
    lab.set_backend("backend1")
    load.proc.kill()
    load.proc.wait()


def test_panic_mode_spreads_instead_of_crushing(lab) -> None:
    for name in ("backend1", "backend2"):
        lab.set_backend(name, latency_ms=300)  # both over the 100 ms target
    load = Load(lab, rate=40, duration=16)
    start_controller(lab)
    seen = watch(lab, 14)
    assert all(w == {"backend1": 100, "backend2": 100} for _, w in seen)
    assert "panic mode on (0% healthy)" in controller_log(lab)
    assert not [r for r in load.results() if r[2] != 200]


def test_outlier_parked_at_zero_then_readmitted_gradually(lab) -> None:
    load = Load(lab, rate=50, duration=56)
    start_controller(lab)
    time.sleep(4)
    slow_at = time.monotonic()
    lab.set_backend("backend1", latency_ms=900)  # /health keeps answering 200
    lab.wait(lambda: weights(lab)["backend1"] == 0, 10, "backend1 parked")
    parked_after = time.monotonic() - slow_at
    seen = watch(lab, 12)
    assert all(w["backend1"] == 0 and w["backend2"] == 100 for _, w in seen), seen
    assert "parked at weight 0, probing it directly" in controller_log(lab)
    lab.set_backend("backend1")
    healed_at = time.monotonic()
    seen = watch(lab, 30)
    b1 = [w["backend1"] for _, w in seen]
    back = [w for w in b1 if w > 0]
    assert back and back[0] <= 2, b1  # the canary floor first
    assert back == sorted(back) and back[-1] >= 50, b1  # then only up
    assert "re-admitted at the canary floor" in controller_log(lab)
    results = load.results()
    assert not [r for r in results if r[2] != 200]
    # Sent while parked (a second after the park, until the heal): nothing to backend1.
    parked = [r for r in results if slow_at + parked_after + 1 < load.start + r[0] < healed_at]
    assert parked and not [r for r in parked if r[3] == "backend1"], parked_after


def test_parks_survive_a_killed_controller_and_end_on_a_clean_stop(lab) -> None:
    load = Load(lab, rate=50, duration=50)
    daemon = start_controller(lab)
    time.sleep(4)
    lab.set_backend("backend1", latency_ms=900)
    lab.wait(lambda: weights(lab)["backend1"] == 0, 10, "backend1 parked")
    os.killpg(daemon.proc.pid, signal.SIGKILL)  # no chance to release it
    daemon.proc.wait(5)
    lab.daemons.pop(("lb1", "weights"))
    time.sleep(2)
    assert weights(lab)["backend1"] == 0  # HAProxy keeps the last weights
    daemon = start_controller(lab)
    lab.wait(lambda: "still parked, probing it again" in controller_log(lab), 10, "resumed")
    time.sleep(3)
    assert weights(lab)["backend1"] == 0  # its probes are still slow
    lab.set_backend("backend1")
    lab.wait(lambda: weights(lab)["backend1"] > 0, 30, "backend1 re-admitted")
    lab.set_backend("backend1", latency_ms=900)
    lab.wait(lambda: weights(lab)["backend1"] == 0, 15, "backend1 parked again")
    daemon.proc.send_signal(signal.SIGTERM)  # a clean stop releases the park
    daemon.proc.wait(10)
    lab.daemons.pop(("lb1", "weights"))
    assert weights(lab)["backend1"] == 1  # its canary floor
    lab.set_backend("backend1")
    assert not [r for r in load.results() if r[2] != 200]
