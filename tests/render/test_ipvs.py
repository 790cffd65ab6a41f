"""IPVS mode: keepalived virtual servers rendered from the same model.

This machine's kernel has no IPVS (CONFIG_IP_VS unset, no modules), so these
tests stop at rendering and at `keepalived -t` (tests/render/test_checkers.py);
nothing here forwards a packet through IPVS.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lbappliance.inventory import load_site
from lbappliance.render import render_site
from lbappliance.render.checks import check_render
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY


def keepalived_conf(inventory: Path, site: str = "tokyo") -> str:
    rendered = render_site(load_site(inventory, site), Secrets(None, None))
    return rendered.by_path()["hosts/tyo-lb1/etc/keepalived/keepalived.conf"].content.decode()


def virtual_server(conf: str, vip: str, port: int) -> str:
    match = re.search(rf"(?ms)^virtual_server {re.escape(vip)} {port} \{{.*?^\}}", conf)
    assert match, conf
    return match.group(0)


def test_tokyo_ipvs_service_uses_maglev_with_port_hashing(tokyo_env: dict[str, str]) -> None:
    vs = virtual_server(keepalived_conf(INVENTORY), "198.51.100.53", 53)
    assert "    lb_algo mh\n    mh-port\n" in vs
    assert "    lb_kind TUN\n" in vs  # forwarding: ipip
    assert "    protocol TCP\n" in vs
    servers = re.findall(r"real_server (\S+) 53 \{\s+weight (\d+)", vs)
    assert servers == [("10.64.10.21", "100"), ("10.64.10.22", "100"), ("10.64.10.23", "50")]
    # The site's check policy: every 5 s, 2 s timeout, down after fall=3 (2 retries).
    assert vs.count("TCP_CHECK {") == 3
    assert "delay_loop 5\n" in vs
    assert "connect_timeout 2\n" in vs and "retry 2\n" in vs


def test_only_ipvs_services_become_virtual_servers(tokyo_env: dict[str, str]) -> None:
    conf = keepalived_conf(INVENTORY)
    assert conf.count("virtual_server ") == 1  # dns over UDP is an XDP service


@pytest.mark.parametrize(
    ("forwarding", "kind", "scheduler", "algo"),
    [("l2dsr", "DR", "maglev", "mh"), ("nat", "NAT", "wlc", "wlc"), ("ipip", "TUN", "wrr", "wrr")],
)
def test_forwarding_and_scheduler_map_to_ipvs(
    inventory_copy: Path,
    tokyo_env: dict[str, str],
    forwarding: str,
    kind: str,
    scheduler: str,
    algo: str,
) -> None:
    site = inventory_copy / "sites" / "tokyo.yml"
    text = site.read_text()
    block = text[text.index("  - name: dns-tcp") :]
    new = block.replace(
        "forwarding: ipip", f"forwarding: {forwarding}\n    scheduler: {scheduler}", 1
    )
    site.write_text(text.replace(block, new))
    vs = virtual_server(keepalived_conf(inventory_copy), "198.51.100.53", 53)
    assert f"    lb_kind {kind}\n" in vs
    assert f"    lb_algo {algo}\n" in vs
    assert ("mh-port" in vs) == (algo == "mh")
    if shutil.which("keepalived"):
        rendered = render_site(load_site(inventory_copy, "tokyo"), Secrets(None, None))
        checks = [r for r in check_render(rendered) if r.checker == "keepalived"]
        assert checks and all(r.status == "ok" for r in checks), checks
