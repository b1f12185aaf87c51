"""A hundred components reporting into one endpoint: what the dashboard looks like at scale.

    python examples/many_components.py                     # http://127.0.0.1:9102/dashboard
    python examples/many_components.py --components 300 --port 0

Every component gets its own probe and a traffic pattern of its own; a few misbehave on
purpose so the dashboard has something to show: two with error rates over budget, one
whose circuit breaker is open, one that stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random

import streammetrics
from streammetrics import Event


async def main(port: int, n: int, seconds: float | None, tick_s: float) -> None:
    async with streammetrics.serve(name="fleet_metrics", port=port, tick_s=tick_s) as endpoint:
        print(f"metrics on {endpoint.url}  (live dashboard: {endpoint.url}/dashboard)", flush=True)
        names = [f"stage_{i:03d}" for i in range(n)]
        probes = [endpoint.probe(name) for name in names]
        rng = random.Random(11)
        base = [rng.uniform(5, 400) for _ in names]
        error_share = [0.0] * n
        for i in (3, 17):  # over the 5 % error budget
            if i < n:
                error_share[i] = 0.12 if i == 3 else 0.4
        bus = endpoint.ctx.bus
        if n > 42:  # a breaker opens, a component stops: reported as events, like a harness does
            bus.publish([Event(names[42], "breaker", detail="open")])
        if n > 7:
            bus.publish([Event(names[7], "stopped", detail="failed")])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        step = 0.05
        while seconds is None or loop.time() - t0 < seconds:
            t = loop.time() - t0
            for i, probe in enumerate(probes):
                if i == 7 and n > 7:
                    continue  # stopped: silent
                wave = 1 + 0.5 * math.sin(t / (8 + i % 13) + i)
                items = rng.random() * base[i] * wave * step * 2
                done = int(items)
                if done:
                    errors = sum(rng.random() < error_share[i] for _ in range(min(done, 50)))
                    latency = rng.lognormvariate(math.log(0.002 + (i % 10) * 0.003), 0.5)
                    probe.processed(done - errors, latency=latency)
                    if errors:
                        probe.error(errors, detail=f"TimeoutError: upstream of {names[i]}")
            await asyncio.sleep(step)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--tick", type=float, default=1.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.components, args.seconds, args.tick))
