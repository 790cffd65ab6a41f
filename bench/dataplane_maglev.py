"""Maglev table build time, disruption when one backend leaves, and a node's
worth of tables built and loaded into real BPF maps.

    python bench/dataplane_maglev.py [--runs 20] [--services 1000] [--quick]

Build: 100 equal-weight backends at 65537 slots, best and median of --runs,
with the compiled fill (maglev_fill.c) and with the pure-Python one.
Disruption: share of slots that change owner when one of N backends fails
(``down``: only its slots move) and when it leaves the set (rebuild: Maglev's
usual extra churn), worst over 10 random backend sets.

Scale (root, clang and bpftool; a private bpffs, the forwarder loaded but not
attached): --services L4 services of 65537 slots, each with its own set of 8
to 64 backends drawn from 4,000 addresses (so no two tables are alike),
applied through ``loader.apply``: the first apply (load the object, build and
load every table: target <= 10 s at 1,000), a re-apply with nothing changed,
and a re-apply with one service's backends changed (one table rebuilt).
--quick: 20 services, 3 build runs, no disruption table (the test suite's
smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lbappliance.dataplane import loader, maglev, maglev_native
from lbappliance.dataplane import spec as specmod
from lbappliance.dataplane.neighbours import NextHop

REPO = Path(__file__).resolve().parents[1]
M = maglev.DEFAULT_TABLE_SIZE


def names(n: int, rnd: random.Random) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}")
    return sorted(out)


def moved(a: maglev.MaglevTable, b: maglev.MaglevTable) -> int:
    return sum(1 for x, y in zip(a.slots, b.slots, strict=True) if a.backends[x] != b.backends[y])


def bench_build(runs: int) -> None:
    backends = names(100, random.Random(1))
    native = maglev_native.library
    for impl in ("compiled", "python"):
        if impl == "python":
            maglev_native.library = lambda: None  # type: ignore[assignment]
        elif native() is None:
            print(f"compiled fill unavailable: {maglev_native.unavailable_reason()}")
            continue
        for label, kw in (("build", {}), ("build with 1 of 100 down", {"down": backends[:1]})):
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                maglev.build(backends, **kw)
                times.append((time.perf_counter() - t) * 1000)
            print(f"{impl:<8} {label:<26} 100 backends x {M}: best {min(times):.1f} ms, "
                  f"median {statistics.median(times):.1f} ms")  # fmt: skip
    maglev_native.library = native  # type: ignore[assignment]


def bench_disruption() -> None:
    print(f"{'N':>4} {'fail: moved x N':>16} {'leave: moved x N':>17} {'leave: extra':>13}")
    for n in (3, 10, 20, 50, 100):
        worst_fail = worst_leave = worst_extra = 0.0
        for trial in range(10):
            rnd = random.Random(1000 * n + trial)
            ns = names(n, rnd)
            gone = rnd.choice(ns)
            base = maglev.build(ns)
            failed = maglev.build(ns, down=[gone])
            left = maglev.build([x for x in ns if x != gone])
            worst_fail = max(worst_fail, moved(base, failed) / M * n)
            worst_leave = max(worst_leave, moved(base, left) / M * n)
            worst_extra = max(worst_extra, (moved(base, left) - base.counts()[gone]) / M)
        print(f"{n:>4} {worst_fail:>16.3f} {worst_leave:>17.3f} {100 * worst_extra:>12.2f}%")


def scale_spec(services: int, pool: list[str], rnd: random.Random) -> dict[str, Any]:
    out = []
    for i in range(services):
        chosen = rnd.sample(pool, rnd.randint(8, 64))
        out.append({
            "name": f"svc{i}",
            "vip": f"198.51.100.{i % 250 + 1}",
            "port": 1000 + i,
            "protocol": "tcp",
            "forwarding": "ipip",
            "backends": [{"address": b, "weight": rnd.randint(1, 4), "mac": None, "mtu": 1500}
                         for b in chosen],
        })  # fmt: skip
    # The rendered defaults for the flow table and the previous-table window.
    return {"node": "lb1", "interface": "lbdp0", "xdp_mode": "generic", "table_size": M,
            "flow_table_size": 65536, "udp_idle_timeout": 30.0, "previous_table_window": 60.0,
            "tunnel_source_v4": "10.10.0.11", "tunnel_source_v6": None,
            "services": out}  # fmt: skip


def bench_scale(services: int) -> dict[str, float]:
    """Seconds for the first apply, a no-op re-apply and a one-service change."""
    if os.geteuid() != 0 or not shutil.which("clang") or not shutil.which("bpftool"):
        sys.exit("the scale benchmark needs root, clang and bpftool")
    rnd = random.Random(7)
    pool = names(4000, rnd)
    raw = scale_spec(services, pool, rnd)
    next_hops = {
        (a, None): NextHop(1, "lo", "02:bb:00:00:00:02", "02:00:" + (i + 1).to_bytes(4).hex(":"))
        for i, a in enumerate(pool)
    }
    work = Path(tempfile.mkdtemp(prefix="lbdp-bench-"))
    bpffs = work / "bpffs"
    bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    out: dict[str, float] = {}
    try:
        obj = loader.compile_object(REPO / "bpf" / "xdp_lb.c", work / "xdp_lb.o")
        root = bpffs / "pins"

        spec_path = work / "dataplane.json"

        def apply(raw_spec: dict[str, Any], label: str) -> loader.ApplyReport:
            """What ``lbappliance dataplane apply`` does: load the spec, apply it."""
            spec_path.write_text(json.dumps(raw_spec))
            t = time.perf_counter()
            rep = loader.apply(specmod.load(spec_path), obj, root, next_hops=next_hops,
                               attach_program=False)  # fmt: skip
            out[label] = time.perf_counter() - t
            return rep

        rep = apply(raw, "first apply (load + every table)")
        assert len(rep.sync.tables_written) == services
        rep = apply(raw, "re-apply, nothing changed")
        assert not rep.sync.changed
        svc0 = raw["services"][0]
        used = {b["address"] for b in svc0["backends"]}
        extra = next(a for a in pool if a not in used)
        svc0["backends"] = [
            *svc0["backends"][1:],
            {"address": extra, "weight": 1, "mac": None, "mtu": 1500},
        ]
        rep = apply(raw, "re-apply, one service changed")
        assert rep.sync.tables_written == [f"svc0 {svc0['vip']} {svc0['port']}/tcp"]
        specmod._ip.cache_clear()  # as in a fresh process
        t = time.perf_counter()
        specmod.load(spec_path)
        out["of which: loading the spec"] = time.perf_counter() - t
    finally:
        loader.unpin(bpffs / "pins")
        subprocess.run(["umount", "-l", str(bpffs)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    for label, secs in out.items():
        print(f"{services} services x {M} slots, {label:<34} {secs:7.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--services", type=int, default=1000, help="for the scale run (max 1024)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 services, 3 runs")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.services = 3, 20
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    bench_build(args.runs)
    if not args.quick:
        bench_disruption()
    bench_scale(args.services)


if __name__ == "__main__":
    main()
