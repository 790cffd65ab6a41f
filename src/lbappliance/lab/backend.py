"""The lab's backend: a small HTTP server that answers with its own name.

Its behaviour can be changed while it runs, for gray-failure tests, through a
JSON control file re-read on every request (the namespace lab shares one
filesystem; containers get the file through ``podman exec``)::

    {"latency_ms": 900,        # added to every request except /health
     "slow_fraction": 0.1,     # with slow_ms: only this share of requests is slowed
     "slow_ms": 900,
     "error_rate": 0.05,       # share of requests answered 503
     "health_status": 200}     # what /health answers (gray failure: stays 200)

Run: ``python -m lbappliance.lab.backend --name backend1 --port 8080 [--control FILE]``.
Every response carries ``X-Backend: <name>``; the body is the name and a newline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "slow_fraction": 0.0,
    "slow_ms": 0,
    "error_rate": 0.0,
    "health_status": 200,
}


class Control:
    """The control file, re-read only when its mtime changes."""

    def __init__(self, path: Path | None):
        self.path = path
        self._mtime = -1.0
        self._values = dict(DEFAULTS)
        self._lock = threading.Lock()

    def values(self) -> dict[str, Any]:
        if not self.path:
            return self._values
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return self._values
        with self._lock:
            if mtime != self._mtime:
                try:
                    self._values = {**DEFAULTS, **json.loads(self.path.read_text() or "{}")}
                    self._mtime = mtime
                except (OSError, ValueError):
                    pass  # a half-written file: keep the previous values
            return self._values


def set_control(path: Path, **values: Any) -> None:
    """Atomically replace a backend's control file (tests and benchmarks use this)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**DEFAULTS, **values}))
    tmp.replace(path)


def make_handler(name: str, control: Control) -> type[BaseHTTPRequestHandler]:
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lbappliance-lab-backend"
        # Headers and body go out in separate writes: without this, delayed ACKs add
        # 40 ms to ~10 % of responses through HAProxy.
        disable_nagle_algorithm = True

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("X-Backend", name)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def do_GET(self) -> None:
            cfg = control.values()
            if self.path.startswith("/health"):
                status = int(cfg["health_status"])
                self._answer(status, body if status == 200 else b"unhealthy\n")
                return
            delay = float(cfg["latency_ms"])
            if cfg["slow_fraction"] and random.random() < float(cfg["slow_fraction"]):
                delay += float(cfg["slow_ms"])
            if delay:
                time.sleep(delay / 1000)
            if cfg["error_rate"] and random.random() < float(cfg["error_rate"]):
                self._answer(503, b"injected error\n")
                return
            self._answer(200, body)

        do_HEAD = do_GET

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--control", type=Path)
    args = parser.parse_args()
    control = Control(args.control)
    servers = [Server((args.address, p), make_handler(args.name, control)) for p in args.port]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
