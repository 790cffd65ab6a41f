#!/usr/bin/env python3
"""Build the Ansible collection lbappliance.edge from this checkout.

Stages exactly what the collection holds (galaxy.yml, CHANGELOG.md, meta/, roles/, playbooks/,
docs/collection.md as its README.md) in a temporary directory, runs
``ansible-galaxy collection build`` there and prints the tarball's path.

    scripts/build-collection.py [--out DIR]     # default: build/collection/
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ("galaxy.yml", "CHANGELOG.md", "meta", "roles", "playbooks")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def stage(target: Path) -> None:
    """Copy the collection's content into ``target``."""
    target.mkdir(parents=True)
    for name in CONTENT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=IGNORE)
        else:
            shutil.copy2(src, target / name)
    shutil.copy2(ROOT / "docs" / "collection.md", target / "README.md")


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lba-collection-") as tmp:
        staging = Path(tmp) / "edge"
        stage(staging)
        cmd = ["ansible-galaxy", "collection", "build", str(staging)]
        cmd += ["--output-path", str(out), "--force"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"ansible-galaxy collection build failed:\n{done.stdout}{done.stderr}")
    tarballs = sorted(out.glob("lbappliance-edge-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return tarballs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "collection")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
