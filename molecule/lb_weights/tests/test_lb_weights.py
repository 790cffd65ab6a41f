"""lb_weights on lb1: the sandboxed controller reads HAProxy's admin socket and serves metrics.

No backend answers in this container (HAProxy marks them down): the controller's
iterations still succeed, which is what it can show here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import testinfra

HOST = testinfra.get_host("podman://lbamol-lb1")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render" / "hosts" / "lb1"
CONFIG = json.loads((RENDER / "etc/lbappliance/weights.json").read_text())
METRICS = f"http://{CONFIG['metrics']['address']}:{CONFIG['metrics']['port']}/metrics"


def test_controller_runs_enabled_sandboxed() -> None:
    service = HOST.service("lbappliance-weights")
    assert service.is_running and service.is_enabled
    props = HOST.check_output(
        "systemctl show -p NoNewPrivileges,ProtectSystem,CapabilityBoundingSet lbappliance-weights"
    )
    assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props


def test_config_is_the_rendered_one() -> None:
    installed = HOST.file("/etc/lbappliance/weights.json")
    want = hashlib.sha256((RENDER / "etc/lbappliance/weights.json").read_bytes()).hexdigest()
    assert installed.sha256sum == want and installed.mode == 0o644


def test_iterations_read_haproxy_and_metrics_answer() -> None:
    """A successful iteration (HAProxy's `show stat` read) within a generous bound."""
    pattern = re.compile(
        r"^lbappliance_weights_last_success_timestamp_seconds(\{[^}]*\})? (\S+)$", re.M
    )
    deadline, found = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        out = HOST.run(f"curl -sf {METRICS}")
        if out.rc == 0 and (found := pattern.search(out.stdout)) and float(found[2]) > 0:
            break
        time.sleep(1)
    assert found and float(found[2]) > time.time() - 600, "no successful iteration"
    for pool in CONFIG["pools"]:
        assert f'pool="{pool["name"]}"' in out.stdout
