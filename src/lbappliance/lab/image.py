"""The container lab's image, built without a registry and cached.

One Debian bookworm image serves every lab host (LB nodes, the BIRD router,
backends, the client): ``debootstrap`` writes a root filesystem with systemd,
Python and the daemons, which is customised in a chroot, cached as a
``.tar.zst`` and imported with ``podman import``. The tag carries a hash of
everything that shapes the image, so a changed package list builds a new one.

Cost: ``podman image exists`` → nothing to do; cached tarball → import (~5 s);
neither → debootstrap (~1.5 min, needs the Debian mirror).

The LB daemons are installed but disabled: the Ansible roles install (a no-op
here), configure, enable and start them, as on a production node. Nodes never
need the network: Python packages come from a wheelhouse the deploy copies in,
and the image's apt sources are disabled (the lab networks have no route out).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbappliance.lab.podmancli import Podman

SUITE = "bookworm"
MIRROR = os.environ.get("LBAPPLIANCE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    # what systemd containers and Ansible need
    "systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "iproute2", "procps",
    "sudo", "ca-certificates",
    # the production path: Ansible over SSH, the node venv
    "openssh-server", "python3-venv",
    # LB node packages (the roles' lists: lb_base, lb_haproxy, lb_keepalived,
    # lb_exabgp, lb_dataplane, lb_nic), the router, lab tooling
    "haproxy", "keepalived", "nftables", "socat", "bird2", "curl", "iputils-ping",
    "clang", "llvm", "libbpf-dev", "bpftool", "ethtool",
)  # fmt: skip
# Units the packages enable on install; the lab or the roles turn on what a host runs.
DISABLED_UNITS = ("haproxy.service", "keepalived.service", "bird.service", "nftables.service")
CUSTOMISE = f"""
set -e
systemctl disable {" ".join(DISABLED_UNITS)} >/dev/null 2>&1 || true
systemctl mask systemd-networkd-wait-online.service getty@tty1.service >/dev/null 2>&1 || true
mkdir -p /root/.ssh && chmod 700 /root/.ssh
printf 'PermitRootLogin prohibit-password\\nPasswordAuthentication no\\nUseDNS no\\n' \
    > /etc/ssh/sshd_config.d/lab.conf
apt-get clean
rm -rf /var/cache/apt/archives/*.deb /usr/share/doc/* /usr/share/man/*
# The lab has no route to a mirror: every package the roles install is above.
# Without sources, `apt-get update` (cache_valid_time) succeeds with nothing to do.
mv /etc/apt/sources.list /etc/apt/sources.list.lab-disabled
rm -rf /var/lib/apt/lists/*
"""
IMAGE_REPO = "localhost/lbappliance-lab"


CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
TAR = ("tar", "--numeric-owner", "--xattrs")


def image_tag() -> str:
    """The image name: a hash of what goes into it, so changes rebuild it."""
    recipe = "\n".join([SUITE, MIRROR, *PACKAGES, CUSTOMISE])
    return f"{IMAGE_REPO}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def tarball_name() -> str:
    """The cached root filesystem's file name (the container and VM labs share it)."""
    return f"{image_tag().rsplit(':', 1)[1]}.tar.zst"


def prune_tarballs(directory: Path, keep: str) -> None:
    """Remove the root filesystems of earlier recipes from ``directory``."""
    for old in directory.glob("*.tar.zst") if directory.is_dir() else []:
        if old.name != keep:
            old.unlink()


def ensure_image(podman: Podman, cache_dir: Path, log: Path) -> tuple[str, str]:
    """Make the lab image exist; returns (tag, what was done: present|imported|built)."""
    tag = image_tag()
    if podman.ok("image", "exists", tag):
        return tag, "present"
    _remove_stale(podman, cache_dir, tag)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / tarball_name()
    how = "imported"
    if not tarball.is_file():
        build_rootfs_tarball(tarball, log)
        how = "built"
    with subprocess.Popen(["zstd", "-dcq", str(tarball)], stdout=subprocess.PIPE) as unzst:
        podman.run(
            "import",
            "--change", 'CMD ["/sbin/init"]',
            "--change", "STOPSIGNAL SIGRTMIN+3",
            "-", tag,
            stdin=unzst.stdout,
        )  # fmt: skip
    return tag, how


def _remove_stale(podman: Podman, cache_dir: Path, tag: str) -> None:
    """Images and tarballs of earlier recipes (unused once the recipe changed)."""
    out = podman.run("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO, check=False)
    for old in out.stdout.split():
        if old != tag:
            podman.run("rmi", old, check=False)
    prune_tarballs(cache_dir, tarball_name())


def build_rootfs_tarball(tarball: Path, log: Path) -> None:
    """debootstrap a root filesystem, customise it, and pack it as ``tarball``."""
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    workdir = Path(tempfile.mkdtemp(prefix="rootfs.", dir=tarball.parent))
    rootfs = workdir / "rootfs"
    try:
        run_logged(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(rootfs), MIRROR],
            log,
        )  # fmt: skip
        in_chroot(rootfs, CUSTOMISE, log)
        partial = tarball.with_suffix(".partial")
        with open(partial, "wb") as dest:
            tar = subprocess.Popen([*TAR, "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-q", "-T0", "-3"], stdin=tar.stdout, stdout=dest, check=True)
            if tar.wait() != 0:
                raise RuntimeError(f"tar of {rootfs} failed")
        partial.replace(tarball)
    finally:
        unmount_below(rootfs)
        shutil.rmtree(workdir, ignore_errors=True)


def unpack(tarball: Path, rootfs: Path) -> None:
    """Extract a root filesystem ``build_rootfs_tarball`` packed (owners, xattrs kept)."""
    subprocess.run([*TAR, "-C", str(rootfs), "-x", "-I", "zstd", "-f", str(tarball)], check=True)


def run_logged(argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run a build step, its output appended to ``log``; raises when it fails."""
    with open(log, "ab") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=True, env=env)


def in_chroot(rootfs: Path, script: str, log: Path) -> None:
    """Run a shell script in the root filesystem (a minimal environment)."""
    run_logged(["chroot", str(rootfs), "/bin/sh", "-c", script], log, env=CHROOT_ENV)


def unmount_below(root: Path) -> None:
    """Unmount what an interrupted debootstrap left mounted (proc, sys) before deleting."""
    prefix = f"{root.resolve()}/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
