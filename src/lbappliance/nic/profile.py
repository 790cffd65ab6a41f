"""The NIC tuning profile (from the site inventory) and the per-node config file nic.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from lbappliance.nic.errors import PlanError, Problem

Ring = int | Literal["max"] | None


@dataclass(frozen=True)
class NicProfile:
    """How to spread a node's NIC receive work; see docs/nic.md for each field."""

    queues: int | Literal["auto"] = "auto"
    housekeeping_cpus: tuple[int, ...] = (0,)
    use_smt_siblings: bool = False
    irq_cpus: tuple[int, ...] | None = None
    rps: Literal["auto", "on", "off"] = "auto"
    xps: bool = True
    ring_rx: Ring = None
    ring_tx: Ring = None
    rx_flow_hash: bool = True
    disable_offloads_for_xdp: bool = True
    irqbalance: Literal["stop", "ban", "leave"] = "ban"
    netdev_max_backlog: int = 16384
    netdev_budget: int = 600
    busy_poll_us: int = 0

    def __post_init__(self) -> None:
        for name in ("housekeeping_cpus", "irq_cpus"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_dict(cls, data: dict[str, Any], node: str = "?") -> NicProfile:
        """Build a profile, reporting every bad field at once (missing fields take defaults)."""
        problems: list[Problem] = []
        known = {f.name for f in fields(cls)}

        def bad(name: str, message: str) -> None:
            problems.append(Problem(node, f"profile.{name}", message))

        if not isinstance(data, dict):
            raise PlanError([Problem(node, "profile", "must be a mapping")])
        for name in sorted(set(data) - known):
            bad(name, f"unknown field (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in known:
                continue
            checked = _check(name, value)
            if isinstance(checked, _Bad):
                bad(name, checked.message)
            else:
                values[name] = checked
        if problems:
            raise PlanError(problems)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("housekeeping_cpus", "irq_cpus"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out


@dataclass(frozen=True)
class _Bad:
    message: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(name: str, value: Any) -> Any:
    """Return the normalised value of one profile field, or _Bad."""
    if name == "queues":
        if value == "auto" or (_is_int(value) and value >= 1):
            return value
        return _Bad(f'must be "auto" or an integer >= 1, got {value!r}')
    if name in ("housekeeping_cpus", "irq_cpus"):
        if value is None and name == "irq_cpus":
            return None
        if not isinstance(value, list | tuple) or not all(_is_int(c) and c >= 0 for c in value):
            return _Bad(f"must be a list of CPU numbers, got {value!r}")
        if name == "irq_cpus" and not value:
            return _Bad("must name at least one CPU (or be null for automatic)")
        if len(set(value)) != len(value):
            return _Bad(f"lists a CPU twice: {value!r}")
        return tuple(value)
    if name in ("use_smt_siblings", "xps", "rx_flow_hash", "disable_offloads_for_xdp"):
        return value if isinstance(value, bool) else _Bad(f"must be true or false, got {value!r}")
    if name == "rps":
        return (
            value if value in ("auto", "on", "off") else _Bad(f"must be auto, on or off: {value!r}")
        )
    if name == "irqbalance":
        if value in ("stop", "ban", "leave"):
            return value
        return _Bad(f"must be stop, ban or leave, got {value!r}")
    if name in ("ring_rx", "ring_tx"):
        if value is None or value == "max" or (_is_int(value) and value >= 1):
            return value
        return _Bad(f'must be null, "max" or an integer >= 1, got {value!r}')
    if name in ("netdev_max_backlog", "netdev_budget"):
        return (
            value if _is_int(value) and value >= 1 else _Bad(f"must be an integer >= 1: {value!r}")
        )
    if name == "busy_poll_us":
        return (
            value if _is_int(value) and value >= 0 else _Bad(f"must be an integer >= 0: {value!r}")
        )
    raise AssertionError(name)


@dataclass(frozen=True)
class NicConfig:
    """Contents of /etc/lbappliance/nic.json: which node, which interfaces, which profile."""

    node: str
    interfaces: tuple[str, ...]
    profile: NicProfile = field(default_factory=NicProfile)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interfaces", tuple(self.interfaces))

    @classmethod
    def from_dict(cls, data: Any) -> NicConfig:
        if not isinstance(data, dict):
            raise PlanError([Problem("?", "(top level)", "nic.json must hold a JSON object")])
        node = data.get("node")
        if not isinstance(node, str) or not node:
            raise PlanError([Problem("?", "node", f"must be a non-empty string, got {node!r}")])
        problems = [
            Problem(node, name, "unknown field")
            for name in sorted(set(data) - {"node", "interfaces", "profile"})
        ]
        interfaces = data.get("interfaces")
        if (
            not isinstance(interfaces, list)
            or not interfaces
            or not all(isinstance(i, str) and i for i in interfaces)
        ):
            problems.append(
                Problem(node, "interfaces", f"must be a non-empty list of names: {interfaces!r}")
            )
        elif len(set(interfaces)) != len(interfaces):
            problems.append(Problem(node, "interfaces", f"names an interface twice: {interfaces}"))
        try:
            profile = NicProfile.from_dict(data.get("profile", {}), node)
        except PlanError as e:
            problems.extend(e.problems)
        if problems:
            raise PlanError(problems)
        return cls(node, tuple(interfaces), profile)

    @classmethod
    def from_json(cls, text: str, source: str = "nic.json") -> NicConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError([Problem("?", "(file)", f"{source}: not valid JSON: {e}")]) from e
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> NicConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read(), path)

    def to_json(self) -> str:
        """Canonical bytes for nic.json (sorted keys, two-space indent, final newline)."""
        data = {
            "node": self.node,
            "interfaces": list(self.interfaces),
            "profile": self.profile.to_dict(),
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
