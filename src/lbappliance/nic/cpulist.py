"""CPU lists ("0-3,8") and hex CPU masks ("ff,00000000") as the kernel reads and prints them."""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a kernel cpulist such as ``0-3,8,10-11`` (empty text is the empty set)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPUs as the kernel does: ascending, runs collapsed (``0-3,8``)."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_mask(text: str) -> int:
    """Parse a hex CPU mask as sysfs prints it (``00000000,0000ff00``)."""
    digits = text.strip().replace(",", "")
    return int(digits, 16) if digits else 0


def format_mask(mask: int) -> str:
    """Format a mask in 32-bit comma groups, no leading zero groups (``1,00000000``)."""
    digits = f"{mask:x}"
    groups: list[str] = []
    while len(digits) > 8:
        groups.insert(0, digits[-8:])
        digits = digits[:-8]
    groups.insert(0, digits)
    return ",".join(groups)


def mask_of(cpus: Iterable[int]) -> int:
    mask = 0
    for cpu in cpus:
        mask |= 1 << cpu
    return mask


def cpus_of(mask: int) -> frozenset[int]:
    return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)
