"""The agent's round at scale: one-pass ``show stat`` view, only changed VIPs re-judged,
the state file from cached entries. Each must give exactly what the plain path gives."""

from __future__ import annotations

import json
import random

import pytest

from lbappliance import haproxy
from lbappliance.health import agent as agent_module
from lbappliance.health.sensors import haproxy_view
from lbappliance.health.signals import evaluate
from lbappliance.health.statview import stat_view
from tests.health.helpers import L4, WEB, Harness, healthy_network
from tests.health.test_signals import FIXTURES

HEADER = "# pxname,svname,type,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
HEADER += "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,check_desc"


def _row(
    px: str, sv: str, status: str, scur: int = 0, bck: str = "0", desc: str = "", weight: int = 1
) -> str:
    kind = {"FRONTEND": 0, "BACKEND": 1}.get(sv, 2)
    cols = f"{px},{sv},{kind},0,0,{scur},0,,0,0,0,0,0,0,0,0,0,0,{status},{weight},1,{bck}"
    return f"{cols},0,0,0,0,{desc}"


SYNTHETIC = "\n".join(
    [
        HEADER,
        _row("web", "FRONTEND", "OPEN", scur=7),
        _row("web", "s1", "UP", desc='"Layer7 check passed, 200"'),
        _row("web", "s2", "DOWN 1/2"),
        _row("web", "s3", "UP", bck="1"),
        _row("web", "s4", "UP", weight=0),
        _row("web", "s5", "DRAIN"),
        _row("web", "BACKEND", "UP"),
        _row("spare", "b1", "no check", bck="1"),
        _row("spare", "b2", "MAINT", bck="1"),
        _row("spare", "BACKEND", "UP"),
        _row("empty", "BACKEND", "DOWN"),
        _row("stopped", "FRONTEND", "STOP"),
        "",
    ]
)


@pytest.mark.parametrize(
    "text",
    [
        (FIXTURES / "show_stat.csv").read_text(),
        SYNTHETIC,
        "\n".join(x.rsplit(",", 6)[0] for x in SYNTHETIC.splitlines() if x),  # no bck column
    ],
    ids=["haproxy-2.6", "backups-and-quotes", "short-rows"],
)
def test_stat_view_is_parse_stat_then_view(text: str) -> None:
    view = stat_view(text)
    assert view == haproxy_view(haproxy.parse_stat(text))
    assert view.backends, "no backend read: the case tests nothing"


def test_stat_view_refuses_what_is_not_show_stat() -> None:
    with pytest.raises(haproxy.HaproxyError, match="unexpected answer"):
        stat_view("Unknown command.\n")


def test_a_steady_round_judges_nothing_and_a_change_only_its_vips(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judged: list[str] = []

    def counting(cfg, vip, obs):  # type: ignore[no-untyped-def]
        judged.append(vip.prefix)
        return evaluate(cfg, vip, obs)

    monkeypatch.setattr(agent_module, "evaluate", counting)
    h = Harness(tmp_path)
    h.agent.start()
    h.rounds(5)
    judged.clear()
    h.rounds(2)
    assert judged == []
    h.signals.web_probe = False
    h.rounds(1)
    assert judged == [WEB]
    judged.clear()
    h.signals.l4_up = 1
    h.rounds(1)
    assert judged == [L4]
    judged.clear()
    h.signals.maintenance = True  # shared by every VIP
    h.rounds(1)
    assert sorted(judged) == sorted([WEB, L4])


def test_verdicts_always_equal_a_full_evaluation(tmp_path) -> None:
    """Random changes to every input, one round each: the kept and re-judged verdicts
    are what judging every VIP afresh gives."""
    rng = random.Random(21)
    h = Harness(tmp_path)
    h.agent.start()
    s = h.signals
    flips = [
        lambda: setattr(s, "web_up", rng.randint(0, 2)),
        lambda: setattr(s, "frontend", rng.choice(["OPEN", "STOP"])),
        lambda: setattr(s, "haproxy_error", rng.choice(["", "", "admin socket missing"])),
        lambda: setattr(s, "web_probe", rng.random() < 0.7),
        lambda: setattr(s, "xdp", rng.random() < 0.8),
        lambda: setattr(s, "l4_up", rng.randint(0, 2)),
        lambda: setattr(s, "maintenance", rng.random() < 0.2),
        lambda: setattr(s, "network", rng.choice([healthy_network(), None])),
    ]
    for _ in range(300):
        if rng.random() < 0.6:
            rng.choice(flips)()
        h.rounds(1, dt=rng.choice([0.2, 0.5]))
        obs = h.agent.observation
        assert h.agent.verdicts == {v.prefix: evaluate(h.cfg, v, obs) for v in h.cfg.vips}


def test_state_file_is_the_snapshot_as_json(tmp_path) -> None:
    h = Harness(tmp_path)
    h.agent.start()
    for change in ["web_probe", "l4_up", None, "maintenance", None]:
        if change:
            setattr(h.signals, change, {"l4_up": 1}.get(change, not getattr(h.signals, change)))
        h.rounds(4)
        h.agent.write_state(force=True)
        written = (tmp_path / "state.json").read_text()
        expected = json.dumps(h.agent.snapshot(), sort_keys=True, separators=(",", ":"))
        assert written == expected + "\n"
