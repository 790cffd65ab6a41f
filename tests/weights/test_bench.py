"""The gray-failure benchmark's own arithmetic: its percentiles decide the targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gray_failure.py"


def _bench():
    spec = importlib.util.spec_from_file_location("gray_failure", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_nearest_rank_percentiles() -> None:
    values = [float(i) for i in range(1, 2001)]  # 1..2000
    pct = _bench().percentile
    assert pct(values, 50) == 1000
    assert pct(values, 99) == 1980  # the 21st slowest
    assert pct(values, 99.9) == 1998  # the 3rd slowest, not the 2nd (float rounding)
    assert pct(values, 100) == 2000
    assert pct([5.0], 99.9) == 5.0
