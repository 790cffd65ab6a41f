"""The rendered L7 policy's behaviours on a real HAProxy (loopback, lab backends).

The lab site's lb1 haproxy.cfg, moved to loopback by the policy benchmark's own
rewrite (binds and server addresses only): L7 retries are armed for a client
connection's first request and, once the pool fails, for every request, and
then retry idempotent requests on the other server, never a POST, and stop
when the pool's failures exceed the budget; the per-client rate limit
tracked per connection still counts every request; only abnormal requests are
logged (`access_log: errors`), every one with `access_log: all`.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from lbappliance.lab.backend import set_control
from tests.l7.l7bench import bench


@contextmanager
def backend(name: str, port: int, control: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbappliance.lab.backend", "--name", name, "--port", str(port),
         "--address", "127.0.0.1", "--control", str(control)],
        stderr=subprocess.DEVNULL,  # clients closing early: BrokenPipe tracebacks
    )  # fmt: skip
    try:
        bench.wait_tcp(port, 10, proc)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def l7_node(tmp: Path, **policy: Any) -> Iterator[tuple[Any, list[Path], Path]]:
    """lb1's rendered config with ``policy`` over the bench site's, two lab backends."""
    site = bench.bench_site()
    site["l7"]["policy"].update(policy)
    rendered = bench.rendered_config(tmp, tls=False, site=site)
    ports = [bench.free_port(), bench.free_port()]
    controls = [tmp / "backend1.json", tmp / "backend2.json"]
    port = bench.free_port()
    cfg = bench.to_loopback(rendered, port, bench.free_port(), ports)
    sock = Path(bench.RuntimePaths(tmp).haproxy_socket)
    sock.parent.mkdir(parents=True, exist_ok=True)
    log = tmp / "haproxy.log"
    with ExitStack() as stack:
        for i, (p, c) in enumerate(zip(ports, controls, strict=True), 1):
            set_control(c)
            stack.enter_context(backend(f"backend{i}", p, c))
        lb = stack.enter_context(bench.haproxy("lb1", cfg, tmp, None, port, sock, log))
        bench.wait_servers_up(lb, 20)
        yield lb, controls, log


def request(port: int, method: str = "GET", conn: http.client.HTTPConnection | None = None
            ) -> tuple[int, str]:  # fmt: skip
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, "/", body=b"x" if method == "POST" else None)
    r = c.getresponse()
    r.read()
    if conn is None:
        c.close()
    return r.status, r.getheader("X-Backend") or ""


def retries(lb: Any) -> int:
    """The pool's L7 and connection retries so far (`show stat` wretr of backend web)."""
    head, *rows = lb.admin("show stat").splitlines()
    col = head.lstrip("# ").split(",").index("wretr")
    return next(int(r.split(",")[col]) for r in rows if r.startswith("web,BACKEND,"))


def test_l7_retries_armed_by_failure_idempotent_only_within_budget(tmp_path: Path) -> None:
    # 100 consecutive errors before ejection: the failing server stays in the pool here.
    with l7_node(tmp_path, outlier={"consecutive_errors": 100}) as (lb, controls, log):
        healthy = [request(lb.port) for _ in range(20)]
        assert {s for s, _ in healthy} == {200}
        assert {b for _, b in healthy} == {"backend1", "backend2"}
        assert retries(lb) == 0

        set_control(controls[0], error_rate=1.0)  # backend1 answers 503; its /health stays 200
        # A client connection's first request is always armed: retried, the pool never fails.
        firsts = [request(lb.port) for _ in range(20)]
        assert firsts == [(200, "backend2")] * 20
        first_retries = retries(lb)
        assert first_retries >= 3, "first requests that landed on backend1 were retried"

        # Later requests on a kept-alive connection: unarmed, the pool's first failure reaches
        # the client; from then on every GET that lands on backend1 is retried on backend2.
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        gets = [request(lb.port, conn=conn) for _ in range(40)]
        failed = [i for i, (s, _) in enumerate(gets) if s != 200]
        assert len(failed) == 1 and failed[0] > 0, gets
        assert gets[failed[0] + 1 :] == [(200, "backend2")] * (39 - failed[0])
        armed_retries = retries(lb)
        assert armed_retries >= first_retries + 5, "GETs after the first failure were retried"

        posts = [request(lb.port, "POST", conn) for _ in range(60)]
        assert {s for s, _ in posts} == {200, 503}, "a POST on backend1 is not retried"
        assert retries(lb) == armed_retries
        conn.close()

        # Failures now exceed 10 % of the pool's requests (the POSTs' 503s): no GET is retried,
        # not even a connection's first.
        over = [request(lb.port) for _ in range(20)]
        assert 503 in {s for s, _ in over}
        assert retries(lb) == armed_retries
    logged = log.read_text().splitlines()
    assert any(" 503 " in line for line in logged)
    ok = [line for line in logged if " 200 " in line]
    # access_log errors: a 200 is logged only when it took a retry (`+1`: redispatched).
    assert ok and all("/+1 " in line for line in ok), ok


def test_access_log_all_logs_every_request(tmp_path: Path) -> None:
    with l7_node(tmp_path, access_log="all") as (lb, _controls, log):
        assert [request(lb.port)[0] for _ in range(3)] == [200] * 3
    assert log.read_text().count(" 200 ") >= 3


@pytest.mark.parametrize("per_connection", [True, False])
def test_rate_limit_counts_every_request(tmp_path: Path, per_connection: bool) -> None:
    """2 req/s over 10 s: about the 21st request gets 429, on one connection or new ones each.

    (The readiness probe's empty connection may count as one request.)
    """
    with l7_node(tmp_path, rate_limit_per_client=2) as (lb, _controls, log):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        statuses = [request(lb.port, conn=conn if per_connection else None)[0] for _ in range(25)]
        conn.close()
        time.sleep(0.1)
    first = statuses.index(429)
    assert 19 <= first <= 21 and set(statuses[first:]) == {429}, statuses
    assert " 429 " in log.read_text(), "a denial is logged"
