"""The fallback load generator (when ``wrk`` is absent): asyncio, HTTP/1.1 keep-alive,
one coroutine per connection, run in its own process.

    python -m benchmarks._loadgen URL --connections N --seconds S [--rate R]

Prints one JSON object: requests, errors, non2xx, requests_per_s, p50_ms, p99_ms, max_ms.
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

__all__ = ("main", "run")


async def _conn(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    lat: list[float],
    stats: dict[str, int],
    schedule: tuple[float, float] | None = None,
) -> None:
    """Requests on one connection; reconnects when the server closes it (an HTTP/1.0
    server such as prometheus-client's ends every response that way).

    Back to back when ``schedule`` is None (closed loop, like wrk). With ``schedule =
    (first, interval)`` the n-th request is due at ``first + n * interval`` (open loop)
    and its latency counts from when it was due, so a server that falls behind is
    charged for the wait (no coordinated omission)."""
    writer: asyncio.StreamWriter | None = None
    n = 0
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if schedule is not None:
                due = schedule[0] + n * schedule[1]
                n += 1
                if due >= deadline:
                    break
                if due > t0:
                    await asyncio.sleep(due - t0)
                t0 = due
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
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
                await reader.read()  # delimited by the end of the connection
                close = True
            elif length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            stats["requests"] += 1
            if not 200 <= status < 400:
                stats["non2xx"] += 1
            if close:
                writer.close()
                writer = None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        stats["errors"] += 1
    finally:
        if writer is not None:
            writer.close()


async def run(
    url: str, connections: int, seconds: float, rate: float | None = None
) -> dict[str, Any]:
    """Load ``url`` for ``seconds``: closed loop, or ``rate`` requests/s spread evenly over
    the connections (open loop)."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    lat: list[float] = []
    stats = {"requests": 0, "errors": 0, "non2xx": 0}
    t0 = time.perf_counter()
    deadline = t0 + seconds
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(
            *(
                _conn(
                    host,
                    port,
                    request,
                    deadline,
                    lat,
                    stats,
                    (t0 + k / rate, connections / rate) if rate else None,
                )
                for k in range(connections)
            )
        )
    elapsed = time.perf_counter() - t0
    lat.sort()

    def pct(q: float) -> float | None:
        return lat[min(int(q * len(lat)), len(lat) - 1)] * 1e3 if lat else None

    return {
        **stats,
        "seconds": elapsed,
        "requests_per_s": stats["requests"] / elapsed,
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
    args = ap.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.url, args.connections, args.seconds, args.rate))))


if __name__ == "__main__":
    main()
