"""Time loading, validating, rendering and checking a synthetic site of N services.

    python bench/render_scale.py [--services 500] [--check]    one size
    python bench/render_scale.py --curve [--check] [--cli]     100 .. 10,000 services, and a plot
    python bench/render_scale.py --quick [--plot P]            smoke run: tiny sizes, everything

The site is the lab site with N/2 L4 and N/2 L7 services, each on its own
anycast VIP with three backends. Stages, best of --repeat runs each, CPU time
(process_time) beside wall time because the machine is shared:
  load      parse defaults.yml and the site file (libyaml, positions kept)
  validate  the rest of load_site: typed model and cross-field checks
  render    render_site (every file in memory)
  check     every config checker (haproxy -c, keepalived -t, exabgp validate,
            bird -p, vtysh -C), in parallel; one run. Beside it the own peak
            RSS of the largest checker, `haproxy -c` on one node's haproxy.cfg,
            shard by shard as `render` checks it
Each size runs in a fresh process, so its peak resident memory is its own.
With --cli the commands an operator runs are timed as well, at the largest size:
`validate`, `render --no-check` and `render` (wall, CPU, peak RSS of the command
and of its largest checker child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lbappliance.inventory import load_site
from lbappliance.inventory.yamlpos import load_yaml
from lbappliance.paths import project_dir
from lbappliance.render import render_site
from lbappliance.render.checks import check_render, haproxy_shards
from lbappliance.secrets import Secrets

SIZES = [100, 500, 1000, 2000, 4000, 6000, 8000, 10000]
PLOT = project_dir() / "docs" / "benchmarks" / "render_scale.png"


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


def _best(repeat: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall and best CPU seconds of ``repeat`` calls, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        result = None  # one result alive at a time: the memory peak is one run's
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# A child's ru_maxrss starts at its parent's peak (Linux carries it over exec), so a
# checker started by this process, or by lbappliance, reports at least their peak. A
# small launcher in between measures the checker's own.
_LAUNCHER = (
    "import os, sys; pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ); "
    "_, status, usage = os.wait4(pid, 0); print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
)


def own_peak_rss(argv: list[str]) -> tuple[int, float]:
    """Exit code and peak resident MB of ``argv`` alone."""
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1]) / 1024


def haproxy_check_rss(text: str, work: Path) -> float:
    """The largest own peak (MB) of the ``haproxy -c`` runs that check ``text``, shard by shard."""
    peak = 0.0
    for shard in haproxy_shards(text):
        (work / "shard.cfg").write_text(shard)
        code, mb = own_peak_rss(["haproxy", "-c", "-q", "-f", str(work / "shard.cfg")])
        if code != 0:
            raise SystemExit("haproxy -c failed on a shard of the rendered haproxy.cfg")
        peak = max(peak, mb)
    return peak


def measure(root: Path, repeat: int, check: bool) -> dict[str, Any]:
    """Every stage at one size (this process: run it fresh per size)."""
    files = [root / "defaults.yml", root / "sites" / "scale.yml"]
    out: dict[str, Any] = {"load_avg": os.getloadavg()[0]}
    out["load"], out["load_cpu"], _ = _best(repeat, lambda: [load_yaml(f) for f in files])
    wall, cpu, site = _best(repeat, lambda: load_site(root, "scale"))
    out["validate"], out["validate_cpu"] = wall - out["load"], cpu - out["load_cpu"]
    out["render"], out["render_cpu"], rendered = _best(
        repeat, lambda: render_site(site, Secrets(None, None))
    )
    out["files"] = len(rendered.files)
    out["mb"] = sum(len(f.content) for f in rendered.files) / 1e6
    if check:
        wall, cpu, kids = time.perf_counter(), time.process_time(), _children_cpu()
        results = check_render(rendered)
        out["check"] = time.perf_counter() - wall
        out["check_cpu"] = time.process_time() - cpu + _children_cpu() - kids  # the checkers'
        out["check_not_ok"] = [
            f"{r.checker} {r.path}: {r.status}" for r in results if r.status != "ok"
        ]
        # haproxy -c is the largest checker by far; both nodes' files are the same size.
        cfg = max(
            (f for f in rendered.files if f.checker == "haproxy"), key=lambda f: len(f.content)
        )
        out["checker_rss_mb"] = haproxy_check_rss(cfg.content.decode(), root)
        out["haproxy_shards"] = len(haproxy_shards(cfg.content.decode()))
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def time_command(argv: list[str]) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MB) of a command and its children."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed: {proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def cli_times(root: Path, out: Path) -> dict[str, dict[str, float]]:
    lba = shutil.which("lbappliance") or str(Path(sys.executable).parent / "lbappliance")
    common = ["--site", "scale", "--inventory", str(root)]
    return {
        "validate": time_command([lba, "validate", *common]),
        "render --no-check": time_command(
            [lba, "render", *common, "--out", str(out), "--no-check"]
        ),
        "render": time_command([lba, "render", *common, "--out", str(out)]),
    }


def run_size(services: int, repeat: int, check: bool, work: Path) -> dict[str, Any]:
    """Measure one size in a fresh interpreter (own memory peak, no warm caches)."""
    argv = [
        sys.executable,
        __file__,
        "--services",
        str(services),
        "--repeat",
        str(repeat),
        "--json",
    ]
    env = {**os.environ, "TMPDIR": str(work)}
    proc = subprocess.run(
        [*argv, *(["--check"] if check else [])],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return {"services": services, **json.loads(proc.stdout.splitlines()[-1])}


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["services"] for r in rows]
    fig, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[3, 2])
    stages = ["load", "validate", "render"] + (["check"] if "check" in rows[0] else [])
    for stage in stages:
        times.plot(n, [r[f"{stage}_cpu"] for r in rows], marker="o", label=f"{stage} (CPU)")
    total = [sum(r[f"{s}_cpu"] for s in ("load", "validate", "render")) for r in rows]
    times.plot(n, total, marker="s", color="black", label="load + validate + render (CPU)")
    if 500 in n:
        at = n.index(500)
        times.annotate(
            f"500 services: {total[at]:.2f} s", (500, total[at]), textcoords="offset points",
            xytext=(-10, 60), arrowprops={"arrowstyle": "->"},
        )  # fmt: skip
    times.set_xlabel("services (half L4, half L7; one VIP each, 3 backends)")
    times.set_ylabel("seconds (best of runs, CPU time)")
    times.set_title("time per stage")
    times.grid(alpha=0.3)
    times.legend(fontsize=8)
    memory.plot(n, [r["rss_mb"] for r in rows], marker="o", label="lbappliance (peak RSS)")
    if "checker_rss_mb" in rows[0]:
        memory.plot(
            n,
            [r["checker_rss_mb"] for r in rows],
            marker="o",
            label="haproxy -c (own peak, per shard)",
        )
    memory.set_xlabel("services")
    memory.set_ylabel("MB")
    memory.set_title("peak resident memory")
    memory.grid(alpha=0.3)
    memory.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| services | load | validate | render | check | lbappliance RSS | haproxy -c RSS "
        "| output |"
    )
    lines = [head, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        check = f"{r['check']:.2f} s ({r['check_cpu']:.2f})" if "check" in r else "-"
        checker = "-"
        if "checker_rss_mb" in r:
            checker = f"{r['checker_rss_mb']:.0f} MB ({r['haproxy_shards']} shards)"
        lines.append(
            f"| {r['services']} | {r['load']:.2f} s ({r['load_cpu']:.2f}) "
            f"| {r['validate']:.2f} s ({r['validate_cpu']:.2f}) "
            f"| {r['render']:.2f} s ({r['render_cpu']:.2f}) | {check} "
            f"| {r['rss_mb']:.0f} MB | {checker} | {r['files']} files, {r['mb']:.1f} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--check", action="store_true", help="also run the config checkers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one size: print the figures as JSON")
    parser.add_argument("--curve", action="store_true", help="every size in --sizes, and a plot")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--plot", type=Path, help=f"curve: where the PNG goes (default {PLOT})")
    parser.add_argument(
        "--cli", action="store_true", help="curve: time the CLI at the largest size"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, temp plot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lba-scale-") as tmp:
        work = Path(tmp)
        if args.quick:
            args.curve, args.sizes, args.repeat, args.cli = True, "10,20", 1, True
            args.plot = args.plot or work / "render_scale.png"
        if not args.curve:
            make_site(work / "site", args.services)
            figures = measure(work / "site", args.repeat, args.check)
            if args.json:
                print(json.dumps(figures))
                return
            print(f"{args.services} services:")
            print(table([{"services": args.services, **figures}]))
            for line in figures.get("check_not_ok", []):
                print(f"  not ok: {line}")
            return
        rows = []
        for services in [int(s) for s in args.sizes.split(",")]:
            make_site(work / "site", services)
            rows.append(run_size(services, args.repeat, args.check or args.quick, work))
            print(f"{services}: {json.dumps(rows[-1])}", flush=True)
        print(table(rows))
        if args.cli:
            for name, t in cli_times(work / "site", work / "out").items():
                print(
                    f"lbappliance {name} at {rows[-1]['services']} services: "
                    f"{t['wall']:.2f} s wall, {t['cpu']:.2f} s CPU, peak RSS {t['rss_mb']:.0f} MB "
                    f"(load average {os.getloadavg()[0]:.1f})"
                )
        loads = [r["load_avg"] for r in rows]
        title = (
            f"bench/render_scale.py --curve, {os.cpu_count()} CPUs, load average "
            f"{min(loads):.1f}-{max(loads):.1f} during the run"
        )
        args.plot = args.plot or PLOT
        plot(rows, args.plot, title)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
