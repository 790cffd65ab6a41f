"""Health agent: service death -> route out of the router's FIB; route changes under loss.

    python bench/health_withdraw.py [--trials 20] [--loss-seconds 300] [--loss-percent 1]

On the namespace lab (real BIRD router, real ExaBGP running the health agent on
lb1 and lb2, real HAProxy and backends), with the site's default agent policy
(interval 500 ms, fast interval 200 ms, timeout 150 ms, fall 3, rise 3):

1. haproxy:  lb1's HAProxy is SIGKILLed (the L7 service dies);
   backends: lb1 can no longer reach any backend (its packets to them dropped);
   agent:    lb1's health agent is SIGKILLed (ExaBGP respawns it; the new agent
             withdraws before anything else);
   xdp:      lb1's XDP forwarder is detached (the L4 VIP 198.51.100.20 loses its
             data plane on lb1).
   Measured: time from the event until lb1's next hop leaves the VIP
   (198.51.100.10/32; 198.51.100.20/32 for xdp) in the router's kernel FIB
   (polled every 5 ms). Each trial starts at a random
   phase of the agent's probe cycle; between trials the service is restored and
   lb1's ExaBGP restarted (so flap dampening, which would rightly hold a VIP that
   died 20 times in a minute, does not hide the detection time).
2. loss: both nodes lose --loss-percent of their own probes (random SYN drops
   to the VIP, nftables `numgen random`) for --loss-seconds; counted: probes
   lost and the BGP updates/withdraws BIRD receives from the nodes (target 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.health.labtools import (  # noqa: E402
    L4,
    WEB,
    agent_pid,
    bgp_counters,
    cut_backends,
    drop_probes,
    dropped,
    uplink,
)

from lbappliance.lab.netns import NetnsLab  # noqa: E402


def summary(name: str, xs: list[float]) -> dict[str, float | int | str]:
    ms = sorted(x * 1000 for x in xs)
    return {
        "scenario": name,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms)),
        "max_ms": round(ms[-1]),
        "min_ms": round(ms[0]),
    }


def ecmp(lab: NetnsLab) -> list[str]:
    return sorted([uplink(lab, "lb1"), uplink(lab, "lb2")])


def restart_exabgp(lab: NetnsLab, vip: str) -> None:
    lab.stop("lb1", "exabgp")
    lab.start_exabgp("lb1")
    lab.wait(lambda: lab.fib_nexthops(vip) == ecmp(lab), 30, "ECMP after restart")


def trial(lab: NetnsLab, scenario: str, rng: random.Random) -> float:
    vip = L4 if scenario == "xdp" else WEB
    lab.wait(lambda: lab.fib_nexthops(vip) == ecmp(lab), 30, "ECMP")
    time.sleep(1 + rng.uniform(0, 1))  # steady state, random phase of the 500 ms cycle
    if scenario == "haproxy":
        lab.stop("lb1", "haproxy", sig=signal.SIGKILL)
    elif scenario == "backends":
        cut_backends(lab, "lb1")
    elif scenario == "xdp":
        lab.dataplane("lb1", "detach")
    else:
        os.kill(agent_pid(lab, "lb1"), signal.SIGKILL)
    lb2 = [uplink(lab, "lb2")]
    elapsed = lab.time_until(lambda: lab.fib_nexthops(vip) == lb2, 15, f"{vip} leaving lb1")
    if scenario == "haproxy":
        lab.start_haproxy("lb1")
    elif scenario == "backends":
        cut_backends(lab, "lb1", cut=False)
    elif scenario == "xdp":
        lab.start_dataplane("lb1")
    restart_exabgp(lab, vip)
    return elapsed


def loss(lab: NetnsLab, seconds: float, percent: float) -> dict[str, int | float]:
    lab.wait_settled()  # every VIP announced, the router's imports standing still
    rounds = {}
    for node in ("lb1", "lb2"):
        drop_probes(lab, node, "198.51.100.10", 80, f"numgen random mod 10000 < {percent * 100:g}")
        rounds[node] = _rounds(lab, node)
    before = {n: bgp_counters(lab, n) for n in ("lb1", "lb2")}
    fib_changes = 0
    last = lab.fib_nexthops(WEB)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = lab.fib_nexthops(WEB)
        fib_changes += now != last
        last = now
        time.sleep(0.05)
    after = {n: bgp_counters(lab, n) for n in ("lb1", "lb2")}
    probes = sum(_rounds(lab, n) - rounds[n] for n in ("lb1", "lb2"))
    return {
        "seconds": seconds,
        "loss_percent": percent,
        "probes": probes,
        "probes_lost": sum(dropped(lab, n) for n in ("lb1", "lb2")),
        "bgp_updates": sum(after[n][0] - before[n][0] for n in after),
        "bgp_withdraws": sum(after[n][1] - before[n][1] for n in after),
        "fib_changes": fib_changes,
    }


def _rounds(lab: NetnsLab, node: str) -> int:
    state = lab.node_root(node) / "run/lbappliance/health-agent.state.json"
    return int(json.loads(state.read_text())["rounds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--scenarios", default="haproxy,backends,agent,xdp")
    parser.add_argument("--loss-seconds", type=float, default=300)
    parser.add_argument("--loss-percent", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, object] = {"withdraw": []}
    with NetnsLab.create() as lab:
        lab.start_all()
        for scenario in args.scenarios.split(","):
            times = [trial(lab, scenario, rng) for _ in range(args.trials)]
            results["withdraw"].append(summary(scenario, times))  # type: ignore[union-attr]
            print(json.dumps(results["withdraw"][-1]), flush=True)  # type: ignore[index]
        if args.loss_seconds > 0:
            results["loss"] = loss(lab, args.loss_seconds, args.loss_percent)
            print(json.dumps(results["loss"]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
