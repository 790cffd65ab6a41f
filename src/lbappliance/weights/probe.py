"""The controller's own requests to servers it has parked (weight 0) or is re-admitting.

A parked server gets no users' traffic, so HAProxy's counters say nothing about it.
Instead the controller sends it ``GET <probe_path>`` every ``PROBE_INTERVAL`` s,
straight from the LB node to the server's address (what HAProxy's ``show stat``
shows), and times each answer to its response headers, as HAProxy's ``rtime`` does
for users' requests. An answer with a 5xx status, a refused connection or no answer
within ``PROBE_TIMEOUT`` is a failed probe. The policy judges the samples
(``policy.Probes``); this module only sends and records them.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import deque
from collections.abc import Callable

from lbappliance.weights.policy import PROBE_CALM_MAX, PROBE_INTERVAL, PROBE_TIMEOUT, Probes

KEEP = PROBE_CALM_MAX + 5.0  # s of samples kept per server

Key = tuple[str, str]  # (pool, server)


def split_address(addr: str) -> tuple[str, int] | None:
    """``10.0.0.1:8080`` or ``[2001:db8::1]:8080`` (HAProxy's ``addr`` field) to host, port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def probe_once(host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT) -> float | None:
    """Seconds to the response headers of one ``GET path``; ``None`` if it failed."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "GET", path, headers={"Connection": "close", "User-Agent": "lbappliance-weights"}
        )
        resp = conn.getresponse()
        latency = time.monotonic() - start
        resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return None if resp.status >= 500 else latency


class Prober:
    """One thread per watched server, probing it until it is unwatched."""

    def __init__(
        self,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[str, int, str, float], float | None] = probe_once,
    ):
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.probe = probe
        self._lock = threading.Lock()
        self._watched: dict[Key, tuple[str, threading.Event, float, deque]] = {}

    def watch(self, key: Key, address: str, path: str) -> None:
        """Start probing ``key`` at ``address`` (``host:port``); nothing if already watched."""
        target = split_address(address)
        if target is None:
            return
        with self._lock:
            if key in self._watched and self._watched[key][0] == address:
                return
            self._stop(key)
            stop = threading.Event()
            samples: deque[tuple[float, float | None]] = deque()
            self._watched[key] = (address, stop, self.clock(), samples)
        thread = threading.Thread(
            target=self._loop,
            args=(target, path, stop, samples),
            name=f"probe {key[0]}/{key[1]}",
            daemon=True,
        )
        thread.start()

    def unwatch(self, key: Key) -> None:
        with self._lock:
            self._stop(key)

    def watched(self) -> set[Key]:
        with self._lock:
            return set(self._watched)

    def stop(self) -> None:
        with self._lock:
            for key in list(self._watched):
                self._stop(key)

    def probes(self, key: Key) -> Probes | None:
        """The samples of ``key`` so far; ``None`` if it is not watched or has none."""
        with self._lock:
            entry = self._watched.get(key)
            if entry is None or not entry[3]:
                return None
            return Probes(started=entry[2], samples=tuple(entry[3]))

    def _stop(self, key: Key) -> None:
        entry = self._watched.pop(key, None)
        if entry:
            entry[1].set()

    def _loop(
        self, target: tuple[str, int], path: str, stop: threading.Event, samples: deque
    ) -> None:
        while not stop.is_set():
            sent = self.clock()
            latency = self.probe(target[0], target[1], path, self.timeout)
            with self._lock:
                samples.append((sent, latency))
                while samples and samples[0][0] < sent - KEEP:
                    samples.popleft()
            stop.wait(max(0.0, self.interval - (self.clock() - sent)))
