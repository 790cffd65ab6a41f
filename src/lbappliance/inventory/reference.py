"""The inventory reference (README), generated from the schema's own field docs."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, get_args, get_origin, get_type_hints

from lbappliance.inventory.schema import Inventory
from lbappliance.inventory.typed import Duration, describe


def _nested(tp: Any) -> type | None:
    """The dataclass a field holds (directly, in a list/dict, or optionally)."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _nested(get_args(tp)[0])
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in get_args(tp):
        found = _nested(arg)
        if found:
            return found
    return None


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(see below)"
        if isinstance(value, dict) and all(dataclasses.is_dataclass(v) for v in value.values()):
            return ", ".join(f"`{k}` (all defaults)" for k in value)
    else:
        return "**required**"
    if isinstance(value, Duration):
        return f"`{value}`"
    if value is None:
        return "unset"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _section(cls: type, prefix: str, out: list[str], seen: set[tuple[type, str]]) -> None:
    if (cls, prefix) in seen:
        return
    seen.add((cls, prefix))
    hints = get_type_hints(cls, include_extras=True)
    out += [f"### `{prefix or 'top level'}`", ""]
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out += [cls.__doc__.strip(), ""]
    out += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    children = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        meaning = f.metadata.get("doc", "").replace("|", "\\|")
        kind = describe(tp).replace("|", "\\|")
        out.append(f"| `{f.name}` | {kind} | {_default(f)} | {meaning} |")
        nested = _nested(tp)
        if nested:
            suffix = "[]" if get_origin(tp) is list else ".<name>" if get_origin(tp) is dict else ""
            children.append((nested, f"{prefix}.{f.name}{suffix}".lstrip(".")))
    out.append("")
    for nested, path in children:
        _section(nested, path, out, seen)


def reference_markdown() -> str:
    out: list[str] = []
    _section(Inventory, "", out, set())
    return "\n".join(out).rstrip() + "\n"
