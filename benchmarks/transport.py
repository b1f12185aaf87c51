"""Transports: events from another process into the aggregates, through a local
redis-server and through ``POST /events``. Reports, does not assert.

    python -m benchmarks.transport [--case redis|http|all] [--events N] [--batch B]

- ``redis end-to-end``: a publisher process ``XADD``s MessagePack batches (pipelined,
  ids assigned) while a ``MetricsEndpoint`` in this process consumes them with its
  consumer group (``XREADGROUP``, dedup, fold, ``XACK``); timed from the first publish to
  the last event folded. Target: >= 200 k events/s.
- ``redis consume``: the same consumer draining a stream filled beforehand.
- ``http msgpack``: a ``streammetrics`` endpoint in another process; this process posts
  pre-encoded MessagePack batches over ``--connections`` keep-alive connections with a
  lean raw-socket generator. Target: >= 300 k events/s with batches of 1,000.
- ``http client``: the same through ``AsyncEventClient`` (ids, encoding, one connection).

Every case checks that the endpoint folded exactly the events sent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

from streammetrics import Event
from streammetrics.model.events import encode_events

from ._proc import read_line

__all__ = ("main",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _events(n: int, start: int = 0) -> list[Event]:
    return [
        Event(f"svc{i % 8}", "processed", latency=(i % 100 + 1) / 1000, stream="orders")
        for i in range(start, start + n)
    ]


class _Redis:
    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(tmp)),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _publish(url: str, stream: str, n: int, batch: int, go: Any) -> None:
    from streammetrics.transports.redis_publisher import EventPublisher

    events = _events(n)
    go.wait()
    with EventPublisher(url, stream, batch_size=batch, maxlen=None) as pub:
        for k in range(0, n, batch * 10):
            pub.publish_many(events[k : k + batch * 10])
            pub.flush()


async def _consume(url: str, stream: str, n: int, go: Any | None) -> tuple[float, float, int]:
    from streammetrics.components.metrics import MetricsEndpoint

    ep = MetricsEndpoint(
        name="bench",
        port=0,
        tick_s=5,
        source={"redis": {"url": url, "stream": stream, "group": "bench", "count": 50}},
    )
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        assert ep.redis is not None
        if go is not None:
            go.set()
        t0 = time.perf_counter()
        c0 = time.process_time()
        while ep.redis.statistics().events < n:  # noqa: ASYNC110 - a counter, not an event
            await anyio.sleep(0.002)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        tg.cancel_scope.cancel()
    snap = ep.aggregator.figures()
    folded = sum(c.items_processed for c in snap.detailed_components.values())
    return seconds, cpu, folded


def bench_redis(n: int, batch: int) -> list[tuple[str, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = _Redis(Path(tmp))
        try:
            ctx = mp.get_context("spawn")
            go = ctx.Event()
            pub = ctx.Process(target=_publish, args=(server.url, "e2e", n, batch, go))
            pub.start()
            seconds, cpu, folded = anyio.run(_consume, server.url, "e2e", n, go)
            pub.join(30)
            assert folded == n, (folded, n)
            note = f"{n} events, batches of {batch}; consumer {n / cpu:,.0f} events/CPU-s"
            rows.append(("redis end-to-end", n / seconds, note))
            done = mp.get_context("spawn").Event()
            done.set()
            _publish(server.url, "filled", n, batch, done)
            seconds, cpu, folded = anyio.run(_consume, server.url, "filled", n, None)
            assert folded == n, (folded, n)
            note = f"stream filled beforehand; consumer {n / cpu:,.0f} events/CPU-s"
            rows.append(("redis consume", n / seconds, note))
        finally:
            server.stop()
    return rows


_SERVER = """
import anyio, sys
from streammetrics.components.metrics import MetricsEndpoint
async def main():
    # rate_limit=None: the load generator posts from 127.0.0.1 as fast as the endpoint
    # folds; the figure is the ingest's, not the limiter's.
    ep = MetricsEndpoint(name="bench", port={port}, tick_s=1, max_body_bytes=64 << 20,
                         ingest={{"max_body_bytes": 64 << 20}}, rate_limit=None)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        print("ready", flush=True)
        await anyio.sleep_forever()
anyio.run(main)
"""


def _folded(url: str) -> int:
    body = httpx.get(url + "/components", timeout=10).json()
    return sum(c["items_processed"] for c in body["components"].values())


async def _post_all(url: str, bodies: list[bytes], connections: int) -> None:
    headers = {"content-type": "application/msgpack"}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        todo = iter(bodies)

        async def worker() -> None:
            for body in todo:
                r = await client.post("/events", content=body, headers=headers)
                assert r.status_code == 200, r.text

        async with anyio.create_task_group() as tg:
            for _ in range(connections):
                tg.start_soon(worker)


async def _raw_post_all(port: int, bodies: list[bytes], connections: int) -> None:
    """A lean load generator (pre-built HTTP/1.1 requests on keep-alive sockets), so that
    the figure is the server's, not httpx's: httpx costs more CPU per request than the
    endpoint spends folding 1,000 events, and both share the machine's two cores."""
    requests = [
        b"POST /events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/msgpack\r\n"
        + f"content-length: {len(b)}\r\n\r\n".encode()
        + b
        for b in bodies
    ]
    todo = iter(requests)

    async def worker() -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as conn:
            buf = b""
            for req in todo:
                await conn.send(req)
                while b"\r\n\r\n" not in buf:
                    buf += await conn.receive()
                head, _, buf = buf.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += await conn.receive()
                buf = buf[length:]

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(worker)


async def _client_all(url: str, events: list[Event], batch: int) -> None:
    from streammetrics.transports.http_client import AsyncEventClient

    async with AsyncEventClient(url, batch_size=batch, timeout_s=30) as client:
        for k in range(0, len(events), batch):
            await client.send_many(events[k : k + batch])


def bench_http(n: int, batch: int, connections: int) -> list[tuple[str, float, str]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER.format(port=port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    rows = []
    try:
        if read_line(proc.stdout, 60) != "ready":
            raise RuntimeError("the ingest server did not start within 60 s")
        events = _events(n)
        bodies = [encode_events(events[k : k + batch], "msgpack") for k in range(0, n, batch)]
        anyio.run(_post_all, url, bodies[:5], 1)  # warm up connections and code paths
        time.sleep(1.1)  # the next snapshot tick
        base = _folded(url)
        server = psutil.Process(proc.pid)
        c0 = sum(server.cpu_times()[:2])
        t0 = time.perf_counter()
        anyio.run(_raw_post_all, port, bodies, connections)
        seconds = time.perf_counter() - t0
        cpu = sum(server.cpu_times()[:2]) - c0
        time.sleep(1.1)
        assert _folded(url) - base == n, (_folded(url) - base, n)
        rows.append(
            (
                "http msgpack",
                n / seconds,
                f"batches of {batch}, {connections} conns; server {n / cpu:,.0f} events/CPU-s",
            )
        )
        base += n
        t0 = time.perf_counter()
        anyio.run(_client_all, url, events, batch)
        seconds = time.perf_counter() - t0
        rows.append(("http client", n / seconds, "AsyncEventClient, ids, 1 connection"))
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=("redis", "http", "all"), default="all")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args(argv)
    rows: list[tuple[str, float, str]] = []
    if a.case in ("redis", "all"):
        rows += bench_redis(a.events, a.batch)
    if a.case in ("http", "all"):
        rows += bench_http(a.events, a.batch, a.connections)
    targets = {"redis end-to-end": 200_000, "http msgpack": 300_000}
    if a.json:
        print(json.dumps([{"case": c, "events_per_s": r, "note": n} for c, r, n in rows]))
        return
    print(f"{'case':<18} {'events/s':>12}  {'target':>10}  note")
    for case, rate, note in rows:
        target = targets.get(case)
        mark = "" if target is None else f"{target:>10,}" + (" ok" if rate >= target else " MISS")
        print(f"{case:<18} {rate:>12,.0f}  {mark:>10}  {note}")


if __name__ == "__main__":
    main()
