"""Hostile mutations of the bundled sites: each one a located error, nothing written.

Every case edits ``inventory/sites/<site>.yml`` of a copy of the bundled
inventory and runs ``lbappliance render`` over an earlier render of the
unmodified site. It must exit 2 without a traceback, name the file, line,
column and field of the bad value, and leave the output directory as it was.
A case with ``secret`` also checks that the value appears nowhere in the output.

Cases are grouped as in the issue: code execution through Ansible (the grammar
side; the ``!unsafe`` side is test_ansible_inert.py), config injection, secrets,
durations and numbers, cross-field rules.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbappliance.cli import main
from tests.conftest import INVENTORY, TOKYO_SECRETS
from tests.security.hostile import snapshot

LAB_NODE = "    nic_tuning: false   # lab nodes share the host's kernel\n"
LAB_POOL = "    - name: web\n      servers:\n"
LAB_SERVER = "        - {name: backend1, address: 10.30.0.21, port: 8080}"
LAB_END = "nic_profiles:\n"
TYO_R2 = "password: {env: LBA_TOKYO_R2_MD5}"
TYO_CHECK = "      path: /health/ready\n      host: health.internal\n"
LONG = "x" * 300
_LAB = (INVENTORY / "sites" / "lab.yml").read_text()
_TYO = (INVENTORY / "sites" / "tokyo.yml").read_text()
LAB_DESCRIPTION = next(ln + "\n" for ln in _LAB.splitlines() if ln.startswith("  description:"))
LAB_NODES = _LAB[_LAB.index("nodes:\n") : _LAB.index("vrrp:\n")]
TYO_PEERS = _TYO[_TYO.index("  peers:\n") : _TYO.index("nodes:\n")]


@dataclass(frozen=True)
class Case:
    id: str
    site: str
    old: str  # replaced once in the site file
    new: str
    marker: str  # a unique fragment of the (mutated) line the error must point at
    at: str  # the text on that line where the column must point
    expected: str  # "field.path: message fragment"
    env: dict[str, str | None] = field(default_factory=dict)
    secret: str | None = None  # must appear nowhere in the output


def lab_policy(yaml: str) -> tuple[str, str]:
    """(old, new) adding ``yaml`` under ``l7.policy`` of the lab site."""
    return "  policy:\n", "  policy:\n" + yaml


def health_agent(yaml: str) -> tuple[str, str]:
    return LAB_END, "health_agent:\n" + yaml + LAB_END


CASES = [
    # --- code execution through Ansible: Jinja and shell in what reaches Ansible ------
    Case("ssh_user jinja", "lab", LAB_NODE, LAB_NODE + "    ssh_user: \"{{ lookup('pipe', 'id > /tmp/h-sec/pwned') }}\"\n",
         "ssh_user:", '"{{', "nodes[0].ssh_user: "),
    Case("ssh_user trailing newline", "lab", LAB_NODE, LAB_NODE + '    ssh_user: "root\\n"\n',
         "ssh_user:", '"root', "nodes[0].ssh_user: 'root\\n' is not valid"),
    Case("ssh_user ssh option", "lab", LAB_NODE, LAB_NODE + "    ssh_user: root -oProxyCommand=id\n",
         "ssh_user:", "root", "nodes[0].ssh_user: 'root -oProxyCommand=id' is not valid"),
    Case("ssh_user shell", "lab", LAB_NODE, LAB_NODE + "    ssh_user: \"$(id)\"\n",
         "ssh_user:", '"$(', "nodes[0].ssh_user: '$(id)' is not valid"),
    Case("description jinja", "lab", LAB_DESCRIPTION, "  description: \"{{ 7*7 }} lab\"\n",
         "description:", '"{{', "site.description: '{{ 7*7 }} lab' is not valid"),
    Case("description too long", "lab", LAB_DESCRIPTION, f"  description: {LONG}\n",
         "description:", "xxx", "site.description: "),
    Case("description escape sequence", "lab", LAB_DESCRIPTION, '  description: "\\e[31mred"\n',
         "description:", '"\\e', "site.description: '\\x1b[31mred' is not valid"),
    Case("description bidi override", "lab", LAB_DESCRIPTION, '  description: "lab \\u202edcba"\n',
         "description:", '"lab', "site.description: 'lab \\u202edcba' is not valid"),
    Case("certificate name climbs out", "tokyo", "tls: {certificate: www}", "tls: {certificate: ../../etc/shadow}",
         "../../etc/shadow", "../", "l7.frontends[0].tls.certificate: '../../etc/shadow' is not valid"),
    # --- names: full matches, lengths ---------------------------------------------------
    Case("pool name trailing newline", "lab", LAB_POOL, '    - name: "web\\n"\n      servers:\n',
         '- name: "web', '"web', "l7.pools[0].name: 'web\\n' is not valid"),
    Case("node name trailing newline", "lab", "  - name: lb1\n", '  - name: "lb1\\n"\n',
         '- name: "lb1', '"lb1', "nodes[0].name: 'lb1\\n' is not valid"),
    Case("site name trailing newline", "lab", "  name: lab\n", '  name: "lab\\n"\n',
         'name: "lab', '"lab', "site.name: 'lab\\n' is not valid"),
    Case("frontend name with a space", "lab", "    - name: web\n      vip:", "    - name: web x\n      vip:",
         "- name: web x", "web x", "l7.frontends[0].name: 'web x' is not valid"),
    Case("vrrp name upper case", "lab", "  - name: public\n", "  - name: Public\n",
         "- name: Public", "Public", "vrrp[0].name: 'Public' is not valid"),
    Case("server name with a semicolon", "lab", "{name: backend1,", '{name: "backend1;x",',
         "backend1;x", '"backend1', "l7.pools[0].servers[0].name: 'backend1;x' is not valid"),
    Case("peer name jinja", "lab", "    - name: router\n", '    - name: "{{ x }}"\n',
         '- name: "{{', '"{{', "bgp.peers[0].name: '{{ x }}' is not valid"),
    Case("name too long", "lab", "    - name: router\n", "    - name: r" + "x" * 48 + "\n",
         "- name: rxx", "rxx", "bgp.peers[0].name: "),
    Case("nic profile key with a space", "tokyo", "  mlx5-edge:\n", '  "mlx5 edge":\n',
         '"mlx5 edge":', '"mlx5', "nic_profiles.mlx5 edge: 'mlx5 edge' is not valid"),
    Case("node names collide once - is _", "tokyo", "  - name: tyo-lb2\n", "  - name: tyo_lb1\n",
         "- name: tyo_lb1", "tyo_lb1", "nodes[1].name: node names 'tyo-lb1' and 'tyo_lb1' are the same"),
    # --- host names and route host patterns ---------------------------------------------
    Case("check host trailing newline", "tokyo", TYO_CHECK, '      path: /health/ready\n      host: "health.internal\\n"\n',
         'host: "health.internal\\n"', '"health', "l7.policy.health_check.host: 'health.internal\\n' is not valid"),
    Case("check host header injection", "tokyo", TYO_CHECK, "      path: /health/ready\n      host: health.internal hdr X-Evil 1\n",
         "host: health.internal hdr", "health.internal hdr", "l7.policy.health_check.host: "),
    Case("check host wildcard", "tokyo", TYO_CHECK, "      path: /health/ready\n      host: '*.example.com'\n",
         "host: '*.example.com'", "'*", "l7.policy.health_check.host: '*.example.com' is not valid"),
    Case("route host bare star", "tokyo", "{host: static.example.com,", "{host: '*',",
         "{host: '*'", "'*'", "l7.frontends[0].routes[1].host: '*' is not valid"),
    Case("route host two stars", "tokyo", "{host: static.example.com,", "{host: '*.*.example.com',",
         "{host: '*.*", "'*.*", "l7.frontends[0].routes[1].host: '*.*.example.com' is not valid"),
    Case("route host trailing newline", "tokyo", "{host: static.example.com,", '{host: "static.example.com\\n",',
         '{host: "static', '"static', "l7.frontends[0].routes[1].host: 'static.example.com\\n' is not valid"),
    Case("route host leading hyphen", "tokyo", "{host: static.example.com,", "{host: -static.example.com,",
         "{host: -static", "-static", "l7.frontends[0].routes[1].host: '-static.example.com' is not valid"),
    Case("route host with a space", "tokyo", "{host: static.example.com,", "{host: 'static.example.com or 1',",
         "{host: 'static", "'static", "l7.frontends[0].routes[1].host: "),
    # --- URL paths -------------------------------------------------------------------------
    Case("check path trailing newline", "tokyo", TYO_CHECK, '      path: "/health/ready\\n"\n      host: health.internal\n',
         'path: "/health', '"/health', "l7.policy.health_check.path: '/health/ready\\n' is not valid"),
    Case("check path with a space", "tokyo", TYO_CHECK, "      path: /health ver HTTP/1.0\n      host: health.internal\n",
         "path: /health ver", "/health ver", "l7.policy.health_check.path: '/health ver HTTP/1.0' is not valid"),
    Case("route path with a comment", "tokyo", "{path_prefix: /api/,", "{path_prefix: '/api/ #',",
         "{path_prefix: '/api/ #'", "'/api", "l7.frontends[0].routes[0].path_prefix: '/api/ #' is not valid"),
    Case("check path without a slash", "tokyo", TYO_CHECK, "      path: health\n      host: health.internal\n",
         "path: health", "health", "l7.policy.health_check.path: 'health' is not valid"),
    Case("l4 check path with a quote", "lab", "health_check: {type: http, path: /health}", "health_check: {type: http, path: '/he\"alth'}",
         "path: '/he", "'/he", "l4_services[0].health_check.path: '/he\"alth' is not valid"),
    # --- interface names ---------------------------------------------------------------
    Case("interface alias", "tokyo", "{name: ens2f0, role: backend, addresses: [10.64.10.2/24]}", "{name: 'ens2f0:1', role: backend, addresses: [10.64.10.2/24]}",
         "ens2f0:1", "'ens2f0", "nodes[0].interfaces[3].name: 'ens2f0:1' is not valid"),
    Case("interface dot dot", "tokyo", "{name: ens2f0, role: backend, addresses: [10.64.10.2/24]}", "{name: '..', role: backend, addresses: [10.64.10.2/24]}",
         "{name: '..'", "'..'", "nodes[0].interfaces[3].name: '..' is not valid"),
    Case("interface trailing newline", "lab", "{name: eth1, role: uplink, addresses: [10.10.0.11/24", '{name: "eth1\\n", role: uplink, addresses: [10.10.0.11/24',
         '{name: "eth1', '"eth1', "nodes[0].interfaces[1].name: 'eth1\\n' is not valid"),
    Case("interface too long", "lab", "{name: eth2, role: backend, addresses: [10.30.0.11/24]}", "{name: eth2xxxxxxxxxxxxx, role: backend, addresses: [10.30.0.11/24]}",
         "eth2xxx", "eth2xxx", "nodes[0].interfaces[2].name: 'eth2xxxxxxxxxxxxx' is not valid"),
    Case("interface leading hyphen", "lab", "{name: eth2, role: backend, addresses: [10.30.0.11/24]}", "{name: -eth2, role: backend, addresses: [10.30.0.11/24]}",
         "{name: -eth2", "-eth2", "nodes[0].interfaces[2].name: '-eth2' is not valid"),
    Case("vrrp interface with a slash", "lab", "    interface: eth1\n", "    interface: eth1/x\n",
         "interface: eth1/x", "eth1/x", "vrrp[0].interface: 'eth1/x' is not valid"),
    # --- MAC addresses -----------------------------------------------------------------
    Case("mac injection", "tokyo", "      - {address: 10.64.10.21}\n", "      - {address: 10.64.10.21, mac: 'not-a-mac;{{7*7}}'}\n",
         "mac: 'not-a-mac", "'not-a", "l4_services[0].backends[0].mac: expected a unicast MAC address"),
    Case("mac multicast", "tokyo", "      - {address: 10.64.10.21}\n", "      - {address: 10.64.10.21, mac: '01:00:5e:00:00:01'}\n",
         "mac: '01:00", "'01:00", "l4_services[0].backends[0].mac: expected a unicast MAC address"),
    Case("mac zero", "tokyo", "      - {address: 10.64.10.21}\n", "      - {address: 10.64.10.21, mac: '00:00:00:00:00:00'}\n",
         "mac: '00:00", "'00:00", "l4_services[0].backends[0].mac: expected a unicast MAC address"),
    Case("mac trailing newline", "tokyo", "      - {address: 10.64.10.21}\n", '      - {address: 10.64.10.21, mac: "52:54:00:12:34:56\\n"}\n',
         'mac: "52:54', '"52:54', "l4_services[0].backends[0].mac: expected a unicast MAC address"),
    # --- BGP communities -----------------------------------------------------------------
    Case("community value out of range", "tokyo", '["65010:81"]', '["65010:99999"]',
         "65010:99999", '"65010', "anycast[1].communities[0]: expected a BGP community"),
    Case("large community out of range", "tokyo", '["65010:81"]', '["1:2:9999999999"]',
         "1:2:9999999999", '"1:2', "anycast[1].communities[0]: expected a BGP community"),
    Case("community trailing newline", "tokyo", '["65010:81"]', '["65010:81\\n"]',
         '["65010:81\\n"]', '"65010', "anycast[1].communities[0]: expected a BGP community"),
    Case("community without a value", "tokyo", '["65010:81"]', '["65010"]',
         '["65010"]', '"65010', "anycast[1].communities[0]: expected a BGP community"),
    Case("community with a config token", "tokyo", '["65010:81"]', '["65010:81 ]; neighbor"]',
         '["65010:81 ]', '"65010', "anycast[1].communities[0]: expected a BGP community"),
    # --- secrets -------------------------------------------------------------------------
    Case("plaintext password", "tokyo", TYO_R2, "password: hunter2-plain",
         "password: hunter2-plain", "hunter2", "bgp.peers[1].password: expected a mapping (SecretRef), got a value (not shown",
         secret="hunter2-plain"),
    Case("password in place of an env name", "tokyo", TYO_R2, "password: {env: 'hunter2 plain'}",
         "password: {env: 'hunter2", "'hunter2", "bgp.peers[1].password.env: a value (not shown: it may be a secret) is not valid",
         secret="hunter2 plain"),
    Case("password in place of a vault name", "tokyo", TYO_R2, "password: {vault: 'hunter2;x'}",
         "password: {vault: 'hunter2", "'hunter2", "bgp.peers[1].password.vault: a value (not shown",
         secret="hunter2;x"),
    Case("password list", "tokyo", TYO_R2, "password: [hunter2-plain]",
         "password: [hunter2-plain]", "[hunter2", "bgp.peers[1].password: expected a mapping (SecretRef), got a value (not shown",
         secret="hunter2-plain"),
    Case("both env and vault", "tokyo", TYO_R2, "password: {env: LBA_TOKYO_R2_MD5, vault: r2}",
         "password: {env: LBA_TOKYO_R2_MD5, vault", "{env", "bgp.peers[1].password: give exactly one of 'env' or 'vault'"),
    Case("empty reference", "tokyo", TYO_R2, "password: {}",
         "password: {}", "{}", "bgp.peers[1].password: give exactly one of 'env' or 'vault'"),
    Case("env secret empty", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 is empty",
         env={"LBA_TOKYO_R2_MD5": ""}),
    Case("env secret unset", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 is not set",
         env={"LBA_TOKYO_R2_MD5": None}),
    Case("env secret injects exabgp config", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 holds a password the router configs cannot carry",
         env={"LBA_TOKYO_R2_MD5": 's3cr3t";hold-time 3;#'}, secret='s3cr3t";hold-time 3;#'),
    Case("env secret with a newline", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 holds a password",
         env={"LBA_TOKYO_R2_MD5": "s3cr3t\nline"}, secret="s3cr3t\nline"),
    Case("env secret with a space", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 holds a password",
         env={"LBA_TOKYO_R2_MD5": "s3cr3t word"}, secret="s3cr3t word"),
    Case("env secret with a brace", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 holds a password",
         env={"LBA_TOKYO_R2_MD5": "s3cr3t}x"}, secret="s3cr3t}x"),
    Case("env secret too long", "tokyo", "", "", TYO_R2, "LBA_TOKYO_R2", "bgp.peers[1].password.env: environment variable LBA_TOKYO_R2_MD5 holds a password",
         env={"LBA_TOKYO_R2_MD5": "k" * 81}, secret="k" * 81),
    Case("env secret non-ascii", "tokyo", "", "", "password: {env: LBA_TOKYO_R1_MD5}\n    - name: tyo-r2", "LBA_TOKYO_R1", "bgp.peers[0].password.env: environment variable LBA_TOKYO_R1_MD5 holds a password",
         env={"LBA_TOKYO_R1_MD5": "s3cr3t-ä"}, secret="s3cr3t-ä"),
    # --- durations and numbers ------------------------------------------------------------
    Case("negative plain duration", "lab", *health_agent("  maintenance_drain: -30\n"),
         "maintenance_drain: -30", "-30", "health_agent.maintenance_drain: expected a duration"),
    Case("negative duration with a unit", "lab", *health_agent("  interval: -1s\n"),
         "interval: -1s", "-1s", "health_agent.interval: expected a duration above zero"),
    Case("sub-millisecond connect timeout", "lab", *lab_policy("    timeouts: {connect: 0.0004}\n"),
         "timeouts: {connect: 0.0004}", "0.0004", "l7.policy.timeouts.connect: expected a duration above zero"),
    Case("sub-millisecond check timeout", "lab", *lab_policy("    health_check: {timeout: 1.5ms}\n"),
         "health_check: {timeout: 1.5ms}", "1.5ms", "l7.policy.health_check.timeout: expected a duration above zero"),
    Case("zero drain timeout", "lab", *lab_policy("    drain_timeout: 0\n"),
         "drain_timeout: 0", "0", "l7.policy.drain_timeout: expected a duration above zero"),
    Case("fractional drain timeout", "lab", *lab_policy("    drain_timeout: 1500ms\n"),
         "drain_timeout: 1500ms", "1500ms", "l7.policy.drain_timeout: 1500ms is not whole seconds"),
    Case("nan duration", "lab", *lab_policy("    slow_start: .nan\n"),
         "slow_start: .nan", ".nan", "l7.policy.slow_start: expected a duration"),
    Case("inf duration", "lab", *lab_policy("    timeouts: {server: .inf}\n"),
         "timeouts: {server: .inf}", ".inf", "l7.policy.timeouts.server: expected a duration above zero"),
    Case("duration over a day", "lab", *lab_policy("    timeouts: {client_idle: 25h}\n"),
         "timeouts: {client_idle: 25h}", "25h", "l7.policy.timeouts.client_idle: expected a duration above zero"),
    Case("duration in words", "lab", *health_agent("  interval: 5 seconds\n"),
         "interval: 5 seconds", "5 seconds", "health_agent.interval: expected a duration above zero"),
    Case("duration true", "lab", "  hold_time: 3\n", "  hold_time: 3\n  bfd: {interval: true}\n",
         "interval: true", "true", "bgp.bfd.interval: expected a duration above zero"),
    Case("nan float", "lab", *lab_policy("    weight_controller: {alpha: .nan}\n"),
         "weight_controller: {alpha: .nan}", ".nan", "l7.policy.weight_controller.alpha: expected a number, got nan"),
    Case("inf float", "lab", *lab_policy("    retries: {budget_percent: .inf}\n"),
         "retries: {budget_percent: .inf}", ".inf", "l7.policy.retries.budget_percent: expected a number, got inf"),
    Case("vrrp v3 advert off the 10ms grid", "lab", "    advert_interval: 100ms\n", "    advert_interval: 15ms\n",
         "advert_interval: 15ms", "15ms", "vrrp[0].advert_interval: 15ms is not a VRRPv3 advert interval"),
    Case("vrrp v2 fractional advert", "lab", "    advert_interval: 100ms\n", "    advert_interval: 1500ms\n    version: 2\n",
         "advert_interval: 1500ms", "1500ms", "vrrp[0].advert_interval: 1500ms is not a VRRPv2 advert interval"),
    Case("preempt delay over keepalived's limit", "lab", "    advert_interval: 100ms\n", "    advert_interval: 100ms\n    preempt_delay: 2000s\n",
         "preempt_delay: 2000s", "2000s", "vrrp[0].preempt_delay: at most 1000s"),
    Case("ejection time below a ms per rise", "lab", *lab_policy("    outlier: {ejection_time: 1ms}\n"),
         "outlier: {ejection_time: 1ms}", "1ms", "l7.policy.outlier.ejection_time: ejection_time 1ms is shorter than 1ms per rise"),
    # --- cross-field rules -----------------------------------------------------------------
    Case("empty pool", "lab", LAB_POOL + LAB_SERVER + "\n        - {name: backend2, address: 10.30.0.22, port: 8080}\n", "    - name: web\n      servers: []\n",
         "servers: []", "[]", "l7.pools[0].servers: a pool needs at least one server"),
    Case("all weights zero", "lab", "port: 8080}\n        - {name: backend2, address: 10.30.0.22, port: 8080}", "port: 8080, weight: 0}\n        - {name: backend2, address: 10.30.0.22, port: 8080, weight: 0}",
         "- {name: backend1", "-", "l7.pools[0].servers: no server has a weight above 0"),
    Case("same address and port twice", "lab", "{name: backend2, address: 10.30.0.22, port: 8080}", "{name: backend2, address: 10.30.0.21, port: 8080}",
         "{name: backend2, address: 10.30.0.21", "8080", "l7.pools[0].servers[1].port: duplicate server address:port"),
    Case("metrics port is the stats port", "lab", *health_agent("  metrics_port: 8404\n"),
         "metrics_port: 8404", "8404", "health_agent.metrics_port: port 8404 is already used by the HAProxy stats page"),
    Case("metrics port is the ssh port", "lab", *health_agent("  metrics_port: 22\n"),
         "metrics_port: 22", "22", "health_agent.metrics_port: port 22 is already used by SSH on node"),
    Case("metrics port is the weight controller's", "lab", *health_agent("  metrics_port: 9172\n"),
         "metrics_port: 9172", "9172", "health_agent.metrics_port: port 9172 is already used by the weight controller"),
    Case("zero bgp peers", "tokyo", TYO_PEERS, "  peers: []\n",
         "peers: []", "[]", "bgp.peers: no BGP peer"),
    Case("zero nodes", "lab", LAB_NODES, "nodes: []\n\n",
         "nodes: []", "[]", "nodes: a site needs at least one node"),
]  # fmt: skip


@pytest.fixture(scope="session")
def earlier_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An earlier render of each unmodified site, to render over."""
    root = tmp_path_factory.mktemp("renders")
    out = {}
    for site in ("lab", "tokyo"):
        out[site] = root / site
        result = CliRunner().invoke(
            main, ["render", "--site", site, "--inventory", str(INVENTORY), "--out", str(out[site]),
                   "--no-check"],
            env=TOKYO_SECRETS,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return out


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


_ERROR = re.compile(r"^error: (?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<rest>.*)$", re.M)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_inventory(
    case: Case, tmp_path: Path, inventory_copy: Path, earlier_renders: dict[str, Path]
) -> None:
    site_file = inventory_copy / "sites" / f"{case.site}.yml"
    text = site_file.read_text()
    assert case.old in text, "the mutation no longer applies to the bundled site"
    text = text.replace(case.old, case.new, 1)
    site_file.write_text(text)
    out = tmp_path / "out"
    shutil.copytree(earlier_renders[case.site], out)
    before = snapshot(out)

    result = CliRunner().invoke(
        main,
        ["render", "--site", case.site, "--inventory", str(inventory_copy), "--out", str(out)],
        env={**TOKYO_SECRETS, **case.env},
    )

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [m for m in _ERROR.finditer(result.output) if case.expected in m["rest"]]
    assert errors, f"{case.expected!r} not in:\n{result.output}"
    line = text[: text.index(case.marker)].count("\n") + 1
    column = text.splitlines()[line - 1].index(case.at) + 1
    got = errors[0]
    assert (got["file"], int(got["line"]), int(got["col"])) == (str(site_file), line, column), got[
        0
    ]
    assert snapshot(out) == before, "a refused render wrote something"
    if case.secret:
        assert case.secret not in result.output
        assert case.secret.split()[0] not in result.output
