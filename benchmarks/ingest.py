"""Fold N events through the probe path into an Aggregator; print events/s and RSS growth.

    python -m benchmarks.ingest [--events 5000000] [--components 10]

Targets (issue #2): >= 1 M events/s on one core, RSS growth < 5 MB.
"""

from __future__ import annotations

import argparse
import gc
import random
import time

import psutil

from streammetrics.aggregator import Aggregator
from streammetrics.bus import EventBus


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def run(events: int, components: int, flush_every: int, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    latencies = [rng.lognormvariate(-5, 1) for _ in range(1024)]
    fails = [rng.random() < 0.01 for _ in range(1024)]
    bus = EventBus()
    agg = Aggregator()
    bus.subscribe(agg)
    probes = [bus.probe(f"component_{i}") for i in range(components)]
    # warm up: every window and probe allocated before the first RSS reading
    for p in probes:
        p.processed(latency=0.001)
        p.error(latency=0.001)
    bus.flush()
    agg.snapshot()
    gc.collect()
    rss0 = rss_mb()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    done = 0
    chunk = flush_every
    while done < events:
        n = min(chunk, events - done)
        p = probes[(done // chunk) % components]
        processed, error = p.processed, p.error
        for i in range(n):
            j = i & 1023
            if fails[j]:
                error(latency=latencies[j])
            else:
                processed(latency=latencies[j])
        bus.flush()
        done += n
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    snap = agg.snapshot()
    total = sum(c.items_processed + c.errors_encountered for c in snap.detailed_components.values())
    assert total == events + 2 * components, (total, events)
    gc.collect()
    return {
        "events": events,
        "events_per_second": events / elapsed,
        "cpu_ns_per_event": cpu / events * 1e9,
        "rss_growth_mb": rss_mb() - rss0,
        "seconds": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--flush-every", type=int, default=10_000, help="events between bus flushes")
    args = ap.parse_args()
    r = run(args.events, args.components, args.flush_every)
    print(
        f"probe path: {r['events']:,} events in {r['seconds']:.2f}s = "
        f"{r['events_per_second'] / 1e6:.2f} M events/s, "
        f"{r['cpu_ns_per_event']:.0f} ns CPU/event, RSS growth {r['rss_growth_mb']:+.2f} MB"
    )


if __name__ == "__main__":
    main()
