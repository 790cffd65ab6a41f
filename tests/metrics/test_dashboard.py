"""The Grafana dashboard parses, and every metric it queries is documented."""

from __future__ import annotations

from pathlib import Path

from tests.metrics.dashboard import queries, scraped, selectors

DOC = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()


def test_every_query_names_a_known_metric() -> None:
    exprs = queries()
    assert len(exprs) >= 8
    for expr in exprs:
        assert selectors(expr), f"no haproxy_/lbappliance_ metric in {expr!r}"


def test_every_queried_metric_is_documented() -> None:
    missing = {name for e in queries() for name, _ in selectors(e) if f"`{name}`" not in DOC}
    assert not missing


def test_selectors_and_scrape_parsing() -> None:
    expr = 'sum by (node) (increase(lbappliance_health_vip_transitions_total{to="withdrawn"}[5m]))'
    assert selectors(expr) == [("lbappliance_health_vip_transitions_total", {"to"})]
    text = (
        '# HELP x y\nlbappliance_health_rounds_total{node="lb1"} 3\n'
        "lbappliance_weights_ticks_total 1\n"
    )
    assert scraped(text) == {
        "lbappliance_health_rounds_total": {"node"},
        "lbappliance_weights_ticks_total": set(),
    }
