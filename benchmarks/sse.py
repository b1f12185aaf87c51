"""The live feed under load: ``/health`` latency and the endpoint's CPU while a hundred
dashboards are connected to ``GET /stream``.

    python -m benchmarks.sse                 # 100 components, 1 s tick, 100 clients, ~80 s
    python -m benchmarks.sse --quick         # ~30 s
    python -m benchmarks.sse --clients 300 --components 1000

Three processes, so that no side's work shows up as another's latency:

- the endpoint: a MetricsEndpoint in code (``streammetrics.serve``) with ``components``
  probes, each counting a little every flush (what a live system's probes hand over);
- the clients: ``clients`` SSE connections reading every frame (asyncio + httpx);
- this process: ``/health`` on one keep-alive connection, ``rate`` requests a second
  (``benchmarks._loadgen``: raw sockets, open loop), timing each; the endpoint's CPU from
  ``/proc`` (psutil) over the same window, and its event loop's lag (a 10 ms sleep's
  overshoot, sampled inside the endpoint), which tells the endpoint's own stalls from the
  machine's.

Each phase (no client, then all of them) runs ``seconds``; the targets:
``/health`` p99 under 10 ms and the endpoint under 10 % of one core with 100 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from streammetrics import MetricsPlugin

from ._loadgen import run as loadgen
from ._proc import read_line
from ._report import CaseResult, Target, machine, progress, table, targets_table

__all__ = ("main", "run_case")


# -- the endpoint process ----------------------------------------------------------------


class _LoopLag(MetricsPlugin):
    """How late a 10 ms sleep wakes up: the endpoint's event loop blocked (by its own
    work) or the process not scheduled (by the machine's) both show here. A plugin of the
    endpoint, served as its figures (``/metrics/json`` ``extra.bench``)."""

    name = "bench"

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            self.samples.append((t0, (loop.time() - t0 - 0.01) * 1000))
            if len(self.samples) > 20_000:
                del self.samples[:10_000]

    async def figures(self) -> dict[str, Any]:
        return {"lag_ms": [round(lag, 3) for _t, lag in self.samples[-6000:]]}


async def _serve(components: int, tick_s: float, max_clients: int) -> None:
    import streammetrics

    lag = _LoopLag()
    # rate_limit=None: every client of the benchmark is 127.0.0.1, and what is measured
    # is the feed, not the limiter (a hundred reconnecting clients would share one bucket).
    ep = streammetrics.MetricsEndpoint(
        name="bench_sse",
        port=0,
        tick_s=tick_s,
        dashboard={"max_clients": max_clients},
        rate_limit=None,
        plugins=[lag],
    )
    async with streammetrics.serve(ep):
        probes = [ep.probe(f"component_{i:04d}") for i in range(components)]
        print(ep.url, flush=True)
        lag_task = asyncio.create_task(lag.run())
        n = 0
        try:
            while True:
                n += 1
                for i, p in enumerate(probes):
                    p.processed(1 + (n + i) % 5, latency=0.001 * (1 + i % 7))
                    if (n + i) % 50 == 0:
                        p.error(detail="TimeoutError: upstream")
                await asyncio.sleep(0.1)
        finally:
            lag_task.cancel()


# -- the clients process -----------------------------------------------------------------


async def _swarm(url: str, clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    frames = [0] * clients
    nbytes = [0] * clients
    refused = 0

    async def one(i: int, client: httpx.AsyncClient) -> None:
        nonlocal refused
        async with client.stream("GET", url + "/stream") as r:
            if r.status_code != 200:
                refused += 1
                return
            async for chunk in r.aiter_bytes():
                nbytes[i] += len(chunk)
                frames[i] += chunk.count(b"event: snapshot")

    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        tasks = [asyncio.create_task(one(i, client)) for i in range(clients)]
        print("connected", flush=True)
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "clients": clients,
        "refused": refused,
        "frames_per_client_s": statistics.mean(frames) / seconds if clients else 0.0,
        "min_frames": min(frames, default=0),
        "kbytes_s_total": sum(nbytes) / seconds / 1000,
    }


# -- this process ------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sse", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _phase(
    url: str, server: psutil.Process, clients: int, seconds: float, rate: float
) -> dict[str, Any]:
    swarm = _spawn("--swarm", url, "--clients", str(clients), "--seconds", str(seconds + 4))
    try:
        if read_line(swarm.stdout, 60) != "connected":
            raise RuntimeError("the client swarm did not start")
        time.sleep(2.0)  # let every client connect and get its first frame
        c0 = server.cpu_times()
        t0 = time.monotonic()
        # Raw sockets, open loop (each request timed from when it was due): the prober
        # must not measure its own Python overhead.
        health = asyncio.run(loadgen(url + "/health", 1, seconds, rate))
        c1 = server.cpu_times()
        wall = time.monotonic() - t0
        lags = _recent_lags(url, wall)
        out, _ = swarm.communicate(timeout=seconds + 30)
    finally:
        if swarm.poll() is None:
            swarm.kill()
            swarm.communicate()
    stats = json.loads(out.strip().splitlines()[-1])
    cpu = (c1.user + c1.system - c0.user - c0.system) / wall * 100
    return {
        "sse_clients": clients,
        "refused": stats["refused"],
        "frames_per_client_s": stats["frames_per_client_s"],
        "min_frames": stats["min_frames"],
        "stream_kB_s": stats["kbytes_s_total"],
        "health_n": health["requests"],
        "health_p50_ms": health["p50_ms"],
        "health_p99_ms": health["p99_ms"],
        "health_max_ms": health["max_ms"],
        "endpoint_cpu_pct": cpu,
        "loop_lag_p99_ms": _pct(lags, 0.99) if lags else None,
        "loop_lag_max_ms": max(lags, default=None),
    }


def _recent_lags(url: str, seconds: float) -> list[float]:
    """The endpoint's loop lags over (about) the last ``seconds``; a sample each ~10 ms."""
    import httpx

    time.sleep(1.1)  # the figures are collected once per tick
    body = httpx.get(url + "/metrics/json", timeout=10.0).json()
    lags: list[float] = body["extra"]["bench"]["lag_ms"]
    return lags[-int(seconds * 90) :]


def run_case(
    *,
    clients: int = 100,
    components: int = 100,
    tick_s: float = 1.0,
    seconds: float = 30.0,
    rate: float = 20.0,
) -> CaseResult:
    res = CaseResult(
        "sse",
        params={
            "clients": clients,
            "components": components,
            "tick_s": tick_s,
            "seconds": seconds,
            "health_req_per_s": rate,
        },
    )
    server = _spawn(
        "--serve", "--components", str(components), "--tick", str(tick_s),
        "--max-clients", str(max(clients, 1)),
    )  # fmt: skip
    try:
        url = read_line(server.stdout, 60)
        if not url.startswith("http://"):
            raise RuntimeError(f"the endpoint did not start: {url!r}")
        proc = psutil.Process(server.pid)
        time.sleep(2.0)  # a few ticks: every component registered and counting
        for n in (0, clients):
            progress(f"{n} SSE clients, {components} components, tick {tick_s:g}s, {seconds:g}s")
            res.rows.append(_phase(url, proc, n, seconds, rate))
    finally:
        server.terminate()
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    loaded = res.rows[-1]
    res.targets += [
        Target(
            f"/health p99 with {clients} SSE clients",
            loaded["health_p99_ms"],
            "<",
            10.0,
            "ms",
            f"{components} components, tick {tick_s:g}s",
        ),
        Target(
            f"endpoint CPU with {clients} SSE clients",
            loaded["endpoint_cpu_pct"],
            "<",
            10.0,
            "% of a core",
            f"{components} components, tick {tick_s:g}s; includes the probes' own load",
        ),
    ]
    if loaded["refused"]:
        res.notes.append(f"{loaded['refused']} clients were refused (connection limit)")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 s phases instead of 30 s")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--components", type=int, default=100)
    p.add_argument("--tick", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--rate", type=float, default=20.0, help="/health requests per second")
    # The helper processes (not for people):
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--max-clients", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--swarm", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.components, args.tick, args.max_clients))
        return 0
    if args.swarm:
        stats = asyncio.run(_swarm(args.swarm, args.clients, args.seconds or 10.0))
        print(json.dumps(stats), flush=True)
        return 0
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    res = run_case(
        clients=args.clients,
        components=args.components,
        tick_s=args.tick,
        seconds=seconds,
        rate=args.rate,
    )
    m = machine()
    print(f"# SSE live feed ({m['cpu']}, {m['nproc']} cpus, Python {m['python']})\n")
    print(table(res.rows))
    print()
    print(targets_table(res.targets))
    for note in res.notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
