import json

import pytest

from lbappliance.nic import NicConfig, NicProfile, PlanError

DEFAULTS = {
    "queues": "auto",
    "housekeeping_cpus": [0],
    "use_smt_siblings": False,
    "irq_cpus": None,
    "rps": "auto",
    "xps": True,
    "ring_rx": None,
    "ring_tx": None,
    "rx_flow_hash": True,
    "disable_offloads_for_xdp": True,
    "irqbalance": "ban",
    "netdev_max_backlog": 16384,
    "netdev_budget": 600,
    "busy_poll_us": 0,
}


def test_defaults() -> None:
    assert NicProfile().to_dict() == DEFAULTS
    assert NicProfile.from_dict({}) == NicProfile()
    assert NicProfile.from_dict(DEFAULTS) == NicProfile()


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(PlanError) as e:
        NicProfile.from_dict(
            {
                "queues": 0,
                "housekeeping_cpus": "0",
                "use_smt_siblings": 1,
                "rps": "yes",
                "ring_rx": -1,
                "irqbalance": "kill",
                "busy_poll_us": -5,
                "queue": 4,
            },
            node="lb2",
        )
    fields = [p.field for p in e.value.problems]
    assert fields == [
        "profile.queue",
        "profile.queues",
        "profile.housekeeping_cpus",
        "profile.use_smt_siblings",
        "profile.rps",
        "profile.ring_rx",
        "profile.irqbalance",
        "profile.busy_poll_us",
    ]
    assert str(e.value).startswith("node lb2: profile.queue: unknown field")


def test_nic_json_roundtrip() -> None:
    data = {"node": "lb1", "interfaces": ["eth1", "eth2"], "profile": {"queues": 8, "rps": "on"}}
    config = NicConfig.from_dict(data)
    assert config.interfaces == ("eth1", "eth2")
    assert config.profile.queues == 8
    text = config.to_json()
    assert NicConfig.from_dict(json.loads(text)) == config
    assert text.endswith("}\n") and json.loads(text)["profile"]["netdev_budget"] == 600


def test_nic_json_errors() -> None:
    with pytest.raises(PlanError, match="node lb1: interfaces: names an interface twice"):
        NicConfig.from_dict({"node": "lb1", "interfaces": ["eth1", "eth1"]})
    with pytest.raises(PlanError) as e:
        NicConfig.from_dict({"node": "lb1", "interfaces": [], "profile": {"xps": "no"}})
    assert [p.field for p in e.value.problems] == ["interfaces", "profile.xps"]
