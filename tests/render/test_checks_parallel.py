"""The config checkers run side by side, bounded by the CPUs, results in file order.

The daemons' checkers are replaced here by stand-ins that only record when they
ran (the real ones are exercised in test_checkers.py); what is under test is the
scheduling, which a real checker's variable run time would make flaky.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lbappliance.inventory import load_site
from lbappliance.render import checks, render_site
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY

STAND_IN = """#!/bin/sh
echo "start $(date +%s.%N)" >> {log}/$$
sleep 0.2
echo "end $(date +%s.%N)" >> {log}/$$
"""


def _most_at_once(log: Path) -> int:
    events = []
    for record in log.iterdir():
        for line in record.read_text().split("\n"):
            if line:
                kind, when = line.split()
                events.append((float(when), 1 if kind == "start" else -1))
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start
        running += step
        most = max(most, running)
    return most


@pytest.mark.skipif(os.geteuid() != 0, reason="the keepalived check needs a scratch netns")
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_checkers_run_in_parallel_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name in ("haproxy", "keepalived", "exabgp", "bird", "vtysh"):
        script = bin_dir / name
        script.write_text(STAND_IN.format(log=log))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(checks, "check_workers", lambda: workers)
    rendered = render_site(load_site(INVENTORY, "lab"), Secrets(None, None))

    results = checks.check_render(rendered, strict=True)

    assert [r.path for r in results] == [f.path for f in rendered.files if f.checker]
    assert {r.status for r in results} == {"ok"}, results
    assert len(list(log.iterdir())) == len(results)
    assert _most_at_once(log) == min(workers, len(results))


def test_default_bound_is_the_usable_cpus() -> None:
    assert checks.check_workers() == len(os.sched_getaffinity(0))
