"""The deploy's drain and undrain (playbooks/tasks/drain.yml, undrain.yml) on the namespace lab.

The tasks run with ansible-playbook against lb1 with the local connection; the node
helper they call is the one `lbappliance maintenance` runs, under ``ip netns exec``
with lb1's runtime prefix (given as extra vars: the lab's paths are not the node's
defaults). Real ExaBGP, BIRD, HAProxy and health agents: the router must drop lb1's
path during the drain and take it back after the undrain. The peers' check runs
lb1's helper here (extra vars are the same for every host), so it is not tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbappliance.inventory import load_site
from lbappliance.inventory.derived import drain_wait, return_wait
from lbappliance.lab.netns import NetnsLab
from tests.health.labtools import uplink

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WEB = "198.51.100.10/32"


def test_drain_moves_lb1_out_then_undrain_brings_it_back(inventory_copy: Path) -> None:
    site = inventory_copy / "sites" / "lab.yml"
    site.write_text(site.read_text() + "\nhealth_agent:\n  maintenance_drain: 3s\n")
    model = load_site(inventory_copy, "lab").model
    with NetnsLab.create(inventory=inventory_copy) as lab:
        lab.start_all()
        lb1, lb2 = uplink(lab, "lb1"), uplink(lab, "lb2")
        lab.wait(lambda: lab.fib_nexthops(WEB) == sorted([lb1, lb2]), 30, "ECMP over both")
        config = lab.node_root("lb1") / "etc/lbappliance/health-agent.json"
        agent = json.loads(config.read_text())
        play = lab.workdir / "drain-play"
        play.mkdir()
        (play / "hosts.yml").write_text(
            json.dumps({"all": {"children": {"lb_nodes": {"hosts": {"lb1": {}, "lb2": {}}}}}})
        )
        helper = ["ip", "netns", "exec", lab.ns("lb1"), sys.executable]
        helper += ["-m", "lbappliance.health.node", "--config", str(config)]
        extra = {
            "lb_deploy_node_helper": helper,
            "lb_deploy_agent_config_file": str(config),
            "lb_render_host_dir": "",
            "lb_maintenance_file": agent["maintenance_file"],
            "lb_vrrp_demote_file": agent["vrrp_demote_file"],
            # As rendered into group_vars (and as `lbappliance maintenance --wait` waits).
            "lb_drain_wait": drain_wait(model),
            "lb_return_wait": return_wait(model),
            "lb_deploy_serving": True,
            "lb_deploy_served_before": [WEB],
            "ansible_python_interpreter": sys.executable,
        }
        (play / "extra.json").write_text(json.dumps(extra))
        tasks = ROOT / "playbooks" / "tasks"
        (play / "play.yml").write_text(
            f"""- hosts: lb1
  gather_facts: false
  connection: local
  vars_files: [{ROOT / "playbooks" / "vars" / "deploy.yml"}]
  vars:
    lb_deploy_force: false
  tasks:
    - ansible.builtin.include_tasks: {tasks / "drain.yml"}
    - ansible.builtin.include_tasks: {tasks / "undrain.yml"}
"""
        )
        began = time.monotonic()
        proc = subprocess.Popen(
            ["ansible-playbook", "-i", play / "hosts.yml", play / "play.yml",
             "-e", f"@{play / 'extra.json'}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        seen: list[list[str]] = []
        while proc.poll() is None and time.monotonic() - began < 300:
            hops = lab.fib_nexthops(WEB)
            if not seen or seen[-1] != hops:
                seen.append(hops)
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
        assert proc.returncode == 0, out[-3000:]
        assert "Drain | maintenance on (the health agent" in out
        assert "changed: [lb1]" in out
        # Both paths, lb2's only while lb1 drained, both again after the undrain.
        assert seen == [sorted([lb1, lb2]), [lb2], sorted([lb1, lb2])], seen
        assert not Path(agent["maintenance_file"]).exists()
        assert Path(agent["vrrp_demote_file"]).read_text().strip() == "0"
