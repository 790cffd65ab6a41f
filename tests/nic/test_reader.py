"""Facts read from the captured fixture trees (and from this host)."""

from nicfixtures import FIXTURES

from conftest import facts_of
from lbappliance.nic.facts import Channels, Feature, Rings
from lbappliance.nic.reader import classify_irq, gather_facts, parse_interrupts


def test_two_socket_topology() -> None:
    topo = facts_of("mlx5-2socket", []).topology
    assert topo.online == frozenset(range(64))
    assert topo.offline == frozenset()
    assert topo.nodes == {0: {*range(16), *range(32, 48)}, 1: {*range(16, 32), *range(48, 64)}}
    cpu16, cpu48, cpu0 = topo.cpus[16], topo.cpus[48], topo.cpus[0]
    assert cpu16.siblings == {16, 48} and cpu48.siblings == {16, 48}
    assert (cpu16.package_id, cpu16.node) == (1, 1)
    # core_id repeats across packages (and has gaps): a core is (package, core_id).
    assert cpu16.core_id == cpu0.core_id == 0 and cpu16.core != cpu0.core
    assert topo.cpus[31].core_id == 25


def test_offline_smt_threads_have_no_topology() -> None:
    topo = facts_of("ixgbe-1socket-nosmt", []).topology
    assert topo.online == frozenset(range(8))
    assert topo.offline == frozenset(range(8, 16))
    assert set(topo.cpus) == set(range(8))
    assert topo.cpus[3].siblings == {3}


def test_isolated() -> None:
    topo = facts_of("mlx5-2socket-isolated", []).topology
    assert topo.isolated == {*range(20, 32), *range(52, 64)}


def test_mlx5_nic() -> None:
    nic = facts_of("mlx5-2socket", ["enp175s0f0np0"]).nics["enp175s0f0np0"]
    assert (nic.driver, nic.bus_info, nic.numa_node) == ("mlx5_core", "0000:af:00.0", 1)
    assert [irq.irq for irq in nic.irqs] == list(range(78, 110))  # mlx5_async0 (77) left out
    assert nic.irqs[0].name == "mlx5_comp0@pci:0000:af:00.0"
    assert [(i.queue, i.kind) for i in nic.irqs[:2]] == [(0, "rxtx"), (1, "rxtx")]
    assert nic.irqs[0].affinity == frozenset(range(64))
    assert nic.channels == Channels(max_combined=32, combined=32)
    assert nic.rings == Rings(8192, 8192, 1024, 1024)
    assert nic.features["large-receive-offload"] == Feature(on=False, fixed=False)
    assert nic.indirection == tuple(i % 32 for i in range(256))
    assert nic.flow_hash == {"tcp4": "sdfn", "udp4": "sdfn", "tcp6": "sdfn", "udp6": "sdfn"}
    assert len(nic.rx_queues) == 32 and set(nic.rx_queues.values()) == {0}
    assert nic.tx_queues[5] == 1 << 5


def test_virtio_irqs_and_numa_come_from_the_pci_parent() -> None:
    nic = facts_of("virtio-4q", ["enp1s0"]).nics["enp1s0"]
    assert (nic.driver, nic.numa_node) == ("virtio_net", None)
    assert [(i.irq, i.queue, i.kind) for i in nic.irqs[:4]] == [
        (41, 0, "rx"),
        (42, 0, "tx"),
        (43, 1, "rx"),
        (44, 1, "tx"),
    ]
    assert nic.indirection is None and nic.flow_hash == {}
    assert nic.features["rx-gro-hw"] == Feature(on=True, fixed=False)


def test_interfaces_default_to_devices_and_missing_ones_are_left_out() -> None:
    facts = gather_facts(FIXTURES / "mlx5-2socket")
    assert sorted(facts.nics) == ["eno1", "enp175s0f0np0", "enp175s0f1np1"]
    assert "eth9" not in gather_facts(FIXTURES / "mlx5-2socket", ["eth9"]).nics


def test_sysctls_and_irqbalance() -> None:
    facts = facts_of("ixgbe-1socket", [])
    assert facts.sysctls == {
        "net.core.netdev_max_backlog": 1000,
        "net.core.netdev_budget": 300,
        "net.core.busy_poll": 0,
        "net.core.busy_read": 0,
    }
    assert (facts.irqbalance.installed, facts.irqbalance.active) == (True, True)
    assert facts_of("virtio-4q", []).irqbalance.installed is False


def test_parse_interrupts() -> None:
    text = (
        "           CPU0       CPU1\n"
        "  0:         44          0  IO-APIC   2-edge      timer\n"
        " 36:          0      46459 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n"
        " 98:          1          0  IR-PCI-MSI-edge      eth0-TxRx-3\n"
        " 99:          0          0  IO-APIC   9-fasteoi   ehci_hcd:usb1, ahci\n"
        "NMI:          0          0   Non-maskable interrupts\n"
    )
    assert parse_interrupts(text) == {
        0: "timer",
        36: "virtio1-req.0",
        98: "eth0-TxRx-3",
        99: "ehci_hcd:usb1, ahci",
    }


def test_classify_irq() -> None:
    assert classify_irq("mlx5_comp12@pci:0000:af:00.0") == (12, "rxtx")
    assert classify_irq("mlx5_async0@pci:0000:af:00.0") is None
    assert classify_irq("i40e-ens1f0-TxRx-3") == (3, "rxtx")
    assert classify_irq("eth0-rx-2") == (2, "rx")
    assert classify_irq("virtio3-output.1") == (1, "tx")
    assert classify_irq("virtio3-config") is None
    assert classify_irq("enp1s0f0") is None


def test_live_host_reads() -> None:
    facts = gather_facts("/")
    assert facts.topology.online
    for nic in facts.nics.values():
        assert all(
            irq.affinity <= facts.topology.online | facts.topology.offline for irq in nic.irqs
        )
