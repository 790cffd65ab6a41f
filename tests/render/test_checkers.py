"""Rendered configs pass their daemons' own checkers; broken ones do not."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from lbappliance.inventory import load_site
from lbappliance.render import render_site
from lbappliance.render.checks import check_render
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY

needs = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("haproxy", "keepalived", "exabgp", "bird", "vtysh")),
    reason="daemons not installed (.ci/run installs them)",
)


@needs
@pytest.mark.parametrize("site", ["lab", "tokyo"])
def test_rendered_configs_pass_real_checkers(site: str, tokyo_env: dict[str, str]) -> None:
    rendered = render_site(load_site(INVENTORY, site), Secrets(None, None))
    results = check_render(rendered, strict=True)
    assert {r.checker for r in results} == {"haproxy", "keepalived", "exabgp", "bird", "vtysh"}
    bad = [r for r in results if r.status != "ok"]
    assert not bad, bad


@needs
@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("hosts/lb1/etc/haproxy/haproxy.cfg", b"balance random(2)", b"balance random(two)"),
        (
            "hosts/lb1/etc/keepalived/keepalived.conf",
            b"virtual_router_id 10",
            b"virtual_router_id 999",
        ),
        ("hosts/lb1/etc/exabgp/exabgp.conf", b"peer-as 65000;", b"peer-as banana;"),
        ("routers/router/bird.conf", b"hold time 3;", b"hold time three;"),
        ("routers/router/frr.conf", b"remote-as 65100", b"remote-az 65100"),
        ("hosts/lb1/etc/bird/bird.conf", b"multiplier 3;", b"multiplier x;"),
    ],
)
def test_checkers_catch_broken_configs(path: str, old: bytes, new: bytes) -> None:
    rendered = render_site(load_site(INVENTORY, "lab"), Secrets(None, None))
    rendered.files = [
        dataclasses.replace(f, content=f.content.replace(old, new)) if f.path == path else f
        for f in rendered.files
    ]
    assert (
        old
        in next(
            f
            for f in render_site(load_site(INVENTORY, "lab"), Secrets(None, None)).files
            if f.path == path
        ).content
    )
    results = {r.path: r for r in check_render(rendered)}
    assert results[path].status == "failed", results[path]
    others = [r for p, r in results.items() if p != path and r.status != "ok"]
    assert not others, others


def test_missing_checker_is_warning_or_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    rendered = render_site(load_site(INVENTORY, "lab"), Secrets(None, None))
    lenient = check_render(rendered)
    assert {r.status for r in lenient} == {"skipped"}
    assert "haproxy is not installed: config not checked" in {r.detail for r in lenient}
    strict = check_render(rendered, strict=True)
    assert {r.status for r in strict} == {"failed"}
