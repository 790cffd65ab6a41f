"""Turn plain YAML data into the typed site model, collecting every error.

The model is a tree of frozen dataclasses whose type hints are the schema.
Scalars with their own syntax (durations, addresses, ranges) are declared with
``Annotated[..., Parse(...)]`` / ``Range`` / ``Pattern`` metadata; each field's
``metadata["doc"]`` is the operator-facing reference text.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from lbappliance.inventory.errors import InventoryError, Path_
from lbappliance.inventory.yamlpos import Positions


class Duration(float):
    """Seconds, written in the inventory as ``5s``, ``500ms``, ``2m`` or a plain number.

    Finite, not negative, at most a day, in whole milliseconds (the finest unit a
    daemon here takes; a finer value would render rounded, e.g. ``0s``).
    """

    _UNITS: typing.ClassVar[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    _RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
    MAX: typing.ClassVar[float] = 86400.0

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, bool):
            raise ValueError("not a duration")
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = cls._RE.fullmatch(str(value))
            if not match:
                raise ValueError("not a duration")
            seconds = float(match.group(1)) * cls._UNITS[match.group(2) or "s"]
        if not math.isfinite(seconds) or seconds < 0 or seconds > cls.MAX:
            raise ValueError("not a duration")
        if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
            raise ValueError("finer than a millisecond")
        return cls(seconds)

    @classmethod
    def parse_positive(cls, value: Any) -> Duration:
        result = cls.parse(value)
        if result <= 0:
            raise ValueError("zero")
        return result

    @property
    def ms(self) -> int:
        return round(self * 1000)

    def __str__(self) -> str:
        """HAProxy/keepalived friendly: whole seconds as ``5s``, else ``250ms``."""
        ms = self.ms
        return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"

    def __repr__(self) -> str:
        return f"Duration({self!s})"


@dataclass(frozen=True)
class Parse:
    """A scalar parsed by ``fn``; ``expected`` says what the operator should write."""

    fn: typing.Callable[[Any], Any]
    expected: str


@dataclass(frozen=True)
class Range:
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Pattern:
    """The whole value must match ``regex`` (``re.fullmatch``: no trailing newline)."""

    regex: str
    expected: str


@dataclass(frozen=True)
class Sensitive:
    """The value may be a secret: errors never show it."""


def _ip_host(value: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """A host prefix; a bare address means /32 or /128."""
    iface = ipaddress.ip_interface(str(value))
    if iface.network.prefixlen != iface.max_prefixlen:
        raise ValueError("not a host prefix")
    return iface


DurationT = Annotated[
    Duration,
    Parse(
        Duration.parse_positive,
        "a duration above zero such as 5s, 500ms or 2m (whole milliseconds, at most 24h)",
    ),
]
DurationOrZeroT = Annotated[
    Duration,
    Parse(
        Duration.parse, "a duration such as 0, 5s, 500ms or 2m (whole milliseconds, at most 24h)"
    ),
]
IPAddress = Annotated[
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    Parse(lambda v: ipaddress.ip_address(str(v)), "an IPv4 or IPv6 address"),
]
IPv4 = Annotated[
    ipaddress.IPv4Address, Parse(lambda v: ipaddress.IPv4Address(str(v)), "an IPv4 address")
]
IPInterface = Annotated[
    ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    Parse(
        lambda v: ipaddress.ip_interface(str(v)), "an address with prefix length, e.g. 10.0.0.1/24"
    ),
]
IPHost = Annotated[
    ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    Parse(_ip_host, "an IPv4 /32 or IPv6 /128 (a bare address is taken as one)"),
]
IPNetwork = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    Parse(
        lambda v: ipaddress.ip_network(str(v), strict=True),
        "a network in CIDR form with no host bits set, e.g. 198.51.100.0/24",
    ),
]
Name = Annotated[
    str,
    Pattern(
        r"[a-z][a-z0-9_-]{0,47}",
        "a name: a lower-case letter, then up to 47 lower-case letters, digits, - and _",
    ),
]
Port = Annotated[int, Range(1, 65535)]
Percent = Annotated[float, Range(0, 100)]


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its inventory reference text."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"doc": text})
    return dataclasses.field(default=default, metadata={"doc": text})


_SCALAR_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def describe(tp: Any) -> str:
    """What an operator should write for a value of type ``tp``."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        for m in meta:
            if isinstance(m, Parse | Pattern):
                return m.expected
        text = describe(base)
        for m in meta:
            if isinstance(m, Range):
                text += f" in {m.lo}..{m.hi}"
        return text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    if origin is list:
        return f"a list of {describe(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of names to {describe(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return _SCALAR_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


@functools.cache
def _shape(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``get_origin`` and ``get_args`` of a type, worked out once per type."""
    return get_origin(tp), get_args(tp)


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A dataclass's resolved type hints and init fields, worked out once per class."""
    hints = get_type_hints(cls, include_extras=True)
    return hints, {f.name: f for f in dataclasses.fields(cls) if f.init}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Converter:
    """Converts data to dataclasses, appending to ``errors`` instead of raising."""

    def __init__(self, positions: Positions):
        self.pos = positions
        self.errors: list[InventoryError] = []

    def error(self, path: Path_, message: str, hint: str = "", key: bool = False) -> None:
        loc = self.pos.key_of(path) if key else self.pos.of(path)
        self.errors.append(InventoryError(loc, path, message, hint))

    def convert(self, tp: Any, value: Any, path: Path_) -> Any:
        origin, args = _shape(tp)
        if origin is Annotated:
            return self._annotated(tp, value, path)
        if origin in (Union, types.UnionType):
            return self._union(tp, value, path)
        if origin is Literal:
            if value in args and not isinstance(value, bool):
                return value
            return self._bad(tp, value, path)
        if origin is list:
            if not isinstance(value, list):
                return self._bad(tp, value, path)
            (item_tp,) = args
            return [self.convert(item_tp, item, (*path, i)) for i, item in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                return self._bad(tp, value, path)
            key_tp, item_tp = args
            for k in value:
                probe = Converter(self.pos)
                probe.convert(key_tp, k, (*path, k))
                for e in probe.errors:  # a bad key: point at the key itself
                    self.error((*path, k), e.message, e.hint, key=True)
            return {k: self.convert(item_tp, v, (*path, k)) for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, value, path)
        return self._scalar(tp, value, path)

    def _bad(self, tp: Any, value: Any, path: Path_) -> None:
        self.error(path, f"expected {describe(tp)}, got {_show(value)}")
        return None

    def _scalar(self, tp: Any, value: Any, path: Path_) -> Any:
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
            value = float(value) if ok else value
        elif tp is str:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, tp)
        return value if ok else self._bad(tp, value, path)

    def _annotated(self, tp: Any, value: Any, path: Path_) -> Any:
        base, *meta = _shape(tp)[1]
        parser = next((m for m in meta if isinstance(m, Parse)), None)
        sensitive = any(isinstance(m, Sensitive) for m in meta)
        show = (lambda v: "a value (not shown: it may be a secret)") if sensitive else _show
        if parser:
            try:
                result = parser.fn(value)
            except (ValueError, TypeError):
                self.error(path, f"expected {parser.expected}, got {show(value)}")
                return None
        elif sensitive and not isinstance(value, str if base is str else dict):
            hint = "" if base is str else "write {env: NAME} or {vault: NAME}, never the secret"
            self.error(path, f"expected {describe(tp)}, got {show(value)}", hint)
            return None
        else:
            result = self.convert(base, value, path)
            if result is None:
                return None
        for m in meta:
            if isinstance(m, Range) and not (
                (m.lo is None or result >= m.lo) and (m.hi is None or result <= m.hi)
            ):
                self.error(path, f"{show(value)} is out of range", f"expected {describe(tp)}")
                return None
            if isinstance(m, Pattern) and not re.fullmatch(m.regex, result):
                self.error(path, f"{show(value)} is not valid", f"expected {m.expected}")
                return None
        return result

    def _union(self, tp: Any, value: Any, path: Path_) -> Any:
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            probe = Converter(self.pos)
            result = probe.convert(option, value, path)
            if not probe.errors:
                return result
        non_none = [o for o in options if o is not type(None)]
        if len(non_none) == 1:  # plain Optional[X]: report X's own, more precise errors
            return self.convert(non_none[0], value, path)
        return self._bad(tp, value, path)

    def _dataclass(self, cls: Any, value: Any, path: Path_) -> Any:
        if not isinstance(value, dict):
            return self._bad(cls, value, path)
        hints, fields = _fields(cls)
        for key in value:
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(fields)
                self.error((*path, key), f"unknown key {key!r}", hint, key=True)
        kwargs: dict[str, Any] = {}
        failed = False
        for name, f in fields.items():
            if name in value:
                before = len(self.errors)
                kwargs[name] = self.convert(hints[name], value[name], (*path, name))
                failed |= len(self.errors) > before
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(
                    path, f"missing required field {name!r}", f"expected {describe(hints[name])}"
                )
                failed = True
        if failed:
            return None
        return cls(**kwargs)
