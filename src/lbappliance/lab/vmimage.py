"""The VM lab's boot image: the container lab's root filesystem plus a kernel, cached.

The LB VMs boot a Debian bookworm image made from the same ``debootstrap``
root filesystem as the container lab (``image.py``: systemd, SSH, Python and
every package the roles install), with what a machine of its own needs on top:
``linux-image-amd64`` and an initramfs built with ``MODULES=most`` (virtio
block and network drivers), udev, ``ipvsadm`` and ``irqbalance`` (running, as
Debian installs it: the nic profile's ``irqbalance`` decides), an fstab
for ``/dev/vda`` and ``lab-vm-identity.service``, which takes the VM's
identity from the kernel command line at every boot (``lbavm.addr=IF,ADDR``:
the management address; ``lbavm.key=TYPE:BASE64``: root's authorized SSH key;
the hostname comes from systemd's own ``systemd.hostname=``).

The result is three files in ``cache_dir()/<digest>/``: ``base.img`` (raw
ext4, made with ``mkfs.ext4 -d``), ``vmlinuz`` and ``initrd.img``. Every VM
boots from a qcow2 overlay on ``base.img``; the base is never written. The
digest covers the container recipe and this module's, so a changed package
list builds a new image; older digests are removed.

Cost: cached → nothing; else the root filesystem tarball (the container lab's
cache when present, else debootstrap, ~1.5-3.5 min), the kernel and initramfs
(~1-2 min) and ``mkfs.ext4`` (~10 s). It needs the Debian mirror.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lbappliance.lab import image

VM_PACKAGES = ("linux-image-amd64", "udev", "kmod", "ipvsadm", "irqbalance")
IMAGE_SIZE = "4G"
IDENTITY_SCRIPT = r"""#!/bin/sh
# Written into the lbappliance VM lab image: the VM's identity from the kernel command line.
set -e
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    lbavm.addr=*)
      value=${arg#lbavm.addr=}; dev=${value%%,*}; addr=${value#*,}
      i=0
      while [ ! -e "/sys/class/net/$dev" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
      ip link set "$dev" up
      ip address replace "$addr" dev "$dev"
      ;;
    lbavm.key=*)
      value=${arg#lbavm.key=}
      mkdir -p /root/.ssh && chmod 700 /root/.ssh
      printf '%s %s\n' "${value%%:*}" "${value#*:}" > /root/.ssh/authorized_keys
      chmod 600 /root/.ssh/authorized_keys
      ;;
  esac
done
"""
IDENTITY_UNIT = """\
[Unit]
Description=lbappliance VM lab: identity from the kernel command line
DefaultDependencies=no
After=systemd-udevd.service
Before=network-pre.target systemd-networkd.service ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-vm-identity

[Install]
WantedBy=multi-user.target
"""
VM_CUSTOMISE = f"""
set -e
export DEBIAN_FRONTEND=noninteractive
mv /etc/apt/sources.list.lab-disabled /etc/apt/sources.list
mkdir -p /etc/initramfs-tools/conf.d
echo MODULES=most > /etc/initramfs-tools/conf.d/lbappliance-vm.conf
apt-get update -qq
apt-get install -y -qq --no-install-recommends {" ".join(VM_PACKAGES)}
# irqbalance stays enabled, as Debian installs it: the nic profile says what to do with it.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer >/dev/null 2>&1 || true
echo '/dev/vda / ext4 defaults,noatime,errors=remount-ro 0 1' > /etc/fstab
cat > /usr/local/sbin/lab-vm-identity <<'EOF'
{IDENTITY_SCRIPT}EOF
chmod 0755 /usr/local/sbin/lab-vm-identity
cat > /etc/systemd/system/lab-vm-identity.service <<'EOF'
{IDENTITY_UNIT}EOF
systemctl enable lab-vm-identity.service
echo localhost > /etc/hostname
apt-get clean
mv /etc/apt/sources.list /etc/apt/sources.list.lab-disabled
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
"""


def cache_dir() -> Path:
    """Where base images live: outside every checkout, shared by them (root's cache)."""
    return Path(os.environ.get("LBAPPLIANCE_VM_CACHE", "/var/cache/lbappliance/vm"))


def digest() -> str:
    """What goes into the image: the container lab's recipe and the VM layer's."""
    recipe = "\n".join([image.image_tag(), *VM_PACKAGES, VM_CUSTOMISE, IMAGE_SIZE])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class VmImage:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base.img"

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.base, self.kernel, self.initrd))


def ensure_vm_image(
    progress: Callable[[str], None] = lambda _: None, container_cache: Path | None = None
) -> tuple[VmImage, str]:
    """Make the VM image exist; returns it and what was done (present|built)."""
    cache = cache_dir()
    img = VmImage(cache / digest())
    if img.complete():
        return img, "present"
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.iterdir():  # earlier recipes' images and half-built ones
        if old != img.root and old.name != "rootfs":
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    log = cache / "build.log"
    tarball = _rootfs_tarball(cache, container_cache, log, progress)
    t = time.monotonic()
    progress("VM image: kernel, initramfs (MODULES=most), ext4 image...")
    work = Path(tempfile.mkdtemp(prefix="build.", dir=cache))
    rootfs = work / "rootfs"
    try:
        rootfs.mkdir()
        image.unpack(tarball, rootfs)
        _customise(rootfs, log)
        staged = work / "image"
        staged.mkdir()
        boot = rootfs / "boot"
        shutil.copy2(_newest(boot, "vmlinuz-"), staged / "vmlinuz")
        shutil.copy2(_newest(boot, "initrd.img-"), staged / "initrd.img")
        image.run_logged(
            ["mkfs.ext4", "-q", "-F", "-L", "lbavm", "-d", str(rootfs),
             str(staged / "base.img"), IMAGE_SIZE],
            log,
        )  # fmt: skip
        shutil.rmtree(img.root, ignore_errors=True)
        staged.replace(img.root)
    finally:
        image.unmount_below(rootfs)
        shutil.rmtree(work, ignore_errors=True)
    progress(f"VM image {img.root}: kernel and ext4 image in {time.monotonic() - t:.0f} s")
    return img, "built"


def _rootfs_tarball(
    cache: Path, container_cache: Path | None, log: Path, progress: Callable[[str], None]
) -> Path:
    """The container lab's root filesystem tarball: its cache, ours, or debootstrap."""
    name = image.tarball_name()
    if container_cache and (container_cache / name).is_file():
        return container_cache / name
    own = cache / "rootfs" / name
    if own.is_file():
        return own
    own.parent.mkdir(exist_ok=True)
    image.prune_tarballs(own.parent, name)
    t = time.monotonic()
    progress("VM image: debootstrap of the lab root filesystem (needs the Debian mirror)...")
    image.build_rootfs_tarball(own, log)
    progress(f"VM image: root filesystem in {time.monotonic() - t:.0f} s")
    return own


def _customise(rootfs: Path, log: Path) -> None:
    """Install the kernel and the VM's own units in a chroot (with proc, sys, dev)."""
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copy2("/etc/resolv.conf", resolv)  # read-only use of the host's resolver
    mounts = [("proc", "proc", ["-t", "proc"]), ("sys", "sys", ["-t", "sysfs"])]
    mounts += [("/dev", "dev", ["--bind"]), ("/dev/pts", "dev/pts", ["--bind"])]
    try:
        for src, dest, opts in mounts:
            subprocess.run(["mount", *opts, src, str(rootfs / dest)], check=True)
        image.in_chroot(rootfs, VM_CUSTOMISE, log)
    finally:
        image.unmount_below(rootfs)
        resolv.unlink(missing_ok=True)


def _newest(boot: Path, prefix: str) -> Path:
    found = sorted(boot.glob(f"{prefix}*"))
    if not found:
        raise RuntimeError(f"no {prefix}* in {boot}: the kernel package did not install")
    return found[-1]
