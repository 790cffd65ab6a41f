"""The node daemons' log line: one JSON object per line on stderr.

The health agent and the weight controller both log this way (stdout is the
agent's ExaBGP API channel), so one journald query or log shipper reads both:
``{"ts": ISO-8601 with milliseconds, "agent": the daemon, "event": ..., ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

Log = Callable[[dict[str, Any]], None]


def line(agent: str, record: dict[str, Any]) -> str:
    ts = datetime.now().astimezone().isoformat(timespec="milliseconds")
    return json.dumps({"ts": ts, "agent": agent, **record})


def json_log(agent: str, stream: Any = None) -> Log:
    """A writer of structured records (``event`` plus fields), thread-safe."""
    lock = threading.Lock()

    def log(record: dict[str, Any]) -> None:
        text = line(agent, record)
        with lock:
            out = stream or sys.stderr
            out.write(text + "\n")
            out.flush()

    return log


class JsonFormatter(logging.Formatter):
    """``logging`` records as the same line: ``event`` is the level, ``message`` the text."""

    def __init__(self, agent: str) -> None:
        super().__init__()
        self.agent = agent

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"event": record.levelname.lower(), "message": record.getMessage()}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return line(self.agent, fields)


def configure(agent: str, level: str) -> None:
    """Route the ``logging`` module's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(agent))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
