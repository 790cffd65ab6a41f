"""The Grafana dashboard's queries and the metric names and label keys they use."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "lbappliance.json"
# Our metrics and HAProxy's exporter's; nothing else is scraped.
METRIC = re.compile(r"\b((?:haproxy|lbappliance)_[a-z0-9_]+)\b(\{[^}]*\})?")
LABEL_KEY = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+")
SAMPLE_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def queries(path: Path = DASHBOARD) -> list[str]:
    """Every target expression of every panel."""
    data = json.loads(path.read_text())
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label keys matched on) for each metric selector in ``expr``."""
    return [(m[1], set(LABEL_KEY.findall(m[2] or ""))) for m in METRIC.finditer(expr)]


def scraped(text: str) -> dict[str, set[str]]:
    """Metric name -> label keys seen on its samples, from Prometheus text exposition."""
    seen: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = SAMPLE.match(line)
        if m:
            seen.setdefault(m[1], set()).update(SAMPLE_LABEL.findall(m[3] or ""))
    return seen
