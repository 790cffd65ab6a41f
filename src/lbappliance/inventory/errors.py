"""Inventory errors that point at a file, line, column and field path."""

from __future__ import annotations

from dataclasses import dataclass

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def format_path(path: Path_) -> str:
    """Render a field path the way an operator reads it: ``l7.pools[0].servers[1].port``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


@dataclass(frozen=True)
class InventoryError:
    """One problem found in a site inventory."""

    location: Location | None
    path: Path_
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = str(self.location) if self.location else "<inventory>"
        text = f"{where}: {format_path(self.path)}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.file, loc.line, loc.column, self.message) if loc else ("", 0, 0, self.message)


class InventoryInvalid(Exception):
    """Raised with every error found, so the operator fixes them in one pass."""

    def __init__(self, errors: list[InventoryError]):
        self.errors = sorted(errors, key=InventoryError.sort_key)
        super().__init__("\n".join(str(e) for e in self.errors))
