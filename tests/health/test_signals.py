"""Signal parsing and judging: HAProxy `show stat`, the IPVS table, probes, XDP."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from lbappliance.haproxy import HaproxyError, parse_stat
from lbappliance.health.config import Probe
from lbappliance.health.sensors import (
    Sensors,
    haproxy_view,
    parse_ipvs,
    read_haproxy,
    read_xdp,
    run_probe,
)
from lbappliance.health.signals import HaproxyView, Health, Observation, Servers, evaluate
from tests.health.helpers import config, healthy_network

FIXTURES = Path(__file__).parent / "fixtures"


def test_show_stat_counts_active_servers_up():
    # Captured from haproxy 2.6: backend1 UP, backend2 DOWN, backend3 MAINT, spare (backup) UP.
    view = haproxy_view(parse_stat((FIXTURES / "show_stat.csv").read_text()))
    assert view.frontends == {"web": "OPEN"}
    assert view.backends == {"web": Servers(up=1, total=3)}


def test_show_stat_rejects_garbage():
    with pytest.raises(HaproxyError, match="unexpected answer"):
        parse_stat("Unknown command.\n")


def test_haproxy_socket_missing_is_a_clear_failure(tmp_path: Path):
    with pytest.raises(HaproxyError, match="missing"):
        read_haproxy(str(tmp_path / "admin.sock"), 0.1)


def test_haproxy_judgement(tmp_path: Path):
    cfg = config(tmp_path)
    web = cfg.vips[0]
    obs = Observation(probes={web.probes[0]: _ok()}, network=healthy_network())

    def judge(up: int, total: int, frontend: str = "OPEN"):
        obs.haproxy = HaproxyView({"web": frontend}, {}, {"web": Servers(up, total)})
        return evaluate(cfg, web, obs)

    assert judge(2, 2).health is Health.OK
    assert judge(2, 3).health is Health.OK  # 67 % >= 50 %
    assert judge(1, 3).health is Health.DEGRADED
    assert judge(0, 3).health is Health.FAIL
    assert judge(2, 2, "STOP").reason == "haproxy: frontend web is STOP"


def test_ipvs_table_fixture():
    # IPVS is not compiled into this kernel: /proc/net/ip_vs is read from a fixture
    # written in the kernel's format (ip_vs_ctl.c), hex addresses and ports.
    table = parse_ipvs((FIXTURES / "ip_vs").read_text())
    assert table == {
        "198.51.100.20:8080/tcp": 2,
        "198.51.100.30:443/tcp": 0,
        "2001:db8::20:8080/tcp": 1,
    }


def test_ipvs_signal_through_sensors(tmp_path: Path):
    cfg = config(tmp_path)
    data_vip = cfg.vips[1]
    from dataclasses import replace

    from lbappliance.health.config import DataplaneGate

    gate = DataplaneGate(None, (), ("198.51.100.20:8080/tcp", "198.51.100.30:443/tcp"))
    vip = replace(data_vip, dataplane=gate, signals=("dataplane",))
    cfg = replace(cfg, vips=(vip,), ipvs_table=str(FIXTURES / "ip_vs"))
    sensors = Sensors(cfg)
    try:
        verdict = evaluate(cfg, vip, sensors.observe())
    finally:
        sensors.close()
    assert verdict.health is Health.FAIL
    assert verdict.reason == (
        "dataplane: IPVS service 198.51.100.30:443/tcp has no real server with weight > 0"
    )
    cfg = replace(cfg, ipvs_table=str(tmp_path / "no-ip_vs"))
    sensors = Sensors(cfg)
    try:
        verdict = evaluate(cfg, vip, sensors.observe())
    finally:
        sensors.close()
    assert "IPVS table unreadable" in verdict.reason


def test_xdp_absent_on_loopback():
    assert read_xdp("lo") is None


def _ok():
    from lbappliance.health.signals import ProbeResult

    return ProbeResult(True, "ok")


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = 200 if self.path == "/health" else 503
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_probe(http_server: int):
    good = run_probe(Probe("http", "127.0.0.1", http_server, "/health"), 1.0)
    assert good.ok and good.detail.startswith("200 in ")
    bad = run_probe(Probe("http", "127.0.0.1", http_server, "/other"), 1.0)
    assert not bad.ok and bad.detail.startswith("status 503 (want 200)")


def test_tcp_probe_refused_and_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        refused = run_probe(Probe("tcp", "127.0.0.1", port), 0.2)
        assert not refused.ok and refused.detail == "connection refused"
        s.listen()  # accepts but never answers
        silent = run_probe(Probe("http", "127.0.0.1", port, "/health"), 0.1)
    assert not silent.ok and silent.detail == "timeout after 100 ms"
