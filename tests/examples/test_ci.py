"""The CI examples in examples/ci/ cannot rot.

Each job's script lines are extracted; the ones that need no remote node
(``lbappliance validate``, ``lbappliance render``) run against the lab site in a
temporary copy of the inventory, exactly as the runner would run them (bash,
the job's variables). ``lbappliance deploy`` lines need the site's nodes: they
are parsed by the CLI's own click parser (every option must exist and every
value convert), not run. Every line passes ``bash -n``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lbappliance.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "ci"
GITLAB_RESERVED = {"stages", "variables", "default", "include", "workflow", "image"}
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1"}


def _merged(jobs: dict, name: str) -> dict:
    """A GitLab job with its ``extends`` templates merged in (the job wins)."""
    job = jobs[name]
    parents = job.get("extends", [])
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged.update(_merged(jobs, parent))
    return merged | job


def gitlab_jobs() -> dict[str, dict]:
    data = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    names = [k for k in data if k not in GITLAB_RESERVED and not k.startswith(".")]
    return {name: _merged(data, name) for name in names}


def github_jobs() -> dict[str, dict]:
    return yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())["jobs"]


def script_lines() -> Iterator[tuple[str, str, str]]:
    """(file, job, script item) for every script line of both examples."""
    for name, job in gitlab_jobs().items():
        for key in ("before_script", "script", "after_script"):
            for line in job.get(key, []):
                yield "gitlab-ci.yml", name, line
    for name, job in github_jobs().items():
        for step in job["steps"]:
            if "run" in step:
                yield "github-actions.yml", name, step["run"]


def lbappliance_commands(line: str) -> list[list[str]]:
    """Each ``lbappliance ...`` command in a script item, cut at the first shell operator."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands: list[list[str]] = []
    current: list[str] | None = None
    for token in lex:
        if token in OPERATORS or token == "\n":
            current = None
        elif current is None and token == "lbappliance":
            current = []
            commands.append(current)
        elif current is not None:
            current.append(token)
    return commands


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, str]:
    """A user's repository (a copy of the inventory) and the job's environment."""
    shutil.copytree(ROOT / "inventory", tmp_path / "inventory")
    (tmp_path / ".lba-vault-password").write_text("not-a-real-password\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "lbappliance"
    shim.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c "
        '\'from lbappliance.cli import main; main(prog_name="lbappliance")\' "$@"\n'
    )
    shim.chmod(0o755)
    env = dict(os.environ, SITE="lab", VAULT_PASSWORD_FILE=".lba-vault-password")
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env["CWD"] = str(tmp_path)
    return env


def test_examples_have_every_stage() -> None:
    for file in ("gitlab-ci.yml", "github-actions.yml"):
        commands = [
            " ".join(c) for f, _, line in script_lines() if f == file
            for c in lbappliance_commands(line)
        ]  # fmt: skip
        assert any(c.startswith("validate ") for c in commands), file
        assert any(c.startswith("render ") for c in commands), file
        assert any(c.startswith("deploy ") and "--check --diff" in c for c in commands), file
        assert any(c.startswith("deploy ") and "--check" not in c for c in commands), file


def test_deploys_are_gated_and_ordered() -> None:
    gitlab = gitlab_jobs()
    deploys = [n for n in gitlab if n.startswith("deploy:")]
    assert len(deploys) >= 2
    for name in deploys:
        assert gitlab[name]["rules"][0]["when"] == "manual"
        assert (ROOT / "inventory" / "sites" / f"{gitlab[name]['variables']['SITE']}.yml").exists()
    assert gitlab[deploys[1]]["needs"] == [deploys[0]]
    github = github_jobs()
    deploys = [n for n in github if n.startswith("deploy-")]
    assert [github[n]["environment"] for n in deploys] == ["lab", "tokyo"]
    assert github[deploys[1]]["needs"] == deploys[0]
    for site in gitlab["plan"]["parallel"]["matrix"][0]["SITE"]:
        assert (ROOT / "inventory" / "sites" / f"{site}.yml").exists()


@pytest.mark.parametrize(
    ("file", "job", "line"), list(script_lines()), ids=lambda v: str(v).split("\n")[0][:40]
)
def test_script_line(file: str, job: str, line: str, workspace: dict[str, str]) -> None:
    check = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    for args in lbappliance_commands(line):
        if args[0] in ("validate", "render"):
            assert "${{" not in line
            out = subprocess.run(
                ["bash", "-eo", "pipefail", "-c", line],
                cwd=workspace["CWD"], env=workspace, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
        else:
            assert args[0] == "deploy", args
            argv = [expand(a, workspace) for a in args]
            assert "$" not in " ".join(argv), argv
            parse_only(argv, workspace)


def expand(arg: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``env`` (the job's variables)."""
    for name, value in sorted(env.items(), key=lambda kv: -len(kv[0])):
        arg = arg.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return arg


def parse_only(argv: list[str], env: dict[str, str]) -> None:
    """The CLI's click parser on ``argv`` (options exist, values convert); nothing runs."""
    old = os.getcwd()
    os.chdir(env["CWD"])
    try:
        ctx = main.make_context("lbappliance", list(argv))
        command = main.get_command(ctx, argv[0])
        assert command is not None
        command.make_context(argv[0], argv[1:], parent=ctx)
    finally:
        os.chdir(old)
