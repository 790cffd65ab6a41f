"""lb_bfd on lb1: BIRD running the rendered BFD-only config, one session per BGP peer."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import testinfra

HOST = testinfra.get_host("podman://lbamol-lb1")
RENDER = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "render" / "hosts" / "lb1"
CONFIG = RENDER / "etc/bird/bird.conf"
NEIGHBORS = re.findall(r"^\s*neighbor (\S+) local", CONFIG.read_text(), re.M)


def test_bird_runs_enabled() -> None:
    service = HOST.service("bird")
    assert service.is_running and service.is_enabled


def test_config_is_the_rendered_one_and_private_to_bird() -> None:
    installed = HOST.file("/etc/bird/bird.conf")
    assert installed.sha256sum == hashlib.sha256(CONFIG.read_bytes()).hexdigest()
    assert installed.mode == 0o640 and installed.user == "bird" and installed.group == "bird"
    HOST.run_expect([0], "bird -p -c /etc/bird/bird.conf")


def test_bfd_protocol_up_with_a_session_per_peer() -> None:
    """BIRD answers on its control socket; no router here, so sessions exist but stay down."""
    assert len(NEIGHBORS) >= 2
    protocols = HOST.check_output("birdc show protocols")
    assert re.search(r"^lb_bfd\s+BFD\s+---\s+up\b", protocols, re.M), protocols
    sessions = HOST.check_output("birdc show bfd sessions")
    for neighbor in NEIGHBORS:
        assert re.search(rf"^{re.escape(neighbor)}\s", sessions, re.M), sessions
