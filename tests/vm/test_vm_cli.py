"""`lbappliance lab vm` without booting anything: the qemu command line the lab runs,
and one-line errors (exit 1) where a user can hit them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.lab import vm as vmlab
from lbappliance.lab.vm import VmLab, VmLabError
from lbappliance.lab.vmimage import VmImage


def test_qemu_runs_tcg_with_multiqueue_virtio_and_the_vm_identity(tmp_path: Path) -> None:
    lab = VmLab.load(name="lbvtest", state=tmp_path)
    lab.key.parent.mkdir(parents=True)
    lab.key.with_suffix(".pub").write_text("ssh-ed25519 AAAAC3Nza lbappliance-vm-lab\n")
    cmd = lab.qemu_command(lab.topology.host("lb1"), VmImage(tmp_path / "img"))
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=multi,tb-size=256"
    assert cmd[cmd.index("-cpu") + 1] == "qemu64"
    append = cmd[cmd.index("-append") + 1].split()
    assert "systemd.hostname=lb1" in append
    assert "lbavm.addr=eth0,10.99.0.11/24" in append
    assert "lbavm.key=ssh-ed25519:AAAAC3Nza" in append
    assert "net.ifnames=0" in append and "root=/dev/vda" in append
    netdevs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-netdev"]
    devices = [
        cmd[i + 1] for i, a in enumerate(cmd) if a == "-device" and "virtio-net" in cmd[i + 1]
    ]
    assert len(netdevs) == len(devices) == 3  # eth0 (mgmt), eth1 (uplink), eth2 (backend)
    assert all("vhost=off" in n for n in netdevs)
    assert "queues=1" in netdevs[0] and "mq=on" not in devices[0]
    for netdev, device in zip(netdevs[1:], devices[1:], strict=True):
        assert "queues=4" in netdev and "mq=on,vectors=10" in device
    assert cmd[cmd.index("-drive") + 1].startswith(f"file={lab.overlay('lb1')},")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root")
def test_status_without_a_lab_says_how_to_build_one(tmp_path: Path) -> None:
    env = {"LBAPPLIANCE_VM_LAB_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["lab", "vm", "status"], env=env)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: lab vm: no VM lab: `lbappliance lab vm up` builds it"], lines
    assert "Traceback" not in result.output


def test_no_third_vm_on_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two VMs at most machine-wide, whichever lab runs them: the boot refuses first."""
    monkeypatch.setattr(vmlab, "_qemu_processes", lambda: [4101, 4102])
    lab = VmLab.load(name="lbvtest", state=tmp_path)
    with pytest.raises(VmLabError, match=r"2 qemu VMs already run .*pids 4101, 4102.*at most 2"):
        lab._boot(lab.topology.host("lb1"), VmImage(tmp_path / "img"))
    assert not lab.overlay("lb1").exists()
