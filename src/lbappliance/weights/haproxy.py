"""HAProxy's runtime API as the controller uses it: ``show stat`` rows and ``set weight``."""

from __future__ import annotations

import csv
import io
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


def _int(row: dict[str, str], key: str) -> int | None:
    value = row.get(key, "")
    try:
        return int(value) if value != "" else None
    except ValueError:
        return None


def parse_stat(text: str) -> list[ServerStat]:
    """Server rows of ``show stat`` CSV output (frontends and backend totals dropped)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise SocketError(f"not show stat output: {text[:80]!r}")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    rows = []
    for row in reader:
        if row.get("type") != "2":  # 0 frontend, 1 backend, 2 server, 3 listener
            continue
        parts = [_int(row, k) for k in HRSP]
        rows.append(
            ServerStat(
                pool=row["pxname"],
                server=row["svname"],
                status=row.get("status", ""),
                uweight=_int(row, "uweight") if "uweight" in row else _int(row, "weight"),
                backup=row.get("bck") == "1",
                scur=_int(row, "scur"),
                qcur=_int(row, "qcur"),
                slim=_int(row, "slim"),
                stot=_int(row, "stot"),
                req_tot=_int(row, "req_tot"),
                responses=None if None in parts else sum(p for p in parts if p is not None),
                hrsp_5xx=_int(row, "hrsp_5xx"),
                econ=_int(row, "econ"),
                eresp=_int(row, "eresp"),
                qtime=_int(row, "qtime"),
                ctime=_int(row, "ctime"),
                rtime=_int(row, "rtime"),
                ttime=_int(row, "ttime"),
                check_status=row.get("check_status", ""),
                agent_status=row.get("agent_status", ""),
                addr=row.get("addr", ""),
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
