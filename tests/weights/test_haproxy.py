"""``show stat`` parsing and the admin socket client (a fake socket server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbappliance.haproxy import AdminSocket, HaproxyError, parse_stat
from tests.weights.fixtures import recording


def test_recorded_rows_parse_into_servers() -> None:
    snap = recording("hard_900ms")[-1]
    assert set(snap.servers) == {("web", "backend1"), ("web", "backend2")}
    row = snap.servers[("web", "backend1")]
    assert row.status == "UP" and row.uweight == 100 and not row.backup
    assert row.slim == 200 and row.agent_status == ""
    assert row.responses is not None and row.stot is not None and row.responses <= row.stot
    # backend1 answers after +900 ms; HAProxy's own (cumulative) average is still catching up.
    assert row.rtime is not None and 300 < row.rtime < 900


def test_frontends_backends_and_empty_fields() -> None:
    text = (
        "# pxname,svname,scur,stot,status,weight,uweight,type,rtime,hrsp_2xx,hrsp_5xx\n"
        "web,FRONTEND,0,5,OPEN,,,0,,5,0\n"
        "web,BACKEND,0,5,UP,100,100,1,1,5,0\n"
        "web,s1,0,5,UP,100,100,2,,5,0\n"
    )
    (row,) = parse_stat(text).servers
    assert row.server == "s1" and row.rtime is None and row.stot == 5
    assert row.responses is None  # some hrsp_* columns are missing entirely


def test_admin_states() -> None:
    def one(status: str, uweight: int = 100):
        text = f"# pxname,svname,status,uweight,type\nweb,s1,{status},{uweight},2\n"
        return parse_stat(text).servers[0]

    assert one("UP").up and one("no check").up and one("UP 1/3").up
    assert not one("DOWN").up and not one("DOWN 1/2").up
    for status in ("MAINT", "MAINT (via web/s2)", "DRAIN", "NOLB"):
        assert one(status).admin_excluded and not one(status).up
    assert one("UP", uweight=0).admin_excluded


def test_not_show_stat_output_is_an_error() -> None:
    with pytest.raises(HaproxyError):
        parse_stat("Unknown command\n")


def test_set_weights_in_one_round_trip(fake_haproxy) -> None:
    path, received, _ = fake_haproxy
    AdminSocket(str(path)).set_weights({("web", "b2"): 5, ("web", "b1"): 100})
    assert received == ["set weight web/b1 100; set weight web/b2 5"]


def test_set_weights_reports_haproxy_errors(fake_haproxy) -> None:
    path, _, answers = fake_haproxy
    answers["set"] = "No such server.\n\n"
    with pytest.raises(HaproxyError, match="No such server"):
        AdminSocket(str(path)).set_weights({("web", "nope"): 5})


def test_unreachable_socket(tmp_path: Path) -> None:
    with pytest.raises(HaproxyError):
        AdminSocket(str(tmp_path / "absent.sock")).show_stat()
