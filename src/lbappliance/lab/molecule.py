"""Scratch containers from the lab image for role tests (the Molecule scenarios)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lbappliance.lab.image import ensure_image
from lbappliance.lab.podmancli import CAPS, LABEL, Podman, state_dir, wait
from lbappliance.lab.units import LB_MOUNTS


def scratch_container(name: str, state: Path | None = None, interfaces: Sequence[str] = ()) -> str:
    """A lone systemd container from the lab image, without network (role tests).

    ``interfaces`` become two-queue veths inside it (their peers stay inside too), and
    the container then gets what an LB node needs from the lab (``LB_MOUNTS``: writable
    per-namespace sysctls, bpffs). Returns its name (``lbamol-<name>``); removed by
    ``remove_scratch_container``.
    """
    podman = Podman(state or state_dir())
    podman.preflight()
    image, _ = ensure_image(podman, podman.conf.parent / "images", podman.conf.parent / "image.log")
    container = f"lbamol-{name}"
    podman.run("rm", "-f", "-t", "0", container, check=False)
    podman.run(
        "run", "-d", "--name", container, "--hostname", name, "--label", f"{LABEL}=scratch",
        "--systemd=always", "--cap-add", CAPS, "--network", "none", image,
    )  # fmt: skip

    def booted() -> bool:
        out = podman.run("exec", container, "systemctl", "is-system-running", check=False)
        return out.stdout.strip() in ("running", "degraded")

    wait(booted, 60, f"systemd in {container}")
    if interfaces:
        links = [
            f"ip link add {i} numrxqueues 2 numtxqueues 2 type veth peer name {i}-peer"
            f" numrxqueues 2 numtxqueues 2 && ip link set {i}-peer up"
            for i in interfaces
        ]
        script = "\n".join(["set -e", *LB_MOUNTS, *links])
        podman.run("exec", container, "sh", "-c", script)
    return container


def remove_scratch_container(name: str, state: Path | None = None) -> None:
    Podman(state or state_dir()).run("rm", "-f", "-t", "0", f"lbamol-{name}", check=False)
