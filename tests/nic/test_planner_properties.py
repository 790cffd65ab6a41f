"""Planner invariants over generated topologies (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lbappliance.nic import NicProfile, PlanError, make_plan
from lbappliance.nic.cpulist import cpus_of
from lbappliance.nic.facts import (
    Channels,
    Cpu,
    HostFacts,
    Irqbalance,
    Nic,
    QueueIrq,
    Topology,
)


@st.composite
def hosts(draw: st.DrawFn) -> tuple[HostFacts, NicProfile]:
    sockets = draw(st.integers(1, 2))
    cores = draw(st.integers(1, 8))
    threads = draw(st.integers(1, 2))
    per_thread = sockets * cores
    total = per_thread * threads
    cpus = {}
    for c in range(total):
        slot = c % per_thread
        siblings = frozenset(slot + t * per_thread for t in range(threads))
        cpus[c] = Cpu(c, slot % cores, slot // cores, siblings, slot // cores)
    online = frozenset(cpus)
    isolated = frozenset(draw(st.sets(st.sampled_from(sorted(online)), max_size=total // 2)))
    housekeeping = draw(st.sets(st.sampled_from(sorted(online)), min_size=0, max_size=2))
    nodes = {n: frozenset(c for c in cpus if cpus[c].node == n) for n in range(sockets)}
    max_queues = draw(st.integers(1, 16))
    current = draw(st.integers(1, max_queues))
    irqs = tuple(QueueIrq(100 + q, f"eth1-TxRx-{q}", q, "rxtx", online) for q in range(current))
    nic = Nic(
        name="eth1",
        driver="ixgbe",
        bus_info="0000:01:00.0",
        numa_node=draw(st.sampled_from([None, *range(sockets)])),
        rx_queues=dict.fromkeys(range(current), 0),
        tx_queues=dict.fromkeys(range(current), 0),
        irqs=irqs,
        channels=Channels(max_combined=max_queues, combined=current),
        rings=None,
        features={},
        indirection=None,
        flow_hash={},
    )
    topo = Topology(online, frozenset(), isolated, cpus, nodes)
    facts = HostFacts(topo, {"eth1": nic}, {}, Irqbalance(installed=True))
    profile = NicProfile(
        housekeeping_cpus=tuple(sorted(housekeeping)),
        use_smt_siblings=draw(st.booleans()),
        rps=draw(st.sampled_from(["auto", "on", "off"])),
    )
    return facts, profile


@settings(max_examples=300, deadline=None)
@given(hosts())
def test_invariants(case: tuple[HostFacts, NicProfile]) -> None:
    facts, profile = case
    topo = facts.topology
    usable = topo.online - set(profile.housekeeping_cpus) - topo.isolated
    try:
        plan = make_plan("lb1", profile, ["eth1"], facts)
    except PlanError as e:  # the only refusal possible here: nothing left for the NIC
        assert not usable, e
        assert "profile.housekeeping_cpus: leaves no CPU" in str(e)
        return
    p = plan.nics[0]
    nic = facts.nics["eth1"]
    assert 1 <= p.queues <= nic.channels.max_combined
    assert set(p.cpus) <= usable
    # Groups partition the planned CPUs when queues < CPUs; each queue's IRQ is its group's head.
    if p.queues < len({c for g in p.groups for c in g}):
        flat = [c for g in p.groups for c in g]
        assert len(flat) == len(set(flat))
    assert all(g[0] == c for g, c in zip(p.groups, p.cpus, strict=True))
    # Without SMT siblings, no two queues' CPUs share a core unless queues wrap.
    if not profile.use_smt_siblings and len(set(p.cpus)) == len(p.cpus):
        cores = [topo.cpus[c].core for c in p.cpus]
        assert len(cores) == len(set(cores))
    # IRQs only for queues that exist after the change, each on its queue's CPU.
    assert p.irq_affinity == {100 + q: p.cpus[q] for q in range(min(p.queues, len(nic.irqs)))}
    # RPS inside the queue's group; XPS covers every online CPU.
    for q, m in p.rps.items():
        assert cpus_of(m) <= set(p.groups[q])
    if p.xps:
        assert set().union(*(cpus_of(m) for m in p.xps.values())) == topo.online
