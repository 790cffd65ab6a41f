"""Render a synthetic site with N services and time it (issue 2: 500 services < 2 s).

    python bench/render_scale.py [--services 500] [--check]

Builds a site from the lab site with N/2 L4 and N/2 L7 services (each on its own
anycast VIP, with three backends each), then times load + validate + render, and
optionally the daemons' config checks.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from lbappliance.inventory import load_site
from lbappliance.paths import project_dir
from lbappliance.render import render_site
from lbappliance.render.checks import check_render
from lbappliance.secrets import Secrets


def make_site(root: Path, services: int) -> None:
    src = project_dir() / "inventory"
    shutil.copytree(src, root, dirs_exist_ok=True)
    data = yaml.safe_load((src / "sites" / "lab.yml").read_text())
    data["site"]["name"] = "scale"
    data["site"]["announce_prefixes"] = ["198.51.100.0/24", "100.64.0.0/16"]
    data["anycast"], data["l4_services"] = [], []
    data["l7"]["frontends"], data["l7"]["pools"] = [], []
    for i in range(services):
        vip = f"100.64.{i // 250}.{i % 250 + 1}"
        data["anycast"].append({"prefix": f"{vip}/32", "communities": ["65100:1"]})
        backends = [f"10.30.{i // 80}.{(i % 80) * 3 + k + 2}" for k in range(3)]
        if i % 2:
            data["l4_services"].append(
                {"name": f"l4-{i}", "vip": vip, "port": 8080, "protocol": "tcp",
                 "backends": [{"address": b} for b in backends]}
            )  # fmt: skip
        else:
            data["l7"]["frontends"].append(
                {"name": f"fe-{i}", "vip": vip, "port": 80, "default_pool": f"pool-{i}"}
            )
            data["l7"]["pools"].append(
                {"name": f"pool-{i}", "servers": [
                    {"name": f"s{k}", "address": b, "port": 8080} for k, b in enumerate(backends)
                ]}
            )  # fmt: skip
    (root / "sites" / "scale.yml").write_text(yaml.safe_dump(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--check", action="store_true", help="also run the config checkers")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_site(root, args.services)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            site = load_site(root, "scale")
            rendered = render_site(site, Secrets(None, None))
            times.append(time.perf_counter() - start)
        size = sum(len(f.content) for f in rendered.files)
        print(
            f"{args.services} services: load+validate+render best {min(times):.3f} s, "
            f"median {sorted(times)[len(times) // 2]:.3f} s over {args.repeat} runs "
            f"({len(rendered.files)} files, {size / 1e6:.1f} MB)"
        )
        if args.check:
            start = time.perf_counter()
            results = check_render(rendered)
            bad = [r for r in results if r.status != "ok"]
            print(f"config checks: {time.perf_counter() - start:.2f} s, {len(bad)} not ok")


if __name__ == "__main__":
    main()
