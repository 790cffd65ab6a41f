"""A large haproxy.cfg is checked in shards: every line still checked, memory bounded.

Real ``haproxy -c`` throughout; the shard budget is lowered so small sites split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lbappliance.inventory import load_site
from lbappliance.render import RenderedFile, checks, render_site
from lbappliance.render.checks import check_haproxy, haproxy_shards
from lbappliance.secrets import Secrets
from tests.benchload import load_bench
from tests.conftest import INVENTORY

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed")
CFG = "hosts/lb1/etc/haproxy/haproxy.cfg"


def _haproxy_cfg(inventory: Path, site: str) -> str:
    rendered = render_site(load_site(inventory, site), Secrets(None, None))
    return next(f for f in rendered.files if f.path == CFG).content.decode()


def test_shards_hold_every_line_once_at_its_own_number() -> None:
    text = _haproxy_cfg(INVENTORY, "lab")
    assert haproxy_shards(text) == [text]  # within the budget: the file as it is
    shards = haproxy_shards(text, budget=1)  # one group of proxies per shard
    original = text.split("\n")
    split = [s.split("\n") for s in shards]
    assert len(shards) > 2 and all(len(s) == len(original) for s in split)
    for i, line in enumerate(original):
        holders = sum(s[i] == line for s in split)
        if line.startswith(("global", "defaults")):
            assert holders == len(shards)
        if line.strip():
            assert holders in (1, len(shards)), (i, line)
        assert all(s[i] in ("", line) for s in split)
    # A frontend is checked with the backends and tables it names.
    first = next(s for s in shards if "\nfrontend " in s and "default_backend" in s)
    pool = first.split("default_backend ", 1)[1].split()[0]
    assert f"\nbackend {pool}\n" in first


def test_an_error_in_any_shard_fails_the_check_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _haproxy_cfg(INVENTORY, "lab")
    monkeypatch.setattr(checks, "SHARD_BUDGET", 1)
    assert len(haproxy_shards(text, checks.SHARD_BUDGET)) > 2
    (tmp_path / "a").mkdir()
    good = check_haproxy(RenderedFile(CFG, text.encode(), checker="haproxy"), tmp_path / "a")
    assert good.status == "ok", good.detail
    lines = text.split("\n")
    last = max(i for i, x in enumerate(lines) if "balance random(2)" in x)
    lines[last] = lines[last].replace("random(2)", "random(two)")
    misnamed = text.replace("default_backend ", "default_backend nope-", 1)
    for i, broken in enumerate(["\n".join(lines), misnamed]):
        (tmp_path / str(i)).mkdir()
        bad = check_haproxy(
            RenderedFile(CFG, broken.encode(), checker="haproxy"), tmp_path / str(i)
        )
        assert bad.status == "failed"
        said = (
            f"parsing [{CFG}:{last + 1}] : balance random" if i == 0 else "default_backend: 'nope-"
        )
        assert said in bad.detail, bad.detail
    assert "(" not in bad.detail.split("]")[1][:3]  # the per-run pid is dropped


def test_shards_bound_the_checkers_memory(tmp_path: Path) -> None:
    """At 2,000 services the whole file takes ~260 MB in ``haproxy -c`` (the servers'
    weight-100 balance trees); eight shards each take a fraction of it."""
    bench = load_bench("render_scale")
    bench.make_site(tmp_path / "site", 2000)
    text = _haproxy_cfg(tmp_path / "site", "scale")
    whole = tmp_path / "whole.cfg"
    whole.write_text(text)
    code, whole_mb = bench.own_peak_rss(["haproxy", "-c", "-q", "-f", str(whole)])
    assert code == 0
    budget = 2000 // 2 * 3 * (100 + 2 * checks._PROXY_COST) // 8
    shards = haproxy_shards(text, budget)
    assert 6 <= len(shards) <= 12
    peaks = []
    for i, shard in enumerate(shards):
        cfg = tmp_path / f"shard{i}.cfg"
        cfg.write_text(shard)
        code, mb = bench.own_peak_rss(["haproxy", "-c", "-q", "-f", str(cfg)])
        assert code == 0, i
        peaks.append(mb)
    assert max(peaks) < whole_mb / 3, (whole_mb, peaks)
