"""Shared helpers for the NIC planner tests: facts and plans from the captured fixtures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from nicfixtures import FIXTURES

from lbappliance.nic import HostFacts, NicProfile, Plan, gather_facts, make_plan

# The captured trees hold sysfs' symlink loops (net/IF/device -> .../net/IF): never collect them.
collect_ignore = ["fixtures"]


def facts_of(layout: str, interfaces: Sequence[str] | None = None) -> HostFacts:
    return gather_facts(FIXTURES / layout, interfaces)


def plan_of(layout: str, interfaces: Sequence[str], **profile: Any) -> Plan:
    return make_plan("lb1", NicProfile.from_dict(profile), interfaces, facts_of(layout, interfaces))


def mask(*cpus: int | range) -> int:
    out = 0
    for c in cpus:
        for cpu in c if isinstance(c, range) else (c,):
            out |= 1 << cpu
    return out


@pytest.fixture
def mlx5_ports() -> tuple[str, str]:
    return ("enp175s0f0np0", "enp175s0f1np1")
