"""The Ansible side of a render: inventory, variables, the site playbook, ansible.cfg.

Every value taken from the site inventory is written with YAML's ``!unsafe`` tag:
Ansible then never templates it, so a ``{{ lookup('pipe', ...) }}`` in a field
stays text instead of running on the controller. The only plain strings in the
rendered variables are the project's own templates (``lb_render_host_dir``).
"""

from __future__ import annotations

from typing import Any

import yaml

from lbappliance.inventory.derived import (
    drain_wait,
    effective_controller,
    frontend_vips,
    return_wait,
)
from lbappliance.inventory.schema import Inventory, Node
from lbappliance.paths import RuntimePaths, project_dir
from lbappliance.render import haproxy, network

# Where a node's rendered files are, for the roles; a template Ansible expands.
RENDER_HOST_DIR = "{{ inventory_dir }}/../hosts/{{ inventory_hostname }}"


class Unsafe(str):
    """A string Ansible must never template (dumped as ``!unsafe``)."""


def inert(value: Any) -> Any:
    """``value`` with every string in it (mapping keys aside) made :class:`Unsafe`."""
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, dict):
        return {k: inert(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [inert(v) for v in value]
    return value


class Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes :class:`Unsafe` strings with the ``!unsafe`` tag."""


Dumper.add_representer(Unsafe, lambda dumper, s: dumper.represent_scalar("!unsafe", str(s)))


def site_vars(inv: Inventory, paths: RuntimePaths) -> dict[str, Any]:
    """group_vars/all.yml: facts every role and play needs, derived from the model."""
    return {**inert(_site_facts(inv, paths)), "lb_render_host_dir": RENDER_HOST_DIR}


def _site_facts(inv: Inventory, paths: RuntimePaths) -> dict[str, Any]:
    return {
        "lb_site": inv.site.name,
        # The deploy's drain and undrain wait as long as `lbappliance maintenance --wait`.
        "lb_drain_wait": drain_wait(inv),
        "lb_return_wait": return_wait(inv),
        "lb_haproxy_socket": paths.haproxy_socket,
        "lb_haproxy_stats_port": haproxy.STATS_PORT,
        "lb_haproxy_certificates": [
            {"name": fe.tls.certificate, "self_signed": fe.tls.self_signed}
            for fe in inv.l7.frontends
            if fe.tls
        ],
        "lb_maintenance_file": paths.maintenance_file,
        "lb_vrrp_demote_file": paths.vrrp_demote_file,
        "lb_dataplane_enabled": any(s.dataplane == "xdp" for s in inv.l4_services),
        "lb_ipvs_enabled": any(s.dataplane == "ipvs" for s in inv.l4_services),
        "lb_bgp_peers": [str(p.address) for p in inv.bgp.peers],
        "lb_bfd_enabled": inv.bgp.bfd.enabled,
        "lb_weights_enabled": any(effective_controller(inv, p).enabled for p in inv.l7.pools),
        "lb_health_agent_metrics_port": inv.health_agent.metrics_port,
        "lb_l7_listeners": sorted(
            {f"{vip}:{fe.port}" for fe in inv.l7.frontends for vip in frontend_vips(fe)}
        ),
    }


def host_vars(inv: Inventory, node: Node) -> dict[str, Any]:
    return inert(
        {
            "ansible_host": str(node.management_address),
            "ansible_user": node.ssh_user,
            "ansible_port": node.ssh_port,
            "lb_node_maintenance": node.maintenance,
            "lb_nic_enabled": node.nic_tuning,
            "lb_network_managed": node.network_managed,
            "lb_network_files": [network.target(i) for i in node.interfaces]
            if node.network_managed
            else [],
            "lb_network_expected": network.expected(inv, node),
        }
    )


def hosts(inv: Inventory) -> dict[str, Any]:
    return inert(
        {
            "all": {
                "children": {
                    "lb_nodes": {"hosts": {n.name: None for n in inv.nodes}},
                },
                "vars": {"lb_site": inv.site.name},
            }
        }
    )


def playbook_context(inv: Inventory) -> dict[str, Any]:
    root = project_dir()
    playbook = f"{root / 'playbooks' / 'site.yml'}"
    return {
        "playbook": playbook,
        "roles_path": f"{root / 'roles'}",
        # The play itself goes through the YAML dumper: its name holds the site name.
        "play": inert(
            [
                {
                    "name": f"Converge site {inv.site.name}",
                    "ansible.builtin.import_playbook": playbook,
                }
            ]
        ),
    }
