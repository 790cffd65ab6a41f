"""The L7 policy-cost benchmark: its config rewrite, its wrk parsing, a --quick smoke run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.l7.l7bench import BENCH, bench

WRK_OUTPUT = """Running 6s test @ http://127.0.0.1:40000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  500.00us  20.00ms   90.00%
    Req/Sec    26.10k     1.00k   28.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.30ms
     90%    1.60ms
     99%  850.00us
  156600 requests in 6.00s, 10.00MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  26100.00
Transfer/sec:      1.67MB
"""


def test_parse_wrk() -> None:
    assert bench.parse_wrk(WRK_OUTPUT) == (26100.0, 0.85, 156600, 6)
    seconds = WRK_OUTPUT.replace("99%  850.00us", "99%    1.50s").replace(
        "  Non-2xx or 3xx responses: 3\n", ""
    )
    assert bench.parse_wrk(seconds) == (26100.0, 1500.0, 156600, 3)


@pytest.mark.parametrize("tls", [False, True])
def test_loopback_rewrite_changes_binds_and_servers_only(tmp_path: Path, tls: bool) -> None:
    rendered = bench.rendered_config(tmp_path, tls)
    moved = bench.to_loopback(rendered, 40000, 40001, [40002, 40003])
    kept = [line for line in rendered.splitlines() if not re.match(r"    (bind|server) ", line)]
    assert [line for line in moved.splitlines() if not re.match(r"    (bind|server) ", line)] == (
        kept
    )
    binds = re.findall(r"(?m)^    bind (.*)$", moved)
    ssl = " ssl crt bench.pem alpn h2,http/1.1" if tls else ""
    assert binds == ["127.0.0.1:40001", f"127.0.0.1:40000{ssl}"]
    assert re.findall(r"(?m)^    server (\S+ \S+)", moved) == [
        "backend1 127.0.0.1:40002",
        "backend2 127.0.0.1:40003",
    ]
    # The rate limit is out of reach; its tracker and rule stay.
    assert "track-sc0 src" in moved and "sc0_http_req_rate gt 10000000 }" in moved


def test_every_ablation_applies_and_stays_valid(tmp_path: Path) -> None:
    crt = tmp_path / "etc/haproxy/certs"
    crt.mkdir(parents=True)
    configs = bench.lb_configs(tmp_path, False, [40002, 40003], ablate=True)
    assert len(configs) == 2 + len(bench.ABLATIONS)
    for name, make in configs.items():
        path = tmp_path / f"{name}.cfg"
        path.write_text(make(40000, 40001, tmp_path / "admin.sock"))  # short: a socket path's limit
        check = subprocess.run(["haproxy", "-c", "-q", "-f", path], capture_output=True)
        assert check.returncode == 0, (name, check.stderr)


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert {(r["variant"], r["config"]) for r in result["runs"]} == {
        (v, c) for v in bench.VARIANTS for c in ("plain", "rendered")
    }
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in result["runs"])
    assert set(result["ratios"]) == set(bench.VARIANTS)
    assert "rendered / plain" in done.stdout


def test_plain_tls_config_has_the_rendered_tls_settings(tmp_path: Path) -> None:
    """The TLS comparison prices the policy only: the plain config's TLS is the rendered one's."""
    crt = tmp_path / "etc/haproxy/certs"
    crt.mkdir(parents=True)
    bench.self_signed(crt)
    configs = bench.lb_configs(tmp_path, True, [40002, 40003], ablate=False)
    plain, rendered = (make(40000, 40001, tmp_path / "admin.sock") for make in configs.values())

    def tls_lines(cfg: str) -> list[str]:
        return re.findall(r"(?m)^    (?:crt-base .*|ssl-.*|bind 127\.0\.0\.1:40000 .*)$", cfg)

    assert len(tls_lines(rendered)) == 4 and tls_lines(plain) == tls_lines(rendered)
    path = tmp_path / "plain.cfg"
    path.write_text(plain)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", path], capture_output=True)
    assert check.returncode == 0, check.stderr
