"""``python -m lbappliance.weights --config /etc/lbappliance/weights.json``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from lbappliance import jsonlog
from lbappliance.weights.config import config_option, load
from lbappliance.weights.controller import Controller
from lbappliance.weights.history import HistoryRecorder
from lbappliance.weights.metrics import serve
from lbappliance.weights.probe import Prober


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Feedback weight controller: HAProxy server weights from live signals.",
)
@config_option()
@click.option("--no-metrics", is_flag=True, help="Do not serve /metrics.")
@click.option("--log-level", default="INFO", show_default=True)
def main(config_path: Path, no_metrics: bool, log_level: str) -> None:
    jsonlog.configure("lbappliance-weights", log_level)
    config = load(config_path)
    recorder = HistoryRecorder(Path(config.history_file)) if config.history_file else None
    controller = Controller(config, recorder=recorder.record if recorder else None, prober=Prober())
    server = None
    if not no_metrics:
        server = serve(controller.metrics, config.metrics_address, config.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        controller.run(stop)
    finally:
        if server:
            server.shutdown()


if __name__ == "__main__":
    main(prog_name="python -m lbappliance.weights")
