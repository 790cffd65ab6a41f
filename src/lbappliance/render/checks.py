"""Check rendered configs with each daemon's own checker.

- haproxy: ``haproxy -c``; ``crt-base`` is pointed at throwaway self-signed
  certificates of the same names (the real ones live in the vault). A large
  config is checked in shards (see ``haproxy_shards``) so that no checker holds
  the whole site's load-balancing trees at once.
- keepalived: ``keepalived -t`` inside a scratch network namespace holding dummy
  interfaces named as on the node, because keepalived resolves interfaces.
- bird (router side, and the nodes' BFD responder): ``bird -p`` (parse only).
- FRR (router side): ``vtysh -C`` (dry run).
- exabgp: ``exabgp validate``; it insists the ``process`` program exists, and
  the node's venv python does not exist here, so that one path is swapped for
  this interpreter.

A checker that is not installed is a warning (an error with ``strict``).
The checkers are independent processes: they run side by side, at most one
per CPU this process may use, the largest files first (at 10,000 services
each node's haproxy.cfg takes most of the time).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lbappliance.render import Render, RenderedFile


@dataclass(frozen=True)
class CheckResult:
    path: str
    checker: str
    status: str  # "ok" | "failed" | "skipped"
    detail: str = ""


def _run(cmd: list[str], timeout: float = 60) -> tuple[bool, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _self_signed(directory: Path, name: str) -> None:
    key, crt = directory / f"{name}.key", directory / f"{name}.crt"
    ok, out = _run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(crt)]
    )  # fmt: skip
    if not ok:
        raise RuntimeError(f"openssl could not make a test certificate: {out}")
    (directory / f"{name}.pem").write_bytes(crt.read_bytes() + key.read_bytes())


# HAProxy's memory per shard, in units of one server's weight: `balance random` keeps
# 16 tree nodes (48 bytes each) per unit of weight per server, ~0.75 KB; a proxy or a
# server costs about as much as 12 units besides. ~150 MB of checker per shard.
SHARD_BUDGET = 200_000
_PROXY_COST = 12
_PROXY = re.compile(r"(frontend|backend|listen)\s+(\S+)")
_WEIGHT = re.compile(r"\sweight\s+(\d+)")
_TOKENS = re.compile(r"[\s,()/]+")
_HAPROXY_PID = re.compile(r"(?m)^(\[[A-Z]+\])\s+\(\d+\) :")
_HAPROXY_SAYS = ("[ALERT]", "[WARNING]")


def _server_cost(line: str) -> int:
    m = _WEIGHT.search(line)
    return _PROXY_COST + (int(m[1]) if m else 1)


def haproxy_shards(text: str, budget: int = SHARD_BUDGET) -> list[str]:
    """Split a haproxy.cfg into configs that together hold every line once.

    Every shard keeps the sections other than proxies (global, defaults, ...) and
    whole groups of proxies that name each other (a frontend, its backends and its
    tables); every other line is blanked, so line numbers in haproxy's messages are
    the original file's. A config within ``budget`` (see ``SHARD_BUDGET``) is one shard.
    """
    lines = text.split("\n")
    owner: list[str | None] = []  # proxy owning each line; None: common to all shards
    proxies: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        if line and not line[0].isspace() and not line.startswith("#"):
            m = _PROXY.match(line)
            current = m.group(2) if m else None
            if current is not None:
                proxies[current] = []
        if current is not None:
            proxies[current].append(line)
        owner.append(current)
    cost = {
        name: _PROXY_COST + sum(_server_cost(x) for x in body if x.lstrip().startswith("server "))
        for name, body in proxies.items()
    }
    if sum(cost.values()) <= budget:
        return [text]
    group = {name: name for name in proxies}  # union-find: proxies that name each other

    def find(name: str) -> str:
        while group[name] != name:
            group[name] = group[group[name]]
            name = group[name]
        return name

    for name, body in proxies.items():
        for ref in {t for x in body[1:] for t in _TOKENS.split(x)} & proxies.keys():
            group[find(ref)] = find(name)
    members: dict[str, list[str]] = {}
    for name in proxies:
        members.setdefault(find(name), []).append(name)
    shards: list[set[str]] = []
    used = budget
    for names in members.values():
        size = sum(cost[n] for n in names)
        if used + size > budget:
            shards.append(set())
            used = 0
        shards[-1].update(names)
        used += size
    return [
        "\n".join(x if o is None or o in keep else "" for x, o in zip(lines, owner, strict=True))
        for keep in shards
    ]


def check_haproxy(f: RenderedFile, work: Path) -> CheckResult:
    text = f.content.decode()
    certs = work / "certs"
    certs.mkdir(exist_ok=True)
    for name in sorted(set(re.findall(r" crt (\S+)\.pem", text))):
        if not (certs / f"{name}.pem").exists():
            _self_signed(certs, name)
    text = re.sub(r"(?m)^(\s*crt-base) .*$", rf"\1 {certs}", text)
    cfg = work / "haproxy.cfg"
    failed, said = False, dict[str, None]()  # messages in order, each once
    for shard in haproxy_shards(text):
        cfg.write_text(shard)
        # Not -q: that silences the alerts too. The notices and the pid go.
        ok, out = _run(["haproxy", "-c", "-f", str(cfg)])
        failed |= not ok
        out = _HAPROXY_PID.sub(r"\1", out.replace(str(cfg), f.path))
        said.update(dict.fromkeys(x for x in out.splitlines() if x.startswith(_HAPROXY_SAYS)))
    return CheckResult(f.path, "haproxy", "failed" if failed else "ok", "\n".join(said))


@contextmanager
def _scratch_netns(ifnames: list[str]) -> Iterator[str]:
    name = f"lbachk-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        for i, ifname in enumerate(ifnames):  # no dummy driver here; a veth pair will do
            subprocess.run(
                [
                    "ip",
                    "-n",
                    name,
                    "link",
                    "add",
                    ifname,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    f"lbachk{i}",
                ],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                ["ip", "-n", name, "link", "set", ifname, "up"], check=True, capture_output=True
            )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def check_keepalived(f: RenderedFile, work: Path, ifnames: list[str]) -> CheckResult:
    if os.geteuid() != 0:
        return CheckResult(f.path, "keepalived", "skipped", "needs root (scratch netns)")
    cfg = work / "keepalived.conf"
    cfg.write_bytes(f.content)
    with _scratch_netns(ifnames) as ns:
        ok, out = _run(["ip", "netns", "exec", ns, "keepalived", "-t", "-f", str(cfg)])
    # keepalived -t prints nothing useful on success; on failure keep its complaints.
    return CheckResult(
        f.path, "keepalived", "ok" if ok else "failed", out.replace(str(cfg), f.path)
    )


def check_exabgp(f: RenderedFile, work: Path) -> CheckResult:
    cfg = work / "exabgp.conf"
    text = re.sub(r"(?m)^(\s*run )(\S+)", rf"\1{sys.executable}", f.content.decode())
    _private(cfg, text.encode())
    env = {**os.environ, "exabgp_log_destination": "stdout"}
    proc = subprocess.run(
        ["exabgp", "validate", "-n", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip()
    ok = proc.returncode == 0
    return CheckResult(f.path, "exabgp", "ok" if ok else "failed", out.replace(str(cfg), f.path))


def _private(path: Path, content: bytes) -> None:
    """Write a checker's copy of a rendered file 0600 (it may hold secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def check_bird(f: RenderedFile, work: Path) -> CheckResult:
    cfg = work / "bird.conf"
    _private(cfg, f.content)
    ok, out = _run(["bird", "-p", "-c", str(cfg)])
    return CheckResult(f.path, "bird", "ok" if ok else "failed", out.replace(str(cfg), f.path))


def check_vtysh(f: RenderedFile, work: Path) -> CheckResult:
    cfg = work / "frr.conf"
    _private(cfg, f.content)
    ok, out = _run(["vtysh", "-C", "-f", str(cfg)])
    return CheckResult(f.path, "vtysh", "ok" if ok else "failed", out.replace(str(cfg), f.path))


def node_interfaces(render: Render, node: str) -> list[str]:
    n = next(x for x in render.site.model.nodes if x.name == node)
    return [i.name for i in n.interfaces]


def _check_one(render: Render, f: RenderedFile, work: Path, strict: bool) -> CheckResult:
    """Run ``f``'s checker in its own scratch directory ``work``."""
    if not shutil.which(f.checker or ""):  # each checker is named after its binary
        return CheckResult(
            f.path, f.checker or "", "failed" if strict else "skipped",
            f"{f.checker} is not installed: config not checked",
        )  # fmt: skip
    work.mkdir()
    if f.checker == "haproxy":
        return check_haproxy(f, work)
    if f.checker == "keepalived":
        result = check_keepalived(f, work, node_interfaces(render, f.node or ""))
        if result.status == "skipped" and strict:
            result = CheckResult(f.path, f.checker, "failed", result.detail)
        return result
    if f.checker == "bird":
        return check_bird(f, work)
    if f.checker == "vtysh":
        return check_vtysh(f, work)
    return check_exabgp(f, work)


def check_workers() -> int:
    """Checkers run at once: one per CPU this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def check_render(render: Render, strict: bool = False) -> list[CheckResult]:
    """Run every available checker over the rendered files, in parallel; results in file
    order, their output scrubbed of secret values."""
    return [
        CheckResult(r.path, r.checker, r.status, render.scrub(r.detail))
        for r in _check_all(render, strict)
    ]


def _check_all(render: Render, strict: bool) -> list[CheckResult]:
    checked = [f for f in render.files if f.checker]
    if not checked:
        return []
    with (
        tempfile.TemporaryDirectory(prefix="lbachk-") as tmp,
        ThreadPoolExecutor(max_workers=min(check_workers(), len(checked))) as pool,
    ):
        # Largest first: the long haproxy checks start at once, the short ones fill in.
        futures = {
            f.path: pool.submit(_check_one, render, f, Path(tmp) / f.path.replace("/", "_"), strict)
            for f in sorted(checked, key=lambda f: -len(f.content))
        }
        return [futures[f.path].result() for f in checked]
