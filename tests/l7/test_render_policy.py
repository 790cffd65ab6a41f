"""Rendered L7 policy switches that the lab and tokyo golden files do not cover."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.l7.l7bench import bench


def render(tmp: Path, **policy: object) -> str:
    site = bench.bench_site()
    site["l7"]["policy"].update(policy)
    return bench.rendered_config(tmp, tls=False, site=site)


def test_retries_for_every_method(tmp_path: Path) -> None:
    cfg = render(tmp_path, retries={"idempotent_only": False})
    rules = [line.strip() for line in cfg.splitlines() if "disable-l7-retry" in line]
    assert rules == [
        "http-request disable-l7-retry if !pool_failing !{ http_first_req }",
        "http-request disable-l7-retry if pool_failing "
        "{ sc1_http_fail_rate,mul(1000),sub(txn.retry_budget) gt 0 }",
    ]
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", path], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_access_log_switch(tmp_path: Path) -> None:
    assert "    option dontlog-normal\n" in render(tmp_path)
    assert "dontlog-normal" not in render(tmp_path, access_log="all")


def test_no_rate_limit_no_tracker(tmp_path: Path) -> None:
    cfg = render(tmp_path, rate_limit_per_client=0)
    assert "track-sc0" not in cfg and "backend rate." not in cfg and "429" not in cfg
