"""HAProxy's admin socket: ``show stat`` parsed into what the agent and status need."""

from __future__ import annotations

import csv
import socket
import time
from dataclasses import dataclass

from lbappliance.health.signals import HaproxyView, Servers
from lbappliance.health.statview import stat_view


class HaproxyError(Exception):
    pass


def command(path: str, line: str, timeout: float) -> str:
    """Send one command on the admin socket and return the whole answer."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except FileNotFoundError:
        raise HaproxyError(f"admin socket {path} missing (HAProxy not running?)") from None
    except ConnectionRefusedError:
        raise HaproxyError(f"admin socket {path} refuses connections (HAProxy dead?)") from None
    except TimeoutError:
        raise HaproxyError(
            f"admin socket {path}: no answer within {timeout * 1000:.0f} ms"
        ) from None
    except OSError as exc:
        raise HaproxyError(f"admin socket {path}: {exc.strerror or exc}") from None
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class StatRow:
    proxy: str
    name: str  # FRONTEND, BACKEND or the server name
    status: str
    scur: int
    backup: bool
    weight: int

    @property
    def is_server(self) -> bool:
        return self.name not in ("FRONTEND", "BACKEND")

    @property
    def up(self) -> bool:
        """Takes new traffic: UP (even "UP 1/3", going down) or unchecked."""
        return self.status.startswith("UP") or self.status == "no check"


def parse_stat(text: str) -> list[StatRow]:
    lines = text.lstrip("# ").splitlines()
    if not lines or not lines[0].startswith("pxname,"):
        raise HaproxyError(f"unexpected answer to 'show stat': {text[:80]!r}")
    records = csv.reader(lines)
    column = {name: i for i, name in enumerate(next(records))}
    width = len(column)  # absent columns read as the "" padded on below
    svname, status, scur, bck, weight = (
        column.get(k, width) for k in ("svname", "status", "scur", "bck", "weight")
    )
    rows = []
    for rec in records:  # a plain reader: tens of thousands of rows per round at scale
        if not rec or not rec[0]:
            continue
        rec += [""] * (width + 1 - len(rec))
        rows.append(
            StatRow(
                proxy=rec[0],
                name=rec[svname],
                status=rec[status],
                scur=int(rec[scur] or 0),
                backup=rec[bck] == "1",
                weight=int(rec[weight] or 0),
            )
        )
    return rows


def view(rows: list[StatRow]) -> HaproxyView:
    frontends = {r.proxy: r.status for r in rows if r.name == "FRONTEND"}
    sessions = {r.proxy: r.scur for r in rows if r.name == "FRONTEND"}
    servers: dict[str, list[StatRow]] = {}  # one pass: thousands of backends at scale
    for r in rows:
        if r.is_server:
            servers.setdefault(r.proxy, []).append(r)
    backends: dict[str, Servers] = {}
    for proxy in dict.fromkeys(r.proxy for r in rows if r.name == "BACKEND"):
        own = servers.get(proxy, [])
        active = [r for r in own if not r.backup] or own
        backends[proxy] = Servers(up=sum(1 for r in active if r.up), total=len(active))
    return HaproxyView(frontends, sessions, backends)


def read_view(path: str, timeout: float) -> HaproxyView:
    return stat_view(command(path, "show stat", timeout), HaproxyError)
