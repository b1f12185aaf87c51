"""Embed a metrics endpoint in an existing asyncio program.

    python examples/embed.py                  # metrics on http://127.0.0.1:9100, Ctrl-C stops
    python examples/embed.py --port 0         # any free port (printed)
    python examples/embed.py --seconds 10     # stop by itself after 10 s

Open the printed ``/dashboard`` URL to watch it live; ``/metrics`` is for Prometheus.
The program's own code reports through probes: ``probe.time()`` times a block,
``@probe.timed`` a sync or async function, ``probe.processed()`` / ``probe.error()``
count by hand. Counting is a few integer adds; the endpoint collects the counts on
its own short tick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random

import streammetrics


class OutOfStock(Exception):
    """An order that cannot be filled (counted as an error of ``order_handler``)."""


async def main(port: int, seconds: float | None) -> None:
    # An in-process endpoint: no blueprint, no harness; its own event bus.
    async with streammetrics.serve(name="orders_service", port=port, tick_s=1.0) as endpoint:
        print(f"metrics on {endpoint.url}  (live dashboard: {endpoint.url}/dashboard)", flush=True)
        orders = endpoint.probe("order_handler")
        prices = endpoint.probe("price_lookup")
        audit = endpoint.probe("audit_log")
        rng = random.Random(7)

        @prices.timed  # each call: one item processed (or one error), with its latency
        async def price_of(sku: str) -> float:
            await asyncio.sleep(rng.uniform(0.001, 0.004))
            return 10.0 + len(sku)

        @audit.timed  # works on plain functions too
        def write_audit(line: str) -> int:
            return len(line)

        async def handle(order_id: int) -> None:
            with orders.time():  # a clean exit counts processed, an exception an error
                price = await price_of(f"sku-{order_id % 50}")
                if rng.random() < 0.03:
                    raise OutOfStock(f"order {order_id}: sku-{order_id % 50} out of stock")
                write_audit(f"{order_id} {price:.2f}")

        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        order_id = 0
        while deadline is None or loop.time() < deadline:
            order_id += 1
            with contextlib.suppress(OutOfStock):  # already counted by orders.time()
                await handle(order_id)
            await asyncio.sleep(0.005)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    # Ctrl-C cancels main(): leaving serve() stops the endpoint gracefully.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.seconds))
