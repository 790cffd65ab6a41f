"""Talking to ExaBGP: the text API lines we write and the lines it writes back.

ExaBGP runs the agent as a ``process``: commands go to the agent's stdout, one
per line, and ExaBGP answers each with ``done`` or ``error`` on the agent's
stdin (``exabgp.api.ack``, on by default). Neighbor events arrive on the same
stream (``neighbor 10.10.0.1 up``); ``shutdown ...`` or end of file means
ExaBGP is going away.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

GRACEFUL_SHUTDOWN = "65535:0"  # RFC 8326


@dataclass(frozen=True)
class Route:
    """What one VIP is announced with."""

    prefix: str
    communities: tuple[str, ...] = ()
    med: int | None = None
    as_path: tuple[int, ...] = ()

    def announce(self) -> str:
        parts = [f"announce route {self.prefix} next-hop self"]
        if self.med is not None:
            parts.append(f"med {self.med}")
        if self.as_path:
            parts.append("as-path [" + " ".join(str(a) for a in self.as_path) + "]")
        standard = [c for c in self.communities if c.count(":") == 1]
        large = [c for c in self.communities if c.count(":") == 2]
        if standard:
            parts.append("community [" + " ".join(standard) + "]")
        if large:
            parts.append("large-community [" + " ".join(large) + "]")
        return " ".join(parts)

    def with_community(self, community: str) -> Route:
        if community in self.communities:
            return self
        return Route(self.prefix, (*self.communities, community), self.med, self.as_path)


def withdraw_line(prefix: str) -> str:
    return f"withdraw route {prefix} next-hop self"


@dataclass
class Neighbor:
    address: str
    state: str  # "up" | "connected" | "down"
    reason: str = ""
    since: float = 0.0


class ExabgpChannel:
    """Writes commands, waits for their acknowledgement, tracks neighbor events.

    A reader thread consumes the input stream; ``closed`` is set at end of file
    or on ExaBGP's ``shutdown`` line, which is when the agent must exit.
    """

    def __init__(
        self,
        out: IO[str],
        inp: IO[str],
        clock: Callable[[], float],
        ack_timeout: float = 2.0,
        on_event: Callable[[str], None] | None = None,
    ):
        self._out = out
        self._inp = inp
        self._clock = clock
        self.ack_timeout = ack_timeout
        self._acks: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._on_event = on_event
        self.closed = threading.Event()
        self.neighbors: dict[str, Neighbor] = {}
        self.counts = {"done": 0, "error": 0, "timeout": 0}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._read, name="exabgp-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._inp:
                self.handle(raw.rstrip("\n"))
                if self.closed.is_set():
                    break
        except (OSError, ValueError):
            pass
        self.closed.set()
        self._acks.put("eof")

    def handle(self, line: str) -> None:
        """Interpret one line from ExaBGP."""
        line = line.strip()
        if not line:
            return
        if line in ("done", "error"):
            self._acks.put(line)
            return
        words = line.split()
        if words[0] == "shutdown":
            self.closed.set()
            self._acks.put("eof")
        elif words[0] == "neighbor" and len(words) >= 3 and words[2] in ("up", "down", "connected"):
            reason = line.split(" - ", 1)[1] if " - " in line else ""
            self.neighbors[words[1]] = Neighbor(words[1], words[2], reason, self._clock())
        if self._on_event:
            self._on_event(line)

    def send(self, command: str) -> str:
        """Write one command; return ``done``, ``error``, ``timeout`` or ``closed``."""
        with self._lock:
            if self.closed.is_set():
                return "closed"
            # Drop stale acks (a command that timed out earlier and was answered late).
            with contextlib.suppress(queue.Empty):
                while True:
                    self._acks.get_nowait()
            try:
                self._out.write(command + "\n")
                self._out.flush()
            except (OSError, ValueError):
                self.closed.set()
                return "closed"
            try:
                ack = self._acks.get(timeout=self.ack_timeout)
            except queue.Empty:
                ack = "timeout"
            if ack == "eof":
                return "closed"
            self.counts[ack] += 1
            return ack

    def write_unacked(self, commands: list[str], lock_timeout: float = 0.5) -> None:
        """Last-resort writes (watchdog, signal handler): no ack wait, never blocks long."""
        if not self._lock.acquire(timeout=lock_timeout):
            return
        try:
            for command in commands:
                self._out.write(command + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass
        finally:
            self._lock.release()
