"""The fallback load generator (when ``wrk`` is absent): asyncio, HTTP/1.1 keep-alive,
one coroutine per connection, run in its own process.

    python -m benchmarks._loadgen URL --connections N --seconds S [--rate R] [--timeout T]

Prints one JSON object: requests, errors, timeouts, non2xx, seconds, requests_per_s,
p50_ms, p99_ms, max_ms.

Every request sent ends up in exactly one count: answered (``requests``, its latency in
the percentiles), a socket error (``errors``) or a timeout (``timeouts``: no complete
answer within T seconds, 10 by default as in the wrk runs). After an error or a timeout
the connection is closed and a new one opened, so a server that leaves a connection
unanswered (prometheus-client's does, at 100 connections and more) is measured as slow
instead of stalling the run. Requests still in flight when the S seconds end are waited
for, each up to its own timeout, so the slowest answers are in the percentiles rather
than dropped; a run therefore lasts at most S + T seconds, and ``requests_per_s`` divides
the answers by the time until the last one (``seconds``, at least S).

It is pure Python, so past a few hundred connections it measures itself as much as the
server; the HTTP case says which generator was used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec

__all__ = ("DEFAULT_TIMEOUT_S", "main", "run")

DEFAULT_TIMEOUT_S = 10.0
"""Seconds a request may take before it counts as a timeout (wrk's ``--timeout`` in the
HTTP case, so both generators draw the line at the same place)."""


class _Tally(msgspec.Struct):
    """What the connections of one run counted, shared by all of them (one event loop, so
    no lock)."""

    latencies: list[float] = msgspec.field(default_factory=list)
    """Seconds per answered request: from when it was sent (closed loop) or due (open)."""
    requests: int = 0
    """Complete answers, whatever their status."""
    errors: int = 0
    """Requests lost to a socket error (refused, reset, closed early, unreadable answer)."""
    timeouts: int = 0
    """Requests with no complete answer within the timeout."""
    non2xx: int = 0
    """Answers with a status outside 200-399 (also counted in ``requests``)."""
    last_answer: float = 0.0
    """``time.perf_counter()`` of the latest answer."""


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status and whether the server ends the connection after it
    (HTTP/1.0, ``Connection: close``, or a body delimited by the end of the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length: int | None = None
    close = head.startswith(b"HTTP/1.0")
    for line in head.split(b"\r\n")[1:]:
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line[15:])
        elif low.startswith(b"connection:"):
            close = b"close" in low
    if length is None:
        await reader.read()
        close = True
    elif length:
        await reader.readexactly(length)
    return status, close


async def _conn(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    request_timeout: float,
    tally: _Tally,
    schedule: tuple[float, float] | None = None,
) -> None:
    """Requests on one connection until ``deadline``, each given ``request_timeout`` seconds
    (connecting included); a new connection after the server closes one (an HTTP/1.0
    server such as prometheus-client's ends every response that way), after an error
    and after a timeout.

    Back to back when ``schedule`` is None (closed loop, like wrk). With ``schedule =
    (first, interval)`` the n-th request is due at ``first + n * interval`` (open loop)
    and its latency counts from when it was due, so a server that falls behind is
    charged for the wait (no coordinated omission)."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    n = 0
    try:
        while (t0 := time.perf_counter()) < deadline:
            if schedule is not None:
                due = schedule[0] + n * schedule[1]
                n += 1
                if due >= deadline:
                    break
                if due > t0:
                    await asyncio.sleep(due - t0)
                t0 = due
            close = True
            try:
                async with asyncio.timeout(request_timeout):
                    if writer is None or reader is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    writer.write(request)
                    status, close = await _response(reader)
            # TimeoutError first: it is also an OSError (a kernel connect timeout is one too)
            except TimeoutError:
                tally.timeouts += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                tally.errors += 1
            else:
                tally.last_answer = time.perf_counter()
                tally.latencies.append(tally.last_answer - t0)
                tally.requests += 1
                if not 200 <= status < 400:
                    tally.non2xx += 1
            if close and writer is not None:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def run(
    url: str,
    connections: int,
    seconds: float,
    rate: float | None = None,
    request_timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Load ``url`` for ``seconds``: closed loop, or ``rate`` requests/s spread evenly over
    the connections (open loop); each request gets ``request_timeout`` seconds."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    tally = _Tally()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    async with asyncio.TaskGroup() as tg:
        for k in range(connections):
            schedule = (t0 + k / rate, connections / rate) if rate else None
            tg.create_task(_conn(host, port, request, deadline, request_timeout, tally, schedule))
    elapsed = max(seconds, tally.last_answer - t0)
    lat = sorted(tally.latencies)

    def pct(q: float) -> float | None:
        return lat[min(int(q * len(lat)), len(lat) - 1)] * 1e3 if lat else None

    return {
        "requests": tally.requests,
        "errors": tally.errors,
        "timeouts": tally.timeouts,
        "non2xx": tally.non2xx,
        "seconds": elapsed,
        "requests_per_s": tally.requests / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] * 1e3 if lat else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="asyncio HTTP load generator (wrk fallback)")
    ap.add_argument("url")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=None, help="requests/s offered (open loop)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds per request before it counts as a timeout",
    )
    args = ap.parse_args(argv)
    result = asyncio.run(run(args.url, args.connections, args.seconds, args.rate, args.timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
