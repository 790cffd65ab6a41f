"""What "up" means, pinned on a real HAProxy: a server is up when HAProxy sends it new
connections, and only then.

One HAProxy on loopback with a server in each state the health agent and the weight
controller meet: checked and passing, unchecked, failing, drained, in maintenance,
at weight 0, taken down by its agent check, disabled by a 404 (NOLB), and a backup.
The test reads each server's status over the admin socket, then sends requests
through the frontend and checks that exactly the servers ``ServerStat.up`` calls up
got them, and that the agent's per-backend count agrees.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from lbappliance.haproxy import STATS_FRONTEND, AdminSocket, HaproxyError, ServerStat, parse_stat
from lbappliance.health.sensors import read_haproxy
from lbappliance.health.signals import Servers

# server name -> (status HAProxy reports, up)
EXPECTED = {
    "checked": ("UP", True),
    "unchecked": ("no check", True),
    "failing": ("DOWN", False),
    "drained": ("DRAIN", False),
    "maint": ("MAINT", False),
    "zero": ("UP", False),  # weight 0: HAProxy keeps its status UP but sends it nothing
    "agentdown": ("DOWN (agent)", False),
}
REQUESTS = 40
# The admin socket, and the ports: web frontend, web server, agent, closed, stats frontend.
Haproxy = tuple[AdminSocket, tuple[int, ...]]


class _Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404 if self.path == "/gone" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _AgentSaysDown(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"down\n")


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]  # type: ignore[index]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(sock: Path, front: int, web: int, agent: int, closed: int, stats: int) -> str:
    check = "check inter 100 rise 1 fall 1"
    return f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{front}
    default_backend pool
frontend {STATS_FRONTEND}
    bind 127.0.0.1:{stats}
    http-request return status 200
backend pool
    balance roundrobin
    option httpchk GET /
    server checked 127.0.0.1:{web} {check}
    server unchecked 127.0.0.1:{web}
    server failing 127.0.0.1:{closed} {check}
    server drained 127.0.0.1:{web} {check}
    server maint 127.0.0.1:{web} {check}
    server zero 127.0.0.1:{web} {check}
    server agentdown 127.0.0.1:{web} {check} agent-check agent-port {agent} agent-inter 100
    server spare 127.0.0.1:{web} {check} backup
backend gone
    option httpchk GET /gone
    http-check disable-on-404
    server nolb 127.0.0.1:{web} {check}
"""


def settle(sock: AdminSocket, want: dict[str, str], timeout: float) -> dict[str, ServerStat]:
    """The server rows once every server shows its expected status (or fail with them)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {s.server: s for s in sock.show_stat()}
        if all(rows[name].status == status for name, status in want.items()):
            return rows
        if time.monotonic() > deadline:
            seen = {name: rows[name].status for name in want}
            pytest.fail(f"HAProxy statuses never settled: {seen}")
        time.sleep(0.1)


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Haproxy]:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    agent = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AgentSaysDown)
    with serving(web) as web_port, serving(agent) as agent_port:
        front, sock_path = free_port(), tmp_path / "admin.sock"
        cfg = tmp_path / "haproxy.cfg"
        ports = (front, web_port, agent_port, free_port(), free_port())
        cfg.write_text(config(sock_path, *ports))
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not sock_path.exists():
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "HAProxy did not open its admin socket"
                time.sleep(0.05)
            yield AdminSocket(str(sock_path), timeout=5.0), ports
        finally:
            proc.terminate()
            proc.wait(10)


def test_up_means_haproxy_sends_new_connections(haproxy: Haproxy) -> None:
    sock, (front, *_) = haproxy
    sock.set_state("pool", "drained", "drain")
    sock.set_state("pool", "maint", "maint")
    sock.set_weights({("pool", "zero"): 0})
    want = {name: status for name, (status, _) in EXPECTED.items()}
    rows = settle(sock, {**want, "spare": "UP", "nolb": "NOLB"}, 20)

    assert {name: rows[name].up for name in EXPECTED} == {n: up for n, (_, up) in EXPECTED.items()}
    assert rows["spare"].up and rows["spare"].backup
    assert not rows["nolb"].up and rows["nolb"].admin_excluded
    excluded = {name for name in EXPECTED if rows[name].admin_excluded}
    assert excluded == {"drained", "maint", "zero"}  # failing servers are not an operator's doing
    # The agent counts the active servers (backups only stand in when there is no active one).
    view = read_haproxy(sock.path, 5.0)
    assert view.backends == {"pool": Servers(up=2, total=7), "gone": Servers(up=0, total=1)}

    before = {s.server: s.stot or 0 for s in sock.show_stat()}
    for _ in range(REQUESTS):
        conn = http.client.HTTPConnection("127.0.0.1", front, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
    after = {s.server: s.stot or 0 for s in sock.show_stat()}
    got = {name for name in EXPECTED if after[name] > before[name]}
    assert got == {name for name, (_, up) in EXPECTED.items() if up}
    assert sum(after[n] - before[n] for n in got) == REQUESTS


def test_commands_haproxy_refuses_are_errors(haproxy: Haproxy) -> None:
    sock, _ = haproxy
    with pytest.raises(HaproxyError, match="No such server"):
        sock.set_state("pool", "absent", "drain")
    with pytest.raises(HaproxyError, match="unexpected answer to 'show stat'"):
        parse_stat(sock.command("show info"))


def test_client_sessions_leave_out_the_stats_frontend(haproxy: Haproxy) -> None:
    """What a drain waits for: connections held open on client frontends, not the stats one."""
    sock, (front, _, _, _, stats) = haproxy
    held = []
    for port in (front, front, stats):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        conn.getresponse().read()  # the connection stays open (keep-alive)
        held.append(conn)
    try:
        now = sock.stats()
        assert now.frontends["web"].scur == 2 and now.frontends[STATS_FRONTEND].scur == 1
        assert now.client_sessions() == 2
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 10
    while sock.stats().client_sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.stats().client_sessions() == 0
