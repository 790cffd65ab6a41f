"""Long-lived TCP connections through the XDP VIP while backends and LB nodes change.

    python bench/dataplane_flows.py [--connections 200] [--before 3] [--after 5]
                                    [--cases add,drain,lb-dies,add+lb-dies] [--quick]

On the namespace lab (real BIRD router with ECMP over lb1 and lb2 hashing on L4
ports, BFD, ExaBGP and the health agent on the nodes, the XDP forwarder on
both, DSR over IPIP to the lab's HTTP backends), ``--connections`` keep-alive
connections to 198.51.100.20:8080 each send a request every 100 ms and read
the answer (the backend's name). After ``--before`` seconds one of these
happens, then the run goes on for ``--after`` seconds:

- add: a backend joins the L4 pool (2 -> 3 backends), applied on both nodes;
- drain: a backend gets weight 0 on both nodes (new connections avoid it,
  its connections go on), its connections end their sessions
  (client-side close) 2 s later, ``dataplane drain`` waits on both nodes until
  no packet reaches it for 1 s, then it leaves the spec (applied twice, so its
  entry is freed); connections closed by the client are replaced by new ones;
- lb-dies: lb1's links are cut; BFD makes the router drop it, ECMP moves its
  flows to lb2, which has no flow entry for them;
- add+lb-dies: both at once (the backend is added, then lb1 dies), once with
  the previous-table rule (the lab's 60 s window) and once without (0 s).

A connection is broken if it is reset or closed by the peer, or waits more
than 1 s for an answer. Each case runs on a fresh lab (no window or flow entry
left over from another case). Bounded: at most ``--connections`` sockets
(500 at most), each case ``--before + --after`` seconds plus the lab's set-up
and the applies (the client loop stops 30 s past that whatever happens).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lbappliance.lab.netns import NetnsLab  # noqa: E402
from lbappliance.render.specs import DATAPLANE_TARGET  # noqa: E402

VIP, PORT = "198.51.100.20", 8080
L4 = f"{VIP}/32"
INTERVAL = 0.1  # seconds between a connection's requests
STALL = 1.0  # an answer later than this: broken
REQUEST = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"
BACKENDS = ["10.30.0.21", "10.30.0.22", "10.30.0.23"]
CASES = ("add", "drain", "lb-dies", "add+lb-dies", "add+lb-dies (no previous table)")


@dataclass
class Conn:
    sock: socket.socket
    backend: str | None = None
    sent_at: float | None = None  # a request is outstanding since
    next_at: float = 0.0
    buf: bytes = b""
    answers: int = 0
    max_wait: float = 0.0
    broken: str | None = None
    closed: bool = False  # ended by the client


@dataclass
class Load:
    """The connections, driven by one thread (its sockets live in the client's namespace)."""

    lab: NetnsLab
    n: int
    conns: list[Conn] = field(default_factory=list)
    finish_backend: str | None = None  # the client ends the sessions on this backend
    replace: bool = False  # open a new connection for each one the client ended
    stop: threading.Event = field(default_factory=threading.Event)
    opened_after_drain: list[Conn] = field(default_factory=list)
    error: BaseException | None = None

    def client(self) -> str:
        return str(self.lab.topology.client.address_on("client"))

    def open(self) -> Conn:
        s = socket.create_connection((VIP, PORT), timeout=3, source_address=(self.client(), 0))
        s.setblocking(False)
        c = Conn(s, next_at=time.monotonic())
        self.sel.register(s, selectors.EVENT_READ, c)
        self.conns.append(c)
        return c

    def run(self, deadline: float) -> None:
        try:
            self._run(deadline)
        except BaseException as e:  # reported by the main thread
            self.error = e

    def _run(self, deadline: float) -> None:
        self.sel = selectors.DefaultSelector()
        with self.lab.inside("client"):
            for _ in range(self.n):
                self.open()
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.step()
                if self.replace:
                    while sum(1 for c in self.conns if not c.closed) < self.n:
                        self.opened_after_drain.append(self.open())
        for c in self.conns:
            c.sock.close()

    def step(self) -> None:
        now = time.monotonic()
        for c in self.conns:
            if c.broken or c.closed:
                continue
            if c.sent_at is None and now >= c.next_at:
                if self.finish_backend and c.backend == self.finish_backend:
                    c.closed = True  # the session is over: a clean close
                    self.sel.unregister(c.sock)
                    c.sock.close()
                    continue
                try:
                    c.sock.send(REQUEST)
                except OSError as e:
                    self.fail(c, f"send: {e.strerror}")
                    continue
                c.sent_at = now
            elif c.sent_at is not None and now - c.sent_at > STALL:
                self.fail(c, "stalled")
        for key, _ in self.sel.select(0.01):
            self.receive(key.data, time.monotonic())

    def receive(self, c: Conn, now: float) -> None:
        try:
            data = c.sock.recv(4096)
        except OSError as e:
            self.fail(c, e.strerror or "error")
            return
        if not data:
            self.fail(c, "closed by peer")
            return
        c.buf += data
        head, sep, rest = c.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        if len(rest) < length:
            return
        name, c.buf = rest[:length].decode().strip(), rest[length:]
        if c.backend is None:
            c.backend = name
        elif name != c.backend:
            self.fail(c, f"answered by {name}, not {c.backend}")
            return
        assert c.sent_at is not None
        c.max_wait = max(c.max_wait, now - c.sent_at)
        c.answers += 1
        c.sent_at, c.next_at = None, c.sent_at + INTERVAL

    def fail(self, c: Conn, why: str) -> None:
        c.broken = why
        self.sel.unregister(c.sock)
        c.sock.close()


def names(lab: NetnsLab) -> dict[str, str]:
    return {str(h.address_on("backend")): h.name for h in lab.topology.backends}


def write_spec(
    lab: NetnsLab, node: str, path: Path, backends: dict[str, int], window: float | None = None
) -> Path:
    """The node's rendered spec with the L4 service's backends (address -> weight)."""
    raw = json.loads(lab.config(node, DATAPLANE_TARGET).read_text())
    svc = raw["services"][0]
    by_addr = {b["address"]: b for b in svc["backends"]}
    svc["backends"] = [by_addr[a] | {"weight": w} for a, w in backends.items()]
    if window is not None:
        raw["previous_table_window"] = window
    path.write_text(json.dumps(raw))
    return path


def apply(lab: NetnsLab, backends: dict[str, int], window: float | None = None) -> None:
    for lb in lab.topology.lbs:
        spec = write_spec(lab, lb.name, lab.workdir / f"{lb.name}-bench.json", backends, window)
        lab.dataplane(lb.name, "apply", spec=spec)


def flow_stats(lab: NetnsLab, node: str) -> dict[str, int]:
    spec = lab.workdir / f"{node}-bench.json"
    st = json.loads(lab.dataplane(node, "status", "--json", spec=spec).stdout)
    return st.get("flows", {})


def run_case(case: str, n: int, before: float, after: float) -> dict[str, Any]:
    window = 0.0 if "no previous table" in case else None
    start_backends = BACKENDS[:2] if case.startswith("add") else BACKENDS
    with NetnsLab.create() as lab:
        lab.start_all()
        lab.wait(lambda: lab.fib_nexthops(L4) == lab.via(L4), 30, f"{L4} over both nodes")
        lab.run("router", ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])
        lab.run("client", ["ethtool", "-K", "eth1", "tx", "off"])
        apply(lab, dict.fromkeys(start_backends, 100), window)
        load = Load(lab, n)
        t0 = time.monotonic()
        thread = threading.Thread(target=load.run, args=(t0 + before + after + 30,))
        thread.start()
        extra: dict[str, Any] = {}
        try:
            time.sleep(before)
            event = time.monotonic()
            if case.startswith("add"):
                apply(lab, dict.fromkeys(BACKENDS, 100), window)
                extra["apply_both_nodes_s"] = round(time.monotonic() - event, 2)
            if case == "drain":
                gone = BACKENDS[2]
                apply(lab, {**dict.fromkeys(BACKENDS[:2], 100), gone: 0})
                time.sleep(2)  # its connections carry on meanwhile
                load.finish_backend = names(lab)[gone]
                load.replace = True
                drained_at = time.monotonic()
                waits = {}
                for lb in lab.topology.lbs:
                    out = lab.dataplane(lb.name, "drain", gone, "--idle", "1", "--timeout", "15")
                    waits[lb.name] = out.stdout.strip()
                extra["drain"] = waits
                extra["drain_seconds"] = round(time.monotonic() - drained_at, 1)
                apply(lab, dict.fromkeys(BACKENDS[:2], 100))
                apply(lab, dict.fromkeys(BACKENDS[:2], 100))
            if "lb-dies" in case:
                cut = time.monotonic()
                lab.cut_links("lb1")
                lab.wait(lambda: lab.fib_nexthops(L4) == lab.via(L4, "lb2"), 10, "lb1 gone")
                extra["route_gone_after_cut_s"] = round(time.monotonic() - cut, 2)
            time.sleep(max(0.0, after - (time.monotonic() - event)))
        finally:
            load.stop.set()
            thread.join(60)
        if load.error is not None:
            raise load.error
        extra["lb2_flow_counters"] = flow_stats(lab, "lb2")
    conns = load.conns
    broken = [c for c in conns if c.broken]
    result = {
        "case": case,
        "connections": len(conns),
        "broken": len(broken),
        "why": sorted({c.broken for c in broken if c.broken}),
        "max_wait_ms": round(1000 * max((c.max_wait for c in conns), default=0)),
        "answers": sum(c.answers for c in conns),
        **extra,
    }
    if case == "drain":
        gone_name = names(lab)[BACKENDS[2]]
        result["ended_by_client"] = sum(1 for c in conns if c.closed)
        result["new_on_drained"] = sum(1 for c in load.opened_after_drain if c.backend == gone_name)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--before", type=float, default=3.0)
    ap.add_argument("--after", type=float, default=5.0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--quick", action="store_true", help="20 connections, 1 s + 3 s, three cases")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    if args.quick:
        args.connections, args.before, args.after = 20, 1.0, 3.0
        args.cases = "add,drain,add+lb-dies"
    results = []
    for case in args.cases.split(","):
        r = run_case(case, min(args.connections, 500), args.before, args.after)
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"\n{'case':<34} {'connections':>11} {'broken':>6} {'max wait':>9}")
    for r in results:
        print(f"{r['case']:<34} {r['connections']:>11} {r['broken']:>6} {r['max_wait_ms']:>6} ms")


if __name__ == "__main__":
    main()
