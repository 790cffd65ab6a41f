"""The L7 policy's price: the rendered HAProxy config against a plain round-robin one.

    python bench/l7_policy_cost.py                   # 8 rounds x 4 variants x 3 s, ~4 min
    python bench/l7_policy_cost.py --ablate          # also the rendered config minus each feature
    python bench/l7_policy_cost.py --profile DIR     # HAProxy's `show profiling` per run into DIR
    python bench/l7_policy_cost.py --quick           # 1 round of 1 s runs, a smoke test
    python bench/l7_policy_cost.py --instructions --ablate --duration 5
                                                     # user-space instructions per request

Two HAProxy L7 nodes run side by side on loopback, both pinned to one core
(`--lb-cpu`, so each runs one thread):

  plain     frontend -> backend, `balance roundrobin`, two servers, no checks
  rendered  the lab site's `haproxy.cfg` for lb1 exactly as `lbappliance render`
            writes it, with three changes only: its binds and server addresses
            moved to loopback, its runtime paths (admin socket, certificates) to
            a temporary directory, and the per-client rate limit raised out of
            reach (1,000,000 req/s) so every request is served; the tracker, the
            table and the deny rule stay in the config.

Both send to the same two backends (one HAProxy answering 200 on two loopback
ports). `wrk -t1 -c32 --latency` runs on the other core (`--load-cpu`, with the
backends). Each round measures every variant against both configs in
alternating order (plain first in even rounds, rendered first in odd ones), so
the ratio compares runs seconds apart under the same machine load:

  http        keep-alive HTTP/1.1
  http-close  a new connection per request (`Connection: close`)
  tls         keep-alive over TLS (both configs: the rendered config's TLS global
              lines and bind options, a throwaway self-signed certificate)
  tls-close   a TLS handshake per request

Printed per run: req/s, p99, the LB's CPU milliseconds per 1000 requests (from
/proc: robust against other load on the machine), the share of its core the LB
used (below 100 %, the machine's other load, not the LB, limited the rate), the
client connections and TLS handshakes the LB saw (`show stat` conn_tot, `show info`
CumSslConns: a keep-alive run that reconnects shows more than wrk's 33) and the
load average; at the end, per variant, the ratio rendered/plain of req/s
(target >= 0.85), of p99 (target <= 1.3) and of CPU per request: the median of
the per-round ratios and their spread (min-max), with the capacity ratio that CPU
per request implies (the req/s ratio of a saturated core). Many short rounds
rather than a few long ones: on a busy machine one round's p99 ratio can be off
by 2x either way, and a median needs many rounds to stand. `--json FILE` writes
it all.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lbappliance.haproxy import STATS_FRONTEND, AdminSocket, parse_stat
from lbappliance.inventory import load_site
from lbappliance.paths import RuntimePaths, project_dir
from lbappliance.render import render_site
from lbappliance.secrets import Secrets

HAPROXY_CFG = "hosts/lb1/etc/haproxy/haproxy.cfg"
RATE_LIMIT_OUT_OF_REACH = 1_000_000  # the schema's maximum; wrk sends some 10^4 req/s
CERT = "bench"  # certificate name: <crt-base>/bench.pem
VARIANTS = {  # name: (tls, new connection per request)
    "http": (False, False),
    "http-close": (False, True),
    "tls": (True, False),
    "tls-close": (True, True),
}
TARGET_RPS_RATIO = 0.85
TARGET_P99_RATIO = 1.3

# The rendered config with one policy feature removed or changed (`--ablate`): each applies
# its substitutions (each must match). They show what each feature costs.
ABLATIONS: dict[str, list[tuple[str, str]]] = {
    # No retries at all, not even on connection failures (the first measurement).
    "no-retries": [
        (r"(?m)^\s+(retries|retry-on) .*\n", ""),
        (r"(?m)^\s+http-request (disable-l7-retry|set-var\(txn.retry_budget\)) .*\n", ""),
    ],
    # L7 retries armed for every idempotent request, as before they were armed by failures:
    # each such request's buffer is copied before it is sent.
    "l7-retry-always-armed": [
        (r"acl pool_failing sc1_http_fail_rate gt 0", "acl pool_failing always_true")
    ],
    # The pool's tracker and budget maths gone (L7 retries then never armed).
    "no-pool-tracker": [
        (r"(?m)^\s+(stick-table type integer|http-request track-sc1) .*\n", ""),
        (r"acl pool_failing sc1_http_fail_rate gt 0", "acl pool_failing always_false"),
    ],
    "no-rate-limit": [(r"(?m)^\s+(tcp-request connection track-sc0|http-request deny) .*\n", "")],
    # The per-client tracker looked up on every request instead of once per connection.
    "rate-limit-per-request": [(r"tcp-request connection track-sc0", "http-request track-sc0")],
    "access-log-all": [(r"(?m)^\s+option dontlog-normal\n", "")],
    "no-log": [
        (r"(?m)^\s+(log global|option httplog|option dontlognull|option dontlog-normal)\n", "")
    ],
    "no-observe": [(r" observe layer7 error-limit \d+ on-error mark-down", "")],
    "no-checks": [(r"default-server check ", "default-server ")],
    "no-headers": [(r"(?m)^\s+(option forwardfor|http-request set-header) ?.*\n", "")],
    "roundrobin": [(r"balance random\(2\)", "balance roundrobin")],
}


@dataclass
class Run:
    round: int
    variant: str
    config: str
    rps: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers + socket errors
    connections: int  # client connections the LB accepted (a keep-alive run: wrk's -c, plus 1)
    handshakes: int  # TLS handshakes begun (a keep-alive run: one per connection)
    lb_cpu_ms_per_1k: float  # LB worker CPU per 1000 requests
    lb_busy: float  # share of its core the LB used (1.0: saturated, the load's limit is the LB)
    load1: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_site() -> dict[str, Any]:
    """The lab site with the per-client rate limit out of reach."""
    site = yaml.safe_load((project_dir() / "inventory" / "sites" / "lab.yml").read_text())
    site["l7"]["policy"]["rate_limit_per_client"] = RATE_LIMIT_OUT_OF_REACH
    return site


def rendered_config(tmp: Path, tls: bool, site: dict[str, Any] | None = None) -> str:
    """lb1's haproxy.cfg rendered from ``site`` (the bench site) with runtime paths in ``tmp``."""
    site = site or bench_site()
    if tls:
        site["l7"]["frontends"][0]["tls"] = {"certificate": CERT}
    inv = tmp / f"inventory-{'tls' if tls else 'http'}"
    (inv / "sites").mkdir(parents=True, exist_ok=True)
    shutil.copy(project_dir() / "inventory" / "defaults.yml", inv / "defaults.yml")
    (inv / "sites" / "lab.yml").write_text(yaml.safe_dump(site))
    files = render_site(load_site(inv, "lab"), Secrets(None, None), paths=RuntimePaths(tmp))
    return next(f.content for f in files.files if f.path == HAPROXY_CFG).decode()


def to_loopback(cfg: str, port: int, stats_port: int, backends: list[int]) -> str:
    """Move a rendered config's binds and server addresses to loopback, nothing else.

    The frontend's binds (one per VIP) become one bind on 127.0.0.1:``port`` with the same
    options (TLS); servers take ``backends`` in order; the stats frontend ``stats_port``.
    """
    out: list[str] = []
    servers = iter(backends)
    in_stats = bound = False
    for line in cfg.splitlines():
        if line.startswith("frontend "):
            in_stats, bound = line == "frontend stats", False
        if m := re.match(r"^    bind (\S+)(.*)$", line):
            if in_stats:
                line = f"    bind 127.0.0.1:{stats_port}{m.group(2)}"
            elif bound:
                continue
            else:
                line, bound = f"    bind 127.0.0.1:{port}{m.group(2)}", True
        elif m := re.match(r"^(    server \S+ )(\S+)(.*)$", line):
            line = f"{m.group(1)}127.0.0.1:{next(servers)}{m.group(3)}"
        out.append(line)
    return "\n".join(out) + "\n"


def tls_settings(rendered: str) -> tuple[str, str]:
    """The rendered config's TLS: its global TLS lines, and its client frontend's bind options.

    The plain TLS config takes both, so that the TLS comparison prices the policy alone, not a
    difference in certificate, ciphers, ALPN or session settings.
    """
    glob = rendered.split("\ndefaults\n", 1)[0]
    lines = re.findall(r"(?m)^    (?:crt-base|ca-base|ssl-|tune\.ssl\.).*\n", glob)
    bind = re.search(r"(?m)^frontend (?!stats\n).*\n    bind \S+( ssl .*)$", rendered)
    assert lines and bind, "the rendered TLS config has no TLS global lines or no ssl bind"
    return "".join(lines), bind[1]


def plain_config(port: int, backends: list[int], tls: tuple[str, str] | None, sock: Path,
                 reuse: bool = False) -> str:  # fmt: skip
    """Frontend -> backend, round robin over two servers, no checks; admin socket ``sock``.

    ``tls``: the rendered config's TLS (`tls_settings`). ``reuse``: `http-reuse always`, so that
    a client connection's first request may use an idle server connection too, as the rendered
    config's `retry-on` lets HAProxy do.
    """
    tls_global, ssl = tls or ("", "")
    servers = "".join(f"    server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(backends, 1))
    reuse_line = "    http-reuse always\n" if reuse else ""
    return (
        f"global\n    maxconn 5000\n    stats socket {sock} level admin\n{tls_global}\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n"
        "    timeout server 25s\n\n"
        f"frontend fe\n    bind 127.0.0.1:{port}{ssl}\n    default_backend be\n\n"
        f"backend be\n    balance roundrobin\n{reuse_line}{servers}"
    )


def backend_config(ports: list[int]) -> str:
    """One HAProxy answering 200 on each port (the checks' /health too)."""
    fes = "".join(
        f"\nfrontend b{i}\n    bind 127.0.0.1:{p}\n"
        '    http-request return status 200 content-type text/plain string "ok"\n'
        for i, p in enumerate(ports, 1)
    )
    return (
        "global\n    maxconn 5000\n\ndefaults\n    mode http\n    timeout client 30s\n"
        f"    timeout http-keep-alive 30s\n{fes}"
    )


def self_signed(crt_base: Path) -> None:
    key, crt = crt_base / "key.pem", crt_base / "crt.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=bench.invalid", "-keyout", key, "-out", crt],
        check=True, capture_output=True,
    )  # fmt: skip
    (crt_base / f"{CERT}.pem").write_bytes(crt.read_bytes() + key.read_bytes())


@dataclass
class Haproxy:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    socket: Path | None  # the backends' HAProxy has none

    def worker_cpu_seconds(self) -> float:
        """User + system CPU of the master and all its workers (children in /proc)."""
        total = 0
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def admin(self, command: str) -> str:
        assert self.socket, f"{self.name} has no admin socket"
        return AdminSocket(str(self.socket), timeout=5).command(command)

    def info(self, *fields: str) -> list[int]:
        """Counters of one `show info` (CumReq, CumSslConns, ...)."""
        text = self.admin("show info")
        return [int(re.search(rf"(?m)^{f}: (\d+)$", text)[1]) for f in fields]

    def client_connections(self) -> int:
        """Connections its client frontends accepted (`show stat` conn_tot; checks not in)."""
        rows = csv.DictReader(self.admin("show stat").removeprefix("# ").splitlines())
        return sum(
            int(r["conn_tot"] or 0)
            for r in rows
            if r["svname"] == "FRONTEND" and r["pxname"] != STATS_FRONTEND
        )


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@contextmanager
def haproxy(name: str, cfg: str, tmp: Path, cpu: int | None, port: int, sock: Path | None = None,
            log: Path | None = None, callgrind: bool = False) -> Iterator[Haproxy]:  # fmt: skip
    """HAProxy with ``cfg`` (checked first), pinned to ``cpu``; its stdout (logs) to ``log``.

    ``callgrind``: one process (no master) under valgrind's callgrind, which counts the
    instructions it executes (`callgrind_instructions`).
    """
    path = tmp / f"{name}.cfg"
    path.write_text(cfg)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", path], capture_output=True, text=True)
    if check.returncode:
        sys.exit(f"{name}: haproxy -c failed:\n{check.stdout}{check.stderr}")
    # -W -db: master-worker in the foreground, a child of this process; logs to /dev/null.
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd = ["haproxy", "-W", "-db", "-f", path]
    if callgrind:
        path.write_text(cfg.replace("    master-worker\n", ""))
        out_file = f"--callgrind-out-file={tmp}/callgrind.%p"
        cmd = ["valgrind", "--tool=callgrind", out_file, "haproxy", "-db", "-f", path]
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen([*pin, *cmd], stdout=out, stderr=subprocess.DEVNULL)
    try:
        wait_tcp(port, 60 if callgrind else 10, proc)
        yield Haproxy(name, proc, port, sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"haproxy exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_servers_up(lb: Haproxy, timeout: float) -> None:
    """Until every server is up (the rendered pool's checks passed; the plain one has none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            servers = parse_stat(lb.admin("show stat")).servers
        except OSError:  # the admin socket is bound a little after the frontends
            time.sleep(0.2)
            continue
        if servers and all(s.up for s in servers):
            return
        time.sleep(0.2)
    sys.exit(f"{lb.name}: servers not UP after {timeout} s")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> tuple[float, float, int, int]:
    """(req/s, p99 ms, requests, errors) from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = float(m[1]) * _UNITS[m[2]]
    requests = int(re.search(r"(\d+) requests in", out)[1])
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return rps, p99, requests, errors


def wrk_command(url: str, cpu: int, seconds: int, close: bool, connections: int) -> list[str]:
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
           "--timeout", "5s", "--latency", url]  # fmt: skip
    if close:
        cmd[4:4] = ["-H", "Connection: close"]
    return cmd


def wrk(url: str, cpu: int, seconds: int, close: bool, connections: int) -> str:
    cmd = wrk_command(url, cpu, seconds, close, connections)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode:
        sys.exit(f"wrk failed: {done.stderr}")
    return done.stdout


def measure(lb: Haproxy, rnd: int, variant: str, args: argparse.Namespace) -> Run:
    tls, close = VARIANTS[variant]
    url = f"{'https' if tls else 'http'}://127.0.0.1:{lb.port}/"
    conns0, [ssl0] = lb.client_connections(), lb.info("CumSslConns")
    cpu0 = lb.worker_cpu_seconds()
    out = wrk(url, args.load_cpu, args.duration, close, args.connections)
    cpu = lb.worker_cpu_seconds() - cpu0
    conns, [ssl] = lb.client_connections(), lb.info("CumSslConns")
    rps, p99, requests, errors = parse_wrk(out)
    if args.profile:  # cumulative since the config started
        text = lb.admin("show profiling")
        (args.profile / f"{variant}-{lb.name}-r{rnd}.txt").write_text(text)
    return Run(rnd, variant, lb.name, rps, p99, requests, errors,
               conns - conns0, ssl - ssl0,
               1e6 * cpu / max(requests, 1), cpu / args.duration, os.getloadavg()[0])  # fmt: skip


def summarize(runs: list[Run], configs: list[str]) -> dict[str, Any]:
    """Per variant and config, the ratios to plain of each round and their median and spread.

    A round's two runs are seconds apart, so each ratio sees one machine load; the median of
    many rounds is what stands when other load on the machine moves single rounds by 2x.
    """
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(r.variant for r in runs):
        by = {(r.round, r.config): r for r in runs if r.variant == variant}
        rounds = sorted({r for r, _ in by})
        per: dict[str, Any] = {}
        for name in configs[1:]:
            ratios = {
                "rps": [by[r, name].rps / by[r, "plain"].rps for r in rounds],
                "p99": [by[r, name].p99_ms / by[r, "plain"].p99_ms for r in rounds],
                "cpu": [
                    by[r, name].lb_cpu_ms_per_1k / by[r, "plain"].lb_cpu_ms_per_1k for r in rounds
                ],
            }
            per[name] = {}
            for key, xs in ratios.items():
                per[name][f"{key}_ratio"] = [round(x, 3) for x in xs]
                per[name][f"{key}_ratio_median"] = round(statistics.median(xs), 3)
                per[name][f"{key}_ratio_spread"] = [round(min(xs), 3), round(max(xs), 3)]
        out[variant] = per
    return out


def spread(r: dict[str, Any], key: str) -> str:
    """``median (min-max)`` of one ratio over the rounds."""
    low, high = r[f"{key}_ratio_spread"]
    return f"{r[f'{key}_ratio_median']:.2f} ({low:.2f}-{high:.2f})"


@contextmanager
def backends_up(args: argparse.Namespace) -> Iterator[tuple[Path, list[int]]]:
    """A scratch directory with a self-signed certificate where the rendered config's
    crt-base is, and the two backends (one HAProxy answering 200) running: (directory,
    backend ports)."""
    with tempfile.TemporaryDirectory(prefix="l7cost-") as tmp_s:
        tmp = Path(tmp_s)
        crt_base = Path(RuntimePaths(tmp).haproxy_certs)
        crt_base.mkdir(parents=True)
        self_signed(crt_base)
        backends = [free_port(), free_port()]
        with haproxy("backends", backend_config(backends), tmp, args.load_cpu, backends[-1]):
            yield tmp, backends


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="l7_policy_cost.py", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--lb-cpu", type=int, default=0, help="core of both L7 configs")
    p.add_argument("--load-cpu", type=int, default=1, help="core of wrk and the backends")
    p.add_argument(
        "--ablate", action="store_true", help="also the rendered config minus each feature"
    )
    p.add_argument(
        "--profile", type=Path, help="write `show profiling` (cumulative) after each run here"
    )
    p.add_argument(
        "--plain-reuse",
        action="store_true",
        help="plain config with `http-reuse always` (see the close variants in the docs)",
    )
    p.add_argument("--json", type=Path, help="write runs and ratios here")
    p.add_argument("--quick", action="store_true", help="1 round of 1 s runs (smoke test)")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="instead: instructions per request of each config under callgrind (valgrind)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 1
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if missing := [b for b in ("haproxy", "wrk", "taskset", "openssl") if not shutil.which(b)]:
        sys.exit(f"missing {', '.join(missing)} (scripts/install-deps.sh installs them)")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    names = ["plain", "rendered", *(f"rendered-{a}" for a in ABLATIONS if args.ablate)]
    if args.instructions:
        return instructions(names, variants, args)
    runs: list[Run] = []
    with backends_up(args) as (tmp, backends):
        for variant in variants:
            tls = VARIANTS[variant][0]
            configs = lb_configs(tmp, tls, backends, args.ablate, args.plain_reuse)
            with ExitStack() as lbs:
                started = {
                    name: lbs.enter_context(start(name, make, tmp, args.lb_cpu))
                    for name, make in configs.items()
                }
                for lb in started.values():
                    wait_servers_up(lb, 20)
                    if args.profile:
                        lb.admin("set profiling tasks on")
                # Warm-up (TLS session caches, slow start's first steps; not recorded).
                for lb in started.values():
                    warm_up(lb, variant, args)
                for rnd in range(args.rounds):
                    order = names if rnd % 2 == 0 else names[::-1]
                    for name in order:
                        run = measure(started[name], rnd, variant, args)
                        runs.append(run)
                        print(
                            f"round {rnd} {variant:10} {name:26} {run.rps:9.0f} req/s  "
                            f"p99 {run.p99_ms:6.2f} ms  cpu {run.lb_cpu_ms_per_1k:5.1f} ms/1k  "
                            f"busy {run.lb_busy:4.0%}  errors {run.errors}  "
                            f"conns {run.connections}  handshakes {run.handshakes}  "
                            f"load {run.load1:.2f}",
                            flush=True,
                        )
    ratios = summarize(runs, names)
    print(f"\nrendered / plain, median of {args.rounds} rounds (min-max)   "
          f"targets: req/s >= {TARGET_RPS_RATIO}, p99 <= {TARGET_P99_RATIO}")  # fmt: skip
    for variant, per in ratios.items():
        for name, r in per.items():
            print(
                f"  {variant:10} {name:26} req/s {spread(r, 'rps')}  p99 {spread(r, 'p99')}  "
                f"cpu/req {spread(r, 'cpu')} (capacity {1 / r['cpu_ratio_median']:.2f})"
            )
    errors = sum(r.errors for r in runs)
    print(f"errors (non-2xx + socket) over all runs: {errors}")
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "ratios": ratios}, indent=1) + "\n"
        )
    return 1 if errors else 0


ConfigMaker = Callable[[int, int, Path], str]  # (port, stats port, admin socket) -> config text


def lb_configs(tmp: Path, tls: bool, backends: list[int], ablate: bool, plain_reuse: bool = False
               ) -> dict[str, ConfigMaker]:  # fmt: skip
    """name -> its config for a port, a stats port and an admin socket."""
    rendered = rendered_config(tmp, tls)
    plain_tls = tls_settings(rendered) if tls else None

    def moved(text: str) -> ConfigMaker:
        return lambda port, stats, sock: to_loopback(text, port, stats, backends).replace(
            RuntimePaths(tmp).haproxy_socket, str(sock)
        )

    configs: dict[str, ConfigMaker] = {
        "plain": lambda port, _stats, sock: plain_config(
            port, backends, plain_tls, sock, plain_reuse
        ),
        "rendered": moved(rendered),
    }
    for name, subs in ABLATIONS.items() if ablate else ():
        text = rendered
        for pattern, repl in subs:
            text, n = re.subn(pattern, repl, text)
            assert n, f"ablation {name}: {pattern!r} matches nothing in the rendered config"
        configs[f"rendered-{name}"] = moved(text)
    return configs


@contextmanager
def start(name: str, make: ConfigMaker, tmp: Path, cpu: int, callgrind: bool = False
          ) -> Iterator[Haproxy]:  # fmt: skip
    """HAProxy with config ``make`` on a free port, admin socket ``<tmp>/<name>.sock``."""
    port, sock = free_port(), tmp / f"{name}.sock"
    cfg = make(port, free_port(), sock)
    with haproxy(name, cfg, tmp, cpu, port, sock, callgrind=callgrind) as lb:
        yield lb


def callgrind_instructions(pid: int) -> int:
    """Instructions a process under callgrind has executed so far (all threads)."""
    out = subprocess.run(
        ["callgrind_control", "-e", "Ir", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    counts = re.findall(r"Th \d+\s+([\d,]+)", out)
    if not counts:
        sys.exit(f"callgrind_control: no counts for {pid}: {out}")
    return sum(int(c.replace(",", "")) for c in counts)


def instructions(names: list[str], variants: list[str], args: argparse.Namespace) -> int:
    """Instructions per request of each config, counted by callgrind (user space only).

    Nearly independent of other load on the machine, where req/s is not; the kernel's share
    (syscalls, TCP) is not in them.
    """
    if not shutil.which("valgrind"):
        sys.exit("--instructions needs valgrind (scripts/install-deps.sh installs it)")
    with backends_up(args) as (tmp, backends):
        for variant in variants:
            tls, close = VARIANTS[variant]
            configs = lb_configs(tmp, tls, backends, args.ablate, args.plain_reuse)
            base = None
            for name in names:
                with start(name, configs[name], tmp, args.lb_cpu, callgrind=True) as lb:
                    wait_servers_up(lb, 60)
                    url = f"{'https' if tls else 'http'}://127.0.0.1:{lb.port}/"
                    wrk(url, args.load_cpu, 2, close, 8)  # warm-up
                    per, requests = counted_instructions(lb, url, close, args)
                base = base or per
                print(f"{variant:10} {name:32} {per:9.0f} instructions/request  "
                      f"x{per / base:.2f}  ({requests} requests)", flush=True)  # fmt: skip
    return 0


def client_streams(lb: Haproxy) -> set[str]:
    """Source addresses of the client streams in ``lb`` now (`show sess`, the CLI's left out).

    A connection has a stream only once it is set up (a TLS handshake done) and a request came.
    """
    return set(re.findall(r"(?m) src=(\S+) fe=(?!GLOBAL )", lb.admin("show sess")))


def counted_instructions(lb: Haproxy, url: str, close: bool, args: argparse.Namespace
                         ) -> tuple[float, int]:  # fmt: skip
    """(instructions per request, requests) over ``--duration`` seconds of wrk on ``lb``.

    Keep-alive: counted once each of wrk's connections has had a request in flight, so that
    their set-up (a TLS handshake is millions of instructions, seconds under callgrind) stays
    out of the per-request figure, and after the warm-up's connections are gone; requests by
    HAProxy's own counter (CumReq) over the same span.
    """
    connections, setup = 8, 60
    deadline = time.monotonic() + setup
    while client_streams(lb) and time.monotonic() < deadline:
        time.sleep(0.1)
    cmd = wrk_command(url, args.load_cpu, args.duration + setup, close, connections)
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL) as load:
        seen: set[str] = set()
        while not close and len(seen) < connections:
            if time.monotonic() > deadline:
                sys.exit(f"{lb.name}: {connections} connections not up after {setup} s")
            seen |= client_streams(lb)
        before = callgrind_instructions(lb.proc.pid), *lb.info("CumReq")
        time.sleep(args.duration)
        after = callgrind_instructions(lb.proc.pid), *lb.info("CumReq")
        load.terminate()
    requests = after[1] - before[1]
    if requests <= 0:
        sys.exit(f"{lb.name}: no request counted in {args.duration} s under callgrind")
    return (after[0] - before[0]) / requests, requests


def warm_up(lb: Haproxy, variant: str, args: argparse.Namespace) -> None:
    tls, close = VARIANTS[variant]
    url = f"{'https' if tls else 'http'}://127.0.0.1:{lb.port}/"
    wrk(url, args.load_cpu, min(1, args.duration), close, args.connections)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
