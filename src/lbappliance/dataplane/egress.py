"""An XDP_PASS program on each egress interface of the forwarder, in native mode.

The forwarder sends a backend's packets out of another interface than the uplink
with ``bpf_redirect()``; in native mode the kernel hands the frame to that
driver's ``ndo_xdp_xmit``, and most drivers (virtio-net, ixgbe, i40e, ...)
accept it only while the device has an XDP program of its own: without one the
frame is dropped (-ENXIO). So ``apply`` attaches bpf/xdp_pass.c natively to each
such interface that has none, and removes it once no backend leaves through it.
An interface with somebody else's program is left alone: any native program
serves. Generic mode (a redirect becomes an skb sent by the stack) needs none.

Pins: ``<pin_root>/<uplink>:egress/<interface>``, one loaded program each,
beside (not inside) the forwarder's own pin directory, which a reload replaces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbappliance.dataplane import bpfsys
from lbappliance.dataplane.xdplink import (
    Attachment,
    LoaderError,
    attach,
    attachment,
    detach_xdp,
    pin_path,
    pinned_interface,
    run,
)


@dataclass(frozen=True)
class Change:
    interface: str
    action: str  # "attached" | "kept" | "removed"
    prog_id: int | None

    def line(self) -> str:
        if self.action == "removed":
            return f"{self.interface}: egress XDP_PASS program removed"
        return f"{self.interface}: egress XDP_PASS program {self.action} (prog id {self.prog_id})"


def helper_dir(pin_dir: Path) -> Path:
    """Where the helpers of the forwarder pinned at ``pin_dir`` are pinned."""
    return pin_dir.with_name(pin_dir.name + ":egress")


def prog_id_at(pin: Path) -> int | None:
    """Id of the program pinned at ``pin``, or None."""
    try:
        with bpfsys.obj_get(pin) as fd:
            return bpfsys.prog_id(fd)
    except OSError:
        return None


def _attachment(interface: str) -> Attachment | None:
    """The interface's XDP attachment; None if the interface is gone."""
    try:
        return attachment(interface)
    except LoaderError:
        return None


def ensure(
    helpers: Path, obj: Path, interfaces: Iterable[str], warnings: list[str]
) -> list[Change]:
    """Give each of ``interfaces`` a native XDP program: ours if it has none
    (loaded from ``obj``), kept if ours is there, left alone if another is."""
    out = []
    for interface in sorted(set(interfaces)):
        pin = pin_path(helpers, interface)
        ours = prog_id_at(pin)
        att = _attachment(interface)
        if att is None:
            warnings.append(f"{interface}: egress interface not found")
            continue
        if att.prog_id is not None and att.prog_id == ours:
            out.append(Change(interface, "kept", ours))
            continue
        if ours is not None:  # pinned, but no longer what is attached there
            pin.unlink()
        if att.prog_id is not None:
            if att.mode != "native":
                warnings.append(
                    f"{interface}: XDP program {att.prog_id} ({att.mode}) is not ours, left "
                    f"attached; native redirects to {interface} need a native program"
                )
            continue  # a native program of somebody else's: redirects to it work
        helpers.mkdir(exist_ok=True)
        run("bpftool", "--nomount", "prog", "load", str(obj), str(pin), "type", "xdp")
        try:
            attach(interface, pin, "native")
        except LoaderError as e:
            pin.unlink()
            warnings.append(
                f"{interface}: no native XDP program attached ({e}); packets redirected "
                f"to {interface} are dropped unless its driver takes them without one"
            )
            continue
        out.append(Change(interface, "attached", prog_id_at(pin)))
    _rmdir_if_empty(helpers)
    return out


def remove_unused(helpers: Path, keep: Iterable[str]) -> list[Change]:
    """Detach and unpin our program from every interface not in ``keep``."""
    kept = set(keep)
    pins = sorted(helpers.iterdir()) if helpers.is_dir() else []
    out = [_remove(pin) for pin in pins if pinned_interface(pin) not in kept]
    _rmdir_if_empty(helpers)
    return out


def _remove(pin: Path) -> Change:
    interface, ours = pinned_interface(pin), prog_id_at(pin)
    att = _attachment(interface)
    if att is not None and att.mode is not None and ours is not None and att.prog_id == ours:
        detach_xdp(interface, att.mode)
    pin.unlink()
    return Change(interface, "removed", ours)


def _rmdir_if_empty(helpers: Path) -> None:
    if helpers.is_dir() and not any(helpers.iterdir()):
        helpers.rmdir()


def status(helpers: Path) -> list[dict[str, Any]]:
    """Each pinned helper: its interface, pinned id and what is attached there."""
    out = []
    for pin in sorted(helpers.iterdir()) if helpers.is_dir() else []:
        att = _attachment(pinned_interface(pin)) or Attachment(None, None)
        out.append(
            {
                "interface": pinned_interface(pin),
                "pinned_prog_id": prog_id_at(pin),
                "attached": {"mode": att.mode, "prog_id": att.prog_id},
            }
        )
    return out
