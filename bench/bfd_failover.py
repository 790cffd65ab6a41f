"""Dead-node detection at the router: BFD against the BGP hold timer, one run.

    python bench/bfd_failover.py [--trials 10] [--hold-trials 3]

On the namespace lab (real BIRD router running the rendered router config, real
ExaBGP + health agent + BIRD BFD on the nodes), lb1's links are cut (not a
clean stop) and the time until 198.51.100.10/32 leaves the router's kernel FIB
is measured, first with BFD, then with the nodes' BFD responders stopped so only
the hold timer (3 s in the lab site) detects the death.
"""

from __future__ import annotations

import argparse
import statistics

from lbappliance.lab.netns import NetnsLab

VIP = "198.51.100.10/32"


def summary(name: str, xs: list[float]) -> str:
    ms = sorted(x * 1000 for x in xs)
    return (
        f"{name}: n={len(ms)} p50={statistics.median(ms):.0f} ms max={ms[-1]:.0f} ms "
        f"min={ms[0]:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--hold-trials", type=int, default=3)
    args = parser.parse_args()
    with NetnsLab.create() as lab:
        lab.start_all()
        bfd = [lab.route_loss_time("lb1", VIP, bfd=True) for _ in range(args.trials)]
        for node in ("lb1", "lb2"):
            lab.stop(node, "bfd")
        lab.wait(lambda: lab.bfd_sessions_up() == 0, 10, "BFD down")
        hold = [lab.route_loss_time("lb1", VIP, bfd=False) for _ in range(args.hold_trials)]
    print(summary("with BFD (100 ms x 3)", bfd))
    print(summary("hold timer only (3 s)", hold))


if __name__ == "__main__":
    main()
