"""Every metric the Grafana dashboard queries exists in a real scrape of the namespace lab.

HAProxy's exporter (``/metrics`` on the stats frontend), the health agent's and the
weight controller's endpoints, each fetched from inside lb1's namespace after the
lab converged (routes announced, the controller has run).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

import pytest

from lbappliance.render.haproxy import STATS_PORT
from lbappliance.render.weights import METRICS_PORT as WEIGHTS_PORT
from tests.metrics.dashboard import queries, scraped, selectors

pytestmark = pytest.mark.slow

WEB = "198.51.100.10/32"


def fetch(lab, node: str, port: int) -> str:
    with lab.inside(node):
        url = f"http://127.0.0.1:{port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()


def test_dashboard_metrics_exist_in_a_lab_scrape() -> None:
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    from lbappliance.lab.netns import NetnsLab

    with NetnsLab.create() as lab:
        lab.start_all()
        lab.wait_ecmp(WEB)
        config = lab.config("lb1", "etc/lbappliance/weights.json")
        cmd = [sys.executable, "-m", "lbappliance.weights", "--config", str(config)]
        lab.popen("lb1", "weights", cmd)
        agent_port = lab.site.model.health_agent.metrics_port
        seen: dict[str, set[str]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                text = "".join(fetch(lab, "lb1", p) for p in (STATS_PORT, agent_port, WEIGHTS_PORT))
            except OSError:
                time.sleep(1)
                continue
            seen = scraped(text)
            if {"lbappliance_weights_weight", "lbappliance_health_bgp_neighbor_up"} <= seen.keys():
                break
            time.sleep(1)
    assert "haproxy_process_uptime_seconds" in seen  # HAProxy's exporter answered
    for expr in queries():
        for name, keys in selectors(expr):
            assert name in seen, f"{name} (in {expr!r}) is not in the scrape"
            assert keys <= seen[name], f"{name}: labels {keys - seen[name]} not in the scrape"
