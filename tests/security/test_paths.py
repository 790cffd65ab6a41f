"""`--site` is a name and `--out` never replaces something render did not write.

Each refused case exits 2 without a traceback and leaves every file where it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.paths import project_dir
from lbappliance.render import HEADER, MARKER
from tests.security.hostile import snapshot


@pytest.fixture
def work(tmp_path: Path, inventory_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working directory: inventory/, a victim directory and file."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious.txt").write_text("keep me\n")
    (tmp_path / "victim.yml").write_bytes((inventory_copy / "sites" / "lab.yml").read_bytes())
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    return tmp_path


# (case, --site, --out relative to the work directory (None: the default), message)
REFUSED = [
    ("site is an absolute path", "{work}/victim", None, "is not a site name"),
    ("site climbs out", "../sites/tokyo", None, "is not a site name"),
    ("site with a slash", "lab/../lab", None, "is not a site name"),
    ("site with a newline", "lab\n", None, "is not a site name"),
    ("site empty", "", None, "is not a site name"),
    ("site upper case", "LAB", None, "is not a site name"),
    ("out is the inventory", "lab", "{work}/inventory", "is, or holds"),
    ("out inside the inventory", "lab", "{work}/inventory/sites", "is inside the inventory"),
    ("out inside the bundled inventory", "lab", "{project}/inventory/x", "is inside the inventory"),
    ("out is the working directory", "lab", ".", "is, or holds"),
    ("out is above the working directory", "lab", "..", "is, or holds"),
    ("out is the project", "lab", "{project}", "is, or holds"),
    ("out is the filesystem root", "lab", "/", "is, or holds"),
    ("out is a directory render did not write", "lab", "{work}/victim", "was not written"),
    ("out is a file", "lab", "{work}/afile", "is a file"),  # click refuses it
    ("out is a symlink", "lab", "{work}/link", "is not a directory"),
    ("out is under a file", "lab", "{work}/afile/sub", "cannot write"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["render", "deploy"])
@pytest.mark.parametrize(
    ("site", "out", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused(work: Path, command: str, site: str, out: str | None, message: str) -> None:
    before = snapshot(work)
    args = [command, "--site", site.format(work=work), "--inventory", str(work / "inventory")]
    if out is not None:
        args += ["--out", out.format(work=work, project=project_dir())]
    if command == "render":
        args.append("--no-check")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert message in result.output
    assert snapshot(work) == before
    assert not (project_dir() / MARKER).exists()
    assert not (project_dir() / "inventory" / "x").exists()


def test_render_replaces_its_own_render_and_an_empty_directory(work: Path) -> None:
    (work / "empty").mkdir()
    args = ["render", "--site", "lab", "--inventory", str(work / "inventory")]
    args += ["--out", str(work / "empty"), "--no-check"]
    for _ in range(2):  # new (empty) first, then an earlier render
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert (work / "empty" / MARKER).is_file()
    assert "0 changed" in result.output and "0 removed" in result.output


def test_default_out_is_build_site(work: Path) -> None:
    args = ["render", "--site", "lab", "--inventory", str(work / "inventory"), "--no-check"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (Path(os.getcwd()) / "build" / "lab" / MARKER).is_file()


def test_a_render_from_before_the_marker_is_replaced(work: Path) -> None:
    old = work / "old-render"
    (old / "inventory").mkdir(parents=True)
    (old / "ansible.cfg").write_text(f"# {HEADER}\n[defaults]\n")
    (old / "inventory" / "hosts.yml").write_text("{}\n")
    args = ["render", "--site", "lab", "--inventory", str(work / "inventory")]
    result = CliRunner().invoke(main, [*args, "--out", str(old), "--no-check"])
    assert result.exit_code == 0, result.output
    assert (old / MARKER).is_file()
