"""Maglev consistent-hashing lookup table (Eisenbud et al., NSDI 2016, section 3.4).

Every backend gets a permutation of the table's slots, ``offset + j * skip
(mod M)`` for ``j = 0, 1, ...`` with ``M`` prime, so every ``skip`` in ``1..M-1``
visits every slot. Backends take turns claiming the next free slot of their own
permutation until the table is full.

Weights: a backend takes ``weight / max_weight`` turns per round (carried over
as credit), so its share of the slots equals its weight share to within a slot
or two. Weight 0 means "not in the table".

Determinism: ``offset`` and ``skip`` come from BLAKE2b of the backend's name with
a fixed personalisation string, never from Python's per-process ``hash()``. The
same backend set gives the same table on every node and in every process, so a
failover between the two LBs of a pair does not remap flows. Backends are sorted
by name first, so the order in which the spec lists them does not matter.
"""

from __future__ import annotations

import ctypes
import hashlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lbappliance.dataplane import maglev_native

DEFAULT_TABLE_SIZE = 65537

_PERSON = b"lbapp-maglev-v1"

# Below ``size // (_TAIL_DIVISOR * n)`` free slots (at least _TAIL_MIN) the fill
# stops probing permutations one slot at a time (expected size/free probes per
# fill) and ranks the remaining free slots by their position in each backend's
# permutation instead (see _fill_tail, which costs about n * free). Measured
# optimum on CPython 3.11 for n = 3..1000 at 65537 slots.
_TAIL_DIVISOR = 5
_TAIL_MIN = 64


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def permutation_params(name: str, size: int) -> tuple[int, int]:
    """``(offset, skip)`` of ``name``'s permutation of a table of ``size`` slots."""
    digest = hashlib.blake2b(name.encode(), digest_size=16, person=_PERSON).digest()
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:], "little")
    return h1 % size, h2 % (size - 1) + 1


@dataclass(frozen=True)
class MaglevTable:
    """A filled table: ``slots[i]`` indexes ``backends`` (every configured name,
    sorted; backends that are down own no slot). ``slots`` is an ``array('i')``
    (65537 boxed ints would cost milliseconds to make and to convert back for
    the C code); treat it as read-only."""

    backends: tuple[str, ...]
    slots: array

    @property
    def size(self) -> int:
        return len(self.slots)

    def backend_for_slot(self, slot: int) -> str:
        return self.backends[self.slots[slot]]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.backends, 0)
        for i in self.slots:
            out[self.backends[i]] += 1
        return out

    def values(self, index: Sequence[int], stride: int = 1) -> bytes:
        """The slots as native u32 ``index[backend]``, ``stride`` words apart
        (zeros between): the table as a BPF array map holds it (stride 2)."""
        size = len(self.slots)
        lib = maglev_native.library()
        if lib is None:
            out = array("I", bytes(4 * size * stride))
            out[::stride] = array("I", [index[s] for s in self.slots])
            return out.tobytes()
        buf = (ctypes.c_uint32 * (size * stride))()
        lib.lb_maglev_map(buf, stride, _i32(self.slots), _u32(index), size)
        return bytes(buf)


def backend_names(weights: Mapping[str, int]) -> tuple[str, ...]:
    """The names a table of ``weights`` indexes (``MaglevTable.backends``)."""
    return tuple(sorted(n for n, w in weights.items() if w > 0))


def build(
    weights: Mapping[str, int] | Iterable[str],
    size: int = DEFAULT_TABLE_SIZE,
    down: Iterable[str] = (),
) -> MaglevTable:
    """Fill a table of ``size`` (prime) slots for ``weights`` (name -> weight).

    An iterable of names means equal weights; weight 0 leaves a backend out.

    ``down`` names backends that are configured but failed. The table is first
    filled for every configured backend, then only the slots of the ``down``
    ones are handed to the others, each continuing along its own permutation
    (turns again weighted). So a failure moves exactly the failed backends'
    slots, recovery moves exactly those slots back, and the result depends only
    on (configured set, down set): both nodes of a pair agree. Leaving a
    backend out of ``weights`` instead rebuilds from scratch, which moves a
    little more than its share (Maglev's usual extra disruption).

    No backend up gives an empty table (``size`` 0).
    """
    if not is_prime(size):
        raise ValueError(f"Maglev table size must be prime, got {size}")
    if not isinstance(weights, Mapping):
        weights = dict.fromkeys(weights, 1)
    for name, w in weights.items():
        if w < 0:
            raise ValueError(f"backend {name!r}: negative weight {w}")
    names = backend_names(weights)
    if len(names) > size:
        raise ValueError(f"{len(names)} backends do not fit a table of {size} slots")
    down_idx = {i for i, name in enumerate(names) if name in set(down)}
    if len(down_idx) == len(names):
        return MaglevTable(backends=names, slots=array("i"))
    w = [weights[name] for name in names]
    w_up = [0 if i in down_idx else wi for i, wi in enumerate(w)]
    lib = maglev_native.library()
    if lib is None:
        table = [-1] * size
        _fill(table, names, w, size)
        if down_idx:
            for c, b in enumerate(table):
                if b in down_idx:
                    table[c] = -1
            _fill(table, names, w_up, size)
        return MaglevTable(backends=names, slots=array("i", table))
    arr = array("i", [-1]) * size
    _fill_native(lib, arr, names, w, size)
    if down_idx:
        gone = (ctypes.c_uint8 * len(names))(*(i in down_idx for i in range(len(names))))
        lib.lb_maglev_clear(_i32(arr), size, gone)
        _fill_native(lib, arr, names, w_up, size)
    return MaglevTable(backends=names, slots=arr)


def _i32(a: array) -> ctypes.Array:
    return (ctypes.c_int32 * len(a)).from_buffer(a)


def _u32(values: Sequence[int]) -> ctypes.Array:
    return (ctypes.c_uint32 * len(values))(*values)


def _fill_native(lib: ctypes.CDLL, table: array, names: tuple[str, ...], w: list[int],
                 size: int) -> None:  # fmt: skip
    """``_fill`` in C (maglev_fill.c): the same claims in the same order."""
    params = [permutation_params(name, size) for name in names]
    pos = _u32([off for off, _ in params])
    step = _u32([skip for _, skip in params])
    if lib.lb_maglev_fill(_i32(table), size, len(names), pos, step, _u32(w)):
        raise MemoryError("Maglev fill: out of memory or no weight")


def _fill(table: list[int], names: tuple[str, ...], w: list[int], size: int) -> None:
    """Let backends with weight > 0 take turns claiming the free (-1) slots of
    ``table``, each at the next free slot of its own permutation."""
    n = len(names)
    params = [permutation_params(name, size) for name in names]
    pos = [off for off, _ in params]  # next slot of each backend's permutation
    step = [skip for _, skip in params]
    wmax = max(w)
    credit = [0] * n
    free = table.count(-1)
    tail = min(free, max(_TAIL_MIN, size // (_TAIL_DIVISOR * n)))
    i = -1  # whose turn it was last
    while free > tail:
        i += 1
        if i == n:
            i = 0
        credit[i] += w[i]
        if credit[i] < wmax:
            continue
        credit[i] -= wmax
        c = pos[i]
        s = step[i]
        while table[c] >= 0:
            c += s
            if c >= size:
                c -= size
        table[c] = i
        c += s
        pos[i] = c - size if c >= size else c
        free -= 1
    if free:
        _fill_tail(table, i, pos, step, w, credit, size)


def _fill_tail(
    table: list[int],
    i: int,
    pos: list[int],
    step: list[int],
    w: list[int],
    credit: list[int],
    size: int,
) -> None:
    """Fill the last free slots exactly as the probing loop would, but faster.

    The slot at position ``j`` ahead of backend ``b``'s cursor is
    ``pos_b + j * skip_b (mod M)``, so a free slot ``c`` is at
    ``j = (c - pos_b) * skip_b^-1 (mod M)``. Sorting the free slots by ``j``
    once per backend turns every later fill into a walk along that list,
    skipping the slots other backends took meanwhile. ``i`` is the backend
    whose turn came last.
    """
    free_slots = [c for c, b in enumerate(table) if b < 0]
    remaining = len(free_slots)
    n = len(pos)
    wmax = max(w)
    order: list[list[int]] = []
    for b in range(n):
        if not w[b]:
            order.append([])
            continue
        inv = pow(step[b], -1, size)
        p = pos[b]
        order.append(sorted(free_slots, key=lambda c, p=p, inv=inv: (c - p) * inv % size))
    cursor = [0] * n
    while remaining:
        i += 1
        if i == n:
            i = 0
        credit[i] += w[i]
        if credit[i] < wmax:
            continue
        credit[i] -= wmax
        lst = order[i]
        k = cursor[i]
        while table[lst[k]] >= 0:
            k += 1
        table[lst[k]] = i
        cursor[i] = k + 1
        remaining -= 1
