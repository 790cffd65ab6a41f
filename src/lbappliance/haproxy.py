"""HAProxy's admin socket on an LB node: commands, ``show stat``, and what "up" means.

The one client the health agent, the weight controller, the imbalance report and
the node helper (behind ``lbappliance status``, ``maintenance`` and the
playbooks' drain) use. A server is *up* when it takes new connections: its
status is ``UP`` (also ``UP 1/3``, failing checks but not down yet) or
``no check``, and no operator decision keeps traffic away from it (MAINT, DRAIN,
NOLB, or a weight of 0 set with ``set weight``).
"""

from __future__ import annotations

import csv
import socket
import time
from dataclasses import dataclass

# The rendered haproxy.cfg's own frontend (stats page, Prometheus): not client traffic.
STATS_FRONTEND = "stats"
# ``show stat`` response-code columns, summed into ServerStat.responses.
HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
# Statuses HAProxy gives a server an operator (or its agent) keeps traffic away from.
ADMIN_STATUSES = ("MAINT", "DRAIN", "NOLB")
SERVER = "2"  # the ``type`` column: 0 frontend, 1 backend, 2 server, 3 listener


class HaproxyError(OSError):
    """The admin socket could not be reached, or HAProxy refused or garbled an answer."""


@dataclass
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
    weight: int | None = None  # effective weight now (slow start scales it up from 0)

    @property
    def admin_excluded(self) -> bool:
        """In maintenance, drain or NOLB, or at weight 0: kept from new traffic on purpose."""
        return self.status.startswith(ADMIN_STATUSES) or self.uweight == 0

    @property
    def up(self) -> bool:
        """Takes new connections (see the module's docstring)."""
        return takes_traffic(self.status, self.uweight == 0)


def takes_traffic(status: str, zero_weight: bool) -> bool:
    """The one meaning of "up" (the module's docstring), from a server's status and weight."""
    return (
        status.startswith(("UP", "no check"))
        and not status.startswith(ADMIN_STATUSES)
        and not zero_weight
    )


@dataclass(frozen=True)
class Frontend:
    name: str
    status: str  # OPEN, STOP, ...
    scur: int  # client sessions now


@dataclass(frozen=True)
class Stats:
    """A whole ``show stat`` answer: frontends, backend names, server rows, in HAProxy's order."""

    frontends: dict[str, Frontend]
    backends: list[str]
    servers: list[ServerStat]

    def client_sessions(self) -> int:
        """Client sessions in flight: every frontend's but HAProxy's own stats frontend."""
        return sum(f.scur for name, f in self.frontends.items() if name != STATS_FRONTEND)

    def counted(self) -> dict[str, tuple[int, int]]:
        """Per backend: (servers up, servers counted). The active servers are counted, or
        the backups when a backend has only backups (they are what would carry its traffic)."""
        by_pool: dict[str, list[ServerStat]] = {}  # one pass: thousands of backends at scale
        for s in self.servers:
            by_pool.setdefault(s.pool, []).append(s)
        out = {}
        for name in self.backends:
            own = by_pool.get(name, [])
            active = [s for s in own if not s.backup] or own
            out[name] = (sum(1 for s in active if s.up), len(active))
        return out


def _int(value: str) -> int | None:
    try:
        return int(value) if value != "" else None
    except ValueError:
        return None


def parse_stat(text: str) -> Stats:
    """``show stat`` CSV (any HAProxy 2.x column set; absent columns read as empty).

    A row is split only as far as the last column read (HAProxy 2.6 has 129, the last
    one read is ``uweight``, the 100th); a line holding a quote goes through the csv
    module (HAProxy quotes only free text such as a check's description).
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname,"):
        raise HaproxyError(f"unexpected answer to 'show stat': {text[:80]!r}")
    column = {name: i for i, name in enumerate(next(csv.reader([lines[0][2:]])))}
    weight_key = "uweight" if "uweight" in column else "weight"
    wanted = ("pxname", "svname", "status", weight_key, "weight", "bck", "type", "scur", "qcur")
    wanted += ("slim", "stot", "req_tot", "hrsp_5xx", "econ", "eresp", "qtime", "ctime")
    wanted += ("rtime", "ttime", "check_status", "agent_status", "addr", *HRSP)
    last = max(column.get(k, 0) for k in wanted)
    missing = last + 1  # absent columns read there: "" (set below)

    def at(name: str) -> int:
        return column.get(name, missing)

    pxname, svname, status, uweight, weight, bck, type_ = (
        at(k) for k in ("pxname", "svname", "status", weight_key, "weight", "bck", "type")
    )
    scur, qcur, slim, stot, req_tot, hrsp_5xx, econ, eresp = (
        at(k) for k in ("scur", "qcur", "slim", "stot", "req_tot", "hrsp_5xx", "econ", "eresp")
    )
    qtime, ctime, rtime, ttime, check_status, agent_status, addr = (
        at(k) for k in ("qtime", "ctime", "rtime", "ttime", "check_status", "agent_status", "addr")
    )
    hrsp = [at(k) for k in HRSP]
    numbers = [uweight, scur, qcur, slim, stot, req_tot, hrsp_5xx, econ, eresp]
    numbers += [qtime, ctime, rtime, ttime, weight, *hrsp]
    frontends: dict[str, Frontend] = {}
    backends: list[str] = []
    servers: list[ServerStat] = []
    for line in lines[1:]:  # 15,000 server rows a tick at scale: one list of ints per row
        rec = next(csv.reader([line]), []) if '"' in line else line.split(",", missing)
        if not rec or not rec[0]:
            continue
        if len(rec) > missing:
            rec[missing] = ""
        else:
            rec += [""] * (missing + 1 - len(rec))
        name = rec[svname]
        if name == "FRONTEND":
            frontends[rec[pxname]] = Frontend(rec[pxname], rec[status], int(rec[scur] or 0))
        elif name == "BACKEND":
            backends.append(rec[pxname])
        elif rec[type_] == SERVER:
            try:
                n = [int(v) if (v := rec[i]) else None for i in numbers]
            except ValueError:  # not a number where one belongs: read as empty
                n = [_int(rec[i]) for i in numbers]
            parts = n[14:]
            servers.append(  # positional, in ServerStat's field order: cheaper at scale
                ServerStat(
                    rec[pxname],
                    name,
                    rec[status],
                    n[0],
                    rec[bck] == "1",
                    *n[1:6],
                    None if None in parts else sum(parts),  # type: ignore[arg-type]
                    *n[6:13],
                    rec[check_status],
                    rec[agent_status],
                    rec[addr],
                    n[13],
                )
            )
    return Stats(frontends, backends, servers)


class AdminSocket:
    """One command per connection (HAProxy closes after answering in non-interactive mode)."""

    def __init__(self, path: str, timeout: float = 2.0):
        self.path = path
        self.timeout = timeout  # for the whole command, answer included

    def command(self, line: str) -> str:
        """Send ``line`` (commands may be joined with "; ") and return the whole answer."""
        deadline = time.monotonic() + self.timeout
        where = f"admin socket {self.path}"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while True:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    if not (chunk := sock.recv(65536)):
                        break
                    chunks.append(chunk)
        except FileNotFoundError:
            raise HaproxyError(f"{where} missing (HAProxy not running?)") from None
        except ConnectionRefusedError:
            raise HaproxyError(f"{where} refuses connections (HAProxy dead?)") from None
        except TimeoutError:
            raise HaproxyError(f"{where}: no answer within {self.timeout * 1000:.0f} ms") from None
        except OSError as exc:
            raise HaproxyError(f"{where}: {exc.strerror or exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def stats(self) -> Stats:
        return parse_stat(self.command("show stat"))

    def show_stat(self) -> list[ServerStat]:
        """The server rows only (what the weight controller and the imbalance report read),
        asked for alone (``-1 4 -1``: every proxy, type 4, every server): at 10,000 services
        15,000 rows instead of 25,000 with the frontends and backends."""
        return parse_stat(self.command("show stat -1 4 -1")).servers

    def _silent(self, line: str) -> None:
        """Run commands that answer nothing when they succeed: any answer is an error."""
        if answer := self.command(line).strip():
            raise HaproxyError(f"{line}: {answer}")

    def set_weights(self, weights: dict[tuple[str, str], int]) -> None:
        """Apply several weights in one round trip."""
        if weights:
            self._silent(
                "; ".join(f"set weight {p}/{s} {w}" for (p, s), w in sorted(weights.items()))
            )

    def set_state(self, pool: str, server: str, state: str) -> None:
        """``set server POOL/SERVER state ready|drain|maint``."""
        self._silent(f"set server {pool}/{server} state {state}")
