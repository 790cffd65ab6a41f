"""The VM lab for the tests: one booted pair for the whole session (boots cost minutes).

The VMs are deployed with the lab site plus what only a VM can run (``VM_SITE``):
NIC tuning on (the containers share the host's kernel, so the lab site has it off),
every CPU usable for NIC queues (a VM has two), irqbalance stopped by the profile,
the XDP forwarder in native mode on virtio-net, and a second L4 service on IPVS
(Maglev, DR) with its own anycast VIP.

Native XDP on virtio-net needs a spare queue pair per CPU (combined + CPUs <= max
combined, ``xdplink.virtio_xdp_hint``): the VM NICs have 4 (``lab.vm.QUEUES``), and
``queues: auto`` gives one per usable CPU, 2, so 2 + 2 <= 4 on eth1 (the forwarder)
and eth2 (its XDP_PASS egress program). ``test_vm_lab`` checks it on the VMs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbappliance.lab.vm import QEMU, VmLab
from lbappliance.paths import project_dir
from tests.deploy.conftest import WHEEL_INPUTS

ROOT = Path(__file__).resolve().parents[2]
# A deploy to the VMs takes tens of minutes on a busy 2-core machine (every Ansible
# task runs Python in a TCG guest).
DEPLOY_TIMEOUT = 3600
IPVS_VIP = "198.51.100.30"
# (text of inventory/sites/lab.yml, what the VM lab's copy has instead)
VM_SITE = [
    ("    nic_tuning: false   # lab nodes share the host's kernel\n", "    nic_tuning: true\n"),
    ("    nic_tuning: false\n", "    nic_tuning: true\n"),
    ("  xdp_mode: generic   # veth peers have no XDP program of their own\n",
     "  xdp_mode: native\n"),
    ("    queues: auto\n    irqbalance: leave\n",
     "    queues: auto\n    housekeeping_cpus: []\n    irqbalance: stop\n"),
    ('  - prefix: "2001:db8:100::10/128"\n',
     f'  - prefix: {IPVS_VIP}/32\n    communities: ["65100:30"]\n'
     '  - prefix: "2001:db8:100::10/128"\n'),
    ("    health_check: {type: http, path: /health}\n",
     "    health_check: {type: http, path: /health}\n"
     "  - name: echo-ipvs\n"
     f"    vip: {IPVS_VIP}\n"
     "    port: 8080\n"
     "    dataplane: ipvs\n"
     "    forwarding: l2dsr\n"
     "    backends:\n"
     "      - {address: 10.30.0.21}\n"
     "      - {address: 10.30.0.22}\n"
     "      - {address: 10.30.0.23}\n"
     "    health_check: {type: http, path: /health, interval: 2s, timeout: 1s,"
     " fall: 2, rise: 2}\n"),
]  # fmt: skip


def vm_lab_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, taps)"
    for tool in (QEMU, "qemu-img", "mkfs.ext4", "socat", "debootstrap", "zstd", "clang"):
        if not shutil.which(tool):
            return f"{tool} is not installed (./scripts/install-deps.sh)"
    return None


@pytest.fixture(scope="session")
def vm_session() -> Iterator[Path]:
    """This session's files (inventory, source, renders), in the checkout's .lab/.

    Not pytest's tmp_path: the session runs for tens of minutes, and pytest runs of
    other checkouts on the machine prune older base temp directories meanwhile.
    """
    base = project_dir() / ".lab" / "vm-tests" / f"lbv{uuid.uuid4().hex[:4]}"
    base.mkdir(parents=True)
    yield base
    if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def vm_source(vm_session: Path) -> Path:
    """The tree the node wheel is built from, frozen for the session."""
    snap = vm_session / "source"
    for name in WHEEL_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, snap / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            snap.mkdir(exist_ok=True)
            shutil.copy2(src, snap / name)
    return snap


@pytest.fixture(scope="session")
def vm_inventory(vm_session: Path) -> Path:
    """A copy of the project's inventory whose lab site is ``VM_SITE``'s."""
    inventory = vm_session / "inventory"
    shutil.copytree(ROOT / "inventory", inventory)
    site = inventory / "sites" / "lab.yml"
    text = site.read_text()
    for old, new in VM_SITE:
        assert text.count(old) == 1, f"inventory/sites/lab.yml changed: {old!r}"
        text = text.replace(old, new)
    site.write_text(text)
    return inventory


@pytest.fixture(scope="session")
def vm_lab(vm_session: Path, vm_inventory: Path) -> Iterator[VmLab]:
    """The lab site with lb1 and lb2 as VMs, booted once, removed at the end.

    A name of its own (namespaces ``lbv<hex>-*``), so it runs next to the other labs
    without the container lab's lock.
    """
    if reason := vm_lab_available():
        pytest.skip(reason)
    lab = VmLab.load(inventory=vm_inventory, name=vm_session.name)
    try:
        t = time.monotonic()
        timings = lab.up(progress=print)
        print(f"MEASURE VM lab up in {time.monotonic() - t:.1f} s: {timings}")
        yield lab
    finally:
        if not os.environ.get("LBAPPLIANCE_KEEP_LAB"):
            print(f"VM lab down: {lab.down()}")
            left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            assert f"{lab.name}-" not in left, f"namespaces left behind: {left}"
            assert not lab.control_dir.exists() and not lab.state.exists()


@pytest.fixture(scope="session")
def vm_workdir(vm_session: Path) -> Path:
    return vm_session
