"""Maglev table build time and disruption when one backend leaves.

    python bench/dataplane_maglev.py [--runs 20]

Build: 100 equal-weight backends at 65537 slots, best and median of --runs
(target < 100 ms). Disruption: share of slots that change owner when one of N
backends fails (``down``: only its slots move) and when it leaves the set
(rebuild: Maglev's usual extra churn), worst over 10 random backend sets.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lbappliance.dataplane import maglev

M = maglev.DEFAULT_TABLE_SIZE


def names(n: int, rnd: random.Random) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}")
    return sorted(out)


def moved(a: maglev.MaglevTable, b: maglev.MaglevTable) -> int:
    return sum(1 for x, y in zip(a.slots, b.slots, strict=True) if a.backends[x] != b.backends[y])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}")
    backends = names(100, random.Random(1))
    for label, kw in (("build", {}), ("build with 1 of 100 down", {"down": backends[:1]})):
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            maglev.build(backends, **kw)
            times.append((time.perf_counter() - t) * 1000)
        print(f"{label:<26} 100 backends x {M}: best {min(times):.1f} ms, "
              f"median {statistics.median(times):.1f} ms")  # fmt: skip

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


if __name__ == "__main__":
    main()
