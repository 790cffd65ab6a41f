"""Build the node's Python software on the controller: lbappliance and its dependencies.

Usage: wheelhouse.py SOURCE CACHE  ->  prints JSON {digest, tarball, project_wheel, wheels}

SOURCE is a checkout of lbappliance (pyproject.toml at its root). The project
wheel is reproducible (hatchling), so the same sources give the same bytes and
the same digest; a node reinstalls only when the digest changes. Builds are
cached under CACHE by a hash of what goes into the wheel, and the dependency
wheels by the wheel's requirements, so an unchanged tree costs milliseconds.
Nodes need no package index: they install from the tarball with --no-index.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# What pyproject.toml puts into the wheel (plus pyproject.toml itself).
WHEEL_INPUTS = ("pyproject.toml", "README.md", "src/lbappliance", "templates", "roles",
                "playbooks", "bpf")  # fmt: skip
SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def tree_hash(source: Path) -> str:
    h = hashlib.sha256()
    for top in WHEEL_INPUTS:
        root = source / top
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in paths:
            if path.is_file() and not SKIP & set(path.parts) and path.suffix != ".pyc":
                h.update(str(path.relative_to(source)).encode() + b"\0")
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                   check=True, stdout=sys.stderr)  # fmt: skip


def project_wheel(source: Path, cache: Path) -> Path:
    key = tree_hash(source)[:16]
    out = cache / "project" / key
    wheels = list(out.glob("*.whl")) if out.is_dir() else []
    if len(wheels) == 1:
        return wheels[0]
    staging = Path(tempfile.mkdtemp(dir=cache))
    try:
        pip("wheel", "--no-deps", "--wheel-dir", str(staging), str(source))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return next(out.glob("*.whl"))


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return sorted(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")
                  and "extra ==" not in ln)  # fmt: skip


def dependency_wheels(wheel: Path, cache: Path) -> list[Path]:
    reqs = requirements(wheel)
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]
    pool = cache / "deps"
    manifest = pool / f"set-{key}.json"
    if manifest.is_file():
        names = json.loads(manifest.read_text())
        if all((pool / n).is_file() for n in names):
            return [pool / n for n in names]
    staging = Path(tempfile.mkdtemp(dir=cache))
    try:
        pool.mkdir(parents=True, exist_ok=True)
        pip("wheel", "--wheel-dir", str(staging), "--find-links", str(pool), *reqs)
        names = sorted(p.name for p in staging.glob("*.whl"))
        for name in names:
            (staging / name).replace(pool / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest.write_text(json.dumps(names))
    return [pool / n for n in names]


def main() -> None:
    source, cache = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).expanduser().resolve()
    if not (source / "pyproject.toml").is_file():
        sys.exit(f"{source} is not an lbappliance checkout; set lb_base_wheelhouse_source")
    cache.mkdir(parents=True, exist_ok=True)
    wheel = project_wheel(source, cache)
    wheels = sorted([wheel, *dependency_wheels(wheel, cache)], key=lambda p: p.name)
    h = hashlib.sha256()
    for path in wheels:
        h.update(f"{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    digest = h.hexdigest()
    tarball = cache / f"wheelhouse-{digest[:16]}.tar"
    if not tarball.is_file():
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for path in wheels:
                tar.add(path, arcname=path.name)
        partial.replace(tarball)
    print(json.dumps({"digest": digest, "tarball": str(tarball), "project_wheel": wheel.name,
                      "wheels": [p.name for p in wheels]}))  # fmt: skip


if __name__ == "__main__":
    main()
