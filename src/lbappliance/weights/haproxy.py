"""HAProxy's runtime API as the controller uses it: ``show stat`` rows and ``set weight``."""

from __future__ import annotations

import csv
import socket
from dataclasses import dataclass

# The server-level fields the controller reads (``show stat`` CSV header names).
HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


class SocketError(OSError):
    """The admin socket could not be reached or answered with an error."""


@dataclass(frozen=True)
class ServerStat:
    """One server row of ``show stat``; ``None`` where HAProxy left a field empty."""

    pool: str
    server: str
    status: str
    uweight: int | None  # the weight `set weight` changes (before slow start scaling)
    backup: bool
    scur: int | None
    qcur: int | None
    slim: int | None
    stot: int | None  # streams assigned (each HTTP request counts once)
    req_tot: int | None  # requests, the divisor of the time averages below 512 samples
    responses: int | None  # sum of hrsp_*: responses received, one time sample each
    hrsp_5xx: int | None
    econ: int | None
    eresp: int | None
    qtime: int | None  # ms, sliding averages over the last 512 requests
    ctime: int | None
    rtime: int | None
    ttime: int | None
    check_status: str
    agent_status: str
    addr: str = ""  # host:port HAProxy sends to (where the controller probes)

    @property
    def admin_excluded(self) -> bool:
        """In maintenance or drain: an operator decision the controller leaves alone."""
        return self.status.startswith(("MAINT", "DRAIN", "NOLB")) or self.uweight == 0

    @property
    def up(self) -> bool:
        return self.status.startswith(("UP", "no check")) and not self.admin_excluded


def _int(value: str) -> int | None:
    try:
        return int(value) if value != "" else None
    except ValueError:
        return None


def parse_stat(text: str) -> list[ServerStat]:
    """Server rows of ``show stat`` CSV output (frontends and backend totals dropped)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise SocketError(f"not show stat output: {text[:80]!r}")
    records = csv.reader([lines[0][2:], *lines[1:]])  # a plain reader: 15,000 rows at scale
    column = {name: i for i, name in enumerate(next(records))}
    weight_key = "uweight" if "uweight" in column else "weight"
    missing = len(column)  # index of the "" appended below: absent columns read as empty

    def at(name: str) -> int:
        return column.get(name, missing)

    pxname, svname, status, uweight, bck, type_ = (
        at(k) for k in ("pxname", "svname", "status", weight_key, "bck", "type")
    )
    scur, qcur, slim, stot, req_tot, hrsp_5xx, econ, eresp = (
        at(k) for k in ("scur", "qcur", "slim", "stot", "req_tot", "hrsp_5xx", "econ", "eresp")
    )
    qtime, ctime, rtime, ttime, check_status, agent_status, addr = (
        at(k) for k in ("qtime", "ctime", "rtime", "ttime", "check_status", "agent_status", "addr")
    )
    hrsp = [at(k) for k in HRSP]
    rows = []
    for rec in records:
        rec += [""] * (missing + 1 - len(rec))
        if rec[type_] != "2":  # 0 frontend, 1 backend, 2 server, 3 listener
            continue
        parts = [_int(rec[i]) for i in hrsp]
        rows.append(
            ServerStat(
                pool=rec[pxname],
                server=rec[svname],
                status=rec[status],
                uweight=_int(rec[uweight]),
                backup=rec[bck] == "1",
                scur=_int(rec[scur]),
                qcur=_int(rec[qcur]),
                slim=_int(rec[slim]),
                stot=_int(rec[stot]),
                req_tot=_int(rec[req_tot]),
                responses=None if None in parts else sum(p for p in parts if p is not None),
                hrsp_5xx=_int(rec[hrsp_5xx]),
                econ=_int(rec[econ]),
                eresp=_int(rec[eresp]),
                qtime=_int(rec[qtime]),
                ctime=_int(rec[ctime]),
                rtime=_int(rec[rtime]),
                ttime=_int(rec[ttime]),
                check_status=rec[check_status],
                agent_status=rec[agent_status],
                addr=rec[addr],
            )
        )
    return rows


class AdminSocket:
    """One command per connection (HAProxy closes after answering in non-interactive mode)."""

    def __init__(self, path: str, timeout: float = 2.0):
        self.path = path
        self.timeout = timeout

    def command(self, line: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise SocketError(f"{self.path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def show_stat(self) -> list[ServerStat]:
        return parse_stat(self.command("show stat"))

    def set_weights(self, weights: dict[tuple[str, str], int]) -> None:
        """Apply several weights in one round trip; any answer text is an error."""
        if not weights:
            return
        line = "; ".join(f"set weight {p}/{s} {w}" for (p, s), w in sorted(weights.items()))
        answer = self.command(line).strip()
        if answer:
            raise SocketError(f"set weight: {answer}")
