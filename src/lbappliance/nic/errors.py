"""Errors that name the node and the profile field an operator has to fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    node: str
    field: str  # e.g. "profile.queues", "interfaces[1]"
    message: str

    def __str__(self) -> str:
        return f"node {self.node}: {self.field}: {self.message}"


class PlanError(Exception):
    """A profile or plan that cannot be applied; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
