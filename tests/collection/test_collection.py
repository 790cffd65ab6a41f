"""The Ansible collection lbappliance.edge: built, installed offline, used by FQCN.

Built with scripts/build-collection.py (``ansible-galaxy collection build``),
installed from the tarball with ``ansible-galaxy collection install --offline``
into a temporary path; then a playbook naming only FQCN roles and the
collection's own site playbook pass ``--syntax-check`` with no roles path
pointing into this checkout, and ``ansible-doc`` shows the roles' argument specs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
PLAYBOOK = """\
- name: An LB node from the installed collection only
  hosts: lb_nodes
  gather_facts: false
  roles:
{roles}
"""


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout}{out.stderr}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(tarball, environment using only the installed collection, working directory)."""
    tmp = tmp_path_factory.mktemp("collection")
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(tmp / "no-roles"))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp / "installed")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    build = [sys.executable, str(ROOT / "scripts" / "build-collection.py"), "--out", str(tmp)]
    tarball = Path(run(build, env, tmp).stdout.strip())
    install = ["ansible-galaxy", "collection", "install", "--offline", "--force"]
    run([*install, "-p", str(tmp / "installed"), str(tarball)], env, tmp)
    (tmp / "hosts.ini").write_text("[lb_nodes]\nlb1 ansible_connection=local\n")
    return tarball, env, tmp


def test_metadata_matches_the_project() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert galaxy["version"] == project["version"]
    controller = project["optional-dependencies"]["controller"]
    core = next(d for d in controller if d.startswith("ansible-core"))
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    lower, upper = core.removeprefix("ansible-core").split(",")
    assert runtime["requires_ansible"] == f"{lower}.0,{upper}.0"


def test_tarball_holds_the_roles_and_playbooks_only(installed) -> None:
    tarball, _, _ = installed
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    tops = {n.split("/")[0] for n in names}
    assert tops == {
        "MANIFEST.json",
        "FILES.json",
        "README.md",
        "CHANGELOG.md",
        "meta",
        "playbooks",
        "roles",
    }
    for role in ROLES:
        assert f"roles/{role}/meta/argument_specs.yml" in names
    assert "playbooks/site.yml" in names
    assert not [n for n in names if "__pycache__" in n]


def test_fqcn_playbook_syntax_checks(installed) -> None:
    _, env, tmp = installed
    roles = "\n".join(f"    - role: lbappliance.edge.{r}" for r in ROLES)
    (tmp / "fqcn.yml").write_text(PLAYBOOK.format(roles=roles))
    run(["ansible-playbook", "-i", "hosts.ini", "--syntax-check", "fqcn.yml"], env, tmp)
    # A role the collection does not have is an error: the check above means something.
    (tmp / "bad.yml").write_text(PLAYBOOK.format(roles="    - role: lbappliance.edge.lb_nope"))
    bad = ["ansible-playbook", "-i", "hosts.ini", "--syntax-check", "bad.yml"]
    assert subprocess.run(bad, env=env, cwd=tmp, capture_output=True).returncode != 0


def test_collection_site_playbook_finds_its_own_roles(installed) -> None:
    _, env, tmp = installed
    for playbook in ("lbappliance.edge.site", "lbappliance.edge.maintenance"):
        run(["ansible-playbook", "-i", "hosts.ini", "--syntax-check", playbook], env, tmp)


def test_ansible_doc_shows_argument_specs(installed) -> None:
    _, env, tmp = installed
    listed = run(["ansible-doc", "-t", "role", "-l", "lbappliance.edge", "-j"], env, tmp)
    assert sorted(json.loads(listed.stdout)) == [f"lbappliance.edge.{r}" for r in ROLES]
    doc = run(["ansible-doc", "-t", "role", "-j", "lbappliance.edge.lb_haproxy"], env, tmp)
    main = json.loads(doc.stdout)["lbappliance.edge.lb_haproxy"]["entry_points"]["main"]
    assert "lb_haproxy_certificates" in main["options"]
