"""ethtool's text output (version 6.x) parsed into facts, from a live host or a captured tree.

ethtool 6.1 only has ``--json`` for ``-k``, so every command is read as text. A captured tree
keeps the outputs as ``<root>/ethtool/<ifname>/<query>.txt`` (see QUERIES).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Protocol

from lbappliance.nic.facts import FLOW_PROTOS, Channels, Feature, Rings

# query name -> ethtool arguments ({} is the interface)
QUERIES: dict[str, tuple[str, ...]] = {
    "driver": ("--driver", "{}"),
    "show-channels": ("--show-channels", "{}"),
    "show-ring": ("--show-ring", "{}"),
    "show-features": ("--show-features", "{}"),
    "show-rxfh-indir": ("--show-rxfh-indir", "{}"),
    **{f"rx-flow-hash-{p}": ("--show-nfc", "{}", "rx-flow-hash", p) for p in FLOW_PROTOS},
}

FLOW_FIELDS = {  # ethtool -n text -> ethtool -N letter
    "L2DA": "m",
    "VLAN tag": "v",
    "L3 proto": "t",
    "IP SA": "s",
    "IP DA": "d",
    "L4 bytes 0 & 1 [TCP/UDP src port]": "f",
    "L4 bytes 2 & 3 [TCP/UDP dst port]": "n",
}
FLOW_LETTER_ORDER = "mvtsdfn"


class EthtoolSource(Protocol):
    def query(self, ifname: str, query: str) -> str | None:
        """Output of one QUERIES entry, or None when the driver does not support it."""


def query_argv(ifname: str, query: str) -> list[str]:
    return ["ethtool", *(a.format(ifname) for a in QUERIES[query])]


class LiveEthtool:
    def query(self, ifname: str, query: str) -> str | None:
        try:
            res = subprocess.run(
                query_argv(ifname, query), capture_output=True, text=True, timeout=10, check=False
            )
        except FileNotFoundError:
            return None
        return res.stdout if res.returncode == 0 else None


class CapturedEthtool:
    def __init__(self, root: str | Path):
        self.dir = Path(root) / "ethtool"

    def query(self, ifname: str, query: str) -> str | None:
        path = self.dir / ifname / f"{query}.txt"
        return path.read_text() if path.is_file() else None


def _sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``-l``/``-g`` output into the maximums and the current settings."""
    maxima: dict[str, str] = {}
    current: dict[str, str] = {}
    target: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("Pre-set maximums"):
            target = maxima
        elif line.startswith("Current hardware settings"):
            target = current
        elif target is not None and ":" in line:
            key, value = line.split(":", 1)
            target[key.strip()] = value.strip()
    return maxima, current


def _num(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value) or None  # drivers report 0 for "not applicable"


def parse_channels(text: str | None) -> Channels | None:
    if not text or "Pre-set maximums" not in text:
        return None
    m, c = _sections(text)
    return Channels(
        max_combined=_num(m.get("Combined")),
        max_rx=_num(m.get("RX")),
        max_tx=_num(m.get("TX")),
        combined=_num(c.get("Combined")),
        rx=_num(c.get("RX")),
        tx=_num(c.get("TX")),
    )


def parse_rings(text: str | None) -> Rings | None:
    if not text or "Pre-set maximums" not in text:
        return None
    m, c = _sections(text)
    return Rings(
        max_rx=_num(m.get("RX")),
        max_tx=_num(m.get("TX")),
        rx=_num(c.get("RX")),
        tx=_num(c.get("TX")),
    )


_FEATURE = re.compile(r"^\s*([a-z0-9-_]+): (on|off)( \[fixed\]| \[requested (?:on|off)\])?\s*$")


def parse_features(text: str | None) -> dict[str, Feature]:
    features: dict[str, Feature] = {}
    for line in (text or "").splitlines():
        m = _FEATURE.match(line)
        if m:
            features[m.group(1)] = Feature(on=m.group(2) == "on", fixed=m.group(3) == " [fixed]")
    return features


_INDIR_ROW = re.compile(r"^\s*\d+:((?:\s+\d+)+)\s*$")


def parse_indirection(text: str | None) -> tuple[int, ...] | None:
    """The RSS indirection table of ``-x``; None when the driver has none."""
    entries: list[int] = []
    for line in (text or "").splitlines():
        if line.startswith("RSS hash key"):
            break
        m = _INDIR_ROW.match(line)
        if m:
            entries.extend(int(x) for x in m.group(1).split())
    return tuple(entries) or None


def parse_flow_hash(text: str | None) -> str | None:
    """Hash fields of ``-n IF rx-flow-hash PROTO`` as ``-N`` letters; None if unsupported."""
    if not text or "flows use these fields" not in text:
        return None
    letters = {
        FLOW_FIELDS[line.strip()] for line in text.splitlines() if line.strip() in FLOW_FIELDS
    }
    return "".join(ch for ch in FLOW_LETTER_ORDER if ch in letters)


def parse_driver(text: str | None) -> tuple[str, str]:
    """(driver, bus-info) from ``ethtool -i``."""
    info: dict[str, str] = {}
    for line in (text or "").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info.get("driver", ""), info.get("bus-info", "")
