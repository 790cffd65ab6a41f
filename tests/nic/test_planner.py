"""Plans from the captured layouts: queue counts and affinity masks, exactly."""

from dataclasses import replace

import pytest

from conftest import facts_of, mask, plan_of
from lbappliance.nic import NicProfile, PlanError, make_plan, validate_plan
from lbappliance.nic.irqbalance import env_file


def test_mlx5_on_socket_1_gets_one_queue_per_physical_core_of_socket_1(mlx5_ports) -> None:
    plan = plan_of("mlx5-2socket", mlx5_ports)
    for port, first_irq in zip(mlx5_ports, (78, 119), strict=True):
        p = plan.nic(port)
        assert p.numa_node == 1
        assert (p.queues, p.channels) == (16, ("combined", 16))
        assert p.cpus == tuple(range(16, 32))  # first threads of socket 1's cores
        assert p.irq_affinity == {first_irq + i: 16 + i for i in range(16)}
        assert p.rps == {q: 0 for q in range(16)}  # a hardware queue per core: no RPS
        # tx-i: the queue's CPU, its SMT sibling, and one CPU of each socket-0 core thread.
        assert p.xps == {i: mask(i, 16 + i, 32 + i, 48 + i) for i in range(16)}
        assert p.indirection_equal == 16
        assert p.flow_hash == dict.fromkeys(("tcp4", "udp4", "tcp6", "udp6"), "sdfn")
        assert p.features_off == ("lro", "rx-gro-hw")
        assert p.rings == {}
    ib = plan.irqbalance
    assert ib.mode == "ban"
    assert ib.banned_irqs == (*range(78, 94), *range(119, 135))
    assert ib.banned_cpus == tuple(range(16, 32))
    assert plan.sysctls == {
        "net.core.netdev_max_backlog": 16384,
        "net.core.netdev_budget": 600,
        "net.core.busy_poll": 0,
        "net.core.busy_read": 0,
    }


def test_mlx5_with_smt_siblings_uses_all_32_threads_first_threads_first(mlx5_ports) -> None:
    p = plan_of("mlx5-2socket", mlx5_ports, use_smt_siblings=True).nic(mlx5_ports[0])
    assert p.queues == 32
    assert p.cpus == (*range(16, 32), *range(48, 64))
    assert p.irq_affinity == {78 + i: c for i, c in enumerate(p.cpus)}
    assert set(p.rps.values()) == {0}


def test_mlx5_fewer_queues_than_cores_turns_on_rps_per_core_pair(mlx5_ports) -> None:
    p = plan_of("mlx5-2socket", mlx5_ports[:1], queues=8).nic(mlx5_ports[0])
    assert (p.queues, p.channels) == (8, ("combined", 8))
    assert p.cpus == tuple(range(16, 32, 2))
    assert p.irq_affinity == {78 + i: 16 + 2 * i for i in range(8)}
    assert p.rps == {i: mask(16 + 2 * i, 17 + 2 * i) for i in range(8)}
    assert plan_of("mlx5-2socket", mlx5_ports[:1], queues=8, rps="off").nic(mlx5_ports[0]).rps == {
        i: 0 for i in range(8)
    }


def test_onboard_nic_on_socket_0_skips_the_housekeeping_core() -> None:
    p = plan_of("mlx5-2socket", ["eno1"]).nic("eno1")
    assert p.numa_node == 0
    assert p.queues == 8  # the I350's maximum, on 15 usable cores: RPS spreads the rest
    assert p.cpus == (1, 3, 5, 7, 9, 11, 13, 15)
    assert p.rps == {i: mask(1 + 2 * i, 2 + 2 * i) for i in range(7)} | {7: mask(15)}
    assert p.irq_affinity == {60 + i: 1 + 2 * i for i in range(8)}


def test_isolated_cpus_are_left_to_their_workload() -> None:
    p = plan_of("mlx5-2socket-isolated", ["enp175s0f0np0"]).nic("enp175s0f0np0")
    assert (p.queues, p.cpus) == (4, (16, 17, 18, 19))
    assert p.irq_affinity == {61 + i: 16 + i for i in range(4)}
    assert set(p.rps.values()) == {0}
    rest = [*range(16), *range(20, 48), *range(52, 64)]  # every other online CPU, round-robin
    assert p.xps == {q: mask(16 + q, 48 + q, *rest[q::4]) for q in range(4)}
    smt = plan_of("mlx5-2socket-isolated", ["enp175s0f0np0"], use_smt_siblings=True)
    assert smt.nics[0].cpus == (16, 17, 18, 19, 48, 49, 50, 51)


def test_ixgbe_smt_off_8_queues() -> None:
    p = plan_of("ixgbe-1socket", ["enp1s0f0"]).nic("enp1s0f0")
    assert p.numa_node is None  # numa_node -1 on a single-node host
    assert (p.queues, p.channels) == (7, ("combined", 7))
    assert p.cpus == (1, 2, 3, 4, 5, 6, 7)
    assert p.irq_affinity == {40 + i: 1 + i for i in range(7)}  # TxRx-7 goes with queue 7
    assert p.xps == {0: mask(0, 1)} | {q: mask(q + 1) for q in range(1, 7)}
    assert p.features_off == ("lro",)  # rx-gro-hw is off [fixed] on ixgbe
    assert p.notes == ()


def test_ixgbe_smt_on_one_queue_per_core_or_per_thread() -> None:
    p = plan_of("ixgbe-1socket-smt", ["enp1s0f0"]).nic("enp1s0f0")
    assert (p.queues, p.cpus) == (7, (1, 2, 3, 4, 5, 6, 7))  # core 0 = CPUs 0 and 8
    assert p.irq_affinity == {40 + i: 1 + i for i in range(7)}
    assert p.xps == {0: mask(0, 1, 9), 1: mask(2, 10, 8)} | {
        q: mask(q + 1, q + 9) for q in range(2, 7)
    }
    threads = plan_of("ixgbe-1socket-smt", ["enp1s0f0"], use_smt_siblings=True).nic("enp1s0f0")
    # Threads are the unit now: CPU 8 shares core 0 with housekeeping CPU 0 but is not reserved
    # (list both threads in housekeeping_cpus to keep the whole core); first threads go first.
    assert threads.queues == 15
    assert threads.cpus == (*range(1, 8), *range(8, 16))
    assert threads.irq_affinity == {40 + i: c for i, c in enumerate(threads.cpus)}


def test_ixgbe_runtime_smt_off() -> None:
    p = plan_of("ixgbe-1socket-nosmt", ["enp1s0f0"]).nic("enp1s0f0")
    assert (p.queues, p.cpus) == (7, (1, 2, 3, 4, 5, 6, 7))
    assert p.xps == {0: mask(0, 1)} | {q: mask(q + 1) for q in range(1, 7)}


def test_virtio_4_queues_on_4_vcpus() -> None:
    p = plan_of("virtio-4q", ["enp1s0"]).nic("enp1s0")
    assert (p.queues, p.channels, p.cpus) == (3, ("combined", 3), (1, 2, 3))
    # input.N and output.N of queue pair N share its CPU; virtio1-config (40) is left alone.
    assert p.irq_affinity == {41: 1, 42: 1, 43: 2, 44: 2, 45: 3, 46: 3}
    assert p.rps == {0: 0, 1: 0, 2: 0}
    assert p.xps == {0: mask(0, 1), 1: mask(2), 2: mask(3)}
    assert p.indirection_equal is None and p.flow_hash == {}  # no RSS table on this device
    assert p.features_off == ("rx-gro-hw",)  # lro is off [fixed]
    all_cpus = plan_of("virtio-4q", ["enp1s0"], housekeeping_cpus=[]).nic("enp1s0")
    assert (all_cpus.queues, all_cpus.cpus) == (4, (0, 1, 2, 3))


def test_fewer_queues_than_cores_rps_and_xps() -> None:
    p = plan_of("virtio-2q-8cpu", ["enp1s0"]).nic("enp1s0")
    assert (p.queues, p.cpus, p.groups) == (2, (1, 5), ((1, 2, 3, 4), (5, 6, 7)))
    assert p.irq_affinity == {41: 1, 42: 1, 43: 5, 44: 5}
    assert p.rps == {0: 0x1E, 1: 0xE0}
    assert p.xps == {0: 0x1F, 1: 0xE0}
    off = plan_of("virtio-2q-8cpu", ["enp1s0"], rps="off", xps=False).nic("enp1s0")
    assert (off.rps, off.xps) == ({0: 0, 1: 0}, {})


def test_explicit_irq_cpus_and_more_queues_than_cpus_wrap() -> None:
    p = plan_of("ixgbe-1socket", ["enp1s0f0"], queues=4, irq_cpus=[6, 7]).nic("enp1s0f0")
    assert (p.queues, p.cpus) == (4, (6, 7, 6, 7))
    assert p.irq_affinity == {40: 6, 41: 7, 42: 6, 43: 7}
    # Queues sharing a CPU share it in XPS; the other CPUs go round-robin over all queues.
    assert p.xps == {0: mask(6, 0, 4), 1: mask(7, 1, 5), 2: mask(6, 2), 3: mask(7, 3)}


def test_rings_and_busy_poll() -> None:
    plan = plan_of("ixgbe-1socket", ["enp1s0f0"], ring_rx="max", ring_tx=2048, busy_poll_us=50)
    assert plan.nics[0].rings == {"rx": 8192, "tx": 2048}
    assert plan.sysctls["net.core.busy_poll"] == plan.sysctls["net.core.busy_read"] == 50


def test_irqbalance_env_file() -> None:
    plan = plan_of("virtio-2q-8cpu", ["enp1s0"])
    assert env_file(plan.irqbalance.banned_irqs, plan.irqbalance.banned_cpus) == (
        "# Written by `lbappliance nic apply`: NIC queue IRQs and the CPUs that serve them.\n"
        "IRQBALANCE_BANNED_CPULIST=1-7\n"
        'IRQBALANCE_ARGS="--banirq=41 --banirq=42 --banirq=43 --banirq=44"\n'
    )


# --- refusals: each names the node and the field ---------------------------------------------


def problems(layout: str, interfaces: list[str], **profile: object) -> list[str]:
    with pytest.raises(PlanError) as e:
        plan_of(layout, interfaces, **profile)
    return [str(p) for p in e.value.problems]


def test_more_queues_than_the_nic_has() -> None:
    assert problems("ixgbe-1socket", ["enp1s0f0"], queues=16) == [
        "node lb1: profile.queues: enp1s0f0 has at most 8 combined queues; the profile asks for 16"
    ]
    assert problems("mlx5-2socket", ["enp175s0f0np0"], queues=33)[0].startswith(
        "node lb1: profile.queues: enp175s0f0np0 has at most 32"
    )


def test_cpu_lists_naming_offline_cpus() -> None:
    assert problems("ixgbe-1socket-nosmt", ["enp1s0f0"], housekeeping_cpus=[0, 8, 9]) == [
        "node lb1: profile.housekeeping_cpus: names CPUs that are not online: 8-9 (online: 0-7)"
    ]
    assert problems("ixgbe-1socket-nosmt", ["enp1s0f0"], irq_cpus=[3, 12]) == [
        "node lb1: profile.irq_cpus: names CPUs that are not online: 12 (online: 0-7)"
    ]
    assert problems("ixgbe-1socket", ["enp1s0f0"], irq_cpus=[0, 1]) == [
        "node lb1: profile.irq_cpus: names housekeeping CPUs 0; NIC IRQs never go there"
    ]


def test_no_cpu_left_for_the_nic() -> None:
    assert problems("virtio-4q", ["enp1s0"], housekeeping_cpus=[0, 1, 2, 3]) == [
        "node lb1: profile.housekeeping_cpus: leaves no CPU for enp1s0"
        " (online 0-3, housekeeping 0-3, isolated -)"
    ]


def test_missing_interface_and_ring_too_big() -> None:
    assert problems("ixgbe-1socket", ["enp1s0f0", "eth9"], ring_rx=16384) == [
        "node lb1: profile.ring_rx: enp1s0f0 rx ring is at most 8192; the profile asks for 16384",
        "node lb1: interfaces[1]: eth9 does not exist (enp1s0f0)",
    ]


def test_plan_leaving_a_nic_without_an_online_queue_is_refused() -> None:
    facts = facts_of("ixgbe-1socket", ["enp1s0f0"])
    plan = make_plan("lb1", NicProfile(), ["enp1s0f0"], facts)
    offline = replace(facts.topology, online=frozenset({0}))
    with pytest.raises(PlanError) as e:
        validate_plan(plan, offline)
    assert [str(p) for p in e.value.problems] == [
        "node lb1: plan.enp1s0f0.queues: no queue on an online CPU",
        "node lb1: plan.enp1s0f0.irq_affinity: offline CPUs 1-7",
        "node lb1: plan.enp1s0f0.xps: mask names offline CPUs",
    ]


def test_plan_is_deterministic_and_serialisable(mlx5_ports) -> None:
    import json

    a = plan_of("mlx5-2socket", mlx5_ports).to_dict()
    b = plan_of("mlx5-2socket", mlx5_ports).to_dict()
    assert a == b
    assert json.loads(json.dumps(a))["nics"][0]["xps_cpus"]["tx-0"] == "10001,00010001"
