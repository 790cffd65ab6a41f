"""What a lab offers a test, whichever lab it is.

``Lab`` is what every lab implements: the namespace lab (``netns.py``), the
container lab (``podman.py``) and a lab of virtual machines. ``MachineLab`` adds
what labs of whole machines have (hosts that boot, run systemd and are deployed
by Ansible over SSH): the lifecycle, killing and booting a host, the deploy's
environment. Host setup both share lives in ``hostsetup.py``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lbappliance.inventory import Site
from lbappliance.lab.topology import Topology


class Lab(Protocol):
    """A running lab of the lab topology."""

    site: Site
    topology: Topology

    def exec(
        self,
        host: str,
        *cmd: str,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` on ``host``; text output captured."""
        ...

    def fib_nexthops(self, prefix: str) -> list[str]:
        """Next hops of ``prefix`` in the router's kernel FIB (ECMP gives several)."""
        ...

    def birdc(self, *args: str) -> str:
        """The router's ``birdc`` with ``args``; its output."""
        ...

    def vrrp_holders(self, vip: str) -> list[str]:
        """LB nodes that hold ``vip`` now (exactly one when VRRP is healthy)."""
        ...

    def cut_links(self, host: str) -> float:
        """Pull every cable of ``host`` at the switch side, the uplink's first: to its
        neighbours the host is dead, its own links lose carrier, its processes keep
        running. Returns the monotonic time just before the first cable went down."""
        ...

    def set_backend(self, backend: str, **values: Any) -> None:
        """Change a running lab backend (latency_ms, error_rate, health_status)."""
        ...

    def inside(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Run the block with this thread in ``host``'s network namespace."""
        ...


class HostState(Protocol):
    """One host as ``MachineLab.status`` reports it."""

    name: str
    kind: str
    state: str
    addresses: list[str]
    services: dict[str, str]


@dataclass
class HostStatus:
    """The ``HostState`` the container and VM labs both report."""

    name: str
    kind: str
    state: str
    addresses: list[str]
    services: dict[str, str]


class MachineLab(Lab, Protocol):
    """A lab of whole machines (containers, VMs) that ``lbappliance deploy`` provisions."""

    def up(self, progress: Callable[[str], None] = ...) -> dict[str, float]:
        """Build what is missing and start what is stopped; step timings (seconds)."""
        ...

    def down(self) -> list[str]:
        """Remove everything the lab made; what was removed."""
        ...

    def status(self) -> Sequence[HostState]:
        """Every host: state, addresses, daemons."""
        ...

    def kill(self, host: str) -> None:
        """Kill ``host`` outright (every process dies at once)."""
        ...

    def start(self, host: str) -> None:
        """Boot a stopped or killed host again; returns once it answers."""
        ...

    def deploy_env(self) -> dict[str, str]:
        """Environment ``lbappliance deploy --site lab`` needs to reach the nodes."""
        ...
