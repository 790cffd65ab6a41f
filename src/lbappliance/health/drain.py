"""What a node's own report says about taking it out of service and back.

The node helper (``health/node.py``) adds these verdicts to every report it prints,
so ``lbappliance maintenance``, ``lbappliance status`` and the deploy playbooks
(``playbooks/tasks/plan.yml``, ``drain.yml``, ``undrain.yml``) read one meaning of
each instead of deciding it again from the raw fields:

- ``serving``: the VIPs the node's health agent announces as a full path (state
  UP or DEGRADED, ``machine.SERVING``), as its running agent's fresh state file
  says. A node whose ``serving`` is empty is not counted on for any traffic; the
  last node with a non-empty one is not taken out of service.
- ``serving_unconfirmed``: the VIPs the state file of an agent that is not
  running (stopped, or no longer writing) still lists as serving, each with why
  it is not believed. ExaBGP may still announce them, so the node itself is
  drained as if it served them; but no peer counts on them (``serving`` is
  empty), and the refusals to drain the last serving node say so.
- ``drain_pending``: what still sends or holds traffic on a node entering
  maintenance: the agent not running, any route still announced (GRACEFUL_SHUTDOWN
  included), a VRRP group still MASTER here, client sessions in flight in HAProxy.
  Empty: drained.
- ``return_pending``: what is not serving yet on a node leaving maintenance: the
  agent not running, or a VIP that is not UP/DEGRADED and acknowledged by ExaBGP,
  unless it is DOWN for a health reason (waiting would not bring it back). Empty:
  returned.
- ``unhealthy``: those VIPs that stay withdrawn, unhealthy (with the failing
  signals' reasons).

Every function takes the report's fields (``agent``, ``vrrp``, ``haproxy``) and
nothing else: pure, so tests drive them with report fixtures.
"""

from __future__ import annotations

from typing import Any

from lbappliance.health.machine import SERVING, State

Report = dict[str, Any]


def _vips(report: Report) -> dict[str, dict[str, Any]]:
    return report.get("agent", {}).get("vips") or {}


def _agent_down(report: Report) -> list[str]:
    agent = report.get("agent", {})
    if agent.get("running"):
        return []
    return [f"health agent not running ({agent.get('error') or 'stale state'})"]


def _claimed(report: Report) -> list[str]:
    """The VIPs the state file lists as announced as a full path, fresh or not."""
    return [prefix for prefix, v in _vips(report).items() if v.get("state") in SERVING]


def serving(report: Report) -> list[str]:
    """The VIPs the node's running health agent announces as a full path."""
    return [] if _agent_down(report) else _claimed(report)


def serving_unconfirmed(report: Report) -> list[str]:
    """The VIPs a stale state file lists as serving, each with why it is not believed."""
    if not (down := _agent_down(report)):
        return []
    vips, node = _vips(report), report.get("node") or "this node"
    return [
        f"{prefix} ({vips[prefix]['state']} in {node}'s state file; {down[0]})"
        for prefix in _claimed(report)
    ]


def drain_pending(report: Report) -> list[str]:
    """What still sends or holds traffic on a node entering maintenance."""
    pending = _agent_down(report)
    for prefix, v in _vips(report).items():
        if v.get("announced"):
            pending.append(f"{prefix} still announced ({v['state']}: {v['reason']})")
    for g in report.get("vrrp") or []:
        if g["state"] == "MASTER":
            pending.append(f"VRRP {g['name']} still MASTER here ({', '.join(g['vips'])})")
    h = report.get("haproxy", {})
    if "error" not in h and h.get("sessions"):
        pending.append(f"{h['sessions']} client sessions in flight")
    return pending


def _stays_down(v: dict[str, Any]) -> bool:
    """Withdrawn for a health reason: only the backends' recovery brings it back."""
    return v.get("state") == State.DOWN and v.get("health") == "fail"


def return_pending(report: Report) -> list[str]:
    """What is healthy but not serving yet on a node leaving maintenance."""
    if down := _agent_down(report):
        return down
    return [
        f"{prefix} not serving yet ({v['state']}: {v['reason']})"
        for prefix, v in _vips(report).items()
        if not (v.get("state") in SERVING and v.get("announced")) and not _stays_down(v)
    ]


def unhealthy(report: Report) -> list[str]:
    """VIPs that stay withdrawn for a health reason (nothing to wait for)."""
    out = []
    for prefix, v in _vips(report).items():
        if _stays_down(v):
            signals = (v.get("signals") or {}).values()
            why = "; ".join(c["reason"] for c in signals if c["health"] == "fail")
            out.append(f"{prefix} stays withdrawn, unhealthy: {why}")
    return out


def verdicts(report: Report) -> dict[str, list[str]]:
    """The verdicts of a report, as the node helper adds them to it."""
    return {
        "serving": serving(report),
        "serving_unconfirmed": serving_unconfirmed(report),
        "drain_pending": drain_pending(report),
        "return_pending": return_pending(report),
        "unhealthy": unhealthy(report),
    }
