"""The servers under test, each run in its own process by the HTTP case:

    python -m benchmarks._servers KIND [--components N] [--lifetime S] ...

KIND is ``streammetrics`` (the MetricsEndpoint app over a seeded aggregator),
``endpoint`` (a whole MetricsEndpoint, its defaults but ``max_components``, fed the
same seeded events through its bus: with its ticker and its garbage-collector policy),
``litestar`` (bare Litestar handlers: the HTTP floor, served by the same
``streammetrics.http.server.serve``) or ``prometheus`` (prometheus-client's own
``start_http_server`` with as many series as streammetrics' ``/metrics`` shows).

The process prints ``READY <port>`` once it listens, and stops by itself when its
standard input closes (the parent went away) or after ``--lifetime`` seconds. The
``streammetrics`` and ``endpoint`` kinds write ``GC2 <count> <longest ms> <total ms>`` to
standard error as they stop: the full (generation 2) collections since they were ready.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

__all__ = ("main",)


def _watch_stdin(stop: threading.Event) -> None:
    """Set ``stop`` when the parent closes our stdin (or dies)."""

    fd = sys.stdin.fileno()

    def run() -> None:
        try:
            # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader
            # makes the interpreter abort at exit.
            while os.read(fd, 1024):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=run, name="stdin-watch", daemon=True).start()


def _ready(port: int) -> None:
    print(f"READY {port}", flush=True)


@contextmanager
def _full_collections() -> Iterator[Callable[[int], None]]:
    """Time the process's full collections (a pause of the event loop that every request
    in flight waits through) from when the server is ready (it calls the ``ready`` given
    here instead of ``_ready``), and report them on the way out."""
    pauses: list[float] = []
    began: list[float] = []

    def timed(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            began[:] = [time.perf_counter()]
        elif began:
            pauses.append((time.perf_counter() - began.pop()) * 1e3)

    def ready(port: int) -> None:
        pauses.clear()
        _ready(port)

    gc.callbacks.append(timed)
    try:
        yield ready
    finally:
        gc.callbacks.remove(timed)
        print(f"GC2 {len(pauses)} {max(pauses, default=0):.1f} {sum(pauses):.1f}", file=sys.stderr)


def _serve_endpoint(
    components: int,
    events: int,
    tick_s: float,
    stop: threading.Event,
    lifetime: float,
    ready: Callable[[int], None],
) -> None:
    """A MetricsEndpoint as a user runs one, fed the seeded system once it listens (its
    probes time only once its aggregator subscribes); ready when a snapshot shows it."""
    import anyio

    from streammetrics import MetricsEndpoint

    from ._seed import seed_bus

    async def main() -> None:
        ep = MetricsEndpoint(name="benchmark", port=0, tick_s=tick_s, max_components=components + 1)
        async with anyio.create_task_group() as tg:
            await tg.start(ep.run)
            seed_bus(ep.ctx.bus, components, events)
            snap = await ep.service.snapshot(fresh=True)
            while len(snap.detailed_components) < components:  # until a tick has them all
                await anyio.sleep(tick_s / 4)
                snap = await ep.service.snapshot(fresh=True)
            assert ep.port is not None
            ready(ep.port)
            with anyio.move_on_after(lifetime):
                while not stop.is_set():  # noqa: ASYNC110 - set by a thread, not a task
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


def _serve_asgi(
    app: Any, stop: threading.Event, lifetime: float, ready: Callable[[int], None] = _ready
) -> None:
    import anyio

    from streammetrics.http.server import serve

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                partial(
                    serve,
                    app,
                    host="127.0.0.1",
                    port=0,
                    component="benchmark",
                    shutdown_timeout_s=1.0,
                )
            )
            ready(port)
            with anyio.move_on_after(lifetime):
                while not stop.is_set():  # noqa: ASYNC110 - set by a thread, not a task
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


def streammetrics_app(components: int, events_per_component: int, tick_s: float) -> Any:
    from streammetrics.http.app import create_app
    from streammetrics.process_sampler import ProcessSampler
    from streammetrics.views.tick_cache import TickCache

    from ._seed import seeded_aggregator

    agg = seeded_aggregator(components, events_per_component)
    service = TickCache(agg, tick_s=tick_s, sampler=ProcessSampler(), name="benchmark")
    return create_app(service)


def litestar_app(metrics_bytes: int, json_bytes: int) -> Any:
    """Bare handlers: a tiny JSON dict at /health, fixed bodies of the given sizes at
    /metrics and /metrics/json (what serving a cached body costs at the floor)."""
    from litestar import Litestar, Response, get

    prom = (b"# filler\n" * (metrics_bytes // 9 + 1))[:metrics_bytes]
    js = b'"' + b"x" * max(json_bytes - 2, 0) + b'"'

    @get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "health_score": 1.0}

    @get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8")
    async def metrics() -> Response[bytes]:
        return Response(prom, media_type="text/plain; version=0.0.4; charset=utf-8")

    @get("/metrics/json")
    async def metrics_json() -> Response[bytes]:
        return Response(js, media_type="application/json")

    return Litestar(
        [health, metrics, metrics_json],
        debug=False,
        logging_config=None,
        signature_namespace={"Any": Any, "Response": Response},
    )


def prometheus_registry(components: int, series: int) -> Any:
    """prometheus-client metrics padded to exactly ``series`` samples: per component a
    processed counter, an error counter and a latency histogram with streammetrics'
    buckets, then labelled gauges up to the count."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from streammetrics.windows import LATENCY_BOUNDS

    reg = CollectorRegistry()
    items = Counter("component_items_processed", "Items", ["component"], registry=reg)
    errors = Counter("component_errors", "Errors", ["component"], registry=reg)
    lat = Histogram(
        "component_latency_seconds", "Latency", ["component"], registry=reg, buckets=LATENCY_BOUNDS
    )
    for i in range(components):
        name = f"component_{i:05d}"
        items.labels(name).inc(100)
        errors.labels(name).inc(1)
        for k in range(10):
            lat.labels(name).observe(0.001 * (k + 1))
    have = sum(len(m.samples) for m in reg.collect())
    if have < series:
        pad = Gauge(
            "component_figure",
            "Padding to streammetrics' series count",
            ["component", "figure"],
            registry=reg,
        )
        for k in range(series - have):
            pad.labels(f"component_{k % max(components, 1):05d}", f"f{k}").set(k * 0.5)
    return reg


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("kind", choices=("streammetrics", "endpoint", "litestar", "prometheus"))
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--events-per-component", type=int, default=100)
    ap.add_argument("--tick", type=float, default=1.0)
    ap.add_argument("--series", type=int, default=0)
    ap.add_argument("--metrics-bytes", type=int, default=1000)
    ap.add_argument("--json-bytes", type=int, default=1000)
    ap.add_argument("--lifetime", type=float, default=600.0)
    args = ap.parse_args(argv)
    stop = threading.Event()
    _watch_stdin(stop)
    if args.kind == "prometheus":
        from prometheus_client import start_http_server

        reg = prometheus_registry(args.components, args.series)
        server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
        try:
            _ready(server.server_port)
            stop.wait(args.lifetime)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
        return
    if args.kind == "endpoint":
        with _full_collections() as ready:
            _serve_endpoint(
                args.components, args.events_per_component, args.tick, stop, args.lifetime, ready
            )
    elif args.kind == "streammetrics":
        app = streammetrics_app(args.components, args.events_per_component, args.tick)
        with _full_collections() as ready:
            _serve_asgi(app, stop, args.lifetime, ready)
    else:
        _serve_asgi(litestar_app(args.metrics_bytes, args.json_bytes), stop, args.lifetime)


if __name__ == "__main__":
    main()
