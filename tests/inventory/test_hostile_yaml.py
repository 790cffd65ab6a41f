"""Hostile YAML: each file is refused by `lbappliance validate` with a located error,
exit status 2 and no traceback, well within a second of work (the bounds here
are generous, for a busy machine). The table runs the CLI in-process; one case
also runs the installed command, as CI would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.inventory.yamlpos import ALIAS_BUDGET, MAX_DEPTH, MAX_FILE_BYTES
from tests.inventory.test_errors import BASE

LBAPPLIANCE = shutil.which("lbappliance") or str(Path(sys.executable).parent / "lbappliance")
BOUND = 5.0  # seconds; the refusals themselves take milliseconds


def _laughs(levels: int) -> str:
    """The billion laughs: each level is nine aliases of the one before (9**levels values)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    traceback: bool


def _validate(tmp_path: Path, content: bytes | None) -> tuple[Outcome, float]:
    """`lbappliance validate` on ``content`` (None: as written) as site t, and its time."""
    if content is not None:
        (tmp_path / "sites").mkdir(exist_ok=True)
        (tmp_path / "sites" / "t.yml").write_bytes(content)
    start = time.monotonic()
    result = CliRunner().invoke(main, ["validate", "--site", "t", "--inventory", str(tmp_path)])
    took = time.monotonic() - start
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return Outcome(result.exit_code, result.stdout, result.stderr, crashed), took


# (case, file content, line, column, fragment of the message)
CASES = [
    ("billion laughs", _laughs(9).encode(), 5, 1,
     f"aliases expand to more than {ALIAS_BUDGET} values beyond the file's own"),
    ("recursive alias", b"site: {name: t}\nloop: &a [1, *a]\n", 2, 1,
     "loop[1]: recursive alias (its anchor at line 2 contains it)"),
    ("alias in a merge", b"a: &a {x: 1}\nb:\n  <<: *a\n  c: &c [*c]\n", 4, 3,
     "b.c[0]: recursive alias"),
    # libyaml stops at its own limit (1000 levels, at the 1000th "["), ...
    ("50 000 nested [", b"site: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", 1, 1006,
     "(top level): YAML syntax error: exceeded maximum nesting depth"),
    # ... and the loader at its lower one: the top mapping and 63 "[" are the 64 levels.
    ("nesting past the depth", b"site: " + b"[" * 100 + b"]" * 100 + b"\n", 1, 6 + MAX_DEPTH,
     f"site{'[0]' * (MAX_DEPTH - 1)}: nested deeper than {MAX_DEPTH} levels"),
    ("nested merges past the depth",
     b"site: " + b"{<<: " * 100 + b"{}" + b"}" * 100 + b"\n", 1, 2 + 5 * MAX_DEPTH,
     f"site: nested deeper than {MAX_DEPTH} levels"),
    ("NUL byte", b"site:\n  name: t\0x\n", 2, 10,
     "(top level): a NUL byte: YAML text cannot hold it"),
    ("binary file", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 1, 1,
     "not UTF-8 text: byte 0x89 cannot start or continue a character"),
    ("control character", b"site:\n  description: \"a\x1b[31mred\"\n", 2, 18,
     "control character U+001B: YAML text cannot hold it"),
    ("latin-1 text", b"site:\n  name: t\n  description: caf\xe9\n", 3, 19,
     "not UTF-8 text: byte 0xe9"),
    ("vault tag", b"bgp:\n  peers:\n    - name: r1\n      password: !vault |\n"
     b"        $ANSIBLE_VAULT;1.1;AES256\n        6162\n", 4, 17,
     "bgp.peers[0].password: unsupported tag '!vault' (write a plain value; a secret is "
     "referenced as {vault: NAME} or {env: NAME})"),
    ("python tag", b"site: !!python/object/apply:os.system [\"id\"]\n", 1, 7,
     "site: unsupported tag '!!python/object/apply:os.system'"),
    ("tag on a mapping", b"site: !vault {name: t}\n", 1, 7, "site: unsupported tag '!vault'"),
    ("set tag", b"site: !!set {a, b}\n", 1, 7, "site: unsupported tag '!!set'"),
    ("bad timestamp", b"site:\n  name: 2026-13-45\n", 2, 9, "site.name: not a valid timestamp"),
    ("bad explicit bool", b"site:\n  name: !!bool maybe\n", 2, 9, "site.name: not a valid bool"),
    ("bad explicit int", b"site:\n  asn: !!int 12x\n", 2, 8, "site.asn: not a valid int"),
    ("explicit timestamp", b"site:\n  name: !!timestamp 10.0.1\n", 2, 9,
     "site.name: not a valid timestamp"),
    ("explicit binary", b"site:\n  name: !!binary a\n", 2, 9, "site.name: not a valid binary"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "line", "column", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_file_is_refused(
    tmp_path: Path, content: bytes, line: int, column: int, expected: str
) -> None:
    proc, took = _validate(tmp_path, content)
    assert not proc.traceback, proc.stderr
    assert proc.returncode == 2, proc.stderr
    errors = [e for e in proc.stderr.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    where, message = errors[0].removeprefix("error: ").split(": ", 1)
    assert where == f"{tmp_path / 'sites' / 't.yml'}:{line}:{column}", errors[0]
    assert expected in message, errors[0]
    assert took < BOUND


def test_file_past_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    sites = tmp_path / "sites"
    sites.mkdir()
    with open(sites / "t.yml", "wb") as f:  # sparse: no need to write the bytes
        f.truncate(MAX_FILE_BYTES + 1)
    proc, took = _validate(tmp_path, None)
    assert not proc.traceback, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert f"{sites / 't.yml'}:1:1: (top level): the file is 32.0 MiB, over the 32 MiB" in (
        proc.stderr
    )
    assert took < BOUND


def test_aliases_within_the_budget_still_load(tmp_path: Path) -> None:
    """Anchors are legitimate: a merged mapping and a few expansions are fine."""
    text = BASE.replace(
        "  pools:\n", "  pools:\n    - &pool {name: other, servers: [{name: s1, address: "
        "10.30.0.22, port: 8080}]}\n"
    ) + "x_unused: [*pool, *pool]\n"  # fmt: skip
    proc, _ = _validate(tmp_path, text.encode())
    # Expanded fine; the only complaint is the unknown top-level key, located at it.
    errors = [e for e in proc.stderr.splitlines() if e.startswith("error: ")]
    assert [e.split(": ", 3)[1:3] for e in errors] == [
        [f"{tmp_path / 'sites' / 't.yml'}:{text.count(chr(10))}:1", "x_unused"]
    ], proc.stderr


def test_ten_megabyte_description_is_quick(tmp_path: Path) -> None:
    """A huge string is read at C speed and refused by the description's length rule,
    located, quickly, without a traceback."""
    text = BASE.replace("  asn: 65100\n", "  asn: 65100\n  description: " + "x" * 10_000_000 + "\n")
    proc, took = _validate(tmp_path, text.encode())
    assert not proc.traceback, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'sites' / 't.yml'}:4:16: site.description" in proc.stderr, proc.stderr
    assert "at most 200 characters" in proc.stderr
    assert took < BOUND


def test_installed_command_refuses_billion_laughs(tmp_path: Path) -> None:
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "t.yml").write_text(_laughs(9))
    start = time.monotonic()
    proc = subprocess.run(
        [LBAPPLIANCE, "validate", "--site", "t", "--inventory", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert time.monotonic() - start < 2 * BOUND  # interpreter start included
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'sites' / 't.yml'}:5:1: l4[")
