"""The IPVS part of the node report (`lbappliance status`): /proc/net/ip_vs parsed into
virtual servers and their live real servers, and the status line it makes."""

from __future__ import annotations

from lbappliance.health.node import parse_ipvs_servers
from lbappliance.status import format_node

# /proc/net/ip_vs as kernel 6.1 writes it (captured in the VM lab): 198.51.100.30:8080,
# Maglev, two real servers by DR (the third failed keepalived's check and left).
TABLE = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  C633641E:1F90 mh
  -> 0A1E0016:1F90      Route   100    1          0
  -> 0A1E0015:1F90      Route   100    0          2
UDP  [2001:0db8:0100:0000:0000:0000:0000:0010]:0035 wrr
"""


def test_parse_lists_each_virtual_server_with_its_real_servers() -> None:
    table = parse_ipvs_servers(TABLE)
    # Keys as the health agent writes them (sensors.parse_ipvs, the agent's config).
    assert list(table) == ["198.51.100.30:8080/tcp", "2001:db8:100::10:53/udp"]
    vs = table["198.51.100.30:8080/tcp"]
    assert vs["scheduler"] == "mh"
    assert [rs["address"] for rs in vs["real_servers"]] == ["10.30.0.22:8080", "10.30.0.21:8080"]
    assert vs["real_servers"][0] == {
        "address": "10.30.0.22:8080",
        "forward": "Route",
        "weight": 100,
        "active": 1,
        "inactive": 0,
    }
    assert table["2001:db8:100::10:53/udp"] == {"scheduler": "wrr", "real_servers": []}


def test_status_shows_live_real_servers_and_a_service_missing_from_the_kernel() -> None:
    report = {
        "agent": {"running": True, "pid": 1, "age": 0.5},
        "haproxy": {"backends": {}, "sessions": 0},
        "ipvs": {
            "services": {
                "198.51.100.30:8080/tcp": parse_ipvs_servers(TABLE)["198.51.100.30:8080/tcp"],
                "198.51.100.40:80/tcp": {"scheduler": None, "real_servers": [], "missing": True},
            }
        },
    }
    lines = format_node("lb1", report)
    assert (
        "  IPVS     198.51.100.30:8080/tcp mh: 10.30.0.22:8080 w100, 10.30.0.21:8080 w100" in lines
    )
    assert any(
        line.startswith("  IPVS     198.51.100.40:80/tcp NOT IN THE KERNEL") for line in lines
    )
