"""The control loop against a replayed HAProxy: apply, log, export, survive socket errors."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request

import pytest

from lbappliance.haproxy import HaproxyError, ServerStat
from lbappliance.weights.config import Config, PoolConfig, parse
from lbappliance.weights.controller import Controller
from lbappliance.weights.metrics import Metrics, serve
from tests.weights.fixtures import FakeProber, recording

POOL = PoolConfig(name="web", servers={"backend1": 100, "backend2": 100})
CONFIG = Config(node="lb1", site="lab", haproxy_socket="/nonexistent", pools=[POOL])


class Replay:
    """Answers ``show stat`` from a recording, with the weights the controller set."""

    def __init__(self, name: str):
        self.snaps = recording(name)
        self.i = 0
        self.weights: dict[tuple[str, str], int] = {}
        self.fail = False
        self.applied: list[dict[tuple[str, str], int]] = []

    def now(self) -> float:
        return self.snaps[min(self.i, len(self.snaps) - 1)].time

    def show_stat(self) -> list[ServerStat]:
        if self.fail:
            raise HaproxyError("connection refused")
        snap = self.snaps[self.i]
        self.i += 1
        return [
            ServerStat(**{**row.__dict__, "uweight": self.weights.get(key, row.uweight)})
            for key, row in snap.servers.items()
        ]

    def set_weights(self, weights: dict[tuple[str, str], int]) -> None:
        if self.fail:
            raise HaproxyError("connection refused")
        if weights:
            self.applied.append(dict(weights))
        self.weights.update(weights)


def controller(replay: Replay) -> Controller:
    return Controller(CONFIG, sock=replay, clock=lambda: replay.snaps[replay.i - 1].time)  # type: ignore[arg-type]


def test_moves_weight_away_from_the_slow_server_and_logs_why(caplog) -> None:
    replay = Replay("hard_900ms")
    ctl = controller(replay)
    with caplog.at_level(logging.INFO, logger="lbappliance.weights"):
        for _ in replay.snaps:
            ctl.tick()
    assert replay.weights[("web", "backend1")] <= 25
    assert ("web", "backend2") not in replay.weights  # never touched
    first = next(i for i, s in enumerate(replay.snaps) if s.time >= 8)
    assert replay.applied and all(("web", "backend1") in a for a in replay.applied)
    lines = [r.getMessage() for r in caplog.records if "weight" in r.getMessage()]
    assert len(lines) == len(replay.applied)
    assert "pool web server backend1 weight 100 ->" in lines[0] and "latency" in lines[0]
    assert replay.i > first


def test_socket_errors_change_nothing_and_are_counted(caplog) -> None:
    replay = Replay("hard_900ms")
    ctl = controller(replay)
    for _ in range(12):
        ctl.tick()
    replay.fail = True
    before = dict(replay.weights)
    with caplog.at_level(logging.WARNING, logger="lbappliance.weights"):
        assert ctl.tick() == [] and ctl.tick() == []
    assert replay.weights == before
    assert ctl.metrics.socket_errors == 2
    assert sum("admin socket unavailable" in r.getMessage() for r in caplog.records) == 1
    replay.fail = False
    ctl.tick()  # resumes from whatever HAProxy has


def test_failed_apply_is_forgotten() -> None:
    replay = Replay("hard_900ms")
    ctl = controller(replay)
    original = replay.set_weights
    calls = 0

    def flaky(weights):
        nonlocal calls
        calls += 1
        if weights and calls % 2:
            raise HaproxyError("broken pipe")
        original(weights)

    replay.set_weights = flaky  # type: ignore[method-assign]
    for _ in replay.snaps:
        ctl.tick()
    state = ctl.states["web"].servers["backend1"]
    assert state.applied == replay.weights.get(("web", "backend1"), 100)


def test_metrics_exposition() -> None:
    replay = Replay("hard_900ms")
    ctl = controller(replay)
    for _ in replay.snaps:
        ctl.tick()
    text = ctl.metrics.render()
    assert 'lbappliance_weights_weight{pool="web",server="backend2"} 100' in text
    assert 'lbappliance_weights_inventory_weight{pool="web",server="backend1"} 100' in text
    assert (
        'lbappliance_weights_server_state{pool="web",server="backend1",state="outlier"} 1' in text
    )
    assert 'lbappliance_weights_panic{pool="web"} 0' in text
    assert "# TYPE lbappliance_weights_changes_total counter" in text
    assert f"lbappliance_weights_ticks_total {len(replay.snaps)}" in text
    for line in text.splitlines():  # every sample line: name{labels} value
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_metrics_http_endpoint() -> None:
    metrics = Metrics({"web": {"a": 100}})
    server = serve(metrics, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'lbappliance_weights_inventory_weight{pool="web",server="a"} 100' in body
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    finally:
        server.shutdown()


def test_run_stops_promptly() -> None:
    replay = Replay("close_20_24ms")
    ctl = Controller(CONFIG, sock=replay)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=ctl.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(3)
    assert not thread.is_alive()


def test_config_parse_leaves_backups_out() -> None:
    cfg = parse(
        {
            "haproxy_socket": "/run/haproxy/admin.sock",
            "pools": [
                {
                    "name": "web",
                    "interval": 0.5,
                    "target_latency": 0.05,
                    "servers": [
                        {"name": "a", "weight": 100, "backup": False},
                        {"name": "b", "weight": 50, "backup": True},
                    ],
                }
            ],
        }
    )
    (p,) = cfg.pools
    assert p.servers == {"a": 100} and p.interval == 0.5 and p.alpha == 0.3
    assert cfg.tick == 0.5 and cfg.metrics_port == 9172 and p.min_span == 2.0


def test_parks_through_the_prober_records_and_releases(tmp_path) -> None:
    replay = Replay("hard_900ms")
    clock = lambda: replay.snaps[max(replay.i - 1, 0)].time  # noqa: E731
    prober = FakeProber(clock)
    state_file = tmp_path / "weights-state.json"
    config = Config(**{**CONFIG.__dict__, "state_file": str(state_file)})
    ctl = Controller(config, sock=replay, clock=clock, prober=prober)  # type: ignore[arg-type]
    for _ in replay.snaps:
        ctl.tick()
    assert replay.weights[("web", "backend1")] == 0  # parked, not at the canary floor
    assert ("web", "backend2") not in replay.weights
    assert prober.watched() == {("web", "backend1")}
    assert prober.addresses[("web", "backend1")].endswith(":8080")
    assert json.loads(state_file.read_text()) == {
        "parked": [{"pool": "web", "server": "backend1", "parks": 1}]
    }
    # A restarted controller resumes the park from the state file.
    again = Controller(config, sock=replay, clock=clock, prober=FakeProber(clock))  # type: ignore[arg-type]
    assert again.states["web"].servers["backend1"].parked
    # A clean stop puts the parked server back at its canary floor.
    ctl.release_parked()
    assert replay.weights[("web", "backend1")] == 1
    assert json.loads(state_file.read_text()) == {"parked": []}
