"""One round of the health agent and one tick of the weight controller, at scale.

    python bench/control_rounds.py [--services 10000] [--rounds 5]
    python bench/control_rounds.py --quick                            smoke run

The site is bench/render_scale.py's (N/2 L4 and N/2 L7 services, one anycast
VIP each, three backends each); the agent's and the controller's configs are
the ones `render` writes for node lb1. What runs is their own code, each round
timed in CPU seconds (the machine is shared; wall time is printed beside it):

- agent: ``Agent.round()`` with ``show stat`` read over a real Unix socket from a
  stand-in process that answers with 25 rows per 10 services in HAProxy 2.6's CSV
  format (every frontend OPEN, every server UP), VIP state machines, ExaBGP
  commands acknowledged in-process, the state file written as on a node (the
  agent's clock advances one interval per round; the state file is due every
  second, so every other round at 0.5 s), the mean of the steady rounds
  reported. The probes are left out of that round (their results are given, all
  passing) and measured apart: the agent's own ``Sensors.observe`` (its rotation
  and thread pool) with every probe pointed at a loopback listener in a child
  process, each kept distinct by its path (10,000 services mean 20,000 distinct
  probes), the mean CPU of the rounds after every probe has run once.
- controller: ``Controller.tick()`` on ``show stat`` text (parsed in the tick)
  replayed from a recorded lab run (tests/weights/data) for every server, the
  history filled to its steady-state depth first.

The budget is what the issue sets: a round fits its interval using at most a
quarter of one core, i.e. CPU per round <= interval / 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_scale import make_site

from lbappliance.haproxy import ServerStat, parse_stat
from lbappliance.health import config as agent_config
from lbappliance.health.agent import Agent
from lbappliance.health.exabgp import ExabgpChannel
from lbappliance.health.sensors import PROBES_PER_ROUND, Sensors, read_haproxy
from lbappliance.health.signals import Observation, ProbeResult
from lbappliance.inventory import load_site
from lbappliance.paths import RuntimePaths, project_dir
from lbappliance.render import agent as agent_render
from lbappliance.render import weights as weights_render
from lbappliance.weights import config as weights_config
from lbappliance.weights.controller import Controller, settle_collector

DATA = project_dir() / "tests"
SHOW_STAT = DATA / "health" / "fixtures" / "show_stat.csv"  # HAProxy 2.6, lab capture
RECORDING = DATA / "weights" / "data" / "close_20_24ms.json"  # a lab run's show stat samples


def configs(services: int, work: Path) -> tuple[agent_config.AgentConfig, weights_config.Config]:
    """The agent's and the controller's configs for lb1, as rendered."""
    make_site(work / "site", services)
    inv = load_site(work / "site", "scale").model
    node, paths = inv.nodes[0], RuntimePaths()
    agent_data = json.loads(json.dumps(agent_render.config(inv, node, paths)))
    cfg = agent_config.parse(agent_data)
    cfg = dataclasses.replace(cfg, state_file=str(work / "agent-state.json"))
    weights_data = json.loads(json.dumps(weights_render.config(inv, node, paths)))
    return cfg, weights_config.parse(weights_data)


def show_stat_text(cfg: agent_config.AgentConfig) -> str:
    """``show stat`` for every frontend and backend the agent gates on (3 servers each)."""
    lines = SHOW_STAT.read_text().splitlines()
    header = lines[0]
    frontend = lines[1].split(",", 1)[1]
    server = lines[2].split(",", 2)[2]  # UP, L7OK
    backend = next(line for line in lines if ",BACKEND," in line).split(",", 1)[1]
    rows = [header]
    for vip in cfg.vips:
        if vip.haproxy:
            rows += [f"{fe},{frontend}" for fe in vip.haproxy.frontends]
            for be in vip.haproxy.backends:
                rows += [f"{be},s{k},{server}" for k in range(3)] + [f"{be},{backend}"]
    return "\n".join(rows) + "\n\n"


_SERVE = """
import os, socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1] + ".tmp")
server.listen(4)
payload = open(sys.argv[2], "rb").read()
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    conn, _ = server.accept()
    with conn:
        conn.recv(4096)
        conn.sendall(payload)
"""


@contextmanager
def stat_socket(path: Path, text: str) -> Iterator[str]:
    """A Unix socket answering every connection with ``text`` (HAProxy's stand-in).

    It serves from a child process, so its CPU is not counted as the agent's.
    """
    answer = path.with_suffix(".csv")
    answer.write_text(text)
    server = subprocess.Popen([sys.executable, "-c", _SERVE, str(path), str(answer)])
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the show stat stand-in did not start")
            time.sleep(0.01)
        yield str(path)
    finally:
        server.kill()
        server.wait()


class _AckingOut(io.StringIO):
    """ExaBGP's side of the API pipe: every command is acknowledged at once."""

    channel: ExabgpChannel

    def write(self, s: str) -> int:
        for _ in s.splitlines():
            self.channel.handle("done")
        return len(s)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def agent_rounds(cfg: agent_config.AgentConfig, rounds: int, work: Path) -> dict[str, Any]:
    probes = {
        p: ProbeResult(True, "connected in 1 ms")
        for v in cfg.vips
        for p in (*v.probes, *(t for pool in v.pools for t in pool.targets))
    }
    interfaces = {v.dataplane.xdp_interface for v in cfg.vips if v.dataplane} - {None}
    with stat_socket(work / "stat.sock", show_stat_text(cfg)) as sock:

        def observe() -> Observation:
            obs = Observation()
            obs.haproxy, obs.haproxy_error = read_haproxy(sock, 10.0), ""
            obs.probes = dict(probes)
            obs.xdp = dict.fromkeys(interfaces, "xdpgeneric id 7")
            return obs

        out = _AckingOut()
        out.channel = ExabgpChannel(out, io.StringIO(), time.monotonic)
        clock = [1000.0]  # one interval per round, so the state file is written as often
        agent = Agent(
            cfg, out.channel, observe, clock=lambda: clock[0], wall=lambda: 1.8e9 + clock[0],
            log=lambda record: None,
        )  # fmt: skip
        agent.start()

        def one_round() -> None:
            clock[0] += cfg.interval
            agent.round()

        # rise rounds announce (and write the state file); later rounds are steady
        times = [_timed(one_round) for _ in range(cfg.rise + 1 + max(rounds, 2))]
    steady = times[cfg.rise + 1 :]
    return {
        "vips": len(cfg.vips),
        "probes": len(probes),
        "interval": cfg.interval,
        "cpu": sum(t[0] for t in steady) / len(steady),
        "cpu_min": min(t[0] for t in steady),
        "cpu_max": max(t[0] for t in times),
        "wall": sum(t[1] for t in steady) / len(steady),
    }


_LISTEN = """
import selectors, socket
sel = selectors.DefaultSelector()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
listener.setblocking(False)
print(listener.getsockname()[1], flush=True)
sel.register(listener, selectors.EVENT_READ)
answer = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok"
while True:
    for key, _ in sel.select():
        if key.fileobj is listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
            continue
        conn = key.fileobj
        try:
            data = conn.recv(4096)
            if data:
                conn.send(answer)
        except OSError:
            pass
        sel.unregister(conn)
        conn.close()
"""


@contextmanager
def loopback_listener() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts every connection and answers HTTP with 200.

    It serves from a child process, so its CPU is not counted as the agent's.
    """
    server = subprocess.Popen([sys.executable, "-c", _LISTEN], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()


def probe_rounds(
    cfg: agent_config.AgentConfig, rounds: int, per_round: int = PROBES_PER_ROUND
) -> dict[str, Any]:
    """The agent's own probing (``Sensors.observe``, its rotation and thread pool), every
    probe pointed at a loopback listener (each kept distinct by its path), per round."""
    with loopback_listener() as port:
        n = 0

        def local(probe: agent_config.Probe) -> agent_config.Probe:
            nonlocal n
            n += 1
            kind = "tcp" if probe.kind == "tcp" else "http"
            return agent_config.Probe(kind, "127.0.0.1", port, f"/{n}")  # type: ignore[arg-type]

        vips = tuple(
            agent_config.VipConfig(
                v.prefix,
                v.communities,
                ("probe",),
                probes=tuple(local(p) for p in v.probes),
                pools=tuple(
                    dataclasses.replace(pool, targets=tuple(local(t) for t in pool.targets))
                    for pool in v.pools
                ),
            )
            for v in cfg.vips
            if v.probes or v.pools
        )
        sensors = Sensors(dataclasses.replace(cfg, vips=vips), probes_per_round=per_round)
        rotation = sensors.rotation
        try:
            warm = 1  # until every probe has run and none runs every round for its novelty
            sensors.observe()
            while rotation.rotation_rounds > 1 and warm < 200:
                if len(rotation.last) == len(rotation.probes) and not rotation.hot:
                    break
                sensors.observe()
                warm += 1
            ran: list[int] = []
            due = rotation.due
            rotation.due = lambda: (ran.append(len(probes := due())), probes)[1]  # type: ignore[method-assign]
            times, failed = [], 0
            for _ in range(rounds):
                cpu = time.process_time()
                obs = sensors.observe()
                times.append(time.process_time() - cpu)
                failed += sum(not r.ok for r in obs.probes.values())
        finally:
            sensors.close()
    return {
        "probes": len(rotation.probes),
        "per_round": sum(ran) / rounds,
        "rotation": rotation.rotation_rounds,
        "cpu": sum(times) / len(times),
        "failed": failed / rounds,
        "warm": warm,
    }


class _ReplayedSocket:
    """``show stat`` replayed from a recorded lab run, one sample per tick, for every server."""

    def __init__(self, cfg: weights_config.Config):
        recording = json.loads(RECORDING.read_text())
        self.header = recording["header"]
        rows = [next(r for r in s["rows"] if ",backend1," in r) for s in recording["samples"]]
        self.tails = [r.split(",", 2)[2] for r in rows]
        self.servers = [(p.name, s) for p in cfg.pools for s in p.servers]
        self.tick = 0

    def show_stat(self) -> list[ServerStat]:
        tail = self.tails[min(self.tick, len(self.tails) - 1)]
        self.tick += 1
        body = "\n".join(f"{pool},{server},{tail}" for pool, server in self.servers)
        return parse_stat(f"{self.header}\n{body}\n").servers

    def set_weights(self, weights: dict[tuple[str, str], int]) -> None:
        pass


def controller_ticks(cfg: weights_config.Config, ticks: int) -> dict[str, Any]:
    """Replay the whole recording (its history grows to ~30 s deep); time the last ticks.
    Then as many more on its last sample again, and time the last: every server idle
    (counters still) for longer than its longest window."""
    clock = [1000.0]
    sock = _ReplayedSocket(cfg)
    controller = Controller(cfg, sock=sock, clock=lambda: clock[0], wall=lambda: clock[0])  # type: ignore[arg-type]

    def timed(count: int) -> list[tuple[float, float]]:
        times = []
        for _ in range(count):
            clock[0] += cfg.tick
            times.append(_timed(controller.tick))
        return times[-ticks:]

    thresholds = gc.get_threshold()
    settle_collector()  # as Controller.run does before its loop
    try:
        last = timed(len(sock.tails))
        history, kept = controller.windows.depth, controller.kept_decisions
        idle = timed(len(sock.tails) + ticks)
    finally:
        gc.set_threshold(*thresholds)  # the caller's (a test run's) collector as it was
    return {
        "pools": len(cfg.pools),
        "servers": len(sock.servers),
        "interval": cfg.tick,
        "history": history,
        "kept": kept,
        "cpu": min(t[0] for t in last),
        "cpu_max": max(t[0] for t in last),
        "wall": min(t[1] for t in last),
        "idle_cpu": min(t[0] for t in idle),
        "idle_kept": controller.kept_decisions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 services")
    parser.add_argument(
        "--probes-per-round", type=int, default=PROBES_PER_ROUND, help="the agent's probe budget"
    )
    args = parser.parse_args()
    if args.quick:
        args.services, args.rounds = 200, 2
    with tempfile.TemporaryDirectory(prefix="lba-rounds-") as tmp:
        work = Path(tmp)
        agent_cfg, weights_cfg = configs(args.services, work)
        a = agent_rounds(agent_cfg, args.rounds, work)
        p = probe_rounds(agent_cfg, args.rounds, args.probes_per_round)
        c = controller_ticks(weights_cfg, args.rounds)
    load = os.getloadavg()[0]
    print(f"{args.services} services, load average {load:.1f} on {os.cpu_count()} CPUs")
    print(
        f"health agent round: {a['vips']} VIPs, {a['cpu']:.3f} s CPU on average over "
        f"{args.rounds} steady rounds (best {a['cpu_min']:.3f}, worst of all rounds "
        f"{a['cpu_max']:.3f}, wall {a['wall']:.3f}) every {a['interval']:g} s: "
        f"{a['cpu'] / a['interval']:.0%} of a core (budget 25%), probes excluded"
    )
    total = a["cpu"] + p["cpu"]
    print(
        f"  + its probing: {p['probes']} distinct probes, {p['per_round']:.0f} a round "
        f"(each every {p['rotation']} rounds, {p['rotation'] * a['interval']:g} s), "
        f"{p['cpu']:.3f} s CPU per round ({p['cpu'] / a['interval']:.0%} of a core), "
        f"{p['failed']:.0f} failing; round and probes {total:.3f} s: "
        f"{total / a['interval']:.0%} of a core (budget 25%)"
    )
    print(
        f"weight controller tick: {c['pools']} pools, {c['servers']} servers, history of "
        f"{c['history']} ({c['kept']} decisions kept in the last tick): {c['cpu']:.3f} s CPU "
        f"(worst {c['cpu_max']:.3f}, wall {c['wall']:.3f}) every {c['interval']:g} s: "
        f"{c['cpu'] / c['interval']:.0%} of a core (budget 25%)"
    )
    print(
        f"  every server idle (the last sample again): {c['idle_cpu']:.3f} s CPU "
        f"({c['idle_cpu'] / c['interval']:.0%} of a core), {c['idle_kept']} decisions kept"
    )


if __name__ == "__main__":
    main()
