"""The health agent and the weight controller write the same JSON log line."""

from __future__ import annotations

import io
import json
import logging

from lbappliance import jsonlog
from lbappliance.health.agent import AGENT


def test_the_agent_and_the_controller_share_one_line_format(capsys) -> None:
    out = io.StringIO()
    jsonlog.json_log(AGENT, out)({"event": "warning", "node": "lb1", "reason": "x"})
    agent = json.loads(out.getvalue())
    jsonlog.configure("lbappliance-weights", "info")
    try:
        logging.getLogger("lbappliance.weights").warning("pool %s: panic mode on", "web")
        logging.getLogger("lbappliance.weights").debug("not at info level")
    finally:
        logging.getLogger().handlers.clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    controller = json.loads(lines[0])
    assert list(agent)[:3] == list(controller)[:3] == ["ts", "agent", "event"]
    assert agent["agent"] == "lbappliance-health" and agent["reason"] == "x"
    assert controller["agent"] == "lbappliance-weights"
    assert controller["event"] == "warning"
    assert controller["message"] == "pool web: panic mode on"
    assert controller["ts"][10] == "T" and controller["ts"][-6] in "+-"
