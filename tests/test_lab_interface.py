"""Every lab implements the lab interface with its names and parameters, and the
host setup they share gives each kind of host the same settings."""

from __future__ import annotations

import inspect

import pytest

from lbappliance.inventory import load_site
from lbappliance.lab import hostsetup, interface
from lbappliance.lab.netns import NetnsLab
from lbappliance.lab.podman import HostStatus, PodmanLab
from lbappliance.lab.topology import lab_topology
from lbappliance.lab.vm import VmLab
from tests.conftest import INVENTORY


def _members(protocol: type) -> dict[str, inspect.Signature]:
    own = {n for n in vars(protocol) if not n.startswith("_") and callable(vars(protocol)[n])}
    return {n: inspect.signature(getattr(protocol, n)) for n in own}


def _conforms(cls: type, protocol: type) -> None:
    for name, wanted in _members(protocol).items():
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        got = inspect.signature(getattr(cls, name))
        for param in wanted.parameters.values():
            if param.kind is param.VAR_POSITIONAL or param.kind is param.VAR_KEYWORD:
                assert any(p.kind is param.kind for p in got.parameters.values()), (cls, name)
            else:
                assert param.name in got.parameters, f"{cls.__name__}.{name} lacks {param.name}"


@pytest.mark.parametrize("cls", [NetnsLab, PodmanLab, VmLab])
def test_labs_implement_the_lab_interface(cls: type) -> None:
    _conforms(cls, interface.Lab)


@pytest.mark.parametrize("cls", [PodmanLab, VmLab])
def test_machine_labs_are_machine_labs(cls: type) -> None:
    _conforms(cls, interface.MachineLab)


def test_container_lab_status_has_the_host_state() -> None:
    assert set(interface.HostState.__annotations__) <= set(HostStatus.__annotations__)


def test_host_setup_is_one_per_kind() -> None:
    topology = lab_topology(load_site(INVENTORY, "lab"))
    router = topology.router
    settings = hostsetup.sysctls(router, deployed=True)
    # The router forwards and hashes flows over its ECMP next hops by L4 ports.
    l4 = {"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"}
    assert {"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", *l4} <= set(settings)
    assert hostsetup.sysctls(router, deployed=False) == settings
    assert set(settings) - set(hostsetup.sysctls(router, deployed=False, l4_hash=False)) == l4
    lb1 = topology.host("lb1")
    assert hostsetup.sysctls(lb1, deployed=True) == []
    assert "net.ipv4.conf.all.rp_filter=0" in hostsetup.sysctls(lb1, deployed=False)
    dsr = [h for h in topology.backends if h.loopback_vips]
    assert dsr, "the lab site has DSR backends"
    routes = hostsetup.default_routes(dsr[0])
    assert any(r[-2:] == ["advmss", str(hostsetup.DSR_ADVMSS)] for r in routes)
    assert all("advmss" not in r for r in routes if r[0] == "-6")
    assert hostsetup.decapsulation(dsr[0], "/x.o")[-1][-4:] == ["obj", "/x.o", "sec", "xdp"]
    assert hostsetup.decapsulation(topology.host("client"), "/x.o") == []


def test_vrrp_holders_reads_each_node_and_skips_dead_ones() -> None:
    lbs = lab_topology(load_site(INVENTORY, "lab")).lbs
    answers = {
        "lb1": '[{"addr_info": [{"local": "10.0.0.1"}, {"local": "203.0.113.10"}]}]',
        "lb2": None,
    }
    assert hostsetup.vrrp_holders("203.0.113.10", lbs, answers.get) == ["lb1"]
    assert hostsetup.vrrp_holders("203.0.113.99", lbs, answers.get) == []
