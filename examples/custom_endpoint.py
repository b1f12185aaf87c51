"""Extend a MetricsEndpoint: a route of your own, your own figures, existing collectors.

The class is the documented ``CustomMetricsEndpoint`` shape: its routes hook is
``_setup_routes()`` (the original API's name of ``setup_routes()``), with
``@self.app.get(...)`` over a function, plus the other two hooks, ``collectors()`` and
``figures()``.

    python examples/custom_endpoint.py               # on http://127.0.0.1:9101, Ctrl-C stops
    python examples/custom_endpoint.py --port 0 --seconds 10

Then: ``curl localhost:9101/custom-metrics`` (the route added below),
``curl localhost:9101/metrics`` (``orders_queue_depth``, ``orders_placed_total`` and
prometheus-client's own process collector beside the endpoint's figures), and
``curl localhost:9101/metrics/json`` (the same figures under ``custom``, and what
``figures()`` returns under ``extra``). A collector that raises is listed in ``errors``
and counted in ``streammetrics_collector_errors_total``; the rest is still served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import streammetrics


class QueueCollector(Collector):
    """A custom collector, exactly as prometheus-client documents them."""

    def __init__(self, queue: asyncio.Queue[int]) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("orders_queue_depth", "Orders waiting", value=self.queue.qsize())


class CustomMetricsEndpoint(streammetrics.MetricsEndpoint):
    """An endpoint with a route, collectors and figures of its own, on Litestar."""

    def __init__(self, queue: asyncio.Queue[int], **config: Any) -> None:
        self.queue = queue
        # A metric object of prometheus-client is a collector too: it plugs in as it is.
        self.placed = Counter("orders_placed", "Orders placed", registry=None)
        super().__init__(**config)

    def _setup_routes(self) -> None:
        super()._setup_routes()

        @self.app.get("/custom-metrics")
        async def custom_metrics() -> dict[str, Any]:
            return await self.collect_custom_metrics()

    def collectors(self) -> Sequence[Collector]:
        return [
            *super().collectors(),
            QueueCollector(self.queue),
            self.placed,
            ProcessCollector(registry=None),  # an existing exporter's collector, unchanged
        ]

    async def collect_custom_metrics(self) -> dict[str, Any]:
        placed = next(iter(self.placed.collect())).samples[0].value  # orders_placed_total
        return {"queue_depth": self.queue.qsize(), "orders_placed": placed}

    async def figures(self) -> Mapping[str, Any]:
        """Shown under ``extra.<endpoint name>`` in /metrics/json, once per tick."""
        return await self.collect_custom_metrics()


async def main(port: int, seconds: float | None) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    endpoint = CustomMetricsEndpoint(queue, name="shop_metrics", port=port, tick_s=1.0)
    async with streammetrics.serve(endpoint):
        print(f"metrics on {endpoint.url}  (try {endpoint.url}/custom-metrics)", flush=True)
        worker = endpoint.probe("order_worker")

        async def produce() -> None:
            n = 0
            while True:
                n += 1
                await queue.put(n)
                endpoint.placed.inc()
                await asyncio.sleep(0.01)

        async def consume() -> None:
            while True:
                item = await queue.get()
                with worker.time():
                    await asyncio.sleep(0.005 if item % 10 else 0.02)

        tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
        try:
            await asyncio.sleep(seconds if seconds is not None else float("inf"))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.seconds))
