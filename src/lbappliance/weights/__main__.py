"""``python -m lbappliance.weights --config /etc/lbappliance/weights.json``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from ..imbalance import HistoryRecorder
from ..paths import NODE
from .config import load
from .controller import Controller
from .metrics import serve
from .probe import Prober


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lbappliance.weights",
        description="Feedback weight controller: HAProxy server weights from live signals.",
    )
    parser.add_argument("--config", type=Path, default=Path(NODE.weights_config))
    parser.add_argument("--no-metrics", action="store_true", help="Do not serve /metrics.")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    config = load(args.config)
    recorder = HistoryRecorder(Path(config.history_file)) if config.history_file else None
    controller = Controller(config, recorder=recorder.record if recorder else None, prober=Prober())
    server = None
    if not args.no_metrics:
        server = serve(controller.metrics, config.metrics_address, config.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        controller.run(stop)
    finally:
        if server:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
