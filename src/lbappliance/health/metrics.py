"""Prometheus text exposition of the agent's state, served on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lbappliance.health.machine import State


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kw: Any) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kw.items()) + "}"


def render(snapshot: dict[str, Any]) -> str:
    """Metrics text from an agent snapshot (``Agent.snapshot()``)."""
    out: list[str] = []

    def family(name: str, kind: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")

    node = snapshot["node"]
    vips = snapshot["vips"]
    family("lbappliance_health_vip_state", "gauge", "1 for the VIP's current state.")
    for prefix, v in vips.items():
        for state in State:
            value = 1 if v["state"] == state.value else 0
            out.append(
                f"lbappliance_health_vip_state{_labels(node=node, vip=prefix, state=state.value)} "
                f"{value}"
            )
    family("lbappliance_health_vip_announced", "gauge", "1 while the VIP is announced.")
    for prefix, v in vips.items():
        out.append(
            f"lbappliance_health_vip_announced{_labels(node=node, vip=prefix)} "
            f"{1 if v['announced'] else 0}"
        )
    family("lbappliance_health_vip_transitions_total", "counter", "State transitions per VIP.")
    for prefix, v in vips.items():
        for key, n in sorted(v["transitions"].items()):
            old, new = key.split("->")
            labels = _labels(node=node, vip=prefix, **{"from": old, "to": new})
            out.append(f"lbappliance_health_vip_transitions_total{labels} {n}")
    family("lbappliance_health_vip_penalty", "gauge", "Flap-dampening penalty.")
    for prefix, v in vips.items():
        out.append(f"lbappliance_health_vip_penalty{_labels(node=node, vip=prefix)} {v['penalty']}")
    family("lbappliance_health_signal_ok", "gauge", "1 when the signal is OK for the VIP.")
    for prefix, v in vips.items():
        for signal, check in sorted(v["signals"].items()):
            ok = 1 if check["health"] == "ok" else 0
            out.append(
                f"lbappliance_health_signal_ok{_labels(node=node, vip=prefix, signal=signal)} {ok}"
            )
    family("lbappliance_health_bgp_neighbor_up", "gauge", "1 while ExaBGP reports the session up.")
    for addr, n in sorted(snapshot["neighbors"].items()):
        value = 1 if n["state"] == "up" else 0
        out.append(f"lbappliance_health_bgp_neighbor_up{_labels(node=node, neighbor=addr)} {value}")
    family("lbappliance_health_commands_total", "counter", "API commands by acknowledgement.")
    for result, n in sorted(snapshot["commands"].items()):
        out.append(f"lbappliance_health_commands_total{_labels(node=node, result=result)} {n}")
    family("lbappliance_health_rounds_total", "counter", "Check rounds run.")
    out.append(f"lbappliance_health_rounds_total{_labels(node=node)} {snapshot['rounds']}")
    family("lbappliance_health_round_seconds", "gauge", "Duration of the last check round.")
    out.append(
        f"lbappliance_health_round_seconds{_labels(node=node)} {snapshot['round_seconds']:.6f}"
    )
    return "\n".join(out) + "\n"


class MetricsServer:
    def __init__(self, address: str, port: int, snapshot: Callable[[], dict[str, Any]]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = render(snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
