"""The committed fixture trees are what nicfixtures.py builds (regenerate: see its docstring)."""

import filecmp
import os
from pathlib import Path

from nicfixtures import FIXTURES, build_all


def listing(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = "file"
    return out


def test_fixtures_are_current(tmp_path: Path) -> None:
    names = build_all(tmp_path)
    assert sorted(names) == sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    for name in names:
        fresh, committed = listing(tmp_path / name), listing(FIXTURES / name)
        assert fresh == committed, name
        files = [rel for rel, kind in fresh.items() if kind == "file"]
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / name, FIXTURES / name, files, False)
        assert (mismatch, errors) == ([], []), name
