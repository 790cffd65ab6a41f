"""YAML loading that remembers where every value came from.

The site model is validated against plain data; errors then need the file,
line and column of the offending value, so loading keeps a side table of
positions keyed by field path.

Inventories arrive through merge requests, so a file is hostile until loaded:
it is parsed by libyaml (PyYAML's C parser, which also gives every node its
mark), and refused with a located error when it is too large, not UTF-8 text,
nested too deep, carries a tag other than YAML's own, or expands aliases
beyond a small budget (the "billion laughs").
"""

from __future__ import annotations

import gc
import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from lbappliance.inventory.errors import InventoryError, Location, Path_

MAX_FILE_BYTES = 32 * 1024 * 1024
"""A 10,000-service site is under 3 MB; anything past this is refused unread."""
MAX_DEPTH = 64
COMPOSE_STACK_BYTES = 512 * 2**20
"""The site model nests 8 levels; deeper YAML is refused before it is built."""
ALIAS_BUDGET = 10_000
"""Values aliases may add beyond the number the file itself spells out."""

_YAML = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _MAP, _SEQ, _MERGE = (
    _YAML + t for t in ("str", "null", "bool", "map", "seq", "merge")
)
_SCALAR_TAGS = {_YAML + t for t in ("int", "float", "binary", "timestamp")}
# What YAML 1.1 allows in a stream: no C0/C1 controls but tab, newline and CR (and NEL).
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Mark(Protocol):
    """A libyaml node mark: the stream's name and a 0-based line and column."""

    name: str
    line: int
    column: int


@dataclass
class Positions:
    """Where each value (and each mapping key) was written.

    Entries are libyaml's own marks (file name, 0-based line and column),
    turned into a ``Location`` only when an error asks for one.
    """

    values: dict[Path_, Mark] = field(default_factory=dict)
    keys: dict[Path_, Mark] = field(default_factory=dict)

    def of(self, path: Path_) -> Location | None:
        """The nearest known location for ``path`` (walking up to its parents)."""
        for cut in range(len(path), -1, -1):
            mark = self.values.get(path[:cut])
            if mark:
                return _loc(mark)
        return None

    def key_of(self, path: Path_) -> Location | None:
        mark = self.keys.get(path)
        return _loc(mark) if mark else self.of(path)

    def update(self, other: Positions) -> None:
        self.values.update(other.values)
        self.keys.update(other.keys)


def _loc(mark: Mark) -> Location:
    return Location(mark.name, mark.line + 1, mark.column + 1)


def _at(file: str, text: str, index: int) -> Location:
    """The location of character ``index`` of ``text``."""
    line = text.count("\n", 0, index)
    return Location(file, line + 1, index - (text.rfind("\n", 0, index) + 1) + 1)


if not yaml.__with_libyaml__:  # PyPI's wheels and Debian's python3-yaml both have it
    raise ImportError("PyYAML without libyaml: install PyYAML's wheel or Debian's python3-yaml")


class _Loader(yaml.CSafeLoader):
    """libyaml's safe loader without the per-node hooks for path resolvers (it has none)."""

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


class _Refused(Exception):
    """The file is hostile or malformed past what building may continue on."""

    def __init__(self, error: InventoryError):
        self.error = error


class _Builder:
    """Turns composed nodes into plain data, recording each value's mark."""

    def __init__(self) -> None:
        self.pos = Positions()
        self.errors: list[InventoryError] = []
        self._constructor = yaml.SafeLoader("")
        self._collections: set[int] = set()  # collection nodes already built once
        self._open: set[int] = set()  # collection nodes being built (a repeat is a cycle)
        self._aliased = 0  # values built again through an alias
        self._in_alias = 0
        self._depth = 0

    def _refuse(self, mark: Mark, path: Path_, message: str, hint: str = "") -> _Refused:
        return _Refused(InventoryError(_loc(mark), path, message, hint))

    def _alias_site(self, node: yaml.Node, path: Path_) -> Mark:
        """Where an alias was used: the key holding it (the node's own mark is its anchor's)."""
        for cut in range(len(path), 0, -1):
            mark = self.pos.keys.get(path[:cut])
            if mark:
                return mark
        return node.start_mark

    def build(self, node: yaml.Node, path: Path_) -> Any:
        if self._in_alias:
            self._aliased += 1
            if self._aliased > ALIAS_BUDGET + len(self._collections):
                raise self._refuse(
                    self._alias_site(node, path),
                    path,
                    f"aliases expand to more than {ALIAS_BUDGET} values beyond the file's own",
                    "write the values out, or use fewer nested aliases",
                )
        self.pos.values[path] = node.start_mark
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        ident = id(node)
        if ident in self._open:
            raise self._refuse(
                self._alias_site(node, path),
                path,
                f"recursive alias (its anchor at line {node.start_mark.line + 1} contains it)",
            )
        if self._depth >= MAX_DEPTH:
            raise self._refuse(node.start_mark, path, f"nested deeper than {MAX_DEPTH} levels")
        again = ident in self._collections
        self._collections.add(ident)
        self._open.add(ident)
        self._in_alias += again
        self._depth += 1
        try:
            if isinstance(node, yaml.SequenceNode):
                self._expect_tag(node, _SEQ, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            self._expect_tag(node, _MAP, path)
            return self._mapping(node, path)
        finally:
            self._depth -= 1
            self._in_alias -= again
            self._open.discard(ident)

    def _expect_tag(self, node: yaml.Node, tag: str, path: Path_) -> None:
        if node.tag != tag:
            raise self._unknown_tag(node, path)

    def _unknown_tag(self, node: yaml.Node, path: Path_) -> _Refused:
        return self._refuse(
            node.start_mark,
            path,
            f"unsupported tag {node.tag.replace(_YAML, '!!')!r}",
            "write a plain value; a secret is referenced as {vault: NAME} or {env: NAME}",
        )

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _NULL:
            return None
        if tag == _BOOL:
            value = self._constructor.bool_values.get(node.value.lower())
            if value is None:  # only an explicit !!bool can hold something else
                raise self._refuse(node.start_mark, path, "not a valid bool: use true or false")
            return value
        if tag in _SCALAR_TAGS:
            try:
                return self._constructor.yaml_constructors[tag](self._constructor, node)
            except Exception:  # PyYAML's constructors on hostile text: ValueError and others
                what = tag[len(_YAML) :]
                raise self._refuse(node.start_mark, path, f"not a valid {what}") from None
        raise self._unknown_tag(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged = self.build(value_node, path)
                for part in merged if isinstance(merged, list) else [merged]:
                    if isinstance(part, dict):
                        for k, v in part.items():
                            out.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.errors.append(
                    InventoryError(
                        _loc(key_node.start_mark), path, "mapping keys must be plain strings"
                    )
                )
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                self.errors.append(
                    InventoryError(
                        _loc(key_node.start_mark),
                        child,
                        f"duplicate key {key!r}",
                        f"first given at line {self.pos.keys[child].line + 1}",
                    )
                )
                continue
            self.pos.keys[child] = key_node.start_mark
            out[key] = self.build(value_node, child)
        return out


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large acyclic tree is built.

    Loading a site allocates hundreds of thousands of objects that reference
    counting frees; the collector would rescan the growing tree again and again
    (at 10,000 services it doubles the time of loading and makes it
    superlinear). Pausing is safe: nothing built here is cyclic.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read(path: Path) -> str:
    """The file's text, refused when too large, not UTF-8, or not printable."""
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _Refused(
                InventoryError(
                    Location(file, 1, 1),
                    (),
                    f"the file is {size / 2**20:.1f} MiB, over the "
                    f"{MAX_FILE_BYTES // 2**20} MiB an inventory file may have",
                )
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise _Refused(InventoryError(None, (), f"cannot read {file}: {exc.strerror}")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8")
        raise _Refused(
            InventoryError(
                _at(file, good, len(good)),
                (),
                f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot start or continue a character",
                "inventory files are UTF-8 YAML",
            )
        ) from None
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        char = bad.group()
        what = "a NUL byte" if char == "\0" else f"control character U+{ord(char):04X}"
        raise _Refused(
            InventoryError(
                _at(file, text, bad.start()),
                (),
                f"{what}: YAML text cannot hold it",
                'is this a binary file? write it as an escaped "\\u...." string if it is meant',
            )
        )
    return text


def _compose(stream: io.StringIO) -> yaml.Node | None:
    """``yaml.compose`` on a thread with a large stack: libyaml's composer recurses in C
    once per nesting level (flow nesting up to its own limit of 1000, block nesting as deep
    as the file size allows), which can overflow the calling thread's stack (a segfault
    seen under pytest). The stack is reserved, not used, until a file nests that deep."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["node"] = yaml.compose(stream, Loader=_Loader)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    previous = threading.stack_size(COMPOSE_STACK_BYTES)
    try:
        worker = threading.Thread(target=run, name="yaml-compose")
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join()
    if "error" in result:
        raise result["error"]
    return result.get("node")


def load_yaml(path: Path) -> tuple[Any, Positions, list[InventoryError]]:
    """Parse ``path``; a syntax error or a refused file comes back as a located error."""
    file = str(path)
    with paused_gc():
        try:
            stream = io.StringIO(_read(path))
            stream.name = file  # libyaml names every mark after its stream
            node = _compose(stream)
            if node is None:
                return {}, Positions(), []
            builder = _Builder()
            data = builder.build(node, ())
        except _Refused as exc:
            return None, Positions(), [exc.error]
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.context_mark and exc.problem:
                problem += f" ({exc.context} started at line {exc.context_mark.line + 1})"
            return None, Positions(), [InventoryError(where, (), f"YAML syntax error: {problem}")]
    return data, builder.pos, builder.errors


def deep_merge(base: Any, over: Any) -> Any:
    """Site values override shared defaults; mappings merge, everything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return over
