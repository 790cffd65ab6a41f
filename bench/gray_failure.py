"""Gray-failure benchmark (issue 8).

Four lab backends behind the VIP on one LB node of the namespace lab; an
open-loop client sends 100 req/s for 20 s from the client namespace and records
every request's latency (from its scheduled send time, so a stalled server
cannot hide queued requests). One backend fails gray while its /health keeps
answering 200: hard (+900 ms every request), soft (+60 ms), intermittent (10 %
of requests +900 ms). Each failure runs against:

  (a) round-robin with the shallow /health check (a plain config),
  (b) the appliance's rendered L7 policy (random(2), active check on the real
      request path, passive outlier ejection, retries within a budget),
  (c) that policy plus the weight controller (python -m lbappliance.weights),

plus the all-healthy baseline. Before the measured 20 s each run gets a settle
phase at the same load, reported separately (how long detection takes shows
there).

    python bench/gray_failure.py                   # everything, ~6 min, needs root
    python bench/gray_failure.py --quick           # 5 s runs, for a smoke test
    python bench/gray_failure.py load --host H ... # the load worker (used internally)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


async def _one(host: str, port: int, timeout: float) -> tuple[int, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii"))
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    backend = next(
        (h.split(":", 1)[1].strip() for h in head if h.lower().startswith("x-backend:")), ""
    )
    return status, backend


async def open_loop(
    host: str, port: int, rate: float, duration: float, timeout: float = 10.0
) -> list[tuple[float, float, int, str]]:
    """Send ``rate`` req/s for ``duration`` s on a fixed schedule, whatever the answers.

    Returns ``(scheduled offset s, latency s, status or 0 on error, backend)`` per request;
    latency counts from the scheduled send time.
    """
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    results: list[tuple[float, float, int, str]] = []

    async def fire(at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            status, backend = await _one(host, port, timeout)
        except (TimeoutError, OSError, ValueError, IndexError):
            status, backend = 0, ""
        results.append((at - start, loop.time() - at, status, backend))

    count = int(rate * duration)
    await asyncio.gather(*(fire(start + i / rate) for i in range(count)))
    results.sort()
    return results


def load_main(argv: list[str]) -> None:
    """The load worker: runs inside the client namespace, prints JSON results."""
    p = argparse.ArgumentParser(prog="gray_failure.py load")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args(argv)
    results = asyncio.run(open_loop(a.host, a.port, a.rate, a.duration, a.timeout))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        load_main(sys.argv[2:])
    else:
        raise SystemExit("orchestrator not written yet")
