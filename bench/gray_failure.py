"""Gray-failure benchmark (issues 8 and 16).

Four lab backends behind the VIP on one LB node of the namespace lab; an
open-loop client sends 100 req/s from the client namespace and records every
request's latency (from its scheduled send time, so a stalled server cannot hide
queued requests). One backend fails gray while its /health keeps answering 200:
hard (+900 ms every request), soft (+60 ms), intermittent (10 % of requests
+900 ms). The failure starts with the load; a settle phase at the same load
precedes the measured 20 s. For configs with the weight controller the backend
then heals and the load goes on for 60 s (the recovery).

Reported per run: p50/p99/p99.9 of the measured window; the time to react (from
the failure's start until the p99 of the sliding 1 s window stays under 2x the
healthy p99 of the same config, the lower of a healthy run before and one after);
after the heal, when the backend's share is back
to fair (80 % of an equal share over 5 s) and the worst 1 s p99 meanwhile.

Configurations, each rendered from a site inventory by `lbappliance render`:

  a   round-robin with the shallow /health check (a plain config)
  d   the inventory's defaults: the L7 policy (random(2), GET /health check,
      passive outlier ejection, retries within a budget) and the weight
      controller with its default policy
  b   the L7 policy with the pool's check on the real request path ("/") and
      a 500 ms check timeout
  c   b plus the weight controller with the inventory's default policy
  b0  the L7 policy with inventory defaults, without the controller

    python bench/gray_failure.py                       # ~8 min, root: 2 healthy + 3 x (a d)
    python bench/gray_failure.py --failures hard --configs b,c
    python bench/gray_failure.py --quick               # 3 s phases, a smoke test
    python bench/gray_failure.py load --host H ...     # the load worker (used internally)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lbappliance.paths import project_dir


async def _one(host: str, port: int, timeout: float) -> tuple[int, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii"))
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    backend = next(
        (h.split(":", 1)[1].strip() for h in head if h.lower().startswith("x-backend:")), ""
    )
    return status, backend


async def open_loop(
    host: str,
    port: int,
    rate: float,
    duration: float,
    timeout: float = 10.0,
    start_at: float | None = None,
) -> list[tuple[float, float, int, str]]:
    """Send ``rate`` req/s for ``duration`` s on a fixed schedule, whatever the answers.

    Returns ``(scheduled offset s, latency s, status or 0 on error, backend)`` per request;
    latency counts from the scheduled send time. ``start_at`` is the schedule's start on
    the ``time.monotonic()`` clock (system-wide, so another process can line events up
    with it); by default it starts now.
    """
    loop = asyncio.get_running_loop()  # its clock is time.monotonic()
    start = loop.time() + 0.05 if start_at is None else start_at
    results: list[tuple[float, float, int, str]] = []

    async def fire(at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            status, backend = await _one(host, port, timeout)
        except (TimeoutError, OSError, ValueError, IndexError):
            status, backend = 0, ""
        results.append((at - start, loop.time() - at, status, backend))

    count = int(rate * duration)
    await asyncio.gather(*(fire(start + i / rate) for i in range(count)))
    results.sort()
    return results


def load_main(argv: list[str]) -> None:
    """The load worker: runs inside the client namespace, prints JSON results."""
    p = argparse.ArgumentParser(prog="gray_failure.py load")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--start-at", type=float, help="schedule start, time.monotonic() clock")
    a = p.parse_args(argv)
    results = asyncio.run(open_loop(a.host, a.port, a.rate, a.duration, a.timeout, a.start_at))
    json.dump(results, sys.stdout)


# --- the benchmark ----------------------------------------------------------------------

FAILURES: dict[str, dict[str, Any]] = {
    "healthy": {},
    "hard": {"latency_ms": 900},
    "soft": {"latency_ms": 60},
    "intermittent": {"slow_fraction": 0.1, "slow_ms": 900},
}
SLOW = "backend1"
VIP = "198.51.100.10"


@dataclass(frozen=True)
class Config:
    """One way of running the pool: its policy in the site, and whether the controller runs."""

    name: str
    label: str
    pool_policy: dict[str, Any]  # l7.pools[web].policy
    site_policy: dict[str, Any]  # merged into l7.policy
    controller: dict[str, Any] | None  # l7.pools[web].policy.weight_controller; None: off
    settle: float  # seconds of load before the measured window (the failure starts with it)


# The appliance's policy for this pool: its active check on the real request path ("/", the
# one the gray failure slows) with a 500 ms budget (the renderer caps the pool's connect
# timeout to it: HAProxy 2.6 bounds a check by min(inter, timeout connect)).
REAL_PATH_CHECK = {"health_check": {"path": "/", "timeout": "500ms"}}

CONFIGS = {
    "a": Config("a", "round-robin, /health check", {"balance": "roundrobin"}, {}, None, 1),
    "b0": Config("b0", "rendered L7 policy, inventory defaults", {}, {}, None, 10),
    "b": Config("b", "rendered L7 policy", REAL_PATH_CHECK, {}, None, 10),
    "c": Config("c", "policy + weight controller", REAL_PATH_CHECK, {}, {}, 18),
    "d": Config("d", "inventory defaults (L7 policy + controller)", {}, {}, {}, 10),
}
WINDOW = 1.0  # s, the sliding window of the time to react and of the recovery's p99
STEP = 0.1  # s between the sliding windows' starts
SHARE_WINDOW = 5.0  # s over which the healed backend's share is measured
FAIR = 0.8  # "back to fair": at least this fraction of an equal share in a share window


def bench_site(cfg: Config) -> dict[str, Any]:
    """The lab site with four backends in its pool and ``cfg``'s policy."""
    site = yaml.safe_load((project_dir() / "inventory" / "sites" / "lab.yml").read_text())
    site["site"]["name"] = "gray"
    site["l4_services"] = []
    # Only the frontend's own VIP: the lab site's other anycast VIPs (the L4 service's, the
    # frontend's IPv6 one) would need BGP and IPv6 routes this bench does not set up.
    site["anycast"] = [a for a in site["anycast"] if a["prefix"].split("/")[0] == VIP]
    site["l7"]["frontends"][0]["extra_vips"] = []
    site["l7"]["policy"].update(cfg.site_policy)
    pool = site["l7"]["pools"][0]
    pool["servers"] = [
        {"name": f"backend{i}", "address": f"10.30.0.{20 + i}", "port": 8080} for i in range(1, 5)
    ]
    controller = {"enabled": False} if cfg.controller is None else cfg.controller
    pool["policy"] = {**cfg.pool_policy, "weight_controller": controller}
    return site


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (p99.9 of 2000: the 3rd slowest).

    Rounded before the ceiling: ``99.9 / 100 * 2000`` is 1998.0000000000002 in floats.
    """
    rank = max(1, math.ceil(round(q / 100 * len(sorted_values), 6)))
    return sorted_values[rank - 1]


def summarize(results: list[list[Any]]) -> dict[str, Any]:
    ok = sorted(r[1] * 1000 for r in results)
    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r[2] != 200),
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
        "p999_ms": percentile(ok, 99.9),
        "max_ms": ok[-1],
        "slow_share": sum(1 for r in results if r[3] == SLOW) / len(results),
    }


def windows(
    results: list[list[Any]], start: float, end: float, width: float = WINDOW
) -> list[tuple[float, list[list[Any]]]]:
    """Sliding windows ``[t - width, t)`` of requests (by scheduled time), ``t`` every STEP.

    ``t`` runs from ``start + width`` to ``end``; each window comes with its end ``t``.
    """
    out = []
    t = start + width
    while t <= end + 1e-9:
        out.append((t, [r for r in results if t - width <= r[0] < t]))
        t += STEP
    return out


def window_p99(requests: list[list[Any]]) -> float:
    """p99 (ms) of one window; an error counts as infinitely slow."""
    return percentile(sorted(r[1] * 1000 if r[2] == 200 else math.inf for r in requests), 99)


def _slow_backend_over(requests: list[list[Any]], limit_ms: float) -> bool:
    return any(r[3] == SLOW and (r[2] != 200 or r[1] * 1000 >= limit_ms) for r in requests)


def time_to_react(
    results: list[list[Any]],
    failure_at: float,
    end: float,
    limit_ms: float,
    own: bool = False,
) -> float | None:
    """Seconds from ``failure_at`` until the 1 s window's p99 stays under ``limit_ms``.

    The window at ``t`` holds the requests scheduled in the second before ``t``; the answer
    is the first ``t`` from which every window is under the limit (0 if none ever was over),
    ``None`` if the run's last window is still over it. ``own``: only windows where the
    slow backend's own requests are over the limit count (not this machine's noise).
    """
    last_bad = None
    for t, reqs in windows(results, failure_at, end):
        over = reqs and window_p99(reqs) >= limit_ms
        if over and (not own or _slow_backend_over(reqs, limit_ms)):
            last_bad = t
    if last_bad is None:
        return 0.0
    react = last_bad + STEP
    return None if react > end + 1e-9 else react - failure_at


def recovery(
    results: list[list[Any]], healed_at: float, end: float, servers: int, limit_ms: float
) -> dict[str, Any]:
    """After the heal: when the backend's share is back to fair, and the worst 1 s p99.

    Back to fair: the end of the first ``SHARE_WINDOW`` after the heal over which it had at
    least ``FAIR`` of an equal share (so never under ``SHARE_WINDOW`` s).
    """
    fair = FAIR / servers
    back = next(
        (
            t - healed_at
            for t, reqs in windows(results, healed_at, end, SHARE_WINDOW)
            if reqs and sum(1 for r in reqs if r[3] == SLOW) / len(reqs) >= fair
        ),
        None,
    )
    worst = max(
        (window_p99(reqs) for _, reqs in windows(results, healed_at, end) if reqs), default=0.0
    )
    after = [r for r in results if healed_at <= r[0] < end]
    own = [r for r in after if r[3] == SLOW]
    others = [r for r in after if r[3] != SLOW]

    def over(reqs: list[list[Any]]) -> int:
        return sum(1 for r in reqs if r[2] != 200 or r[1] * 1000 >= limit_ms)

    return {
        "share_back_s": back,
        "max_window_p99_ms": worst,
        "limit_ms": limit_ms,
        "healed_over_limit": over(own),  # its own requests slower than the limit
        "healed_over_share": over(own) / max(len(own), 1),
        "others_over_share": over(others) / max(len(others), 1),  # the machine's noise
    }


def _all_up(sock: Any) -> bool:
    """Every server of the pool UP (False while HAProxy has not opened its socket yet)."""
    from lbappliance.haproxy import HaproxyError

    try:
        return all(s.status == "UP" for s in sock.show_stat() if s.pool == "web")
    except HaproxyError:
        return False


def run_one(
    cfg: Config, failure: str, rate: float, duration: float, heal: float = 0.0
) -> dict[str, Any]:
    """One lab run: fail ``SLOW`` with the load, measure after the settle, heal, watch ``heal`` s.

    Request offsets are seconds from the failure's start (the load's schedule starts with it).
    """
    from lbappliance.haproxy import AdminSocket
    from lbappliance.lab.netns import NetnsLab

    settle = cfg.settle if failure != "healthy" else 2.0
    heal = heal if FAILURES[failure] and cfg.controller is not None else 0.0
    total = settle + duration + heal
    with tempfile.TemporaryDirectory(prefix="gray-inv-") as tmp:
        inv = Path(tmp)
        (inv / "sites").mkdir()
        shutil.copy(project_dir() / "inventory" / "defaults.yml", inv / "defaults.yml")
        (inv / "sites" / "gray.yml").write_text(yaml.safe_dump(bench_site(cfg)))
        with NetnsLab.create(site="gray", inventory=inv) as lab:
            lab.start_all(("backend",))
            lab.start_haproxy("lb1")
            uplink = str(lab.topology.host("lb1").address_on("uplink"))
            lab.run("router", ["ip", "route", "replace", f"{VIP}/32", "via", uplink])
            lab.wait_tcp("client", VIP, 80)
            sock = AdminSocket(str(lab.config("lb1", "run/haproxy/admin.sock")))
            lab.wait(lambda: _all_up(sock), 15, "all servers UP")
            if cfg.controller is not None:
                conf = lab.config("lb1", "etc/lbappliance/weights.json")
                lab.popen("lb1", "weights", [sys.executable, "-m", "lbappliance.weights",
                                             "--config", str(conf)])  # fmt: skip
            start = time.monotonic() + 2.0  # the worker's interpreter starts meanwhile
            cmd = ["ip", "netns", "exec", lab.ns("client"), sys.executable, __file__, "load"]
            cmd += ["--host", VIP, "--rate", str(rate), "--duration", str(total)]
            cmd += ["--start-at", repr(start)]
            load = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            if FAILURES[failure]:
                time.sleep(max(0.0, start - time.monotonic()))
                lab.set_backend(SLOW, **FAILURES[failure])
                if heal:
                    time.sleep(max(0.0, start + settle + duration - time.monotonic()))
                    lab.set_backend(SLOW)  # healed: every request answers fast again
            out, _ = load.communicate(timeout=total + 60)
            stats = [s for s in sock.show_stat() if s.pool == "web"]
            log = ""
            if cfg.controller is not None:
                log = (lab.workdir / "logs" / "lb1-weights.log").read_text()
    results = json.loads(out)
    measured = [r for r in results if settle <= r[0] < settle + duration]
    settling = [r for r in results if r[0] < settle]
    return {
        "config": cfg.name,
        "label": cfg.label,
        "failure": failure,
        "settle_s": settle,
        "duration_s": duration,
        "heal_s": heal,
        "measured": summarize(measured),
        "settling": summarize(settling) if settling else None,
        "final_weights": {s.server: s.uweight for s in stats},
        "final_status": {s.server: s.status for s in stats},
        "weight_changes": sum(1 for line in log.splitlines() if "->" in line),
        "slowest": sorted(measured, key=lambda r: -r[1])[:5],  # (offset s, latency s, ...)
        "results": results,
    }


def assess(runs: list[dict[str, Any]]) -> None:
    """Add each failure run's time to react and recovery, against its config's healthy p99."""
    healthy: dict[str, dict[str, Any]] = {}
    for r in runs:  # several healthy runs of a config (before and after): the strictest
        if r["failure"] == "healthy":
            m, seen = r["measured"], healthy.get(r["config"])
            healthy[r["config"]] = {
                k: min(m[k], seen[k]) if seen else m[k] for k in ("p99_ms", "p999_ms")
            }
    fallback = next(iter(healthy.values()), None)
    for r in runs:
        base = healthy.get(r["config"], fallback)
        if r["failure"] == "healthy":  # how far this machine's own noise takes a 1 s p99
            end = r["settle_s"] + r["duration_s"]
            reqs = windows(r["results"], r["settle_s"], end)
            r["worst_window_p99_ms"] = max(window_p99(q) for _, q in reqs if q)
            continue
        if base is None:
            continue
        limit = 2 * base["p99_ms"]
        res, fail_end = r["results"], r["settle_s"] + r["duration_s"]
        r["react_limit_ms"] = limit
        r["react_s"] = time_to_react(res, 0.0, fail_end, limit)
        r["react_own_s"] = time_to_react(res, 0.0, fail_end, limit, own=True)
        if r["heal_s"]:
            r["recovery"] = recovery(res, fail_end, fail_end + r["heal_s"], 4, limit)


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f} s"


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| failure | config | p50 ms | p99 ms | p99.9 ms | errors | slow share "
        "| settle p99 ms | time to react (own) | recovery: fair share after / worst 1 s p99 "
        "| slow backend at end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        m, s = r["measured"], r["settling"]
        settle = f"{s['p99_ms']:.1f}" if s else "-"
        react = "-"
        if "react_s" in r:
            react = f"{_s(r['react_s'])} (own {_s(r['react_own_s'])})"
        if "worst_window_p99_ms" in r:
            react = f"(worst 1 s p99: {r['worst_window_p99_ms']:.1f} ms)"
        rec = r.get("recovery")
        healed = "-"
        if rec:
            healed = (
                f"{_s(rec['share_back_s'])} / {rec['max_window_p99_ms']:.1f} ms "
                f"(its own over {rec['limit_ms']:.1f}: {rec['healed_over_limit']}, "
                f"{rec['healed_over_share']:.2%}; others {rec['others_over_share']:.2%})"
            )
        end = f"weight {r['final_weights'].get(SLOW)}, {r['final_status'].get(SLOW)}"
        lines.append(
            f"| {r['failure']} | ({r['config']}) {r['label']} | {m['p50_ms']:.1f} "
            f"| {m['p99_ms']:.1f} | {m['p999_ms']:.1f} | {m['errors']}/{m['requests']} "
            f"| {m['slow_share']:.1%} | {settle} | {react} | {healed} | {end} |"
        )
    return "\n".join(lines)


def _verdict(x: float, limit: float) -> str:
    return f"target <= {limit:g}: {'met' if x <= limit else 'MISSED'}"


def ratios(runs: list[dict[str, Any]]) -> list[str]:
    by = {(r["failure"], r["config"]): r for r in runs}
    m = {k: r["measured"] for k, r in by.items()}
    out = []
    if ("hard", "a") in m and ("hard", "b") in m:
        x = m[("hard", "b")]["p99_ms"] / m[("hard", "a")]["p99_ms"]
        out.append(f"hard: (b) p99 / (a) p99 = {x:.3f} ({_verdict(x, 0.02)})")
    healthy = next((m[k] for k in (("healthy", "c"), ("healthy", "b")) if k in m), None)
    if healthy and ("soft", "c") in m:
        x = m[("soft", "c")]["p99_ms"] / healthy["p99_ms"]
        out.append(f"soft: (c) p99 / healthy p99 = {x:.2f} ({_verdict(x, 1.5)})")
    if ("intermittent", "c") in m and ("intermittent", "a") in m:
        x = m[("intermittent", "c")]["p999_ms"] / m[("intermittent", "a")]["p999_ms"]
        out.append(f"intermittent: (c) p99.9 / (a) p99.9 = {x:.3f} ({_verdict(x, 0.1)})")
    if ("healthy", "d") in m:
        base = {  # the strictest of the healthy runs
            k: min(
                r["measured"][k] for r in runs if r["failure"] == "healthy" and r["config"] == "d"
            )
            for k in ("p99_ms", "p999_ms")
        }
        for failure in ("hard", "soft", "intermittent"):
            r = by.get((failure, "d"))
            if r is None:
                continue
            x = r["measured"]["p999_ms"] / base["p999_ms"]
            out.append(f"{failure}: (d) p99.9 / healthy p99.9 = {x:.2f} ({_verdict(x, 3)})")
            if failure != "intermittent":
                for key, what in (("react_s", ""), ("react_own_s", " (slow backend's own)")):
                    react = r[key]
                    verdict = _verdict(react, 5) if react is not None else "target <= 5: MISSED"
                    out.append(f"{failure}: (d) time to react{what} = {_s(react)} ({verdict})")
            rec = r.get("recovery")
            if rec:
                back = rec["share_back_s"]
                ok = back is not None and back <= 60 and rec["max_window_p99_ms"] < rec["limit_ms"]
                out.append(
                    f"{failure}: (d) recovery: fair share after {_s(back)}, worst 1 s p99 "
                    f"{rec['max_window_p99_ms']:.1f} ms (targets <= 60 s and < "
                    f"{rec['limit_ms']:.1f} ms: {'met' if ok else 'MISSED'})"
                )
    errors = sum(r["measured"]["errors"] + (r["settling"] or {}).get("errors", 0) for r in runs)
    errors += sum(
        1
        for r in runs
        for q in r["results"]
        if q[0] >= r["settle_s"] + r["duration_s"] and q[2] != 200
    )
    out.append(f"client errors in all runs (settle and recovery phases included): {errors}")
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="gray_failure.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--failures",
        default="healthy,hard,soft,intermittent,healthy",
        help="in this order; the healthy baseline is the strictest of its runs",
    )
    p.add_argument(
        "--configs",
        default="a,d",
        help=f"configs to run each failure against, of {', '.join(CONFIGS)}",
    )
    p.add_argument("--healthy-configs", default="d", help="configs of the healthy baseline")
    p.add_argument("--skip", default="", help="failure:config pairs not to run")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    p.add_argument(
        "--heal",
        type=float,
        default=60.0,
        help="seconds watched after the backend heals (runs with the controller)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke test: 3 s measured, settle and heal"
    )
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    duration, heal = (3.0, 3.0) if a.quick else (a.duration, a.heal)
    skip = set(a.skip.split(",")) if a.skip else set()
    runs = []
    started = time.monotonic()
    load = os.getloadavg()
    for failure in a.failures.split(","):
        names = a.healthy_configs if failure == "healthy" else a.configs
        for name in names.split(","):
            if f"{failure}:{name}" in skip:
                continue
            cfg = CONFIGS[name]
            if a.quick:
                cfg = dataclasses.replace(cfg, settle=min(cfg.settle, 3))
            r = run_one(cfg, failure, a.rate, duration, heal)
            runs.append(r)
            m = r["measured"]
            print(
                f"{failure:>12} ({name}) p50 {m['p50_ms']:7.1f}  p99 {m['p99_ms']:7.1f}  "
                f"p99.9 {m['p999_ms']:7.1f}  errors {m['errors']}  slow {m['slow_share']:.1%}  "
                f"weights {r['final_weights']}",
                flush=True,
            )
    assess(runs)
    took = time.monotonic() - started
    after = os.getloadavg()
    print(
        f"\n{len(runs)} runs in {took:.0f} s; {a.rate:g} req/s, {duration:g} s measured; "
        f"load average {load[0]:.2f} at the start, {after[0]:.2f} at the end\n"
    )
    print(table(runs))
    print()
    print("\n".join(ratios(runs)))
    if a.out:
        args = vars(a) | {"out": str(a.out), "load_average": [load[0], after[0]]}
        a.out.write_text(json.dumps({"args": args, "runs": runs}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        load_main(sys.argv[2:])
    else:
        main(sys.argv[1:])
