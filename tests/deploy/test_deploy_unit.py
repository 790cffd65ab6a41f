"""Fast checks of the deploy tooling: output parsing, commands, role coverage, syntax."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.deploy import Progress, playbook_command, summary_lines
from lbappliance.inventory import load_site
from lbappliance.lab.podman import PodmanLab
from lbappliance.render import render_site, write_render
from lbappliance.secrets import Secrets
from tests.security.hostile import UnsafeLoader

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"

ANSIBLE_OUTPUT = """\
PLAY [Roll the LB pair, one node at a time] ************************************

TASK [Plan | read what the node runs now] **************************************
ok: [lb1]

TASK [lb_base : Directories | state, configuration and runtime] ****************
ok: [lb1] => (item=/var/lib/lbappliance)
changed: [lb1] => (item=/etc/lbappliance)
skipping: [lb1]

TASK [Plan | checksum the rendered files on the controller] ********************
ok: [lb1 -> localhost]

TASK [Undrain | wait] **********************************************************
FAILED - RETRYING: [lb1]: Undrain | wait (120 retries left).
ok: [lb1]

TASK [lb_haproxy : Service | enable and start HAProxy] *************************
fatal: [lb1]: FAILED! =>
    changed: false
    msg: Unable to start service haproxy.service

RUNNING HANDLER [lb_haproxy : Reload HAProxy] **********************************
fatal: [lb2]: UNREACHABLE! =>
    msg: 'ssh: connect to host 10.99.0.12 port 22: Connection timed out'
    unreachable: true

PLAY RECAP *********************************************************************
lb1                        : ok=39   changed=6    unreachable=0    failed=1    skipped=11
lb2                        : ok=3    changed=0    unreachable=1    failed=0    skipped=0
"""


def test_progress_shows_results_per_host_and_collects_the_recap() -> None:
    progress = Progress()
    shown = [line for raw in ANSIBLE_OUTPUT.splitlines() for line in progress.feed(raw)]
    progress.close()
    assert shown[0] == "== Roll the LB pair, one node at a time"
    assert any("lb1" in s and "changed" in s and "(/etc/lbappliance)" in s for s in shown)
    assert not any("skipping" in s for s in shown)
    assert any("lb1" in s and "waiting" in s and "Undrain" in s for s in shown)
    assert any(s.split()[:2] == ["lb1", "failed"] and "start HAProxy" in s for s in shown)
    assert any(s.split()[:2] == ["lb2", "unreachable"] and "(handler)" in s for s in shown)
    assert len(progress.failures) == 2
    assert "Unable to start service haproxy.service" in progress.failures[0]
    assert "Connection timed out" in progress.failures[1]
    assert progress.recap["lb1"].failed == 1 and progress.recap["lb1"].changed == 6
    assert progress.recap["lb2"].unreachable == 1 and not progress.recap["lb2"].success
    table = summary_lines(progress.recap)
    assert "FAILED" in table[1] and "UNREACHABLE" in table[2]


def test_playbook_command_passes_the_operator_options(tmp_path: Path) -> None:
    vault = tmp_path / "lab.vault.yml"
    vault.write_text("$ANSIBLE_VAULT;1.1;AES256\n")
    pw = tmp_path / "pw"
    extra = ["lb_deploy_drain=always"]
    tags = "haproxy,keepalived"
    cmd = playbook_command(tmp_path, True, True, "lb1", tags, None, extra, vault, pw)
    assert cmd[:2] == ["ansible-playbook", str(tmp_path / "site.yml")]
    assert {"--check", "--diff"} <= set(cmd)
    assert cmd[cmd.index("--limit") + 1] == "lb1"
    assert cmd[cmd.index("--tags") + 1] == "haproxy,keepalived"
    assert f"@{vault}" in cmd and cmd[cmd.index("--vault-password-file") + 1] == str(pw)
    assert "lb_deploy_drain=always" in cmd


def test_deploy_refuses_an_invalid_site_before_running_ansible(
    inventory_copy: Path, tmp_path: Path
) -> None:
    site = inventory_copy / "sites" / "lab.yml"
    site.write_text(site.read_text().replace("vrrp_priority: 150", "vrrp_priority: 999", 1))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["deploy", "--site", "lab", "--inventory", str(inventory_copy), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert not out.exists()


def test_deploy_without_ansible_says_what_to_install_and_renders_nothing(
    inventory_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ansible-playbook there
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["deploy", "--site", "lab", "--inventory", str(inventory_copy), "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert "ansible-playbook is not on PATH" in result.output
    assert "lbappliance[controller]" in result.output
    assert not out.exists()


@pytest.fixture(scope="module")
def rendered_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    env = {"LBA_TOKYO_R1_MD5": "test-md5-one", "LBA_TOKYO_R2_MD5": "test-md5-two"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        out = {}
        for name in ("lab", "tokyo"):
            site = load_site(ROOT / "inventory", name)
            target = tmp_path_factory.mktemp(name)
            write_render(render_site(site, Secrets(None, None)), target)
            out[name] = target
        return out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_every_rendered_node_file_is_installed_by_a_role(rendered_sites: dict[str, Path]) -> None:
    role_text = "\n".join(p.read_text() for p in ROLES.rglob("*.yml"))
    assert 'loop: "{{ lb_network_files }}"' in role_text  # lb_network: one file per interface
    for render in rendered_sites.values():
        for path in (render / "hosts").glob("*/**/*"):
            if path.is_file():
                node, *parts = path.relative_to(render / "hosts").parts
                target = "/".join(parts)
                host_vars = yaml.load(
                    (render / "inventory/host_vars" / f"{node}.yml").read_text(), UnsafeLoader
                )
                if target in host_vars["lb_network_files"]:
                    continue
                assert target in role_text, f"no role installs {target}"


@pytest.mark.parametrize("playbook", ["site.yml", "maintenance.yml"])
def test_playbooks_pass_the_syntax_check(rendered_sites: dict[str, Path], playbook: str) -> None:
    render = rendered_sites["lab"]
    env = {**os.environ, "ANSIBLE_CONFIG": str(render / "ansible.cfg")}
    proc = subprocess.run(
        ["ansible-playbook", "--syntax-check", str(ROOT / "playbooks" / playbook)],
        cwd=render,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheelhouse_key_follows_the_wheel_inputs_only(tmp_path: Path) -> None:
    wheelhouse = _load(ROLES / "lb_base" / "files" / "wheelhouse.py")
    (tmp_path / "src" / "lbappliance").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    module = tmp_path / "src" / "lbappliance" / "x.py"
    module.write_text("a = 1\n")
    first = wheelhouse.tree_hash(tmp_path)
    (tmp_path / "notes.txt").write_text("not in the wheel")
    (tmp_path / "src" / "lbappliance" / "__pycache__").mkdir()
    (tmp_path / "src" / "lbappliance" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert wheelhouse.tree_hash(tmp_path) == first
    module.write_text("a = 2\n")
    assert wheelhouse.tree_hash(tmp_path) != first


def test_nodes_get_the_base_requirements_without_the_controllers(tmp_path: Path) -> None:
    """The node venv installs what the project wheel requires, extras left out: no
    ansible-core, paramiko or cryptography on an LB node."""
    wheelhouse = _load(ROLES / "lb_base" / "files" / "wheelhouse.py")
    wheel = wheelhouse.project_wheel(ROOT, tmp_path)
    names = {
        re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in wheelhouse.requirements(wheel)
    }
    assert names == {"click", "jinja2", "pyyaml", "pyroute2", "exabgp"}


def test_apply_sysctl_changes_only_what_differs(tmp_path: Path) -> None:
    script = ROLES / "lb_base" / "files" / "apply_sysctl.py"
    current = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    same = tmp_path / "same.conf"
    same.write_text(f"# comment\nnet.ipv4.ip_forward = {current}\n-net.no.such.key = 1\n")
    other = tmp_path / "other.conf"
    other.write_text(f"net.ipv4.ip_forward = {1 - int(current)}\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = ["python3", str(script), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True)

    out = run(str(same))
    assert out.stdout.strip() == ""
    out = run(str(other), "--check")
    assert out.stdout.strip() == "net.ipv4.ip_forward"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == current


def test_container_lab_is_built_from_the_topology(tmp_path: Path) -> None:
    lab = PodmanLab(load_site(ROOT / "inventory", "lab"), state=tmp_path)
    router = lab.topology.router
    lb1 = lab.topology.host("lb1")
    script = lab.net_script(lb1)
    # LB nodes: addresses, routes and lo's VIPs come from the deploy, only mounts from the lab.
    assert " address " not in script and " route " not in script and " dev lo" not in script
    assert "mount -t bpf bpf /sys/fs/bpf" in script
    client = lab.net_script(lab.topology.host("client"))
    assert f"ip route replace default via {router.address_on('client', 4)}" in client
    pinning = lab.net_script(router)
    assert "table inet lab_pin" in pinning and "rt ip nexthop 10.10.0.12 ct mark set 2" in pinning
    assert "rt ip6 nexthop 2001:db8:10::12 ct mark set 2" in pinning
    assert "ip -6 route replace 2001:db8:100::10/128 via 2001:db8:10::12 table 102" in pinning
    assert {"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.conf.all.forwarding=1"} <= set(
        lab.sysctls(router)
    )
    assert lab.sysctls(lb1) == []
    # One BIRD on the router for both peers: the IPv6 peer's sessions renamed into it.
    bird = lab.bird_conf()
    assert "protocol bgp lb1 {" in bird and "protocol bgp lb1_router_v6 {" in bird
    assert bird.count("protocol bfd") == 1 and bird.count("router id") == 1
    macs = {lab.mac(h, a.segment) for h in lab.topology.hosts for a in h.attachments}
    assert len(macs) == sum(len(h.attachments) for h in lab.topology.hosts)
    assert [i["instance"] for i in lab.instance_config()] == ["lb1", "lb2"]
    assert "192.0.2." not in script + pinning
    assert "fd00:" not in script + pinning  # the host's own IPv6 uplink is fd00::/64
