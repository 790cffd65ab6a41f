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

from lbappliance.lab.podman import PodmanLab, wait

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
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


# The modules that share one deployed lab, in the order they run: the no-op checks need
# the pristine first deploy; test_deploy_lab leaves HAProxy's maxconn changed and
# test_network_lab (last) an extra address, which nothing after them looks at.
SHARED_LAB_MODULES = ("test_deploy_noop_lab.py", "test_deploy_lab.py", "test_network_lab.py")


@dataclass
class DeployedLab:
    """The container lab after its first, full deploy of the lab site."""

    lab: PodmanLab
    render: Path  # that deploy's --out: the rendered site it installed
    first: DeployResult


class _SharedLab:
    """One lab-up and one first deploy for every module in SHARED_LAB_MODULES.

    The lab lock is held from the first test that uses it until after the last one
    (``pytest_runtest_teardown`` closes it then, not at the end of the session), so
    other lab users (Molecule, tests/nic) run after it, each taking the lock itself.
    """

    def __init__(self) -> None:
        self.stack: contextlib.ExitStack | None = None
        self.deployed: DeployedLab | None = None

    def open(self, source: Path, workdir: Path) -> DeployedLab:
        if self.deployed:
            return self.deployed
        if reason := podman_lab_available():
            pytest.skip(reason)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(lab_lock())
            lab = stack.enter_context(contextlib.contextmanager(_fresh_lab)())
            before = " ".join(lab.addresses("lb1"))
            assert "10.10.0.11" not in before, "the lab itself configured lb1's uplink"
            result = run_deploy(lab, source, workdir / "render")
            assert result.ok, "first deploy failed"
            assert result.changed > 0
            print(f"MEASURE first deploy: {result.seconds:.1f} s, {result.changed} changed")
            wait(lambda: _ecmp_both(lab), 90, "ECMP via both nodes, IPv4 and IPv6")
        except BaseException:
            stack.close()
            raise
        self.stack, self.deployed = stack, DeployedLab(lab, workdir / "render", result)
        return self.deployed

    def close(self) -> None:
        if self.stack:
            self.stack.close()  # lab down (unless LBAPPLIANCE_KEEP_LAB), then the lock
        self.stack = self.deployed = None


_SHARED = _SharedLab()


def _ecmp_both(lab: PodmanLab) -> bool:
    """The router's FIB spreads the anycast VIP (IPv4 and IPv6) over both LB nodes."""
    prefixes = ("198.51.100.10/32", "2001:db8:100::10/128")
    return all(len(lab.fib_nexthops(prefix)) == 2 for prefix in prefixes)


@pytest.fixture(scope="session")
def deployed_lab(
    source_snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeployedLab]:
    """The lab site as containers after one first deploy, shared by SHARED_LAB_MODULES."""
    yield _SHARED.open(source_snapshot, tmp_path_factory.mktemp("first-deploy"))
    _SHARED.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared lab's modules run together, in SHARED_LAB_MODULES order, where the
    first of them would have run."""
    rank = {name: i for i, name in enumerate(SHARED_LAB_MODULES)}
    shared = [item for item in items if item.path.name in rank and item.path.parent == HERE]
    if not shared:
        return
    at = items.index(shared[0])
    rest = [item for item in items if item not in shared]
    shared.sort(key=lambda item: rank[item.path.name])  # stable: module order kept inside
    items[:] = rest[:at] + shared + rest[at:]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Bring the shared lab down right after its last user."""
    if "deployed_lab" in item.fixturenames and (
        nextitem is None or "deployed_lab" not in nextitem.fixturenames
    ):
        _SHARED.close()


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

    def wait_sent(self, count: int, timeout: float) -> None:
        """Wait until ``count`` requests were sent, or one failed (the caller's assertion
        on ``failures`` then says which, instead of a timeout that says nothing)."""
        wait(lambda: self.report.sent >= count or self.report.failures, timeout,
             f"{count} requests to {self.address}")  # fmt: skip

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
