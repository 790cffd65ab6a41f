"""Where things are: the tool's own files on the controller, and every path and
name on a node.

The node side is spelled here once. The renderer, the node-side daemons and
tools, and the CLI take their paths from here; the roles' defaults and argument
specs are rendered from it (``lbappliance.render.role_defaults``), and
``tests/deploy/test_node_paths.py`` fails when a role was not regenerated.

The controller side: a wheel carries templates, roles, playbooks and bpf under
``lbappliance/_project``; an editable install or a checkout uses the repository
root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --- the node ---------------------------------------------------------------------------

NODE_VENV = "/opt/lbappliance/venv"
"""The venv lb_base installs the package (agent, controller, ExaBGP, CLI) into."""
NODE_PYTHON = f"{NODE_VENV}/bin/python"
NODE_CLI = f"{NODE_VENV}/bin/lbappliance"
"""The node helper: the ``lbappliance`` CLI the roles and units run on a node."""

AGENT_CONFIG = "health-agent.json"
WEIGHTS_CONFIG = "weights.json"
WEIGHTS_HISTORY = "weights-history.json"
NIC_CONFIG = "nic.json"
DATAPLANE_SPEC = "dataplane.json"

NODE_BPF_DIR = "/usr/local/lib/lbappliance/bpf"
"""The XDP sources and compiled objects lb_dataplane installs."""
NODE_BPF_OBJECT = f"{NODE_BPF_DIR}/xdp_lb.o"
NODE_BPF_PINS = "/sys/fs/bpf/lbappliance"
"""The bpffs directory of the data plane's pins (gone at reboot)."""


@dataclass(frozen=True)
class RuntimePaths:
    """Where daemons keep config, sockets and state on a node.

    Production nodes use the defaults. The namespace lab runs several nodes on
    one filesystem, so it renders with a per-node prefix instead.
    """

    prefix: str = ""

    def _p(self, path: str) -> str:
        return f"{self.prefix}{path}"

    @property
    def haproxy_socket(self) -> str:
        return self._p("/run/haproxy/admin.sock")

    @property
    def haproxy_certs(self) -> str:
        return self._p("/etc/haproxy/certs")

    @property
    def state_dir(self) -> str:
        return self._p("/var/lib/lbappliance")

    @property
    def run_dir(self) -> str:
        return self._p("/run/lbappliance")

    @property
    def etc_dir(self) -> str:
        return self._p("/etc/lbappliance")

    @property
    def maintenance_file(self) -> str:
        return f"{self.state_dir}/maintenance"

    @property
    def vrrp_demote_file(self) -> str:
        return f"{self.state_dir}/vrrp-demote"

    @property
    def agent_config(self) -> str:
        return f"{self.etc_dir}/{AGENT_CONFIG}"

    @property
    def weights_config(self) -> str:
        return f"{self.etc_dir}/{WEIGHTS_CONFIG}"

    @property
    def weights_history(self) -> str:
        return f"{self.run_dir}/{WEIGHTS_HISTORY}"

    @property
    def nic_config(self) -> str:
        return f"{self.etc_dir}/{NIC_CONFIG}"

    @property
    def dataplane_spec(self) -> str:
        return f"{self.etc_dir}/{DATAPLANE_SPEC}"


NODE = RuntimePaths()
"""A production node's paths."""


def target(path: str) -> str:
    """A node path as a render target: relative to ``hosts/<node>/`` (and to ``/``)."""
    return path.lstrip("/")


# --- the controller ---------------------------------------------------------------------


def project_dir() -> Path:
    packaged = Path(__file__).parent / "_project"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


def templates_dir() -> Path:
    return project_dir() / "templates"
