"""Prometheus text exposition of the controller's state, served on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lbappliance.weights.policy import Decision

PREFIX = "lbappliance_weights"
HELP = {
    "weight": ("gauge", "HAProxy weight the controller last applied or observed."),
    "target_weight": ("gauge", "Target weight of the last decision, before smoothing."),
    "inventory_weight": ("gauge", "The server's weight in the site inventory."),
    "latency_seconds": ("gauge", "Recent mean time to response headers."),
    "error_ratio": ("gauge", "Connection, response and 5xx errors per request in the window."),
    "request_rate": ("gauge", "Requests per second sent to the server in the window."),
    "capacity_requests_per_second": ("gauge", "Estimated capacity at the target latency."),
    "server_state": ("gauge", "1 for the server's current classification."),
    "healthy_fraction": ("gauge", "Share of the pool's servers that are healthy."),
    "panic": ("gauge", "1 while the pool is in panic mode (weights spread over all servers)."),
    "changes_total": ("counter", "Weight changes applied."),
    "ticks_total": ("counter", "Control loop iterations."),
    "socket_errors_total": ("counter", "Failed reads or writes on HAProxy's admin socket."),
    "last_success_timestamp_seconds": ("gauge", "Unix time of the last successful iteration."),
}
STATES = ("healthy", "outlier", "degraded", "missing", "hold", "down", "excluded", "absent")


def _labels(**kw: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in kw.items()
    )
    return "{" + inner + "}" if inner else ""


class Metrics:
    """Holds the latest values; ``render()`` produces the exposition text."""

    def __init__(self, inventory_weights: dict[str, dict[str, int]]):
        self.inventory = inventory_weights
        self.decisions: dict[str, Decision] = {}
        self.changes: dict[tuple[str, str], int] = {}
        self.ticks = 0
        self.socket_errors = 0
        self.last_success = 0.0
        self.lock = threading.Lock()

    def record(self, decisions: Iterable[Decision], now: float) -> None:
        with self.lock:
            self.ticks += 1
            self.last_success = now
            for d in decisions:
                self.decisions[d.pool] = d
                for c in d.changes:
                    self.changes[(c.pool, c.server)] = self.changes.get((c.pool, c.server), 0) + 1

    def socket_error(self) -> None:
        with self.lock:
            self.ticks += 1
            self.socket_errors += 1

    def render(self) -> str:
        with self.lock:
            samples: dict[str, list[str]] = {name: [] for name in HELP}
            for pool, servers in sorted(self.inventory.items()):
                for server, weight in sorted(servers.items()):
                    lab = _labels(pool=pool, server=server)
                    samples["inventory_weight"].append(f"{lab} {weight}")
            for pool, d in sorted(self.decisions.items()):
                if d.healthy_fraction is not None:
                    samples["healthy_fraction"].append(
                        f"{_labels(pool=pool)} {d.healthy_fraction:g}"
                    )
                samples["panic"].append(f"{_labels(pool=pool)} {int(d.panic)}")
                for a in d.assessments:
                    lab = _labels(pool=pool, server=a.server)
                    if a.weight is not None:
                        samples["weight"].append(f"{lab} {a.weight}")
                    if a.target is not None:
                        samples["target_weight"].append(f"{lab} {a.target:.3f}")
                    if a.capacity is not None:
                        samples["capacity_requests_per_second"].append(f"{lab} {a.capacity:.3f}")
                    sig = a.signals
                    if sig is not None and sig.window:
                        samples["request_rate"].append(f"{lab} {sig.rate:.3f}")
                        samples["error_ratio"].append(f"{lab} {sig.error_ratio:.6f}")
                        if sig.latency is not None:
                            samples["latency_seconds"].append(f"{lab} {sig.latency:.6f}")
                    for st in STATES:
                        value = int(a.state == st)
                        samples["server_state"].append(
                            f"{_labels(pool=pool, server=a.server, state=st)} {value}"
                        )
            for (pool, server), n in sorted(self.changes.items()):
                samples["changes_total"].append(f"{_labels(pool=pool, server=server)} {n}")
            samples["ticks_total"].append(f" {self.ticks}")
            samples["socket_errors_total"].append(f" {self.socket_errors}")
            samples["last_success_timestamp_seconds"].append(f" {self.last_success:.3f}")
        lines = []
        for name, (kind, text) in HELP.items():
            full = f"{PREFIX}_{name}"
            lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
            lines += [f"{full}{s}" for s in samples[name]]
        return "\n".join(lines) + "\n"


def serve(metrics: Metrics, address: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` from a daemon thread; the caller shuts the server down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
