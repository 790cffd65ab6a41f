"""Fixtures for the deploy tests: the container lab, deploys, a client's request stream."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lbappliance.lab.podman import PodmanLab

ROOT = Path(__file__).resolve().parents[2]
# What goes into the node wheel (roles/lb_base/files/wheelhouse.py WHEEL_INPUTS).
WHEEL_INPUTS = ("pyproject.toml", "README.md", "src", "templates", "roles", "playbooks", "bpf")
LAB_LOCK = Path("/run/lock/lbappliance-lab.lock")
_SUMMARY = re.compile(r"^deploy \S+: (?P<verdict>ok|FAILED) \((?P<changed>\d+) changed\)")


def podman_lab_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root (rootful podman)"
    for tool in ("podman", "debootstrap", "zstd", "clang"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


@contextlib.contextmanager
def lab_lock() -> Iterator[None]:
    """One user of the container lab at a time, across processes and checkouts: its
    container and network names and addresses are the machine's, not a checkout's."""
    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def source_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree the node wheel is built from, frozen for the session (stable digests)."""
    snap = tmp_path_factory.mktemp("source")
    for name in WHEEL_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, snap / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, snap / name)
    return snap


@pytest.fixture(scope="module")
def podman_lab() -> Iterator[PodmanLab]:
    """The lab site as containers, fresh for the module, removed afterwards."""
    if reason := podman_lab_available():
        pytest.skip(reason)
    with lab_lock():
        yield from _fresh_lab()


def _fresh_lab() -> Iterator[PodmanLab]:
    lab = PodmanLab.load()
    lab.down()
    try:
        t = time.monotonic()
        timings = lab.up(progress=print)
        print(f"lab up in {time.monotonic() - t:.1f} s: {timings}")
        for lb in lab.topology.lbs:
            lab.assert_lab_route(str(lb.address_on("mgmt")))
        yield lab
    finally:
        if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
            print(f"lab down: {lab.down()}")


@dataclass
class DeployResult:
    returncode: int
    output: str
    changed: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_deploy(
    lab: PodmanLab,
    source: Path,
    out: Path,
    *args: str,
    inventory: Path | None = None,
    timeout: float = 900,
) -> DeployResult:
    """`lbappliance deploy --site lab` over SSH, as an operator runs it (no terminal)."""
    cmd = [sys.executable, "-c", "from lbappliance.cli import main; main()", "deploy"]
    cmd += ["--site", "lab", "--out", str(out), *args]
    if inventory:
        cmd += ["--inventory", str(inventory)]
    env = {**os.environ, **lab.deploy_env(), "LBAPPLIANCE_SOURCE": str(source)}
    t = time.monotonic()
    proc = subprocess.run(
        cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    seconds = time.monotonic() - t
    output = proc.stdout + proc.stderr
    print(output)
    summary = next((m for line in output.splitlines() if (m := _SUMMARY.match(line))), None)
    changed = int(summary["changed"]) if summary else -1
    return DeployResult(proc.returncode, output, changed, seconds)


@dataclass
class StreamReport:
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)


class ClientStream:
    """A steady, bounded stream of HTTP requests from the lab client, one connection each.

    Runs in a thread inside the client container's network namespace; stops
    when asked, after ``max_requests`` or after ``max_seconds``, whichever first.
    """

    def __init__(
        self,
        lab: PodmanLab,
        address: str,
        port: int = 80,
        rate: float = 20.0,
        max_requests: int = 4000,
        max_seconds: float = 300.0,
        timeout: float = 5.0,
    ):
        self.lab, self.address, self.port = lab, address, port
        self.interval, self.max_requests, self.max_seconds = 1 / rate, max_requests, max_seconds
        self.timeout = timeout
        self.report = StreamReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ClientStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> StreamReport:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self.report

    def _run(self) -> None:
        with self.lab.inside("client"):
            start = time.monotonic()
            while not self._stop.is_set() and self.report.sent < self.max_requests:
                if time.monotonic() - start > self.max_seconds:
                    break
                t = time.monotonic()
                self.report.sent += 1
                try:
                    conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
                    conn.request("GET", "/", headers={"Connection": "close"})
                    resp = conn.getresponse()
                    body = resp.read().decode().strip()
                    conn.close()
                    if resp.status == 200:
                        self.report.answers[body] += 1
                    else:
                        self.report.failures.append(f"{time.time():.3f} HTTP {resp.status} {body}")
                except (OSError, http.client.HTTPException) as exc:
                    self.report.failures.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))
