"""The policy-cost benchmark script, loaded as a module (bench/ is not a package)."""

from __future__ import annotations

from pathlib import Path

from tests.benchload import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "l7_policy_cost.py"


bench = load_bench("l7_policy_cost")
