"""NIC RSS/IRQ tuning: read a host's facts, plan queues and steering, apply idempotently."""

from lbappliance.nic.applier import Applier, ApplyResult, apply_nic_config
from lbappliance.nic.errors import PlanError, Problem
from lbappliance.nic.facts import HostFacts
from lbappliance.nic.plan import NicPlan, Plan
from lbappliance.nic.planner import make_plan, validate_plan
from lbappliance.nic.profile import NicConfig, NicProfile
from lbappliance.nic.reader import gather_facts

__all__ = [
    "Applier",
    "ApplyResult",
    "HostFacts",
    "NicConfig",
    "NicPlan",
    "NicProfile",
    "Plan",
    "PlanError",
    "Problem",
    "apply_nic_config",
    "gather_facts",
    "make_plan",
    "validate_plan",
]
