"""Helpers for hostile-inventory tests: rewrite every string field of a site model.

``mutate_strings`` bypasses validation on purpose: it shows what the renderer
does with a value the schema would have let through (defence in depth).
Enumerations (``Literal`` fields) are left alone: the schema accepts exactly
their listed values, and the renderer branches on them.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from lbappliance.inventory.schema import SecretRef


class Tagged(str):
    """A scalar read back with the ``!unsafe`` tag."""


class UnsafeLoader(yaml.SafeLoader):
    """Reads rendered Ansible YAML, keeping which strings were ``!unsafe``."""


UnsafeLoader.add_constructor("!unsafe", lambda loader, node: Tagged(loader.construct_scalar(node)))


def ansible_strings(data: Any) -> list[str]:
    """The string values in parsed Ansible YAML. Keys are left out: the only inventory-derived
    keys are host names, which Ansible does not template (and node names are plain names)."""
    if isinstance(data, dict):
        return [s for v in data.values() for s in ansible_strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in ansible_strings(v)]
    return [data] if isinstance(data, str) else []


def _has_literal(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is Literal:
        return True
    if origin in (Annotated, Union, types.UnionType, list, dict):
        return any(_has_literal(a) for a in get_args(tp) if not isinstance(a, str | int | float))
    return False


def mutate_strings(obj: Any, fn: Callable[[str], str], tp: Any = None) -> Any:
    """``obj`` with ``fn`` applied to every free string (and mapping key) in it.

    The same original string always maps to the same result, so references
    between fields (pool names, interface names, NIC profiles) stay consistent.
    """
    if isinstance(obj, SecretRef):
        return obj  # names of secrets, not values: resolved, never rendered
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = get_type_hints(type(obj), include_extras=True)
        changes = {
            f.name: mutate_strings(getattr(obj, f.name), fn, hints[f.name])
            for f in dataclasses.fields(obj)
            if not _has_literal(hints[f.name])
        }
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, list):
        item = get_args(_strip(tp))[0] if get_args(_strip(tp)) else None
        return [mutate_strings(v, fn, item) for v in obj]
    if isinstance(obj, dict):
        item = get_args(_strip(tp))[1] if get_args(_strip(tp)) else None
        return {fn(k): mutate_strings(v, fn, item) for k, v in obj.items()}
    if isinstance(obj, str):
        return fn(obj)
    return obj


def _strip(tp: Any) -> Any:
    while get_origin(tp) in (Annotated, Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


def string_fields(obj: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple, str]]:
    """Every free string of a model with its field path (as ``mutate_strings`` sees them)."""
    if isinstance(obj, SecretRef):
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hints = get_type_hints(type(obj), include_extras=True)
        for f in dataclasses.fields(obj):
            if not _has_literal(hints[f.name]):
                yield from string_fields(getattr(obj, f.name), (*path, f.name))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from string_fields(v, (*path, i))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield (*path, k), k
            yield from string_fields(v, (*path, k))
    elif isinstance(obj, str):
        yield path, obj


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for a directory)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }
