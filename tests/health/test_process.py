"""The agent as ExaBGP runs it: a child process speaking the text API on stdio."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from lbappliance.health.agent import Agent, Watchdog
from tests.health.helpers import CONFIG, AckingOut, config

WITHDRAW_WEB = "withdraw route 198.51.100.10/32 next-hop self"
WITHDRAW_L4 = "withdraw route 198.51.100.20/32 next-hop self"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_config(tmp_path: Path) -> Path:
    """The helpers' config with every probe on loopback (nothing leaves the host)."""
    data = copy.deepcopy(CONFIG)
    closed = _free_port()
    data["state_file"] = str(tmp_path / "state.json")
    data["maintenance_file"] = str(tmp_path / "maintenance")
    data["haproxy_socket"] = str(tmp_path / "admin.sock")
    data["metrics"]["port"] = _free_port()
    data["vips"][0]["probes"][0].update(address="127.0.0.1", port=closed)
    data["vips"][1]["dataplane"]["xdp_interface"] = "lo"
    for target in data["vips"][1]["pools"][0]["targets"]:
        target.update(address="127.0.0.1", port=closed)
    path = tmp_path / "health-agent.json"
    path.write_text(json.dumps(data))
    return path


def start(path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lbappliance.health", "--config", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def read_commands(proc: subprocess.Popen, n: int) -> list[str]:
    """Read ``n`` API lines, acknowledging each like ExaBGP does."""
    lines = []
    for _ in range(n):
        lines.append(proc.stdout.readline().rstrip("\n"))
        proc.stdin.write("done\n")
    return lines


def test_bad_config_is_a_clear_error_and_announces_nothing(tmp_path: Path):
    path = tmp_path / "health-agent.json"
    data = copy.deepcopy(CONFIG)
    data["vips"][0]["prefix"] = "198.51.100.0/24"
    path.write_text(json.dumps(data))
    proc = subprocess.run(
        [sys.executable, "-m", "lbappliance.health", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"configuration error in {path}" in proc.stderr
    assert "$.vips[0].prefix: 198.51.100.0/24 is not a host route (/32 or /128)" in proc.stderr
    assert "nothing announced" in proc.stderr


def test_refuses_to_run_without_exabgp_respawn(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "lbappliance.health", "--config", str(loopback_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "exabgp.api.respawn": "false"},
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "exabgp.api.respawn is off" in proc.stderr


def test_withdraws_at_start_and_exits_when_stdin_closes(tmp_path: Path):
    proc = start(loopback_config(tmp_path))
    try:
        assert read_commands(proc, 2) == [WITHDRAW_WEB, WITHDRAW_L4]
        time.sleep(0.3)
        proc.stdin.close()  # ExaBGP went away
        assert proc.wait(timeout=3) == 0
        assert proc.stdout.read() == ""  # nothing announced: every signal fails
    finally:
        proc.kill()
        proc.wait()
    log = [json.loads(line) for line in proc.stderr.read().splitlines()]
    assert log[0]["event"] == "start"
    assert log[-1]["event"] == "exit" and "closed the API pipe" in log[-1]["reason"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["vips"]["198.51.100.10/32"]["state"] in ("init", "down")


def test_exits_on_exabgp_shutdown_line(tmp_path: Path):
    proc = start(loopback_config(tmp_path))
    try:
        read_commands(proc, 2)
        proc.stdin.write("shutdown 123 1\n")
        assert proc.wait(timeout=3) == 0
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_withdraws_before_exiting(tmp_path: Path):
    proc = start(loopback_config(tmp_path))
    try:
        read_commands(proc, 2)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3) == 0
        assert proc.stdout.read().splitlines() == [WITHDRAW_WEB, WITHDRAW_L4]
    finally:
        proc.kill()
        proc.wait()


def test_metrics_endpoint(tmp_path: Path):
    path = loopback_config(tmp_path)
    port = json.loads(path.read_text())["metrics"]["port"]
    proc = start(path)
    try:
        read_commands(proc, 2)
        deadline = time.monotonic() + 5
        text = ""
        while 'result="done"} 2' not in text:  # both acks counted
            assert time.monotonic() < deadline, text
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.05)
    finally:
        proc.stdin.close()
        proc.wait(timeout=5)
    assert (
        'lbappliance_health_vip_state{node="lb1",vip="198.51.100.10/32",state="init"} 1' in text
        or 'lbappliance_health_vip_state{node="lb1",vip="198.51.100.10/32",state="down"} 1' in text
    )
    assert 'lbappliance_health_vip_announced{node="lb1",vip="198.51.100.10/32"} 0' in text
    assert 'lbappliance_health_commands_total{node="lb1",result="done"} 2' in text


def test_watchdog_withdraws_and_exits_when_rounds_stall(tmp_path: Path):
    from lbappliance.health.exabgp import ExabgpChannel

    out = AckingOut()
    channel = ExabgpChannel(out, iter(()), time.monotonic, ack_timeout=0.01)
    out.channel = channel
    stuck = threading.Event()
    agent = Agent(
        config(tmp_path),
        channel,
        lambda: stuck.wait(5) or None,
        clock=time.monotonic,
        log=lambda r: None,
    )
    exits: list[int] = []
    agent.heartbeat = time.monotonic()
    dog = Watchdog(agent, limit=0.2, exit=exits.append)
    dog.start()
    dog.join(timeout=2)
    stuck.set()
    assert exits == [70]
    assert out.lines == [WITHDRAW_WEB, WITHDRAW_L4]
