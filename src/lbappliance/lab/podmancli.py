"""The podman command as the container labs run it, and the host it runs on.

Rootful podman with the lab's own ``containers.conf`` (runc, ulimits: see
``CONTAINERS_CONF``) through ``CONTAINERS_CONF``; nothing in ``/etc/containers``
changes. Also what podman's network backend changes on the host and the lab
puts back: the host's IP forwarding settings and netavark's iptables chains.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from lbappliance.lab import poll
from lbappliance.paths import project_dir

PREFIX = "lbalab"
LABEL = "lbappliance.lab"
CAPS = "SYS_ADMIN,NET_ADMIN,NET_RAW,NET_BROADCAST"  # BIRD keeps NET_BROADCAST
HOST_SYSCTLS = {
    "ip_forward": "net.ipv4.ip_forward",
    "ipv6_forwarding": "net.ipv6.conf.all.forwarding",
}
CONTAINERS_CONF = """\
# Written by lbappliance for its container lab (rootful podman on this host kind).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"

[network]
# Debian's podman 4.3 defaults to CNI, whose --internal networks give the bridge no
# host address (the lab reaches its nodes over SSH through that address). Pinned here,
# not in /etc, so a machine whose podman first ran with CNI works too.
network_backend = "netavark"
"""
NETAVARK = Path("/usr/lib/podman/netavark")
INSTALL_HINT = "run ./scripts/install-deps.sh as root"


def state_dir() -> Path:
    """Where the lab keeps its containers.conf, image cache, SSH key and state."""
    env = os.environ.get("LBAPPLIANCE_LAB_DIR")
    return Path(env) if env else project_dir() / ".lab" / "podman"


class PodmanError(RuntimeError):
    """A lab operation failed; the message says what to do (the CLI prints it, exit 1)."""


class Podman:
    """Runs rootful podman with the lab's own containers.conf (never /etc/containers)."""

    def __init__(self, state: Path):
        self.conf = state / "containers.conf"
        state.mkdir(parents=True, exist_ok=True)
        if not self.conf.is_file() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.write_text(CONTAINERS_CONF)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, **kw: Any
    ) -> subprocess.CompletedProcess:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.run(
            ["podman", *args], env=self.env, text=True, timeout=timeout, check=False, **kw
        )
        if check and proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:3])}…: {(proc.stderr or '').strip()}")
        return proc

    def ok(self, *args: str) -> bool:
        return self.run(*args, check=False).returncode == 0

    def preflight(self) -> None:
        """Refuse early, with what to do, on a host that cannot run the lab."""
        if shutil.which("podman") is None:
            raise PodmanError(f"podman is not installed: {INSTALL_HINT}")
        if os.geteuid() != 0:
            raise PodmanError("the container lab runs rootful podman: run it as root")
        if not NETAVARK.is_file():
            raise PodmanError(
                f"podman's netavark network backend is missing ({NETAVARK}): {INSTALL_HINT} "
                "(it installs netavark and aardvark-dns)"
            )
        info = self.run("info", "--format", "{{.Host.NetworkBackend}}", check=False)
        backend = info.stdout.strip()
        if info.returncode != 0 or backend != "netavark":
            detail = (info.stderr or "").strip().splitlines()[-1:] or [f"backend {backend!r}"]
            raise PodmanError(
                f"podman does not use netavark with the lab's {self.conf} ({detail[0]}); "
                f"{INSTALL_HINT}, then `lbappliance lab down` and `lbappliance lab up`"
            )


def remove_netavark_chains() -> list[str]:
    """Delete the NETAVARK* iptables chains netavark leaves after its last network goes."""
    removed = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            rules = subprocess.run(
                [tool, "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N NETAVARK")]
            if not chains:
                continue
            for rule in rules:  # jumps into the chains from the built-in ones
                words = shlex.split(rule)
                if words[0] == "-A" and not words[1].startswith("NETAVARK") and "NETAVARK" in rule:
                    subprocess.run([tool, "-t", table, "-D", *words[1:]], check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-F", chain], check=False)
            for chain in chains:
                subprocess.run([tool, "-t", table, "-X", chain], check=False)
            removed.append(f"{tool} {table}: {', '.join(chains)}")
    if removed:  # iptables-nft leaves its tables behind, empty: drop those
        for family in ("ip", "ip6"):
            for table in ("filter", "nat"):
                out = subprocess.run(
                    ["nft", "-j", "list", "table", family, table],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                items = json.loads(out.stdout or "{}").get("nftables", [])
                if out.returncode == 0 and not any("rule" in item for item in items):
                    subprocess.run(["nft", "delete", "table", family, table], check=False)
    return removed


def read_sysctl(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


def write_sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


# Container probes (podman exec) are heavier than namespace ones: poll less often.
wait = functools.partial(poll.wait, interval=0.2)
