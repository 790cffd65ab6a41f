"""The lab router's BIRD config: the rendered config of every peer, combined (fast)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lbappliance.inventory import load_site
from lbappliance.lab.router import combine, nexthops, router_bird_conf, router_sessions
from lbappliance.render import render_site
from lbappliance.secrets import Secrets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def conf() -> str:
    site = load_site(ROOT / "inventory", "lab")
    files = render_site(site, Secrets(None, None)).by_path()
    return router_bird_conf(site, lambda path: files[path].content.decode())


@pytest.mark.skipif(not shutil.which("bird"), reason="bird is not installed")
def test_combined_config_parses(conf: str, tmp_path: Path) -> None:
    path = tmp_path / "bird.conf"
    path.write_text(conf)
    out = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_both_families_one_bfd(conf: str) -> None:
    assert conf.count("router id ") == 1 and "router id 10.10.0.1;" in conf
    assert conf.count("protocol bfd") == 1 and conf.count("protocol device") == 1
    assert "protocol kernel kernel_ipv4 {" in conf and "protocol kernel kernel_ipv6 {" in conf
    assert "filter import_lab_ipv4 {" in conf and "filter import_lab_ipv6 {" in conf
    for session in ("lb1", "lb2", "lb1_router_v6", "lb2_router_v6"):
        assert f"protocol bgp {session} {{" in conf
    assert conf.count("bfd on;") == 4  # every session uses the one BFD protocol
    assert "neighbor 2001:db8:10::11 as 65100;" in conf
    site = load_site(ROOT / "inventory", "lab")
    assert router_sessions(site, "lb2") == ["lb2", "lb2_router_v6"]


def test_a_later_peer_of_the_same_family_adds_only_its_sessions() -> None:
    one = "router id 10.0.0.1;\nprotocol device { }\nprotocol kernel k4 { ipv4; }\n"
    one += "filter f4 { accept; }\nprotocol bgp lb1 { neighbor 10.0.0.2 as 1; ipv4; }\n"
    two = one.replace("10.0.0.", "10.0.1.")
    two += 'protocol bfd { interface "*"; }  # not taken: one BFD per host\n'
    out = combine([("r1", one), ("r-2", two)])
    assert out.count("router id") == 1 and out.count("protocol kernel k4") == 1
    assert "protocol bgp lb1_r_2 { neighbor 10.0.1.2 as 1; ipv4; }" in out
    assert "protocol bfd" not in out
    with pytest.raises(ValueError, match="unexpected BIRD statement"):
        combine([("r1", one), ("r2", "template bgp t { }")])


def test_nexthops_reads_ecmp_and_single_routes() -> None:
    ecmp = '[{"dst":"2001:db8:100::10","nexthops":[{"gateway":"2001:db8:10::12"},'
    ecmp += '{"gateway":"2001:db8:10::11"}]}]'
    assert nexthops(ecmp, "2001:db8:100::10/128") == ["2001:db8:10::11", "2001:db8:10::12"]
    single = '[{"dst":"198.51.100.10","gateway":"10.10.0.11"},{"dst":"10.0.0.0/8"}]'
    assert nexthops(single, "198.51.100.10/32") == ["10.10.0.11"]
    assert nexthops("", "198.51.100.10/32") == []
