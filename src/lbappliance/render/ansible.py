"""The Ansible side of a render: inventory, variables, the site playbook, ansible.cfg."""

from __future__ import annotations

from typing import Any

from ..inventory.derived import RuntimePaths, effective_controller, frontend_vips
from ..inventory.schema import Inventory, Node
from ..paths import project_dir
from . import haproxy, network


def site_vars(inv: Inventory, paths: RuntimePaths) -> dict[str, Any]:
    """group_vars/all.yml: facts every role and play needs, derived from the model."""
    policy = inv.l7.policy
    return {
        "lb_site": inv.site.name,
        "lb_render_host_dir": "{{ inventory_dir }}/../hosts/{{ inventory_hostname }}",
        "lb_drain_timeout": int(policy.drain_timeout),
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
    return {
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


def hosts(inv: Inventory) -> dict[str, Any]:
    return {
        "all": {
            "children": {
                "lb_nodes": {"hosts": {n.name: None for n in inv.nodes}},
            },
            "vars": {"lb_site": inv.site.name},
        }
    }


def playbook_context(inv: Inventory) -> dict[str, Any]:
    root = project_dir()
    return {
        "playbook": f"{root / 'playbooks' / 'site.yml'}",
        "roles_path": f"{root / 'roles'}",
    }
