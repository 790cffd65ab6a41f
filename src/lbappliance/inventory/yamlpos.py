"""YAML loading that remembers where every value came from.

The site model is validated against plain data; errors then need the file,
line and column of the offending value, so loading keeps a side table of
positions keyed by field path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError, Location, Path_


@dataclass
class Positions:
    """Where each value (and each mapping key) was written."""

    values: dict[Path_, Location] = field(default_factory=dict)
    keys: dict[Path_, Location] = field(default_factory=dict)

    def of(self, path: Path_) -> Location | None:
        """The nearest known location for ``path`` (walking up to its parents)."""
        for cut in range(len(path), -1, -1):
            loc = self.values.get(path[:cut])
            if loc:
                return loc
        return None

    def key_of(self, path: Path_) -> Location | None:
        return self.keys.get(path) or self.of(path)

    def update(self, other: Positions) -> None:
        self.values.update(other.values)
        self.keys.update(other.keys)


def _loc(file: str, mark: yaml.Mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.pos = Positions()
        self.errors: list[InventoryError] = []
        self._scalar = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.pos.values[path] = _loc(self.file, node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = self.build(value_node, path)
                for part in merged if isinstance(merged, list) else [merged]:
                    if isinstance(part, dict):
                        for k, v in part.items():
                            out.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.errors.append(
                    InventoryError(
                        _loc(self.file, key_node.start_mark),
                        path,
                        "mapping keys must be plain strings",
                    )
                )
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                self.errors.append(
                    InventoryError(
                        _loc(self.file, key_node.start_mark),
                        child,
                        f"duplicate key {key!r}",
                        f"first given at line {self.pos.keys[child].line}",
                    )
                )
                continue
            self.pos.keys[child] = _loc(self.file, key_node.start_mark)
            out[key] = self.build(value_node, child)
        return out


def load_yaml(path: Path) -> tuple[Any, Positions, list[InventoryError]]:
    """Parse ``path``; a syntax error comes back as an error with its location."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, Positions(), [InventoryError(None, (), f"cannot read {file}: {exc.strerror}")]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _loc(file, mark) if mark else Location(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        return None, Positions(), [InventoryError(where, (), f"YAML syntax error: {problem}")]
    if node is None:
        return {}, Positions(), []
    builder = _Builder(file)
    data = builder.build(node, ())
    return data, builder.pos, builder.errors


def deep_merge(base: Any, over: Any) -> Any:
    """Site values override shared defaults; mappings merge, everything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return over
