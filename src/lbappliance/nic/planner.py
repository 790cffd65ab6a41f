"""The planner: host facts + tuning profile -> Plan. Pure: reads nothing, changes nothing."""

from __future__ import annotations

from collections.abc import Sequence

from lbappliance.nic.cpulist import format_cpulist, mask_of
from lbappliance.nic.errors import PlanError, Problem
from lbappliance.nic.facts import HostFacts, Nic, Topology
from lbappliance.nic.plan import IrqbalancePlan, NicPlan, Plan
from lbappliance.nic.profile import NicProfile

XDP_OFFLOADS = (("large-receive-offload", "lro"), ("rx-gro-hw", "rx-gro-hw"))
FLOW_HASH_FIELDS = "sdfn"  # src/dst IP, src/dst port


def make_plan(node: str, profile: NicProfile, interfaces: Sequence[str], facts: HostFacts) -> Plan:
    """Plan the given interfaces of ``node``; raise PlanError naming every bad field."""
    topo = facts.topology
    problems = _check_cpu_lists(node, profile, topo)
    cpu_lists_ok = not problems
    nics: list[NicPlan] = []
    for i, name in enumerate(interfaces):
        nic = facts.nics.get(name)
        if nic is None:
            have = ", ".join(sorted(facts.nics)) or "none read"
            problems.append(Problem(node, f"interfaces[{i}]", f"{name} does not exist ({have})"))
            continue
        if cpu_lists_ok:
            try:
                nics.append(_plan_nic(node, profile, nic, topo))
            except PlanError as e:
                problems.extend(e.problems)
    if problems:
        raise PlanError(problems)
    ib = facts.irqbalance
    plan = Plan(
        node=node,
        nics=tuple(nics),
        sysctls={
            "net.core.netdev_max_backlog": profile.netdev_max_backlog,
            "net.core.netdev_budget": profile.netdev_budget,
            "net.core.busy_poll": profile.busy_poll_us,
            "net.core.busy_read": profile.busy_poll_us,
        },
        irqbalance=IrqbalancePlan(
            mode=profile.irqbalance,
            installed=ib.installed,
            banned_irqs=tuple(sorted(irq for n in nics for irq in n.irq_affinity)),
            banned_cpus=tuple(sorted({c for n in nics for g in n.groups for c in g})),
        ),
    )
    validate_plan(plan, topo)
    return plan


def validate_plan(plan: Plan, topo: Topology) -> None:
    """Refuse a plan that points work at offline CPUs or leaves a NIC with no queue on one."""
    problems: list[Problem] = []
    online = topo.online
    for n in plan.nics:
        where = f"plan.{n.name}"
        if n.queues < 1 or not any(c in online for c in n.cpus):
            problems.append(Problem(plan.node, f"{where}.queues", "no queue on an online CPU"))
        bad = {c for c in n.irq_affinity.values() if c not in online}
        if bad:
            problems.append(
                Problem(plan.node, f"{where}.irq_affinity", f"offline CPUs {format_cpulist(bad)}")
            )
        for field, masks in (("rps", n.rps), ("xps", n.xps)):
            bad_mask = [m for m in masks.values() if m & ~mask_of(online)]
            if bad_mask:
                problems.append(Problem(plan.node, f"{where}.{field}", "mask names offline CPUs"))
    if problems:
        raise PlanError(problems)


def _check_cpu_lists(node: str, profile: NicProfile, topo: Topology) -> list[Problem]:
    problems: list[Problem] = []
    online = topo.online
    for field in ("housekeeping_cpus", "irq_cpus"):
        cpus = getattr(profile, field) or ()
        offline = sorted(set(cpus) - online)
        if offline:
            problems.append(
                Problem(
                    node,
                    f"profile.{field}",
                    f"names CPUs that are not online: {format_cpulist(offline)}"
                    f" (online: {format_cpulist(online)})",
                )
            )
    overlap = set(profile.irq_cpus or ()) & set(profile.housekeeping_cpus)
    if overlap:
        problems.append(
            Problem(
                node,
                "profile.irq_cpus",
                f"names housekeeping CPUs {format_cpulist(overlap)}; NIC IRQs never go there",
            )
        )
    return problems


def usable_cpus(profile: NicProfile, nic: Nic, topo: Topology) -> tuple[list[int], list[str]]:
    """CPUs for this NIC's queues in the order queues get them, and notes on any fallback.

    One thread per physical core on the NIC's NUMA node, leaving out housekeeping and isolated
    CPUs and every core that shares a thread with them; with ``use_smt_siblings`` all threads
    of those cores, first threads first. ``irq_cpus`` overrides all of this.
    """
    if profile.irq_cpus:
        return sorted(profile.irq_cpus), []
    notes: list[str] = []
    reserved = set(profile.housekeeping_cpus) | topo.isolated
    base = [c for c in sorted(topo.online) if c not in reserved]
    multi_node = sum(1 for cpus in topo.nodes.values() if cpus & topo.online) > 1
    if nic.numa_node is not None and multi_node:
        local = [c for c in base if topo.cpus[c].node == nic.numa_node]
        if local:
            base = local
        else:
            notes.append(f"no usable CPU on NUMA node {nic.numa_node}; using other nodes' CPUs")
    elif nic.numa_node is None and multi_node:
        notes.append("NUMA node unknown (numa_node -1); using CPUs of every node")
    if profile.use_smt_siblings:
        return sorted(base, key=lambda c: (sorted(topo.cpus[c].siblings).index(c), c)), notes
    whole_cores = [
        c for c in base if c == min(topo.cpus[c].siblings) and topo.cpus[c].siblings <= set(base)
    ]
    if whole_cores or not base:
        return whole_cores, notes
    notes.append("every usable core shares a thread with a reserved CPU; using SMT siblings")
    return base, notes


def _split(cpus: list[int], n: int) -> list[tuple[int, ...]]:
    """n contiguous groups of CPUs, sizes differing by at most one, larger groups first."""
    size, extra = divmod(len(cpus), n)
    groups: list[tuple[int, ...]] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(tuple(cpus[start:end]))
        start = end
    return groups


def _plan_nic(node: str, profile: NicProfile, nic: Nic, topo: Topology) -> NicPlan:
    cpus, notes = usable_cpus(profile, nic, topo)
    if not cpus:
        raise PlanError(
            [
                Problem(
                    node,
                    "profile.housekeeping_cpus",
                    f"leaves no CPU for {nic.name} (online {format_cpulist(topo.online)},"
                    f" housekeeping {format_cpulist(profile.housekeeping_cpus) or '-'},"
                    f" isolated {format_cpulist(topo.isolated) or '-'})",
                )
            ]
        )
    ch = nic.channels
    mode = ch.mode if ch else None
    if mode and ch:
        maximum = ch.maximum or 1
        if profile.queues == "auto":
            n = min(len(cpus), maximum)
        elif profile.queues > maximum:
            raise PlanError(
                [
                    Problem(
                        node,
                        "profile.queues",
                        f"{nic.name} has at most {maximum} {mode} queues;"
                        f" the profile asks for {profile.queues}",
                    )
                ]
            )
        else:
            n = profile.queues
        n_tx = n
    else:
        n = max(len(nic.rx_queues), 1)
        n_tx = len(nic.tx_queues)
        if profile.queues != "auto" and profile.queues != n:
            raise PlanError(
                [
                    Problem(
                        node,
                        "profile.queues",
                        f"{nic.name} has {n} queues and its driver cannot change that;"
                        f" the profile asks for {profile.queues}",
                    )
                ]
            )
        notes.append("queue count cannot be changed (no ethtool -l channels)")
    # Fewer queues than CPUs: each queue gets a contiguous group (its IRQ CPU first, RPS to all);
    # more queues than CPUs: queues wrap round the CPUs.
    groups = _split(cpus, n) if n < len(cpus) else [(cpus[i % len(cpus)],) for i in range(n)]
    queue_cpu = tuple(g[0] for g in groups)

    irq_affinity = {irq.irq: queue_cpu[irq.queue] for irq in nic.irqs if irq.queue < n}
    if not nic.irqs:
        notes.append("no per-queue IRQs found; steering is RPS/XPS only")

    rps_on = profile.rps == "on" or (profile.rps == "auto" and n < len(cpus))
    rps = {q: mask_of(groups[q]) if rps_on else 0 for q in range(n)}

    xps: dict[int, int] = {}
    if profile.xps and n_tx > 1 and all(m is not None for m in nic.tx_queues.values()):
        xps = _xps(groups[:n_tx], topo)
    elif profile.xps and n_tx > 1:
        notes.append("no xps_cpus in sysfs; XPS left alone")

    flow_hash: dict[str, str] = {}
    hashing = nic.features.get("receive-hashing")
    if profile.rx_flow_hash and not (hashing and hashing.fixed and not hashing.on):
        flow_hash = {proto: FLOW_HASH_FIELDS for proto in nic.flow_hash}

    rings, ring_notes = _rings(node, profile, nic)
    notes.extend(ring_notes)

    features_off: list[str] = []
    if profile.disable_offloads_for_xdp:
        for long, short in XDP_OFFLOADS:
            feature = nic.features.get(long)
            if feature is None:
                continue
            if not feature.fixed:
                features_off.append(short)
            elif feature.on:
                notes.append(f"{long} is on and fixed; XDP may refuse to attach")

    return NicPlan(
        name=nic.name,
        driver=nic.driver,
        numa_node=nic.numa_node,
        queues=n,
        channels=(mode, n) if mode else None,
        cpus=queue_cpu,
        groups=tuple(groups),
        irq_affinity=irq_affinity,
        rps=rps,
        xps=xps,
        indirection_equal=n if nic.indirection is not None else None,
        flow_hash=flow_hash,
        rings=rings,
        features_off=tuple(features_off),
        notes=tuple(notes),
    )


def _xps(groups: list[tuple[int, ...]], topo: Topology) -> dict[int, int]:
    """Each tx queue gets its group's CPUs; every other online CPU (housekeeping, isolated,
    other-node CPUs transmit too) joins its SMT sibling's queue, else one round-robin."""
    owner: dict[int, int] = {}
    for q, group in enumerate(groups):
        for cpu in group:
            owner.setdefault(cpu, q)
    assigned = {q: set(group) for q, group in enumerate(groups)}
    spare = 0
    for cpu in sorted(topo.online - owner.keys()):
        q = next((owner[s] for s in sorted(topo.cpus[cpu].siblings) if s in owner), None)
        if q is None:
            q = spare % len(groups)
            spare += 1
        assigned[q].add(cpu)
    return {q: mask_of(cpus) for q, cpus in assigned.items()}


def _rings(node: str, profile: NicProfile, nic: Nic) -> tuple[dict[str, int], list[str]]:
    rings: dict[str, int] = {}
    notes: list[str] = []
    for kind in ("rx", "tx"):
        want = getattr(profile, f"ring_{kind}")
        if want is None:
            continue
        maximum = getattr(nic.rings, f"max_{kind}") if nic.rings else None
        if maximum is None:
            notes.append(f"ring_{kind}: {nic.name} does not report ring sizes; left alone")
            continue
        size = maximum if want == "max" else want
        if size > maximum:
            raise PlanError(
                [
                    Problem(
                        node,
                        f"profile.ring_{kind}",
                        f"{nic.name} {kind} ring is at most {maximum}; the profile asks for {size}",
                    )
                ]
            )
        rings[kind] = size
    return rings, notes
